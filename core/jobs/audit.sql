-- The audit log (core.jobs.audit): who did what to which job, and when.

-- name: audit_insert
INSERT INTO audit_log (actor, action, job_id, detail)
VALUES (:actor, :action, :job_id, CAST(:detail AS jsonb));

-- name: audit_entries
SELECT id, at, actor, action, job_id, detail
  FROM audit_log
 WHERE (CAST(:job_id AS uuid) IS NULL OR job_id = :job_id)
 ORDER BY at DESC, id DESC
 LIMIT :limit;
