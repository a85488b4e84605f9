-- Queries of the Cloud Tasks dispatcher (core/dispatch/cloud_tasks.py).

-- name: mark_tasks_queued_named
-- Hand-over to Cloud Tasks: each row records the name of its Cloud Tasks task. Only rows
-- still pending move (a delivery may already have claimed the task), so a repeated
-- enqueue changes nothing.
UPDATE generation_tasks AS t
   SET status = 'queued', next_attempt_at = now(), updated_at = now(),
       cloud_task_name = v.name
  FROM unnest(CAST(:ids AS uuid[]), CAST(:names AS text[])) AS v(id, name)
 WHERE t.id = v.id AND t.status = 'pending';
