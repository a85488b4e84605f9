-- The queue as both modes see it: hand-over marks, the pending sweep, pause and depth.
-- Task status: pending -> queued -> running -> succeeded | failed | cancelled.

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
