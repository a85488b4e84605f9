-- Every hot query of AIWebImageService, by name. Binds are :named (SQLAlchemy text()).
-- Task status: pending -> queued -> running -> succeeded | failed | cancelled.

-- name: insert_job
INSERT INTO generation_jobs
    (id, status, total_tasks, style, count_per_prompt, provider, model, size, quality,
     estimated_cost_usd, name, tags, submitted_by, webhook_url)
VALUES
    (:id, 'pending', :total_tasks, :style, :count_per_prompt, :provider, :model, :size,
     :quality, :estimated_cost_usd, :name, CAST(:tags AS text[]), :submitted_by,
     :webhook_url);

-- name: mark_tasks_queued
-- Hand-over to the queue (the outbox): only rows still pending move, so a repeated
-- enqueue changes nothing.
UPDATE generation_tasks
   SET status = 'queued', next_attempt_at = now(), updated_at = now(),
       cloud_task_name = COALESCE(:cloud_task_name, cloud_task_name)
 WHERE id = ANY(:ids) AND status = 'pending';

-- name: pending_tasks_for_sweep
-- Tasks written but never handed to the queue (enqueue cut off, process died), older
-- than a grace period so an enqueue in progress is left alone.
SELECT id, dispatch_generation
  FROM generation_tasks
 WHERE status = 'pending' AND updated_at < now() - make_interval(secs => :grace_s)
 ORDER BY created_at
 LIMIT :limit;

-- name: claim_task
-- The delivery contract's claim: one conditional UPDATE. A queued (or still pending, when
-- Cloud Tasks delivers before our hand-over commits) task, or a running one whose lease
-- has expired, becomes running with a fresh lease; the attempt count moves here, once per
-- delivery that reached the handler, and never below the queue's own count.
WITH claimed AS (
    UPDATE generation_tasks
       SET status = 'running',
           attempts = GREATEST(attempts + 1, :attempt_floor),
           lease_until = now() + make_interval(secs => :lease_s),
           started_at = COALESCE(started_at, now()),
           updated_at = now()
     WHERE id = :task_id
       AND (status IN ('pending', 'queued')
            OR (status = 'running' AND lease_until < now()))
 RETURNING id, job_id, prompt, style, attempts, prompt_index, image_index
), started AS (
    UPDATE generation_jobs j
       SET status = 'running', started_at = COALESCE(j.started_at, now()), updated_at = now()
      FROM claimed
     WHERE j.id = claimed.job_id AND j.status = 'pending'
)
SELECT c.id, c.job_id, c.prompt, c.style, c.attempts, c.prompt_index, c.image_index,
       j.provider, j.model, j.size, j.quality
  FROM claimed c JOIN generation_jobs j ON j.id = c.job_id;

-- name: task_state
SELECT status, attempts, lease_until,
       GREATEST(EXTRACT(EPOCH FROM (lease_until - now())), 0)::float AS lease_left_s
  FROM generation_tasks
 WHERE id = :task_id;

-- name: complete_task
-- Success. Guarded by status and attempt, so a delivery whose lease expired and whose task
-- was claimed again cannot finish it a second time; the job counter moves in the same
-- statement, exactly once per task. The job's status follows in the same statement too
-- (core.status.job_status_after, spelled in SQL for a success; the caller checks the
-- result against the Python rule): one autocommit statement holds the job row's lock for
-- the statement and its commit only, not for a client round trip, so many deliveries of
-- one job do not queue behind each other on that row.
WITH done AS (
    UPDATE generation_tasks
       SET status = 'succeeded', image_path = :image_path, thumbnail_path = :thumbnail_path,
           latency_ms = :latency_ms, input_tokens = :input_tokens,
           output_tokens = :output_tokens, lease_until = NULL,
           finished_at = now(), updated_at = now()
     WHERE id = :task_id AND status = 'running' AND attempts = :attempt
 RETURNING job_id
)
UPDATE generation_jobs j
   SET completed_tasks = j.completed_tasks + 1, updated_at = now(),
       status = CASE
           WHEN j.status = 'cancelled' THEN 'cancelled'
           WHEN j.completed_tasks + 1 + j.failed_tasks + j.cancelled_tasks < j.total_tasks
               THEN 'running'
           WHEN j.failed_tasks = 0 AND j.cancelled_tasks = 0 THEN 'completed'
           ELSE 'completed_with_errors' END,
       finished_at = CASE
           WHEN j.status NOT IN ('completed', 'completed_with_errors', 'failed', 'cancelled')
                AND j.completed_tasks + 1 + j.failed_tasks + j.cancelled_tasks >= j.total_tasks
               THEN now()
           ELSE j.finished_at END
  FROM done
 WHERE j.id = done.job_id
RETURNING j.id, j.status, j.total_tasks, j.completed_tasks, j.failed_tasks, j.cancelled_tasks;

-- name: fail_task
-- Permanent failure, or the last allowed attempt failed. Counter and status in one
-- statement, as complete_task.
WITH done AS (
    UPDATE generation_tasks
       SET status = 'failed', last_error_code = :error_code, last_error = :error_message,
           latency_ms = :latency_ms, lease_until = NULL,
           finished_at = now(), updated_at = now()
     WHERE id = :task_id AND status = 'running' AND attempts = :attempt
 RETURNING job_id
)
UPDATE generation_jobs j
   SET failed_tasks = j.failed_tasks + 1, updated_at = now(),
       status = CASE
           WHEN j.status = 'cancelled' THEN 'cancelled'
           WHEN j.completed_tasks + j.failed_tasks + 1 + j.cancelled_tasks < j.total_tasks
               THEN 'running'
           WHEN j.completed_tasks = 0 THEN 'failed'
           ELSE 'completed_with_errors' END,
       finished_at = CASE
           WHEN j.status NOT IN ('completed', 'completed_with_errors', 'failed', 'cancelled')
                AND j.completed_tasks + j.failed_tasks + 1 + j.cancelled_tasks >= j.total_tasks
               THEN now()
           ELSE j.finished_at END
  FROM done
 WHERE j.id = done.job_id
