-- Job search (core.jobs.search): by name, tag or prompt text, and filters. Two statements, not
-- one with "IS NULL OR" switches. The prompt test is an EXISTS, which PostgreSQL plans
-- as a choice: a rare word is looked up once through the trigram index
-- (generation_tasks_prompt_trgm_idx, a hashed subplan); a common one is checked job by
-- job, newest first, through generation_tasks_job_status_idx, stopping at the page's end.
-- core.jobs.search plans it for each text (plan_cache_mode), as the choice depends on it.

-- name: search_jobs_text
SELECT id, status, total_tasks, completed_tasks, failed_tasks, cancelled_tasks, style,
       count_per_prompt, provider, model, size, quality, estimated_cost_usd,
       created_at, updated_at, started_at, finished_at, name, tags, submitted_by
  FROM generation_jobs j
 WHERE (CAST(:statuses AS text[]) IS NULL OR j.status = ANY(CAST(:statuses AS text[])))
   AND (CAST(:created_after AS timestamptz) IS NULL OR j.created_at >= :created_after)
   AND (CAST(:created_before AS timestamptz) IS NULL OR j.created_at < :created_before)
   AND (CAST(:tag AS text) IS NULL OR j.tags @> ARRAY[CAST(:tag AS text)])
   AND (CAST(:submitted_by AS text) IS NULL OR j.submitted_by = :submitted_by)
   AND (j.name ILIKE :pattern
        OR j.tags @> ARRAY[CAST(:word AS text)]
        OR EXISTS (SELECT 1 FROM generation_tasks t
                    WHERE t.job_id = j.id AND t.image_index = 0
                      AND t.prompt ILIKE :pattern))
 ORDER BY j.created_at DESC
 LIMIT :limit OFFSET :offset;

-- name: search_jobs_filter
SELECT id, status, total_tasks, completed_tasks, failed_tasks, cancelled_tasks, style,
       count_per_prompt, provider, model, size, quality, estimated_cost_usd,
       created_at, updated_at, started_at, finished_at, name, tags, submitted_by
  FROM generation_jobs j
 WHERE (CAST(:statuses AS text[]) IS NULL OR j.status = ANY(CAST(:statuses AS text[])))
   AND (CAST(:created_after AS timestamptz) IS NULL OR j.created_at >= :created_after)
   AND (CAST(:created_before AS timestamptz) IS NULL OR j.created_at < :created_before)
   AND (CAST(:tag AS text) IS NULL OR j.tags @> ARRAY[CAST(:tag AS text)])
   AND (CAST(:submitted_by AS text) IS NULL OR j.submitted_by = :submitted_by)
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
