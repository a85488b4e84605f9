-- The dashboard's reads, by name (loaded with core/delivery/tasks.sql by core.db.queries).
-- Everything is aggregated or paged here, so a 10,000-task job never travels whole to a
-- page: the largest result is one page of rows or one point per time bucket.

-- name: report_recent_jobs
-- Recent jobs with how long they ran and what they cost so far. Cost so far is the
-- job's estimate scaled to the images that came out (a refused prompt is not billed).
SELECT id, status, total_tasks, completed_tasks, failed_tasks, cancelled_tasks, style,
       count_per_prompt, provider, model, size, quality, estimated_cost_usd,
       created_at, started_at, finished_at,
       EXTRACT(EPOCH FROM (COALESCE(finished_at, now()) - COALESCE(started_at, created_at)))
           ::float AS duration_s,
       CASE WHEN estimated_cost_usd IS NULL THEN NULL
            WHEN total_tasks = 0 THEN 0
            ELSE round(estimated_cost_usd * completed_tasks / total_tasks, 4)
       END AS cost_so_far_usd
  FROM generation_jobs
 WHERE (CAST(:statuses AS text[]) IS NULL OR status = ANY(CAST(:statuses AS text[])))
   AND (CAST(:created_after AS timestamptz) IS NULL OR created_at >= :created_after)
   AND (CAST(:created_before AS timestamptz) IS NULL OR created_at < :created_before)
 ORDER BY created_at DESC
 LIMIT :limit OFFSET :offset;

-- name: report_count_jobs
SELECT count(*) AS n
  FROM generation_jobs
 WHERE (CAST(:statuses AS text[]) IS NULL OR status = ANY(CAST(:statuses AS text[])))
   AND (CAST(:created_after AS timestamptz) IS NULL OR created_at >= :created_after)
   AND (CAST(:created_before AS timestamptz) IS NULL OR created_at < :created_before);

-- name: report_jobs_span
-- The time range a chart of these jobs must cover, and how many tasks they hold.
SELECT min(created_at) AS first_created,
       max(COALESCE(finished_at, now())) AS last_moment,
       COALESCE(sum(total_tasks), 0)::bigint AS total_tasks
  FROM generation_jobs
 WHERE id = ANY(CAST(:job_ids AS uuid[]));

-- name: report_jobs_created
-- When each charted job appeared and how many tasks it brought.
SELECT created_at, total_tasks
  FROM generation_jobs
 WHERE id = ANY(CAST(:job_ids AS uuid[]))
 ORDER BY created_at;

-- name: report_task_state_series
-- Burn-up of the selected jobs: tasks finished per outcome, cumulative, one row per time
-- bucket in which something finished. Served by generation_tasks_finished_idx.
WITH per_bucket AS (
    SELECT date_bin(make_interval(secs => :bucket_s), finished_at,
                    TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
           count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           count(*) FILTER (WHERE status = 'cancelled') AS cancelled
      FROM generation_tasks
     WHERE job_id = ANY(CAST(:job_ids AS uuid[])) AND finished_at IS NOT NULL
     GROUP BY 1
)
SELECT bucket,
       (sum(succeeded) OVER w)::bigint AS succeeded,
       (sum(failed) OVER w)::bigint AS failed,
       (sum(cancelled) OVER w)::bigint AS cancelled
  FROM per_bucket
WINDOW w AS (ORDER BY bucket)
 ORDER BY bucket;

-- name: report_job_performance
-- Throughput and latency of one job. Latency percentiles count succeeded tasks only: a
-- refused prompt answers fast and would flatter the figures.
WITH e AS (
    SELECT CASE WHEN EXISTS (SELECT 1 FROM generation_tasks u
                              WHERE u.job_id = :job_id
                                AND u.status IN ('pending', 'queued', 'running'))
                THEN now()
                ELSE (SELECT max(f.finished_at) FROM generation_tasks f
                       WHERE f.job_id = :job_id)
           END AS active_end
)
SELECT count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'succeeded'
                          AND finished_at >= now() - make_interval(secs => :window_s))
           AS recent_succeeded,
       -- Active time: from the first start to the last finish, or to now while tasks
       -- are still to run. The recent figure counts the same time within the window.
       EXTRACT(EPOCH FROM ((SELECT active_end FROM e) - min(started_at)))::float
           AS active_s,
       EXTRACT(EPOCH FROM ((SELECT active_end FROM e) - GREATEST(min(started_at),
                                                 now() - make_interval(secs => :window_s))
                          ))::float AS recent_active_s,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms)
           FILTER (WHERE status = 'succeeded') AS p50_ms,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY latency_ms)
           FILTER (WHERE status = 'succeeded') AS p90_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms)
           FILTER (WHERE status = 'succeeded') AS p99_ms,
       max(latency_ms) FILTER (WHERE status = 'succeeded') AS max_ms,
       avg(attempts) FILTER (WHERE status IN ('succeeded', 'failed'))::float AS mean_attempts,
       count(*) FILTER (WHERE status = 'queued' AND last_error_code IS NOT NULL)
           AS retrying
  FROM generation_tasks
 WHERE job_id = :job_id;

