-- Job-end webhooks (core.jobs.notify). Rows are written by the generation_jobs_notify_end
-- trigger (sql/init_db.sql, version 7) in the transaction that ends the job.

-- name: notification_claim_due
-- Like the local dispatcher's claim: pushing next_attempt_at forward hides the row from
-- other senders while its POST is in flight; if this process dies it comes back then.
UPDATE job_notifications n
   SET attempts = n.attempts + 1,
       next_attempt_at = now() + make_interval(secs => :visibility_s)
 WHERE n.id IN (SELECT id FROM job_notifications
                 WHERE status = 'pending' AND next_attempt_at <= now()
                 ORDER BY next_attempt_at
                 LIMIT :limit
                   FOR UPDATE SKIP LOCKED)
RETURNING n.id, n.job_id, n.job_status, n.attempts;

-- name: notification_job
SELECT id, name, status, total_tasks, completed_tasks, failed_tasks, cancelled_tasks,
       estimated_cost_usd, webhook_url, submitted_by, tags, created_at, finished_at
  FROM generation_jobs
 WHERE id = :job_id;

-- name: notification_done
-- Sent, skipped (no URL) or given up; guarded by the attempt that claimed it.
UPDATE job_notifications
   SET status = :status, last_error = :error,
       sent_at = CASE WHEN :status = 'sent' THEN now() ELSE sent_at END
 WHERE id = :id AND status = 'pending' AND attempts = :attempt;

-- name: notification_retry
UPDATE job_notifications
   SET last_error = :error, next_attempt_at = now() + make_interval(secs => :delay_s)
 WHERE id = :id AND status = 'pending' AND attempts = :attempt;

-- name: notifications_of_job
SELECT id, job_status, status, attempts, last_error, created_at, sent_at
  FROM job_notifications
 WHERE job_id = :job_id
 ORDER BY id;
