-- Scheduling between jobs (issue 13): the Cloud Tasks window, spend limits, the order of
-- work shown on the dashboard. The local claim is dispatch_claim_due (queries.sql).

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
