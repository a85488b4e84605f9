-- Scheduling between jobs (issue 13): the Cloud Tasks window, spend limits, the order of
-- work shown on the dashboard. The local claim is dispatch_claim_due (queries.sql).

-- name: window_pick
-- Cloud Tasks mode: PostgreSQL decides what runs next and the queue holds a bounded window
-- (:window tasks over all jobs; core.dispatch.window). Picks pending rows, as many as the
-- window has room for, in the order of dispatch_claim_due (a starved job's first, priority,
-- round-robin, fewer tasks left, older job; spend caps and budgets), and holds them for
-- :hold_s (lease_until
-- on the pending row) while their Cloud Tasks are created; refills take turns (window_lock),
-- so two never pick the same row; mark_tasks_queued_named ends the hold. A refill that died leaves the hold to run
-- out: the row is picked again (the outbox). In the window: queued rows (in the queue, or
-- a hand-over's next attempt), running rows with a lease, held pending rows.
WITH jobs AS MATERIALIZED (
    SELECT j.id, j.created_at, j.max_cost_usd,
           CASE j.priority WHEN 'high' THEN 0 WHEN 'low' THEN 2 ELSE 1 END AS priority_rank,
           f.in_flight,
           job_starved(j.id, j.created_at, f.in_flight, :starvation_s) AS starved,
           j.total_tasks - j.completed_tasks - j.failed_tasks - j.cancelled_tasks
               AS tasks_left,
           COALESCE(j.spent_usd, 0)
               + GREATEST(j.completed_tasks - j.spent_tasks, 0) * COALESCE(j.spend_unit_usd, 0)
               AS spent_usd,
           COALESCE(j.spend_unit_usd, 0) AS unit_usd,
           (j.submitted_by IS NOT NULL AND EXISTS (
                SELECT 1 FROM spend_holds h
                 WHERE h.held AND h.scope = 'key:' || j.submitted_by))
           OR EXISTS (SELECT 1 FROM spend_holds h WHERE h.held AND h.scope = 'daily')
               AS budget_held
      FROM generation_jobs j
     CROSS JOIN LATERAL (
           SELECT (SELECT count(*) FROM generation_tasks a
                    WHERE a.job_id = j.id AND a.status = 'queued')
                  + (SELECT count(*) FROM generation_tasks a
                      WHERE a.job_id = j.id AND a.lease_until IS NOT NULL
                        AND (a.status = 'running'
                             OR (a.status = 'pending' AND a.lease_until > now())))
                  AS in_flight) f
     WHERE j.status IN ('pending', 'running')
       -- batch mode: tasks waiting in an OpenAI batch are running without a lease (not in
       -- the window); its realtime fallback's pending rows are handed over like any other
), room AS (
    SELECT GREATEST(:window - COALESCE(sum(in_flight), 0), 0) AS n FROM jobs
), due AS (
    SELECT c.id, c.dispatch_generation, c.next_attempt_at, jobs.created_at,
           jobs.priority_rank, jobs.max_cost_usd, jobs.spent_usd, jobs.unit_usd,
           jobs.starved, jobs.tasks_left,
           jobs.in_flight + row_number() OVER (PARTITION BY jobs.id
                                               ORDER BY c.next_attempt_at, c.id) AS nth
      FROM jobs CROSS JOIN LATERAL (
           SELECT t.id, t.dispatch_generation, t.next_attempt_at FROM generation_tasks t
            WHERE t.job_id = jobs.id AND t.status = 'pending'
              AND (t.lease_until IS NULL OR t.lease_until < now())
            ORDER BY t.next_attempt_at
            LIMIT :window) c
     WHERE NOT jobs.budget_held
), ranked AS (
    SELECT id, dispatch_generation,
           row_number() OVER (ORDER BY CASE WHEN nth = 1 AND starved THEN -1
                                            ELSE priority_rank END,
                                       nth, tasks_left, created_at, next_attempt_at)
               AS place
      FROM due
     WHERE max_cost_usd IS NULL OR spent_usd + nth * unit_usd <= max_cost_usd
)
UPDATE generation_tasks t
   SET lease_until = now() + make_interval(secs => :hold_s)
  FROM ranked, room
 WHERE t.id = ranked.id AND ranked.place <= room.n
   -- checked again on the row itself (a delivery may have claimed it meanwhile)
   AND t.status = 'pending' AND (t.lease_until IS NULL OR t.lease_until < now())
RETURNING t.id, t.dispatch_generation;

-- name: window_lock
-- Refills take turns (one transaction at a time, over all worker instances): the next one
-- sees the holds the previous one committed, so the window is never filled twice over.
SELECT pg_advisory_xact_lock(hashtext('aiwebimage.window'));

-- name: window_release_holds
-- Rows a refill held but could not hand over (CreateTask failed): free at once, not after
-- the hold, so the next refill tries again.
UPDATE generation_tasks
   SET lease_until = NULL
 WHERE id = ANY(CAST(:ids AS uuid[])) AND status = 'pending';

-- name: set_job_schedule
-- Priority and spend cap while the job runs (API, dashboard). NULL leaves a field as is;
-- :clear_cap removes the cap.
UPDATE generation_jobs
   SET priority = COALESCE(CAST(:priority AS text), priority),
       max_cost_usd = CASE WHEN :clear_cap THEN NULL
                           ELSE COALESCE(CAST(:max_cost_usd AS numeric), max_cost_usd) END,
       updated_at = now()
 WHERE id = :job_id
RETURNING id, status, priority, max_cost_usd;

-- name: spend_jobs
-- Jobs whose spend the check refreshes: unfinished ones, and any that finished today
-- (the daily budgets count them).
SELECT id, provider, model, size, quality, mode, total_tasks, estimated_cost_usd,
       completed_tasks, submitted_by, max_cost_usd, status
  FROM generation_jobs
 WHERE status IN ('pending', 'running')
    OR (finished_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
        AND status <> 'pending');

-- name: spend_tokens_by_job
-- Succeeded tasks of :ids by job and billing mode: tokens where the usage is known, a
-- count where it is not (those are counted at the estimate). :since limits to tasks
-- finished since then (the daily budget), NULL = all.
SELECT job_id, COALESCE(billed_mode, 'realtime') AS mode,
       count(*) FILTER (WHERE output_tokens IS NOT NULL) AS billed_tasks,
       count(*) FILTER (WHERE output_tokens IS NULL) AS unbilled_tasks,
       COALESCE(sum(input_tokens), 0) AS input_tokens,
       COALESCE(sum(input_image_tokens), 0) AS input_image_tokens,
       COALESCE(sum(output_tokens), 0) AS output_tokens
  FROM generation_tasks
 WHERE job_id = ANY(CAST(:ids AS uuid[])) AND status = 'succeeded'
   AND (CAST(:since AS timestamptz) IS NULL OR finished_at >= :since)
 GROUP BY job_id, COALESCE(billed_mode, 'realtime');

-- name: set_job_spend
-- Written only when it changed: an idle job's row is not locked every check (deliveries
-- update the same row as they finish).
UPDATE generation_jobs
   SET spent_usd = :spent_usd, spent_tasks = :spent_tasks, spend_unit_usd = :unit_usd
 WHERE id = :job_id
   AND (spent_usd IS DISTINCT FROM CAST(:spent_usd AS numeric)
        OR spent_tasks <> :spent_tasks
        OR spend_unit_usd IS DISTINCT FROM CAST(:unit_usd AS numeric));