-- name: report_gallery_page
-- One page of a job's images, in prompt order (the (job_id, prompt_index, image_index)
-- unique index gives the order without sorting the whole job).
SELECT id, prompt_index, image_index, prompt, image_path, thumbnail_path, latency_ms,
       attempts, finished_at
  FROM generation_tasks
 WHERE job_id = :job_id AND status = 'succeeded'
 ORDER BY prompt_index, image_index
 LIMIT :limit OFFSET :offset;

-- name: report_failures_page
SELECT id, prompt_index, image_index, prompt, last_error_code, last_error, attempts,
       COALESCE(finished_at, updated_at) AS last_attempt_at
  FROM generation_tasks
 WHERE job_id = :job_id AND status = 'failed'
   AND (CAST(:error_code AS text) IS NULL OR last_error_code = :error_code)
 ORDER BY prompt_index, image_index
 LIMIT :limit OFFSET :offset;

-- name: report_count_failures
SELECT count(*) AS n
  FROM generation_tasks
 WHERE job_id = :job_id AND status = 'failed'
   AND (CAST(:error_code AS text) IS NULL OR last_error_code = :error_code);

-- name: report_error_codes
-- The distinct error codes of a job's failed tasks, commonest first.
SELECT COALESCE(last_error_code, 'unknown') AS error_code, count(*) AS n
  FROM generation_tasks
 WHERE job_id = :job_id AND status = 'failed'
 GROUP BY 1
 ORDER BY n DESC, error_code;

-- name: report_queue_depth
-- Work not yet finished, split the way an operator reads a queue: waiting to be handed
-- over, due now, backing off, in flight, and in flight past its lease (a dead worker).
-- Reads only the partial index generation_tasks_due_idx.
SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
       count(*) FILTER (WHERE status = 'queued' AND next_attempt_at <= now()) AS due,
       count(*) FILTER (WHERE status = 'queued' AND next_attempt_at > now()) AS backing_off,
       count(*) FILTER (WHERE status = 'running' AND lease_until >= now()) AS in_flight,
       count(*) FILTER (WHERE status = 'running' AND lease_until < now()) AS lease_expired,
       EXTRACT(EPOCH FROM (now() - min(created_at)
                                   FILTER (WHERE status IN ('pending', 'queued'))))::float
           AS oldest_waiting_s
  FROM generation_tasks
 WHERE status IN ('pending', 'queued', 'running');

-- name: report_recent_throughput
-- Tasks finished per bucket over the last :window_s, across jobs. Only jobs that can have
-- finished something in the window are read, through (job_id, finished_at), so the
-- history of old jobs is never scanned.
SELECT date_bin(make_interval(secs => :bucket_s), t.finished_at,
                TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
       count(*) FILTER (WHERE t.status = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE t.status = 'failed') AS failed
  FROM generation_tasks t
 WHERE t.job_id IN (SELECT id FROM generation_jobs
                     WHERE finished_at IS NULL
                        OR finished_at >= now() - make_interval(secs => :window_s))
   AND t.finished_at >= now() - make_interval(secs => :window_s)
   AND t.status IN ('succeeded', 'failed')
 GROUP BY 1
 ORDER BY 1;

-- name: report_job_ids_recent
-- The most recent job ids (the job picker and the chart's default selection).
SELECT id, status, created_at, total_tasks
  FROM generation_jobs
 ORDER BY created_at DESC
 LIMIT :limit;

-- name: export_tasks_after
-- The task table of one job for CSV export, in pages by keyset so neither side holds a
-- long transaction or a whole job in memory.
SELECT id, prompt_index, image_index, prompt, style, status, attempts, last_error_code,
       last_error, image_path, thumbnail_path, latency_ms, created_at, started_at,
       finished_at, input_tokens, input_image_tokens, output_tokens, billed_mode
  FROM generation_tasks
 WHERE job_id = :job_id AND (prompt_index, image_index) > (:after_prompt, :after_image)
 ORDER BY prompt_index, image_index
 LIMIT :limit;

-- name: export_images_after
-- With what the manifest tells about each image: its style and the job's model options.
SELECT t.id, t.prompt_index, t.image_index, t.prompt, t.style, t.image_path,
       j.provider, j.model, j.size, j.quality
  FROM generation_tasks t
  JOIN generation_jobs j ON j.id = t.job_id
 WHERE t.job_id = :job_id AND t.status = 'succeeded' AND t.image_path IS NOT NULL
   AND (t.prompt_index, t.image_index) > (:after_prompt, :after_image)
 ORDER BY t.prompt_index, t.image_index
 LIMIT :limit;
