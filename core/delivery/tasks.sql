-- One delivery of one task (core.delivery.statements through core.db.hotsql): claim, renew,
-- complete, fail, release, take over. Binds are :named (SQLAlchemy text()).
-- Task status: pending -> queued -> running -> succeeded | failed | cancelled.

-- name: claim_task

-- The delivery contract's claim: one conditional UPDATE. A due queued (or still pending,
-- when Cloud Tasks delivers before our hand-over commits) task, or a running one whose
-- lease has expired, becomes running with a fresh lease owned by :owner / :boot under a new
-- :token; the attempt count moves here, once per delivery that reached the handler, and
-- never below the queue's own count. A delivery before next_attempt_at (the backoff or
-- Retry-After a release stored) claims nothing. Taking over an expired lease is a crash of
-- its holder: it counts, and at :max_attempts charged attempts the takeover is refused here
-- and take_over_abandoned fails the task as worker_crashed (rule: core.delivery.leases).
WITH claimed AS (
    UPDATE generation_tasks
       SET status = 'running',
           attempts = GREATEST(attempts + 1, :attempt_floor),
           crashes = crashes + CASE WHEN status = 'running' THEN 1 ELSE 0 END,
           lease_until = now() + make_interval(secs => :lease_s),
           lease_owner = :owner, lease_boot = :boot, claim_token = :token,
           started_at = COALESCE(started_at, now()),
           updated_at = now()
     WHERE id = :task_id
       AND next_attempt_at <= now()
       AND (status IN ('pending', 'queued')
            OR (status = 'running' AND lease_until < now()
                AND attempts - free_attempts < :max_attempts))
 RETURNING id, job_id, prompt, style, attempts, free_attempts, prompt_index, image_index,
           EXTRACT(EPOCH FROM (now() - rate_limited_since))::float AS rate_limited_for_s
), started AS (
    UPDATE generation_jobs j
       SET status = 'running', started_at = COALESCE(j.started_at, now()), updated_at = now()
      FROM claimed
     WHERE j.id = claimed.job_id AND j.status = 'pending'
)
SELECT c.id, c.job_id, c.prompt, c.style, c.attempts, c.free_attempts, c.prompt_index,
       c.image_index, c.rate_limited_for_s, j.provider, j.model, j.size, j.quality,
       j.output_format, j.output_compression, j.background, j.moderation
  FROM claimed c JOIN generation_jobs j ON j.id = c.job_id;

-- name: task_state

SELECT status, attempts, free_attempts, lease_until,
       GREATEST(EXTRACT(EPOCH FROM (lease_until - now())), 0)::float AS lease_left_s,
       GREATEST(EXTRACT(EPOCH FROM (next_attempt_at - now())), 0)::float AS due_in_s,
       (status = 'running' AND lease_until < now()) AS lease_expired
  FROM generation_tasks
 WHERE id = :task_id;

-- name: renew_lease

-- A live handler extends its lease (core.delivery.leases.RENEW_EVERY_S). No row: the token is gone
-- (lease taken over, task finished or retried meanwhile), so this delivery stops writing.
UPDATE generation_tasks
   SET lease_until = now() + make_interval(secs => :lease_s)
 WHERE id = :task_id AND status = 'running' AND claim_token = :token;

-- name: complete_task

-- Success. Guarded by the claim token, so a delivery whose lease expired and whose task
-- was claimed again (or retried after failing) cannot finish it; the job's counters and
-- status move in the same statement, exactly once per task (job_tasks_ended,
-- sql/init_db.sql; the caller checks the status against core/status.py): one autocommit
-- statement holds the job row's lock for the statement and its commit only, not for a
-- client round trip, so many deliveries of one job do not queue behind each other on that
-- row. Returns the job's id, status and counters after it. The worker ends tasks with
-- end_tasks, this statement over arrays; the single form is what the benchmarks' SQL
-- ceiling (pgbench) and the pooler bench run, one completion per statement.
WITH done AS (
    UPDATE generation_tasks
       SET status = 'succeeded', image_path = :image_path, thumbnail_path = :thumbnail_path,
           latency_ms = :latency_ms, input_tokens = :input_tokens,
           output_tokens = :output_tokens, lease_until = NULL,
           finished_at = now(), updated_at = now()
     WHERE id = :task_id AND status = 'running' AND claim_token = :token
 RETURNING job_id
)
SELECT job.* FROM done CROSS JOIN LATERAL job_tasks_ended(done.job_id, 1, 0) job;

