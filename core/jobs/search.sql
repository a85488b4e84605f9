-- Job search (core.jobs.search): by name, tag or prompt text, and filters (job_listed, in
-- sql/init_db.sql, which the planner inlines). Two statements, not one with an "IS NULL OR"
-- switch for the text. The prompt test is an EXISTS, which PostgreSQL plans
-- as a choice: a rare word is looked up once through the trigram index
-- (generation_tasks_prompt_trgm_idx, a hashed subplan); a common one is checked job by
-- job, newest first, through generation_tasks_job_status_idx, stopping at the page's end.
-- core.jobs.search plans it for each text (plan_cache_mode), as the choice depends on it.

-- name: search_jobs_text
SELECT j.* FROM job_views j
 WHERE job_listed(j.status, j.created_at, j.tags, j.submitted_by, :statuses, :created_after,
                  :created_before, :tag, :submitted_by)
   AND (j.name ILIKE :pattern
        OR j.tags @> ARRAY[CAST(:word AS text)]
        OR EXISTS (SELECT 1 FROM generation_tasks t
                    WHERE t.job_id = j.id AND t.image_index = 0
                      AND t.prompt ILIKE :pattern))
 ORDER BY j.created_at DESC
 LIMIT :limit OFFSET :offset;

-- name: search_jobs_filter
SELECT j.* FROM job_views j
 WHERE job_listed(j.status, j.created_at, j.tags, j.submitted_by, :statuses, :created_after,
                  :created_before, :tag, :submitted_by)
 ORDER BY j.created_at DESC
 LIMIT :limit OFFSET :offset;

-- name: job_labels
-- Name, tags and submitter of listed jobs, for pages whose rows come from elsewhere.
SELECT id, name, tags, submitted_by
  FROM generation_jobs
 WHERE id = ANY(CAST(:job_ids AS uuid[]));

-- name: prompt_index_exists
SELECT EXISTS (SELECT 1 FROM pg_indexes
                WHERE indexname = 'generation_tasks_prompt_trgm_idx') AS present;

-- name: submitters
-- Who has submitted jobs, for the dashboard's filter (served by the submitted_by index).
SELECT DISTINCT submitted_by FROM generation_jobs
 WHERE submitted_by IS NOT NULL ORDER BY submitted_by LIMIT 200;
