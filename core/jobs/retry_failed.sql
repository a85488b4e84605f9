-- "Retry all failed" with refusals left alone unless asked, and its dry run.
-- :refusal_codes is NULL to include refusals, else the codes a retry cannot cure
-- (core.classify.REFUSAL_CODES). :task_ids NULL means every failed task of the job.

-- name: retry_failed_preview
-- What a retry would requeue, and the refusals it would leave, without changing a row.
SELECT count(*) FILTER (WHERE CAST(:refusal_codes AS text[]) IS NULL
                           OR last_error_code IS NULL
                           OR NOT (last_error_code = ANY(CAST(:refusal_codes AS text[]))))
           AS retry,
       count(*) FILTER (WHERE CAST(:refusal_codes AS text[]) IS NOT NULL
                          AND last_error_code = ANY(CAST(:refusal_codes AS text[])))
           AS refusals_left
  FROM generation_tasks
 WHERE job_id = :job_id AND status = 'failed'
   AND (CAST(:task_ids AS uuid[]) IS NULL OR id = ANY(CAST(:task_ids AS uuid[])))
   -- a failed prompt that was edited and resubmitted (core.jobs.edit) stays history
   AND NOT EXISTS (SELECT 1 FROM generation_tasks r
                    WHERE r.resubmitted_from = generation_tasks.id);

-- name: requeue_failed_tasks_filtered
-- A fresh dispatch generation (so Cloud Tasks accepts a new task name) and a fresh
-- attempt budget, for the failed tasks the preview above counts as "retry".
UPDATE generation_tasks
   SET status = 'pending', attempts = 0, dispatch_generation = dispatch_generation + 1,
       -- a fresh budget: crash, given-back, rate-limit and undeliverable counts too
       -- (claim_task compares attempts - free_attempts with MAX_ATTEMPTS)
       free_attempts = 0, crashes = 0, rate_limited_since = NULL, undeliverable_tries = 0,
       lease_until = NULL, lease_owner = NULL, lease_boot = NULL,
       next_attempt_at = now(), finished_at = NULL, updated_at = now()
 WHERE job_id = :job_id AND status = 'failed'
   AND (CAST(:task_ids AS uuid[]) IS NULL OR id = ANY(CAST(:task_ids AS uuid[])))
   AND (CAST(:refusal_codes AS text[]) IS NULL
        OR last_error_code IS NULL
        OR NOT (last_error_code = ANY(CAST(:refusal_codes AS text[]))))
   -- a failed prompt that was edited and resubmitted (core.jobs.edit) stays history
   AND NOT EXISTS (SELECT 1 FROM generation_tasks r
                    WHERE r.resubmitted_from = generation_tasks.id)
RETURNING id, dispatch_generation;
