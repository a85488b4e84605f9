-- Batch mode (OpenAI Batch API): the poller's statements. See core/batch/runner.py.
-- Batch-mode tasks wait as status 'running' with lease_until NULL, which no claim takes
-- (claim_task and dispatch_claim_due need an expired lease), and point at their batch.

-- name: batch_jobs_to_plan
-- Batch-mode jobs with tasks not yet in any batch.
SELECT DISTINCT t.job_id
  FROM generation_tasks t JOIN generation_jobs j ON j.id = t.job_id
 WHERE j.mode = 'batch' AND j.status IN ('pending', 'running')
   AND t.status = 'running' AND t.batch_id IS NULL AND t.lease_until IS NULL
 LIMIT :limit;

-- name: batch_lock_job
SELECT id, status, model, size, quality, output_format, output_compression, background,
       moderation, batch_fallback
  FROM generation_jobs WHERE id = :job_id FOR UPDATE;

-- name: batch_unassigned_tasks
SELECT id, attempts FROM generation_tasks
 WHERE job_id = :job_id AND status = 'running' AND batch_id IS NULL AND lease_until IS NULL
 ORDER BY prompt_index, image_index
 LIMIT :limit;

-- name: batch_insert
INSERT INTO openai_batches (id, job_id, task_count) VALUES (:id, :job_id, :task_count);

-- name: batch_assign_tasks
-- A task joins a batch: that is one attempt (a batch that expires costs one).
UPDATE generation_tasks
   SET batch_id = :batch_id, attempts = attempts + 1, started_at = COALESCE(started_at, now()),
       updated_at = now()
 WHERE id = ANY(:ids) AND status = 'running' AND batch_id IS NULL;

-- name: batch_job_started
UPDATE generation_jobs
   SET status = 'running', started_at = COALESCE(started_at, now()), updated_at = now()
 WHERE id = :job_id AND status = 'pending';

-- name: batch_open_rows
SELECT id FROM openai_batches WHERE state <> 'done' ORDER BY created_at LIMIT :limit;

-- name: batch_row
SELECT b.id, b.job_id, b.state, b.openai_status, b.task_count, b.input_file_id,
       b.openai_batch_id, b.output_file_id, b.error_file_id, b.cancel_requested, b.polls,
       j.status AS job_status, j.batch_fallback, j.model
  FROM openai_batches b JOIN generation_jobs j ON j.id = b.job_id
 WHERE b.id = :id;

-- name: batch_set_state
UPDATE openai_batches SET state = :state, updated_at = now() WHERE id = :id;

-- name: batch_record_file
UPDATE openai_batches SET input_file_id = :file_id, state = 'uploaded', updated_at = now()
 WHERE id = :id;

-- name: batch_record_created
UPDATE openai_batches
   SET openai_batch_id = :openai_batch_id, openai_status = :openai_status,
       state = 'submitted', submitted_at = now(), updated_at = now()
 WHERE id = :id;

-- name: batch_record_poll
UPDATE openai_batches
   SET openai_status = :openai_status, output_file_id = :output_file_id,
       error_file_id = :error_file_id, request_total = :request_total,
       request_completed = :request_completed, request_failed = :request_failed,
       last_error = :last_error, polls = polls + 1, updated_at = now()
 WHERE id = :id;

-- name: batch_finish
UPDATE openai_batches SET state = 'done', finished_at = now(), updated_at = now()
 WHERE id = :id;

-- name: batch_request_cancel
-- Cancelling a job cancels its open batches (the poller calls the API).
UPDATE openai_batches SET cancel_requested = true, updated_at = now()
 WHERE job_id = :job_id AND state <> 'done';

-- name: batch_cancel_job_tasks
-- The job's tasks waiting in (or for) a batch, cancelled with the job.
UPDATE generation_tasks
   SET status = 'cancelled', finished_at = now(), updated_at = now()
 WHERE job_id = :job_id AND status = 'running' AND lease_until IS NULL
   AND EXISTS (SELECT 1 FROM generation_jobs WHERE id = :job_id AND mode = 'batch');

-- name: batch_task_requests
-- What the JSONL input file is written from.
SELECT t.id, t.prompt, t.style
  FROM generation_tasks t
 WHERE t.batch_id = :batch_id AND t.status = 'running'
 ORDER BY t.prompt_index, t.image_index;

