-- Cloud Tasks mode: the bounded window of tasks the queue holds
-- (core.dispatch.cloudtasks.window).
-- The local claim is dispatch_claim_due (core/dispatch/local/local.sql).

-- name: window_pick

-- Cloud Tasks mode: PostgreSQL decides what runs next and the queue holds a bounded window
-- (:window tasks over all jobs; core.dispatch.cloudtasks.window). Picks pending rows, as
-- many as the window has room for, in the order of dispatch_claim_due (a starved job's
-- first, priority, round-robin, fewer tasks left, older job; spend caps and budgets), and
-- holds them for :hold_s (lease_until on the pending row) while their Cloud Tasks are
-- created; refills take turns (window_lock), so two never pick the same row;
-- mark_tasks_queued_named ends the hold. A refill that died leaves the hold to run out:
-- the row is picked again (the outbox). In the window: queued rows (in the queue, or a
-- hand-over's next attempt), running rows with a lease, held pending rows.
WITH jobs AS MATERIALIZED (
    SELECT j.id, j.created_at, j.max_cost_usd, j.priority_rank, j.tasks_left, j.spent_usd,
           j.unit_usd, f.in_flight,
           job_starved(j.id, j.created_at, f.in_flight, :starvation_s) AS starved,
           (j.submitted_by IS NOT NULL AND EXISTS (
                SELECT 1 FROM spend_holds h
                 WHERE h.held AND h.scope = 'key:' || j.submitted_by))
           OR EXISTS (SELECT 1 FROM spend_holds h WHERE h.held AND h.scope = 'daily')
               AS budget_held
      FROM job_shares j
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

-- name: job_queued_cloud_tasks

-- The Cloud Tasks a job holds in the window: deleted when it is cancelled, so no
-- delivery of it starts afterwards. Few rows: the window is bounded.
SELECT cloud_task_name FROM generation_tasks
 WHERE job_id = :job_id AND status = 'queued' AND cloud_task_name IS NOT NULL;
