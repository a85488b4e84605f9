-- Deliveries that never reached the task handler (core.dispatch.undeliverable).

-- name: record_undeliverable
-- One statement: the cause is upserted into delivery_problems, the task counts one more
-- undeliverable try (last_error says what and where, never a secret), and at :max_tries
-- it fails as `undeliverable` with the job's counters and status moved as in end_tasks
-- (job_tasks_ended). job_status: that job's status after it (NULL while the task lives on);
-- reading it is also what runs job_tasks_ended, as a SELECT in WITH runs only as far as the
-- main query reads it.
-- :marker guards a local dispatcher's hold (its lease_until on the queued row); NULL skips
-- the guard (the Cloud Tasks sweeper, which holds no claim).
WITH problem AS (
    INSERT INTO delivery_problems (cause, url, detail, occurrences, first_seen, last_seen)
    VALUES (:cause, :url, :detail, 1, now(), now())
    ON CONFLICT (cause) DO UPDATE
       SET url = EXCLUDED.url, detail = EXCLUDED.detail,
           occurrences = LEAST(delivery_problems.occurrences, 2000000000) + 1, last_seen = now()
    RETURNING cause
), task AS (
    UPDATE generation_tasks
       SET undeliverable_tries = undeliverable_tries + 1,
           last_error_code = 'undeliverable', last_error = :detail,
           status = undeliverable_status(status, undeliverable_tries + 1, :max_tries),
           finished_at = CASE WHEN undeliverable_tries + 1 >= :max_tries THEN now()
                              ELSE finished_at END,
           -- A local dispatcher's hold (:marker) is dropped with the try; a running row's
           -- lease (the Cloud Tasks sweeper, no marker) is kept unless the task fails.
           lease_until = CASE WHEN undeliverable_tries + 1 >= :max_tries
                                   OR CAST(:marker AS timestamptz) IS NOT NULL THEN NULL
                              ELSE lease_until END,
           lease_owner = CASE WHEN undeliverable_tries + 1 >= :max_tries
                                   OR CAST(:marker AS timestamptz) IS NOT NULL THEN NULL
                              ELSE lease_owner END,
           lease_boot = CASE WHEN undeliverable_tries + 1 >= :max_tries
                                  OR CAST(:marker AS timestamptz) IS NOT NULL THEN NULL
                             ELSE lease_boot END,
           -- Spread like the retry backoff: min * 2^tries, capped.
           next_attempt_at = now() + make_interval(secs => LEAST(
               CAST(:max_delay_s AS float8),
               CAST(:min_delay_s AS float8) * power(2, undeliverable_tries))),
           updated_at = now()
     WHERE id = :task_id AND status IN ('queued', 'running')
       AND (CAST(:marker AS timestamptz) IS NULL OR lease_until = :marker)
 RETURNING job_id, status, undeliverable_tries
), job AS MATERIALIZED (
    SELECT * FROM jobs_tasks_failed(ARRAY(SELECT job_id FROM task WHERE status = 'failed'))
)
SELECT task.status, task.undeliverable_tries, job.status AS job_status
  FROM task LEFT JOIN job ON job.id = task.job_id;

-- name: recent_delivery_problems
SELECT cause, url, detail, occurrences,
       EXTRACT(EPOCH FROM (now() - last_seen))::float AS age_s
  FROM delivery_problems
 WHERE last_seen > now() - make_interval(secs => :window_s)
 ORDER BY last_seen DESC;

-- name: record_dropped_by_queue
-- Cloud Tasks mode (core.dispatch.cloudtasks.sweeper.sweep_stranded): the queue gave up on
-- these tasks and our handler never answered one of their deliveries (attempts = 0), so
-- each hand-over the queue dropped is one undeliverable try; at :max_tries the task fails
-- as `undeliverable` instead of being handed over again every STRANDED_AFTER_S, forever.
-- The rows were just moved back to pending by requeue_stranded_tasks. The jobs of failed
-- tasks move as in end_tasks (jobs_tasks_failed); job_status as in record_undeliverable.
-- The caller adds a row's worth of occurrences to the cause (note_delivery_problem).
WITH task AS (
    UPDATE generation_tasks
       SET undeliverable_tries = undeliverable_tries + 1,
           status = undeliverable_status(status, undeliverable_tries + 1, :max_tries),
           last_error_code = 'undeliverable', last_error = :detail, updated_at = now(),
           finished_at = CASE WHEN undeliverable_tries + 1 >= :max_tries THEN now()
                              ELSE finished_at END
     WHERE id = ANY(CAST(:ids AS uuid[])) AND status = 'pending' AND attempts = 0
 RETURNING id, job_id, status
), job AS MATERIALIZED (
    SELECT * FROM jobs_tasks_failed(ARRAY(SELECT job_id FROM task WHERE status = 'failed'))
)
SELECT task.id, task.status, job.status AS job_status
  FROM task LEFT JOIN job ON job.id = task.job_id;

