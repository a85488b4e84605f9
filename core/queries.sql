-- Every hot query of AIWebImageService, by name. Binds are :named (SQLAlchemy text()).
-- Task status: pending -> queued -> running -> succeeded | failed | cancelled.

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
-- The delivery contract's claim: one conditional UPDATE. A due queued (or still pending,
-- when Cloud Tasks delivers before our hand-over commits) task, or a running one whose
-- lease has expired, becomes running with a fresh lease owned by :owner / :boot under a new
-- :token; the attempt count moves here, once per delivery that reached the handler, and
-- never below the queue's own count. A delivery before next_attempt_at (the backoff or
-- Retry-After a release stored) claims nothing. Taking over an expired lease is a crash of
-- its holder: it counts, and at :max_attempts charged attempts the takeover is refused here
-- and take_over_abandoned fails the task as worker_crashed (rule: core.leases).
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
-- A live handler extends its lease (core.leases.RENEW_EVERY_S). No row: the token is gone
-- (lease taken over, task finished or retried meanwhile), so this delivery stops writing.
UPDATE generation_tasks
   SET lease_until = now() + make_interval(secs => :lease_s)
 WHERE id = :task_id AND status = 'running' AND claim_token = :token;

-- name: complete_task
-- Success. Guarded by the claim token, so a delivery whose lease expired and whose task
-- was claimed again (or retried after failing) cannot finish it; the job counter moves in
-- the same statement, exactly once per task. The job's status follows in the same
-- statement too (core.status.job_status_after, spelled in SQL for a success; the caller
-- checks the result against the Python rule): one autocommit statement holds the job row's
-- lock for the statement and its commit only, not for a client round trip, so many
-- deliveries of one job do not queue behind each other on that row.
WITH done AS (
    UPDATE generation_tasks
       SET status = 'succeeded', image_path = :image_path, thumbnail_path = :thumbnail_path,
           latency_ms = :latency_ms, input_tokens = :input_tokens,
           output_tokens = :output_tokens, lease_until = NULL,
           finished_at = now(), updated_at = now()
     WHERE id = :task_id AND status = 'running' AND claim_token = :token
 RETURNING job_id
)
UPDATE generation_jobs j
   SET completed_tasks = j.completed_tasks + 1, updated_at = now(),
       -- the counters after this statement (job_status_after, sql/init_db.sql)
       status = job_status_after(j.status, j.total_tasks,
                                 j.completed_tasks + 1, j.failed_tasks, j.cancelled_tasks),
       finished_at = job_finished_at_after(j.status, j.finished_at, j.total_tasks,
                                           j.completed_tasks + 1, j.failed_tasks, j.cancelled_tasks)
  FROM done
 WHERE j.id = done.job_id
RETURNING j.id, j.status, j.total_tasks, j.completed_tasks, j.failed_tasks, j.cancelled_tasks;

-- name: fail_task
-- Permanent failure, or the last allowed attempt failed. Token-guarded; counter and status
-- in one statement, as complete_task.
WITH done AS (
    UPDATE generation_tasks
       SET status = 'failed', last_error_code = :error_code, last_error = :error_message,
           latency_ms = :latency_ms, lease_until = NULL,
           finished_at = now(), updated_at = now()
     WHERE id = :task_id AND status = 'running' AND claim_token = :token
 RETURNING job_id
)
UPDATE generation_jobs j
   SET failed_tasks = j.failed_tasks + 1, updated_at = now(),
       -- the counters after this statement (job_status_after, sql/init_db.sql)
       status = job_status_after(j.status, j.total_tasks,
                                 j.completed_tasks, j.failed_tasks + 1, j.cancelled_tasks),
       finished_at = job_finished_at_after(j.status, j.finished_at, j.total_tasks,
                                           j.completed_tasks, j.failed_tasks + 1, j.cancelled_tasks)
  FROM done
 WHERE j.id = done.job_id
RETURNING j.id, j.status, j.total_tasks, j.completed_tasks, j.failed_tasks, j.cancelled_tasks;

