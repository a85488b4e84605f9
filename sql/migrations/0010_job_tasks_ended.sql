-- One function moves a job's counters and status when tasks of it end; every statement that
-- ends a task calls it instead of spelling the UPDATE. job_status_after and
-- job_finished_at_after stay: this function uses them, and so do the statements of the
-- previous release, which may still be serving while this migration runs.

-- A job's counters after `succeeded` and `failed` of its tasks ended, its status and
-- finished_at following in the same UPDATE (job_status_after, job_finished_at_after: the
-- rule of core/status.py, checked by tests/integration/test_status_sql.py). Returns the
-- job's id, status and counters after the move; no row if the job is gone. Called by
-- core/delivery/tasks.sql, core/batch/batch.sql and core/dispatch/undeliverable.sql; a
-- statement that ends tasks of several jobs calls it once per job, in job id order, so
-- two statements lock the job rows they share in the same order. PL/pgSQL: its UPDATE is
-- planned once per connection, not at every call.
CREATE OR REPLACE FUNCTION job_tasks_ended(job uuid, succeeded integer, failed integer)
    RETURNS TABLE (id uuid, status text, total_tasks integer, completed_tasks integer,
                   failed_tasks integer, cancelled_tasks integer)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    UPDATE generation_jobs j
       SET completed_tasks = j.completed_tasks + succeeded,
           failed_tasks = j.failed_tasks + failed,
           status = job_status_after(j.status, j.total_tasks, j.completed_tasks + succeeded,
                                     j.failed_tasks + failed, j.cancelled_tasks),
           finished_at = job_finished_at_after(j.status, j.finished_at, j.total_tasks,
                                               j.completed_tasks + succeeded,
                                               j.failed_tasks + failed, j.cancelled_tasks),
           updated_at = now()
     WHERE j.id = job
    RETURNING j.id, j.status, j.total_tasks, j.completed_tasks, j.failed_tasks,
              j.cancelled_tasks;
END
$$;