-- name: note_delivery_problem
-- :n more occurrences of a cause (worker.refusals: this worker answered a Cloud Tasks
-- delivery 401/403; the Cloud Tasks checks, after record_dropped_by_queue and
-- record_undeliverable_seen, in their transaction). The count stops short of the column's
-- limit. record_undeliverable upserts the same way in its own statement (the local
-- dispatcher's, one round trip).
INSERT INTO delivery_problems AS p (cause, url, detail, occurrences, first_seen, last_seen)
VALUES (:cause, :url, :detail, :n, now(), now())
ON CONFLICT (cause) DO UPDATE
   SET url = EXCLUDED.url, detail = EXCLUDED.detail, last_seen = now(),
       occurrences = LEAST(p.occurrences, 2000000000) + EXCLUDED.occurrences;

-- name: undelivered_candidates
-- Cloud Tasks mode (core.dispatch.cloudtasks.undeliverable): rows handed to the queue that no
-- delivery has claimed (still queued), due and handed over more than :grace_s ago, and not
-- looked at in the last :grace_s (next_attempt_at records the last look, as the stranded
-- sweep's does; it stays <= now(), so a delivery still claims). Rows not looked at for
-- :window_s are the stranded sweep's. Oldest look first: a backlog is checked a slice per
-- round. generation_tasks_due_idx (status, next_attempt_at) answers it; none, no row read.
SELECT id, dispatch_generation, cloud_task_name
  FROM generation_tasks
 WHERE status = 'queued'
   AND next_attempt_at < now() - make_interval(secs => :grace_s)
   AND next_attempt_at > now() - make_interval(secs => :window_s)
   AND updated_at < now() - make_interval(secs => :grace_s)
 ORDER BY next_attempt_at
 LIMIT :limit;

-- name: touch_undelivered_checked
-- The queue holds these and nothing says they cannot be delivered: looked at now.
UPDATE generation_tasks
   SET next_attempt_at = now()
 WHERE id = ANY(CAST(:ids AS uuid[])) AND status = 'queued' AND next_attempt_at <= now();

-- name: leave_to_stranded_sweep
-- GetTask says the queue no longer holds these queued rows: put them at the head of the
-- stranded sweep's order (core.dispatch.cloudtasks.sweeper.sweep_stranded decides; it owns
-- re-handing over) and out of this check's window. Still <= now(), so a late delivery
-- claims as before.
UPDATE generation_tasks
   SET next_attempt_at = now() - make_interval(secs => :window_s + 1)
 WHERE id = ANY(CAST(:ids AS uuid[])) AND status = 'queued' AND next_attempt_at <= now();

-- name: record_undeliverable_seen
-- Cloud Tasks mode: the queue's own record of the current Cloud Task (its dispatch_count
-- and last attempt) says its deliveries do not reach the handler. Tries are the queue's
-- dispatch count, not one per look: a second look at the same count changes nothing, and
-- the problem's occurrences grow by the new dispatches only. At :max_tries the task fails
-- as `undeliverable` with the job's counters and status moved as in end_tasks (once: only
-- a queued row of :generation moves), when :may_fail (an unreachable target's tries must
-- also span a minute; a later look with the same count may then end it). job_status as in
-- record_undeliverable; new_tries: the occurrences the caller adds to the cause
-- (note_delivery_problem).
WITH before AS (
    SELECT id, undeliverable_tries AS old_tries
      FROM generation_tasks
     WHERE id = :task_id AND status = 'queued' AND dispatch_generation = :generation
       AND (undeliverable_tries < CAST(:tries AS integer)
            OR (CAST(:may_fail AS boolean) AND CAST(:tries AS integer) >= :max_tries))
       FOR UPDATE
), task AS (
    UPDATE generation_tasks t
       SET undeliverable_tries = GREATEST(t.undeliverable_tries, CAST(:tries AS integer)),
           last_error_code = 'undeliverable', last_error = :detail,
           status = CASE WHEN CAST(:may_fail AS boolean) AND CAST(:tries AS integer) >= :max_tries
                         THEN 'failed' ELSE t.status END,
           finished_at = CASE WHEN CAST(:may_fail AS boolean)
                                   AND CAST(:tries AS integer) >= :max_tries
                              THEN now() ELSE t.finished_at END,
           next_attempt_at = now(),
           updated_at = now()
      FROM before b
     WHERE t.id = b.id AND t.status = 'queued'
 RETURNING t.id, t.job_id, t.status, t.undeliverable_tries, b.old_tries
), job AS MATERIALIZED (
    SELECT * FROM jobs_tasks_failed(ARRAY(SELECT job_id FROM task WHERE status = 'failed'))
)
SELECT task.status, task.undeliverable_tries, job.status AS job_status,
       GREATEST(task.undeliverable_tries - task.old_tries, 0) AS new_tries
  FROM task LEFT JOIN job ON job.id = task.job_id;