RETURNING j.id, j.status, j.total_tasks, j.completed_tasks, j.failed_tasks, j.cancelled_tasks;

-- name: release_task
-- A retryable failure with attempts left: back to queued, due after the backoff.
UPDATE generation_tasks
   SET status = 'queued', last_error_code = :error_code, last_error = :error_message,
       latency_ms = :latency_ms, lease_until = NULL,
       next_attempt_at = now() + make_interval(secs => :delay_s), updated_at = now()
 WHERE id = :task_id AND status = 'running' AND attempts = :attempt;

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

-- name: requeue_failed_tasks
-- Retry-failed: a fresh dispatch generation (so Cloud Tasks accepts a new task name) and
-- a fresh attempt budget. :task_ids NULL means every failed task of the job.
UPDATE generation_tasks
   SET status = 'pending', attempts = 0, dispatch_generation = dispatch_generation + 1,
       lease_until = NULL, next_attempt_at = now(), finished_at = NULL, updated_at = now()
 WHERE job_id = :job_id AND status = 'failed'
   AND (CAST(:task_ids AS uuid[]) IS NULL OR id = ANY(CAST(:task_ids AS uuid[])))
   -- a failed prompt that was edited and resubmitted (core.job_edit) stays history
   AND NOT EXISTS (SELECT 1 FROM generation_tasks r
                    WHERE r.resubmitted_from = generation_tasks.id)
RETURNING id, dispatch_generation;

-- name: reopen_job
UPDATE generation_jobs
   SET status = 'running', failed_tasks = failed_tasks - :n, finished_at = NULL,
       updated_at = now()
 WHERE id = :job_id;

-- name: job_by_id
SELECT id, status, total_tasks, completed_tasks, failed_tasks, cancelled_tasks, style,
       count_per_prompt, provider, model, size, quality, estimated_cost_usd,
       created_at, updated_at, started_at, finished_at, name, tags, submitted_by
  FROM generation_jobs
 WHERE id = :job_id;

-- name: list_jobs
SELECT id, status, total_tasks, completed_tasks, failed_tasks, cancelled_tasks, style,
       count_per_prompt, provider, model, size, quality, estimated_cost_usd,
       created_at, updated_at, started_at, finished_at, name, tags, submitted_by
  FROM generation_jobs
 WHERE (CAST(:status AS text) IS NULL OR status = :status)
   AND (CAST(:created_after AS timestamptz) IS NULL OR created_at >= :created_after)
   AND (CAST(:created_before AS timestamptz) IS NULL OR created_at < :created_before)
 ORDER BY created_at DESC
 LIMIT :limit OFFSET :offset;

-- name: list_tasks
SELECT id, job_id, prompt_index, image_index, prompt, style, status, attempts,
       last_error_code, last_error, image_path, thumbnail_path, latency_ms,
       input_tokens, output_tokens, created_at, updated_at, started_at, finished_at
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

-- name: dispatch_claim_due
-- The local dispatcher's claim: due queued tasks, and running ones whose lease expired
-- (their worker died). Pushing next_attempt_at forward hides them from other dispatchers
-- while the delivery is in flight, like a visibility timeout; if this process dies they
-- come back when it runs out. A paused queue claims nothing: checked in the same statement
-- (a one-time filter), which saves the dispatcher a round trip per claim.
UPDATE generation_tasks t
   SET next_attempt_at = now() + make_interval(secs => :visibility_s)
 WHERE t.id IN (
       SELECT id FROM generation_tasks
        WHERE ((status = 'queued' AND next_attempt_at <= now())
               OR (status = 'running' AND next_attempt_at <= now() AND lease_until < now()))
          AND NOT EXISTS (SELECT 1 FROM queue_state
                           WHERE queue_name = :queue_name AND paused)
        ORDER BY next_attempt_at
        LIMIT :limit
          FOR UPDATE SKIP LOCKED)
RETURNING t.id, t.attempts, t.next_attempt_at;

-- name: dispatch_defer
-- A delivery that did not reach a decision (worker unreachable, crashed, busy): due again
-- after :delay_s, unless the worker already rescheduled or finished it.
UPDATE generation_tasks
   SET next_attempt_at = now() + make_interval(secs => :delay_s)
 WHERE id = :task_id AND next_attempt_at = :marker
   AND status IN ('queued', 'running');

-- name: queue_paused
SELECT paused FROM queue_state WHERE queue_name = :queue_name;

-- name: set_queue_paused
INSERT INTO queue_state (queue_name, paused, updated_at)
VALUES (:queue_name, :paused, now())
ON CONFLICT (queue_name) DO UPDATE SET paused = EXCLUDED.paused, updated_at = now();

-- name: queue_depth
SELECT status, count(*) AS n
  FROM generation_tasks
 WHERE status IN ('pending', 'queued', 'running')
 GROUP BY status;

-- name: next_due_in_s
SELECT GREATEST(EXTRACT(EPOCH FROM (min(next_attempt_at) - now())), 0)::float AS s
  FROM generation_tasks
 WHERE status IN ('queued', 'running');
