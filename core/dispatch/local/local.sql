-- The local queue: the dispatcher's claim of due tasks, its holds and its deferrals
-- (core.dispatch.local.loop). Binds are :named (SQLAlchemy text()).

-- name: free_dispatch_holds

-- The local dispatcher's holds on queued rows from a previous boot of :owner (deliveries it
-- had in flight when it stopped): visible again at once.
UPDATE generation_tasks
   SET lease_until = NULL, lease_owner = NULL, lease_boot = NULL
 WHERE status = 'queued' AND lease_owner = :owner AND lease_boot <> CAST(:boot AS uuid);

-- name: dispatch_claim_due

-- The local dispatcher's claim: due queued tasks that no delivery holds, chosen by fair
-- share (rule: core.dispatch.fair.order_key, checked against this by
-- tests/integration/test_fair_share.py). Per running job its deliveries in flight (held or
-- leased, generation_tasks_in_flight_idx) and its first due tasks are read; each candidate
-- is the job's nth delivery in flight; the order is (1) a starved job's first delivery
-- (nothing in flight and no delivery finished for :starvation_s, or since it was
-- submitted: lower priority is slowed, never starved), (2) priority high, normal, low,
-- (3) the smallest nth (round-robin: equal shares between jobs of one priority), (4) fewer
-- tasks left, then the older job. A job whose spend cap (max_cost_usd, projected with
-- spend_unit_usd for what is in flight and what this claim starts) or whose budget
-- (spend_holds, core.billing.spend) is reached starts nothing: its tasks wait queued, they do not
-- fail. The hold is a short lease on the queued row (lease_until, owner, boot) that hides it
-- from other dispatchers while its delivery is on the way to the handler, like a visibility
-- timeout; the handler's claim replaces it with the task's own lease. If this process dies,
-- its next boot frees its holds (free_dispatch_holds), or they run out. Running rows are not
-- taken here: take_over_abandoned decides about expired leases. A paused queue claims
-- nothing: checked in the same statement (a one-time filter), which saves the dispatcher a
-- round trip per claim.
WITH jobs AS MATERIALIZED (
    SELECT j.id, j.created_at, j.max_cost_usd, j.priority_rank, j.tasks_left, j.spent_usd,
           j.unit_usd, f.in_flight,
           job_starved(j.id, j.created_at, f.in_flight, :starvation_s) AS starved
      FROM job_shares j
     CROSS JOIN LATERAL (SELECT count(*) AS in_flight FROM generation_tasks a
                          WHERE a.job_id = j.id AND a.lease_until IS NOT NULL
                            AND a.status IN ('queued', 'running')) f
     WHERE j.status IN ('pending', 'running')
       AND NOT EXISTS (SELECT 1 FROM queue_state
                        WHERE queue_name = :queue_name AND paused)
       AND NOT EXISTS (SELECT 1 FROM spend_holds h
                        WHERE h.held AND (h.scope = 'daily'
                                          OR h.scope = 'key:' || j.submitted_by))
), due AS (
    SELECT c.id, c.next_attempt_at, jobs.created_at, jobs.priority_rank, jobs.max_cost_usd,
           jobs.spent_usd, jobs.unit_usd, jobs.starved, jobs.tasks_left,
           jobs.in_flight + row_number() OVER (PARTITION BY jobs.id
                                               ORDER BY c.next_attempt_at, c.id) AS nth
      FROM jobs CROSS JOIN LATERAL (
           SELECT t.id, t.next_attempt_at FROM generation_tasks t
            WHERE t.job_id = jobs.id AND t.status = 'queued' AND t.next_attempt_at <= now()
              AND (t.lease_until IS NULL OR t.lease_until < now())
            ORDER BY t.next_attempt_at
            LIMIT :limit) c
), chosen AS (
    SELECT id FROM due
     WHERE max_cost_usd IS NULL OR spent_usd + nth * unit_usd <= max_cost_usd
     ORDER BY CASE WHEN nth = 1 AND starved THEN -1 ELSE priority_rank END, nth,
              tasks_left, created_at, next_attempt_at
     LIMIT :limit
), locked AS (
    -- Only the chosen rows are locked (not every job's candidates); a row another
    -- dispatcher holds is skipped, and the state is checked again under the lock.
    SELECT t.id FROM generation_tasks t
     WHERE t.id IN (SELECT id FROM chosen) AND t.status = 'queued'
       AND (t.lease_until IS NULL OR t.lease_until < now())
       FOR UPDATE SKIP LOCKED
)
UPDATE generation_tasks t
   SET lease_until = now() + make_interval(secs => :visibility_s),
       lease_owner = :owner, lease_boot = :boot
  FROM locked
 WHERE t.id = locked.id
RETURNING t.id, t.attempts, t.lease_until;

-- name: dispatch_defer

-- A delivery that did not reach the handler (worker unreachable): due again after
-- :delay_s, unless a handler claimed it meanwhile (the hold, :marker, is gone then).
UPDATE generation_tasks
   SET next_attempt_at = GREATEST(next_attempt_at, now() + make_interval(secs => :delay_s)),
       lease_until = NULL, lease_owner = NULL, lease_boot = NULL
 WHERE id = :task_id AND status = 'queued' AND lease_until = :marker;

-- name: next_due_in_s

SELECT GREATEST(EXTRACT(EPOCH FROM (min(next_attempt_at) - now())), 0)::float AS s
  FROM generation_tasks
 WHERE status IN ('queued', 'running');