-- name: claim_tasks

-- claim_task for many deliveries at once (core.db.group_commit: the claims that arrive while
-- the previous one is on its way go as one statement). Row by row the same UPDATE, the
-- same guards and the same result as claim_task; each input row carries its own task id,
-- token and attempt floor. The caller gives each task id once per statement and sorts
-- them, so two statements lock shared rows in the same order.
WITH input AS (
    SELECT * FROM unnest(CAST(:task_id AS uuid[]), CAST(:token AS uuid[]),
                         CAST(:attempt_floor AS int[]))
                  AS i(task_id, token, attempt_floor)
), claimed AS (
    UPDATE generation_tasks t
       SET status = 'running',
           attempts = GREATEST(t.attempts + 1, i.attempt_floor),
           crashes = t.crashes + CASE WHEN t.status = 'running' THEN 1 ELSE 0 END,
           lease_until = now() + make_interval(secs => :lease_s),
           lease_owner = :owner, lease_boot = :boot, claim_token = i.token,
           started_at = COALESCE(t.started_at, now()),
           updated_at = now()
      FROM input i
     WHERE t.id = i.task_id
       AND t.next_attempt_at <= now()
       AND (t.status IN ('pending', 'queued')
            OR (t.status = 'running' AND t.lease_until < now()
                AND t.attempts - t.free_attempts < :max_attempts))
 RETURNING t.id, t.job_id, t.prompt, t.style, t.attempts, t.free_attempts, t.prompt_index,
           t.image_index, t.claim_token,
           EXTRACT(EPOCH FROM (now() - t.rate_limited_since))::float AS rate_limited_for_s
), started AS (
    UPDATE generation_jobs j
       SET status = 'running', started_at = COALESCE(j.started_at, now()), updated_at = now()
      FROM (SELECT DISTINCT job_id FROM claimed) c
     WHERE j.id = c.job_id AND j.status = 'pending'
)
SELECT c.id, c.job_id, c.prompt, c.style, c.attempts, c.free_attempts, c.prompt_index,
       c.image_index, c.claim_token, c.rate_limited_for_s, j.provider, j.model, j.size,
       j.quality, j.output_format, j.output_compression, j.background, j.moderation
  FROM claimed c JOIN generation_jobs j ON j.id = c.job_id;

-- name: end_tasks

-- Tasks that ended, succeeded or failed for good, for many deliveries at once
-- (core.db.group_commit: the ends that arrive while the previous statement is on its way go
-- as one). Row by row as complete_task: guarded by the row's own claim token, so a delivery
-- whose lease expired and whose task was claimed again (or retried after failing) cannot
-- end it. A success brings its image, thumbnail and tokens, a failure its error code and
-- message; what a row does not bring (NULL) stays as it was. Each job's counters and status
-- move once per statement by its tasks that ended here (job_tasks_ended), the job rows in
-- id order, so two statements over the same jobs cannot deadlock. One result row per task
-- this statement ended, with its job's counters after it; a task not returned was not this
-- delivery's any more.
WITH input AS (
    SELECT * FROM unnest(CAST(:task_id AS uuid[]), CAST(:token AS uuid[]),
                         CAST(:status AS text[]), CAST(:image_path AS text[]),
                         CAST(:thumbnail_path AS text[]), CAST(:input_tokens AS int[]),
                         CAST(:output_tokens AS int[]), CAST(:error_code AS text[]),
                         CAST(:error_message AS text[]), CAST(:latency_ms AS int[]))
                  AS i(task_id, token, status, image_path, thumbnail_path, input_tokens,
                       output_tokens, error_code, error_message, latency_ms)
), done AS (
    UPDATE generation_tasks t
       SET status = i.status, latency_ms = i.latency_ms,
           image_path = COALESCE(i.image_path, t.image_path),
           thumbnail_path = COALESCE(i.thumbnail_path, t.thumbnail_path),
           input_tokens = COALESCE(i.input_tokens, t.input_tokens),
           output_tokens = COALESCE(i.output_tokens, t.output_tokens),
           last_error_code = COALESCE(i.error_code, t.last_error_code),
           last_error = COALESCE(i.error_message, t.last_error),
           lease_until = NULL, finished_at = now(), updated_at = now()
      FROM input i
     WHERE t.id = i.task_id AND t.status = 'running' AND t.claim_token = i.token
       AND i.status IN ('succeeded', 'failed')
 RETURNING t.id, t.job_id, t.status
), counted AS MATERIALIZED (
    SELECT job_id, count(*) FILTER (WHERE status = 'succeeded')::int AS succeeded,
           count(*) FILTER (WHERE status = 'failed')::int AS failed
      FROM done GROUP BY job_id ORDER BY job_id
), jobs AS MATERIALIZED (
    SELECT job.* FROM counted c
     CROSS JOIN LATERAL job_tasks_ended(c.job_id, c.succeeded, c.failed) job
)
SELECT d.id AS task_id, jobs.id, jobs.status, jobs.total_tasks, jobs.completed_tasks,
       jobs.failed_tasks, jobs.cancelled_tasks
  FROM done d JOIN jobs ON jobs.id = d.job_id;

