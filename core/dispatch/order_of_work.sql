-- The order of work the dashboard shows (core.dispatch.order_of_work).

-- name: order_of_work

-- The dashboard's order of work: per unfinished job its priority, cap, spend,
-- deliveries in flight, tasks waiting, and its share of the deliveries that finished in
-- the last :window_s seconds (generation_tasks_finished_idx, per job).
WITH live AS (
    SELECT j.*,
           (SELECT count(*) FROM generation_tasks f
             WHERE f.job_id = j.id
               AND f.finished_at >= now() - make_interval(secs => :window_s)) AS recent
      FROM generation_jobs j
     WHERE j.status IN ('pending', 'running')
)
SELECT l.id, l.name, l.status, l.priority, l.max_cost_usd, l.spent_usd, l.spent_tasks,
       l.spend_unit_usd, l.completed_tasks, l.failed_tasks, l.total_tasks, l.submitted_by,
       l.created_at, l.mode,
       (SELECT count(*) FROM generation_tasks a
         WHERE a.job_id = l.id AND a.lease_until IS NOT NULL
           AND a.status IN ('queued', 'running')) AS in_flight,
       (SELECT count(*) FROM generation_tasks a
         WHERE a.job_id = l.id AND a.status IN ('pending', 'queued')) AS waiting,
       l.recent AS recent_finished,
       l.recent::float / NULLIF(sum(l.recent) OVER (), 0) AS recent_share
  FROM live l
 ORDER BY CASE l.priority WHEN 'high' THEN 0 WHEN 'low' THEN 2 ELSE 1 END, l.created_at
 LIMIT :limit;
