-- Jobs as operators see them (core.jobs.lifecycle, core.jobs.views): submit, read, list,
-- cancel, reopen. Binds are :named (SQLAlchemy text()).

-- name: insert_job

INSERT INTO generation_jobs
    (id, status, total_tasks, style, count_per_prompt, provider, model, size, quality,
     estimated_cost_usd,
     mode, batch_fallback, output_format, output_compression, background, moderation,
     name, tags, submitted_by, webhook_url,
     priority, max_cost_usd, spend_unit_usd)
VALUES
    (:id, 'pending', :total_tasks, :style, :count_per_prompt, :provider, :model, :size,
     :quality, :estimated_cost_usd,
     :mode, :batch_fallback, :output_format, :output_compression, :background, :moderation,
     :name, CAST(:tags AS text[]), :submitted_by, :webhook_url,
     :priority, :max_cost_usd, :spend_unit_usd);

-- name: set_job_status

-- Applies the status rule's decision; guarded so a concurrent change is never overwritten.
UPDATE generation_jobs
   SET status = :new_status, updated_at = now(),
       finished_at = CASE WHEN :terminal THEN now() ELSE NULL END
 WHERE id = :job_id AND status = :old_status;

-- name: lock_job

SELECT id, status, total_tasks, completed_tasks, failed_tasks, cancelled_tasks
  FROM generation_jobs
 WHERE id = :job_id
   FOR UPDATE;

-- name: cancel_job_tasks

UPDATE generation_tasks
   SET status = 'cancelled', lease_until = NULL, finished_at = now(), updated_at = now()
 WHERE job_id = :job_id AND status IN ('pending', 'queued');

-- name: cancel_job

UPDATE generation_jobs
   SET status = 'cancelled', cancelled_tasks = cancelled_tasks + :n,
       finished_at = now(), updated_at = now()
 WHERE id = :job_id;

-- name: reopen_job

UPDATE generation_jobs
   SET status = 'running', failed_tasks = failed_tasks - :n, finished_at = NULL,
       updated_at = now()
 WHERE id = :job_id;

-- name: job_by_id

SELECT * FROM job_views
 WHERE id = :job_id;

-- name: list_jobs

SELECT * FROM job_views
 WHERE (CAST(:status AS text) IS NULL OR status = :status)
   AND (CAST(:created_after AS timestamptz) IS NULL OR created_at >= :created_after)
   AND (CAST(:created_before AS timestamptz) IS NULL OR created_at < :created_before)
 ORDER BY created_at DESC
 LIMIT :limit OFFSET :offset;

-- name: list_tasks

SELECT id, job_id, prompt_index, image_index, prompt, style, status, attempts,
       last_error_code, last_error, image_path, thumbnail_path, latency_ms,
       input_tokens, output_tokens, created_at, updated_at, started_at, finished_at,
       input_image_tokens, billed_mode
  FROM generation_tasks
 WHERE job_id = :job_id
   AND (CAST(:status AS text) IS NULL OR status = :status)
   AND (CAST(:error_code AS text) IS NULL OR last_error_code = :error_code)
 ORDER BY prompt_index, image_index
 LIMIT :limit OFFSET :offset;

-- name: count_tasks

SELECT count(*) AS n
  FROM generation_tasks
 WHERE job_id = :job_id
   AND (CAST(:status AS text) IS NULL OR status = :status)
   AND (CAST(:error_code AS text) IS NULL OR last_error_code = :error_code);

-- name: task_counts_by_status

SELECT status, count(*) AS n
  FROM generation_tasks
 WHERE job_id = :job_id
 GROUP BY status;