-- name: set_spend_hold
INSERT INTO spend_holds (scope, held, spent_usd, limit_usd, updated_at)
VALUES (:scope, :held, :spent_usd, :limit_usd, now())
ON CONFLICT (scope) DO UPDATE
   SET held = EXCLUDED.held, spent_usd = EXCLUDED.spent_usd,
       limit_usd = EXCLUDED.limit_usd, updated_at = now();

-- name: clear_spend_holds_except
DELETE FROM spend_holds WHERE NOT (scope = ANY(CAST(:scopes AS text[])));

-- name: spend_holds
SELECT scope, held, spent_usd, limit_usd, updated_at FROM spend_holds ORDER BY scope;

-- name: start_of_day
-- The budget's day is a UTC day, whatever the server's TimeZone.
SELECT date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS since;

-- name: order_of_work
-- The dashboard's order of work (issue 13): per unfinished job its priority, cap, spend,
-- deliveries in flight, tasks waiting, and its share of the deliveries that finished in
-- the last :window_s seconds (generation_tasks_finished_idx, per job).
WITH live AS (
    SELECT j.*,
           (SELECT count(*) FROM generation_tasks f
             WHERE f.job_id = j.id
               AND f.finished_at >= now() - make_interval(secs => :window_s)) AS recent
      FROM generation_jobs j
     WHERE j.status IN ('pending', 'running')
)
SELECT l.id, l.name, l.status, l.priority, l.max_cost_usd, l.spent_usd, l.spent_tasks,
       l.spend_unit_usd, l.completed_tasks, l.failed_tasks, l.total_tasks, l.submitted_by,
       l.created_at, l.mode,
       (SELECT count(*) FROM generation_tasks a
         WHERE a.job_id = l.id AND a.lease_until IS NOT NULL
           AND a.status IN ('queued', 'running')) AS in_flight,
       (SELECT count(*) FROM generation_tasks a
         WHERE a.job_id = l.id AND a.status IN ('pending', 'queued')) AS waiting,
       l.recent AS recent_finished,
       l.recent::float / NULLIF(sum(l.recent) OVER (), 0) AS recent_share
  FROM live l
 ORDER BY CASE l.priority WHEN 'high' THEN 0 WHEN 'low' THEN 2 ELSE 1 END, l.created_at
 LIMIT :limit;

-- name: jobs_at_cap
-- Unfinished jobs whose spend cap stops their dispatch (the claims' projection: spent plus
-- one image per delivery in flight and one more), for /healthz and the pages.
SELECT id, name, max_cost_usd, spent_usd
  FROM (SELECT j.id, j.name, j.max_cost_usd,
               COALESCE(j.spent_usd, 0) + GREATEST(j.completed_tasks - j.spent_tasks, 0)
                   * COALESCE(j.spend_unit_usd, 0) AS spent_usd,
               COALESCE(j.spend_unit_usd, 0) AS unit_usd,
               (SELECT count(*) FROM generation_tasks a
                 WHERE a.job_id = j.id AND a.lease_until IS NOT NULL
                   AND a.status IN ('queued', 'running')) AS in_flight
          FROM generation_jobs j
         WHERE j.status IN ('pending', 'running') AND j.max_cost_usd IS NOT NULL) c
 WHERE spent_usd + (in_flight + 1) * unit_usd > max_cost_usd
 ORDER BY id
 LIMIT :limit;

-- name: job_queued_cloud_tasks
-- The Cloud Tasks a job holds in the window (issue 13): deleted when it is cancelled, so no
-- delivery of it starts afterwards. Few rows: the window is bounded.
SELECT cloud_task_name FROM generation_tasks
 WHERE job_id = :job_id AND status = 'queued' AND cloud_task_name IS NOT NULL;
