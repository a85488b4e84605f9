-- What several statements read or move alike, spelled once: a job's columns as every
-- reading sees them (job_views), a job's standing in the order of work (job_shares), the
-- status after an undeliverable try, the jobs of failed tasks moved in id order, and the
-- job list's filters.

-- A job as every reading of it sees it: the columns of core.jobs.views.JobView, in its
-- order (job_by_id, list_jobs, the searches).
CREATE OR REPLACE VIEW job_views AS
SELECT id, status, total_tasks, completed_tasks, failed_tasks, cancelled_tasks, style,
       count_per_prompt, provider, model, size, quality, estimated_cost_usd,
       created_at, updated_at, started_at, finished_at,
       mode, batch_fallback, output_format, output_compression, background, moderation,
       name, tags, submitted_by, priority, max_cost_usd, spent_usd
  FROM generation_jobs;

-- A job's standing in the order of work (rule: core/dispatch/fair.py): its priority's rank,
-- the tasks it has left, and its spend projected from the last check (spent_usd, plus one
-- image at spend_unit_usd per task succeeded since). Read by both claims (the local
-- dispatcher's and the Cloud Tasks window's) and by jobs_at_cap.
CREATE OR REPLACE VIEW job_shares AS
SELECT id, status, created_at, submitted_by, max_cost_usd,
       CASE priority WHEN 'high' THEN 0 WHEN 'low' THEN 2 ELSE 1 END AS priority_rank,
       total_tasks - completed_tasks - failed_tasks - cancelled_tasks AS tasks_left,
       COALESCE(spent_usd, 0)
           + GREATEST(completed_tasks - spent_tasks, 0) * COALESCE(spend_unit_usd, 0)
           AS spent_usd,
       COALESCE(spend_unit_usd, 0) AS unit_usd
  FROM generation_jobs;

-- A task's status after an undeliverable try (core.dispatch.undeliverable): failed once
-- its tries reach the limit, as it was before that.
CREATE OR REPLACE FUNCTION undeliverable_status(status text, tries integer, max_tries integer)
    RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN tries >= max_tries THEN 'failed' ELSE status END
$$;

-- The jobs of tasks that just failed, one job id per failed task (any order): each job's
-- counters move once by its number (job_tasks_ended), in job id order, so two statements
-- lock the job rows they share in the same order. Returns each job's id and new status.
CREATE OR REPLACE FUNCTION jobs_tasks_failed(job_ids uuid[])
    RETURNS TABLE (id uuid, status text)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    WITH failed AS MATERIALIZED (
        SELECT f.job_id, count(*)::int AS n FROM unnest(job_ids) AS f(job_id)
         GROUP BY f.job_id ORDER BY f.job_id
    )
    SELECT job.id, job.status
      FROM failed CROSS JOIN LATERAL job_tasks_ended(failed.job_id, 0, failed.n) job;
END
$$;

-- Whether a job passes the job list's filters (core.jobs.search); a NULL filter passes
-- everything. Plain SQL, so the planner inlines it into the searches' WHERE: the indexes on
-- status, created_at, tags and submitted_by serve it as if it were written there.
CREATE OR REPLACE FUNCTION job_listed(status text, created_at timestamptz, tags text[],
                                      submitted_by text, statuses text[],
                                      created_after timestamptz, created_before timestamptz,
                                      tag text, by_submitter text)
    RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT (statuses IS NULL OR status = ANY(statuses))
       AND (created_after IS NULL OR created_at >= created_after)
       AND (created_before IS NULL OR created_at < created_before)
       AND (tag IS NULL OR tags @> ARRAY[tag])
       AND (by_submitter IS NULL OR submitted_by = by_submitter)
$$;