-- name: release_task

-- A retryable failure with attempts left, or a graceful stop: back to queued, due after
-- :delay_s (the backoff or Retry-After the table decided: a claim before then is refused).
-- :free_attempt gives the attempt back (core.delivery.retry: a rate limit within its budget, a
-- stop); :rate_limited starts or continues the rate-limit streak, anything else ends it.
-- Token-guarded like complete_task.
UPDATE generation_tasks
   SET status = 'queued', last_error_code = :error_code, last_error = :error_message,
       latency_ms = :latency_ms, lease_until = NULL, lease_owner = NULL, lease_boot = NULL,
       free_attempts = free_attempts + CASE WHEN :free_attempt THEN 1 ELSE 0 END,
       rate_limited_since = CASE WHEN :rate_limited THEN COALESCE(rate_limited_since, now())
                                 ELSE NULL END,
       next_attempt_at = now() + make_interval(secs => :delay_s), updated_at = now()
 WHERE id = :task_id AND status = 'running' AND claim_token = :token;

-- name: take_over_abandoned

-- Tasks whose holder stopped: running with an expired lease (:owner NULL), or running
-- under a previous boot of :owner (a restarted process frees its rows at once). Each
-- counts a crash; below :max_attempts charged attempts it goes back to :to_status
-- ('queued' for the local queue, 'pending' to be handed to Cloud Tasks again under a new
-- dispatch generation), due now; at the limit it fails as worker_crashed and its job's
-- counters move in the same statement (rule: core.delivery.leases.crash_verdict;
-- job_tasks_ended, in job id order). Clearing the token makes a late answer of the dead
-- holder change nothing. job_status: the status of the task's job after the statement when
-- tasks of it failed here (NULL otherwise); reading it is also what runs job_tasks_ended
-- for each such job, as a SELECT in WITH runs only as far as the main query reads it.
WITH gone AS (
    SELECT id FROM generation_tasks
     WHERE status = 'running'
       AND ((CAST(:owner AS text) IS NULL AND lease_until < now())
            OR (lease_owner = CAST(:owner AS text) AND lease_boot <> CAST(:boot AS uuid)))
       AND (CAST(:task_ids AS uuid[]) IS NULL OR id = ANY(CAST(:task_ids AS uuid[])))
     ORDER BY lease_until
     LIMIT :limit
       FOR UPDATE SKIP LOCKED
), moved AS (
    UPDATE generation_tasks t
       SET status = CASE WHEN t.attempts - t.free_attempts >= :max_attempts THEN 'failed'
                         ELSE CAST(:to_status AS text) END,
           crashes = t.crashes + 1,
           last_error_code = 'worker_crashed',
           last_error = 'the worker stopped ' || (t.crashes + 1) || ' times during this task',
           dispatch_generation = t.dispatch_generation
               + CASE WHEN t.attempts - t.free_attempts < :max_attempts
                           AND CAST(:to_status AS text) = 'pending' THEN 1 ELSE 0 END,
           finished_at = CASE WHEN t.attempts - t.free_attempts >= :max_attempts
                              THEN now() END,
           lease_until = NULL, lease_owner = NULL, lease_boot = NULL, claim_token = NULL,
           next_attempt_at = now(), updated_at = now()
      FROM gone
     WHERE t.id = gone.id
 RETURNING t.id, t.job_id, t.status, t.dispatch_generation, t.crashes, t.attempts
), jobs AS MATERIALIZED (
    SELECT * FROM jobs_tasks_failed(ARRAY(SELECT job_id FROM moved WHERE status = 'failed'))
)
SELECT m.id, m.job_id, m.status, m.dispatch_generation, m.crashes, m.attempts,
       jobs.status AS job_status
  FROM moved m LEFT JOIN jobs ON jobs.id = m.job_id;