-- name: claim_tasks
-- claim_task for many deliveries at once (core.group_commit: the claims that arrive while
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

-- name: complete_tasks
-- complete_task for many deliveries at once (core.group_commit). Each task row is guarded
-- by its own claim token as in complete_task; each job's counter moves once per statement
-- by the number of its tasks that succeeded here, and its status follows as there (with
-- + n for + 1). The job rows are locked in id order first (locked), so two statements
-- over the same jobs cannot deadlock. One result row per task that this statement
-- completed, with its job's counters after the statement; a task not returned was not
-- this delivery's any more.
WITH input AS (
    SELECT * FROM unnest(CAST(:task_id AS uuid[]), CAST(:token AS uuid[]),
                         CAST(:image_path AS text[]), CAST(:thumbnail_path AS text[]),
                         CAST(:latency_ms AS int[]), CAST(:input_tokens AS int[]),
                         CAST(:output_tokens AS int[]))
                  AS i(task_id, token, image_path, thumbnail_path, latency_ms, input_tokens,
                       output_tokens)
), done AS (
    UPDATE generation_tasks t
       SET status = 'succeeded', image_path = i.image_path,
           thumbnail_path = i.thumbnail_path, latency_ms = i.latency_ms,
           input_tokens = i.input_tokens, output_tokens = i.output_tokens,
           lease_until = NULL, finished_at = now(), updated_at = now()
      FROM input i
     WHERE t.id = i.task_id AND t.status = 'running' AND t.claim_token = i.token
 RETURNING t.id, t.job_id
), counted AS (
    SELECT job_id, count(*)::int AS n FROM done GROUP BY job_id
), locked AS MATERIALIZED (
    SELECT j.id FROM generation_jobs j
     WHERE j.id IN (SELECT job_id FROM counted)
     ORDER BY j.id
       FOR UPDATE
), jobs AS (
    UPDATE generation_jobs j
       SET completed_tasks = j.completed_tasks + c.n, updated_at = now(),
           -- the counters after this statement (job_status_after, sql/init_db.sql)
           status = job_status_after(j.status, j.total_tasks,
                                     j.completed_tasks + c.n, j.failed_tasks, j.cancelled_tasks),
           finished_at = job_finished_at_after(j.status, j.finished_at, j.total_tasks,
                                               j.completed_tasks + c.n, j.failed_tasks, j.cancelled_tasks)
      FROM counted c JOIN locked l ON l.id = c.job_id
     WHERE j.id = c.job_id
 RETURNING j.id, j.status, j.total_tasks, j.completed_tasks, j.failed_tasks,
           j.cancelled_tasks
)
SELECT d.id AS task_id, jobs.id, jobs.status, jobs.total_tasks, jobs.completed_tasks,
       jobs.failed_tasks, jobs.cancelled_tasks
  FROM done d JOIN jobs ON jobs.id = d.job_id;

-- name: fail_tasks
-- fail_task for many deliveries at once (core.group_commit), as complete_tasks is
-- complete_task's: token-guarded rows, each job's counter once by n, job rows locked in
-- id order.
WITH input AS (
    SELECT * FROM unnest(CAST(:task_id AS uuid[]), CAST(:token AS uuid[]),
                         CAST(:error_code AS text[]), CAST(:error_message AS text[]),
                         CAST(:latency_ms AS int[]))
                  AS i(task_id, token, error_code, error_message, latency_ms)
), done AS (
    UPDATE generation_tasks t
       SET status = 'failed', last_error_code = i.error_code,
           last_error = i.error_message, latency_ms = i.latency_ms, lease_until = NULL,
           finished_at = now(), updated_at = now()
      FROM input i
     WHERE t.id = i.task_id AND t.status = 'running' AND t.claim_token = i.token
 RETURNING t.id, t.job_id
), counted AS (
    SELECT job_id, count(*)::int AS n FROM done GROUP BY job_id
), locked AS MATERIALIZED (
    SELECT j.id FROM generation_jobs j
     WHERE j.id IN (SELECT job_id FROM counted)
     ORDER BY j.id
       FOR UPDATE
), jobs AS (
    UPDATE generation_jobs j
       SET failed_tasks = j.failed_tasks + c.n, updated_at = now(),
           -- the counters after this statement (job_status_after, sql/init_db.sql)
           status = job_status_after(j.status, j.total_tasks,
                                     j.completed_tasks, j.failed_tasks + c.n, j.cancelled_tasks),
           finished_at = job_finished_at_after(j.status, j.finished_at, j.total_tasks,
                                               j.completed_tasks, j.failed_tasks + c.n, j.cancelled_tasks)
      FROM counted c JOIN locked l ON l.id = c.job_id
     WHERE j.id = c.job_id
 RETURNING j.id, j.status, j.total_tasks, j.completed_tasks, j.failed_tasks,
           j.cancelled_tasks
)
SELECT d.id AS task_id, jobs.id, jobs.status, jobs.total_tasks, jobs.completed_tasks,
       jobs.failed_tasks, jobs.cancelled_tasks
  FROM done d JOIN jobs ON jobs.id = d.job_id;

-- name: release_task
-- A retryable failure with attempts left, or a graceful stop: back to queued, due after
-- :delay_s (the backoff or Retry-After the table decided: a claim before then is refused).
-- :free_attempt gives the attempt back (core.retry: a rate limit within its budget, a
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
-- counters move in the same statement (rule: core.leases.crash_verdict). Clearing the
-- token makes a late answer of the dead holder change nothing.
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
), failed AS (
    SELECT job_id, count(*) AS n FROM moved WHERE status = 'failed' GROUP BY job_id
), counted AS (
    UPDATE generation_jobs j
       SET failed_tasks = j.failed_tasks + f.n, updated_at = now(),
           -- the counters after this statement (job_status_after, sql/init_db.sql)
           status = job_status_after(j.status, j.total_tasks,
                                     j.completed_tasks, j.failed_tasks + f.n, j.cancelled_tasks),
           finished_at = job_finished_at_after(j.status, j.finished_at, j.total_tasks,
                                               j.completed_tasks, j.failed_tasks + f.n, j.cancelled_tasks)
      FROM failed f
     WHERE j.id = f.job_id
)
SELECT id, job_id, status, dispatch_generation, crashes, attempts FROM moved;

-- name: free_dispatch_holds
-- The local dispatcher's holds on queued rows from a previous boot of :owner (deliveries it
-- had in flight when it stopped): visible again at once.
UPDATE generation_tasks
   SET lease_until = NULL, lease_owner = NULL, lease_boot = NULL
 WHERE status = 'queued' AND lease_owner = :owner AND lease_boot <> CAST(:boot AS uuid);

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
SELECT id, status, total_tasks, completed_tasks, failed_tasks, cancelled_tasks, style,
       count_per_prompt, provider, model, size, quality, estimated_cost_usd,
       created_at, updated_at, started_at, finished_at,
       mode, batch_fallback, output_format, output_compression, background, moderation,
       name, tags, submitted_by, priority, max_cost_usd, spent_usd
  FROM generation_jobs
 WHERE id = :job_id;