-- name: batch_waiting_task_ids
SELECT id FROM generation_tasks WHERE batch_id = :batch_id AND status = 'running';

-- name: complete_batch_task
-- A success read from a batch output file. Mirrors complete_task: guarded so the task
-- finishes once (it must still be waiting in THIS batch: a re-read of the same file after
-- a crash, or a late file of a superseded batch, changes nothing), and the job's counters
-- and status move in the same statement, exactly once per task (job_tasks_ended).
WITH done AS (
    UPDATE generation_tasks
       SET status = 'succeeded', image_path = :image_path, thumbnail_path = :thumbnail_path,
           latency_ms = :latency_ms, input_tokens = :input_tokens,
           input_image_tokens = :input_image_tokens, output_tokens = :output_tokens,
           billed_mode = 'batch', lease_until = NULL, finished_at = now(), updated_at = now()
     WHERE id = :task_id AND status = 'running' AND batch_id = :batch_id
       AND lease_until IS NULL
 RETURNING job_id
)
SELECT job.* FROM done CROSS JOIN LATERAL job_tasks_ended(done.job_id, 1, 0) job;

-- name: fail_batch_task
-- A failure read from a batch (error line, or no attempts left). Same guard as above.
WITH done AS (
    UPDATE generation_tasks
       SET status = 'failed', last_error_code = :error_code, last_error = :error_message,
           lease_until = NULL, finished_at = now(), updated_at = now()
     WHERE id = :task_id AND status = 'running' AND lease_until IS NULL
       AND batch_id IS NOT DISTINCT FROM CAST(:batch_id AS uuid)
 RETURNING job_id
)
SELECT job.* FROM done CROSS JOIN LATERAL job_tasks_ended(done.job_id, 0, 1) job;

-- name: batch_release_to_new_batch
-- Unfinished tasks of an expired / failed / cancelled batch: free for the next batch.
UPDATE generation_tasks
   SET batch_id = NULL, last_error_code = :error_code, last_error = :error_message,
       updated_at = now()
 WHERE batch_id = :batch_id AND status = 'running' AND lease_until IS NULL
   AND (CAST(:ids AS uuid[]) IS NULL OR id = ANY(CAST(:ids AS uuid[])))
RETURNING id;

-- name: batch_release_to_realtime
-- ... or to the realtime path: queued for the local dispatcher, pending for the Cloud
-- Tasks hand-over (the caller enqueues; the sweeper finishes a cut-off hand-over).
UPDATE generation_tasks
   SET batch_id = NULL, status = :status, last_error_code = :error_code,
       last_error = :error_message, next_attempt_at = now(),
       dispatch_generation = dispatch_generation + 1, updated_at = now()
 WHERE batch_id = :batch_id AND status = 'running' AND lease_until IS NULL
   AND (CAST(:ids AS uuid[]) IS NULL OR id = ANY(CAST(:ids AS uuid[])))
RETURNING id, dispatch_generation;

-- name: batches_of_job
SELECT id, state, openai_status, task_count, openai_batch_id, input_file_id,
       output_file_id, error_file_id, request_total, request_completed, request_failed,
       cancel_requested, last_error, created_at, submitted_at, finished_at
  FROM openai_batches WHERE job_id = :job_id ORDER BY created_at;

-- name: job_billed_tokens
-- Billed usage of a job's succeeded tasks, by how it was billed (cost is linear in tokens,
-- so the job's cost from these sums equals the sum of its tasks' costs).
SELECT COALESCE(billed_mode, 'realtime') AS mode, count(*) AS tasks,
       COALESCE(sum(input_tokens), 0) AS input_tokens,
       COALESCE(sum(input_image_tokens), 0) AS input_image_tokens,
       COALESCE(sum(output_tokens), 0) AS output_tokens
  FROM generation_tasks
 WHERE job_id = :job_id AND status = 'succeeded' AND output_tokens IS NOT NULL
 GROUP BY COALESCE(billed_mode, 'realtime');

-- name: batch_retry_tasks
-- Retry-failed of a batch-mode job: the requeued tasks wait for the next batch again
-- (half price) instead of going to the realtime queue.
UPDATE generation_tasks
   SET status = 'running', batch_id = NULL, lease_until = NULL, updated_at = now()
 WHERE id = ANY(:ids) AND status = 'pending'
   AND EXISTS (SELECT 1 FROM generation_jobs WHERE id = :job_id AND mode = 'batch');
