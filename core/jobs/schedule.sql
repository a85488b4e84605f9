-- A job's place in the order of work (core.jobs.schedule): priority and spend cap.

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