-- name: list_jobs
SELECT id, status, total_tasks, completed_tasks, failed_tasks, cancelled_tasks, style,
       count_per_prompt, provider, model, size, quality, estimated_cost_usd,
       created_at, updated_at, started_at, finished_at,
       mode, batch_fallback, output_format, output_compression, background, moderation,
       name, tags, submitted_by, priority, max_cost_usd, spent_usd
  FROM generation_jobs
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

-- name: dispatch_claim_due
-- The local dispatcher's claim: due queued tasks that no delivery holds, chosen by fair
-- share (issue 13, rule: core.dispatch.fair.order_key, checked against this by
-- tests/integration/test_fair_share.py). Per running job its deliveries in flight (held or
-- leased, generation_tasks_in_flight_idx) and its first due tasks are read; each candidate
-- is the job's nth delivery in flight; the order is (1) a starved job's first delivery
-- (nothing in flight and no delivery finished for :starvation_s, or since it was
-- submitted: lower priority is slowed, never starved), (2) priority high, normal, low,
-- (3) the smallest nth (round-robin: equal shares between jobs of one priority), (4) fewer
-- tasks left, then the older job. A job whose spend cap (max_cost_usd, projected with
-- spend_unit_usd for what is in flight and what this claim starts) or whose budget
-- (spend_holds, core.spend) is reached starts nothing: its tasks wait queued, they do not
-- fail. The hold is a short lease on the queued row (lease_until, owner, boot) that hides it
-- from other dispatchers while its delivery is on the way to the handler, like a visibility
-- timeout; the handler's claim replaces it with the task's own lease. If this process dies,
-- its next boot frees its holds (free_dispatch_holds), or they run out. Running rows are not
-- taken here: take_over_abandoned decides about expired leases. A paused queue claims
-- nothing: checked in the same statement (a one-time filter), which saves the dispatcher a
-- round trip per claim.
WITH jobs AS MATERIALIZED (
    SELECT j.id, j.created_at, j.max_cost_usd,
           CASE j.priority WHEN 'high' THEN 0 WHEN 'low' THEN 2 ELSE 1 END AS priority_rank,
           f.in_flight,
           job_starved(j.id, j.created_at, f.in_flight, :starvation_s) AS starved,
           j.total_tasks - j.completed_tasks - j.failed_tasks - j.cancelled_tasks
               AS tasks_left,
           COALESCE(j.spent_usd, 0)
               + GREATEST(j.completed_tasks - j.spent_tasks, 0) * COALESCE(j.spend_unit_usd, 0)
               AS spent_usd,
           COALESCE(j.spend_unit_usd, 0) AS unit_usd
      FROM generation_jobs j
     CROSS JOIN LATERAL (SELECT count(*) AS in_flight FROM generation_tasks a
                          WHERE a.job_id = j.id AND a.lease_until IS NOT NULL
                            AND a.status IN ('queued', 'running')) f
     WHERE j.status IN ('pending', 'running')
       AND NOT EXISTS (SELECT 1 FROM queue_state
                        WHERE queue_name = :queue_name AND paused)
       AND NOT EXISTS (SELECT 1 FROM spend_holds h
                        WHERE h.held AND (h.scope = 'daily'
                                          OR h.scope = 'key:' || j.submitted_by))
), due AS (
    SELECT c.id, c.next_attempt_at, jobs.created_at, jobs.priority_rank, jobs.max_cost_usd,
           jobs.spent_usd, jobs.unit_usd, jobs.starved, jobs.tasks_left,
           jobs.in_flight + row_number() OVER (PARTITION BY jobs.id
                                               ORDER BY c.next_attempt_at, c.id) AS nth
      FROM jobs CROSS JOIN LATERAL (
           SELECT t.id, t.next_attempt_at FROM generation_tasks t
            WHERE t.job_id = jobs.id AND t.status = 'queued' AND t.next_attempt_at <= now()
              AND (t.lease_until IS NULL OR t.lease_until < now())
            ORDER BY t.next_attempt_at
            LIMIT :limit) c
), chosen AS (
    SELECT id FROM due
     WHERE max_cost_usd IS NULL OR spent_usd + nth * unit_usd <= max_cost_usd
     ORDER BY CASE WHEN nth = 1 AND starved THEN -1 ELSE priority_rank END, nth,
              tasks_left, created_at, next_attempt_at
     LIMIT :limit
), locked AS (
    -- Only the chosen rows are locked (not every job's candidates); a row another
    -- dispatcher holds is skipped, and the state is checked again under the lock.
    SELECT t.id FROM generation_tasks t
     WHERE t.id IN (SELECT id FROM chosen) AND t.status = 'queued'
       AND (t.lease_until IS NULL OR t.lease_until < now())
       FOR UPDATE SKIP LOCKED
)
UPDATE generation_tasks t
   SET lease_until = now() + make_interval(secs => :visibility_s),
       lease_owner = :owner, lease_boot = :boot
  FROM locked
 WHERE t.id = locked.id
RETURNING t.id, t.attempts, t.lease_until;

-- name: dispatch_defer
-- A delivery that did not reach the handler (worker unreachable): due again after
-- :delay_s, unless a handler claimed it meanwhile (the hold, :marker, is gone then).
UPDATE generation_tasks
   SET next_attempt_at = GREATEST(next_attempt_at, now() + make_interval(secs => :delay_s)),
       lease_until = NULL, lease_owner = NULL, lease_boot = NULL
 WHERE id = :task_id AND status = 'queued' AND lease_until = :marker;

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
