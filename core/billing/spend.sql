-- Spend limits (core.billing.spend): what each job spent, the holds a budget sets, and the
-- jobs at their cap. The claims (dispatch_claim_due, window_pick) start nothing a hold covers.

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

-- name: jobs_at_cap

-- Unfinished jobs whose spend cap stops their dispatch (the claims' projection: spent plus
-- one image per delivery in flight and one more), for /healthz and the pages.
SELECT id, name, max_cost_usd, spent_usd
  FROM (SELECT s.id, j.name, s.max_cost_usd, s.spent_usd, s.unit_usd,
               (SELECT count(*) FROM generation_tasks a
                 WHERE a.job_id = s.id AND a.lease_until IS NOT NULL
                   AND a.status IN ('queued', 'running')) AS in_flight
          FROM job_shares s JOIN generation_jobs j ON j.id = s.id
         WHERE s.status IN ('pending', 'running') AND s.max_cost_usd IS NOT NULL) c
 WHERE spent_usd + (in_flight + 1) * unit_usd > max_cost_usd
 ORDER BY id
 LIMIT :limit;
