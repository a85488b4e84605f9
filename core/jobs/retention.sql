-- Deleting jobs (core.jobs.retention): by an operator, or when JOB_RETENTION_DAYS has passed.

-- name: live_running_tasks
-- Running tasks whose lease is still live: their delivery may still write an image.
SELECT count(*) AS n
  FROM generation_tasks
 WHERE job_id = :job_id AND status = 'running' AND lease_until > now();

-- name: job_object_keys
SELECT image_path, thumbnail_path
  FROM generation_tasks
 WHERE job_id = :job_id AND (image_path IS NOT NULL OR thumbnail_path IS NOT NULL);

-- name: delete_job_row
-- Tasks and notifications go with it (ON DELETE CASCADE).
DELETE FROM generation_jobs WHERE id = :job_id
RETURNING id, status, total_tasks, name, submitted_by;

-- name: expired_jobs
SELECT id
  FROM generation_jobs
 WHERE status IN ('completed', 'completed_with_errors', 'failed', 'cancelled')
   AND finished_at < now() - make_interval(days => :days)
 ORDER BY finished_at
 LIMIT :limit;
