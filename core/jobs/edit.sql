-- Reusing jobs (core.jobs.edit): clone a job, resubmit an edited failed prompt.

-- name: job_for_clone
SELECT id, style, count_per_prompt, provider, model, size, quality, name, tags,
       webhook_url
  FROM generation_jobs
 WHERE id = :job_id;

-- name: prompts_for_clone
-- One prompt per prompt index, in order; a prompt that was edited and resubmitted is
-- represented by its edit only.
SELECT t.prompt
  FROM generation_tasks t
 WHERE t.job_id = :job_id AND t.image_index = 0
   AND NOT EXISTS (SELECT 1 FROM generation_tasks r WHERE r.resubmitted_from = t.id)
 ORDER BY t.prompt_index;

-- name: task_for_resubmit
SELECT t.id, t.status, t.style, t.last_error_code,
       (SELECT r.id FROM generation_tasks r WHERE r.resubmitted_from = t.id) AS replaced_by
  FROM generation_tasks t
 WHERE t.id = :task_id AND t.job_id = :job_id;

-- name: next_prompt_index
SELECT COALESCE(max(prompt_index), -1) + 1 AS n FROM generation_tasks WHERE job_id = :job_id;

-- name: insert_resubmitted_task
INSERT INTO generation_tasks (id, job_id, prompt_index, image_index, prompt, style, status,
                              resubmitted_from)
VALUES (:id, :job_id, :prompt_index, 0, :prompt, :style, :status, :resubmitted_from);

-- name: grow_job
-- One more task; the status is core.status.job_status_after's decision for the new
-- counters, computed under the job's row lock.
UPDATE generation_jobs
   SET total_tasks = total_tasks + 1, status = :new_status, finished_at = NULL,
       estimated_cost_usd = CASE WHEN estimated_cost_usd IS NULL OR CAST(:cost AS numeric) IS NULL
                                 THEN NULL
                                 ELSE estimated_cost_usd + CAST(:cost AS numeric) END,
       updated_at = now()
 WHERE id = :job_id;

-- name: failed_not_resubmitted
-- Failed tasks that have not been edited and resubmitted yet, refusals first.
SELECT t.id, t.prompt_index, t.image_index, t.prompt, t.last_error_code, t.last_error
  FROM generation_tasks t
 WHERE t.job_id = :job_id AND t.status = 'failed'
   AND NOT EXISTS (SELECT 1 FROM generation_tasks r WHERE r.resubmitted_from = t.id)
 ORDER BY (t.last_error_code = ANY(CAST(:refusal_codes AS text[]))) DESC,
          t.prompt_index, t.image_index
 LIMIT :limit;
