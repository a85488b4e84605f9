-- Queries of the Cloud Tasks dispatcher (core/dispatch/cloudtasks/dispatcher.py).

-- name: mark_tasks_queued_named
-- Hand-over to Cloud Tasks: each row records the name of its Cloud Tasks task. Only rows
-- still pending move (a delivery may already have claimed the task), so a repeated
-- enqueue changes nothing. The window refill's hold (lease_until on the pending row,
-- core.dispatch.cloudtasks.window) ends here.
-- A delivery can claim the task before this runs (a loaded machine): the row then still
-- records the name of its current generation (names end in -g<generation>), so the
-- stranded sweep asks Cloud Tasks about the right task; its status and lease stay.
UPDATE generation_tasks AS t
   SET status = CASE WHEN t.status = 'pending' THEN 'queued' ELSE t.status END,
       next_attempt_at = CASE WHEN t.status = 'pending' THEN now() ELSE t.next_attempt_at END,
       lease_until = CASE WHEN t.status = 'pending' THEN NULL ELSE t.lease_until END,
       cloud_task_name = v.name, updated_at = now()
  FROM unnest(CAST(:ids AS uuid[]), CAST(:names AS text[])) AS v(id, name)
 WHERE t.id = v.id
   AND (t.status = 'pending'
        OR (v.name LIKE '%-g' || t.dispatch_generation
            AND t.cloud_task_name IS DISTINCT FROM v.name));

-- name: stranded_candidates
-- Rows the queue may have lost (core.dispatch.cloudtasks.sweeper.sweep_stranded, rule in
-- core.dispatch.cloudtasks.stranded): queued and untouched for stale_s, or running with a
-- lease that ran out stale_s ago, and not checked in the last stale_s either (next_attempt_at, which Cloud Tasks mode does not
-- otherwise use once a row is queued, records the last check). Oldest check first, so a
-- long backlog is looked at a slice per sweep instead of the same rows every time.
SELECT id, job_id, status, dispatch_generation, updated_at, lease_until, next_attempt_at,
       cloud_task_name, now() AS db_now
  FROM generation_tasks
 WHERE next_attempt_at < now() - make_interval(secs => :stale_s)
   AND ((status = 'queued' AND updated_at < now() - make_interval(secs => :stale_s))
        OR (status = 'running' AND lease_until < now() - make_interval(secs => :stale_s)))
 ORDER BY next_attempt_at
 LIMIT :limit;

-- name: touch_held_tasks
-- The queue still holds these: note the check (next_attempt_at) so they wait stale_s for
-- the next one. Guarded by the state we read; updated_at itself is left alone.
UPDATE generation_tasks AS t
   SET next_attempt_at = now()
  FROM unnest(CAST(:ids AS uuid[]), CAST(:generations AS integer[]),
              CAST(:updated AS timestamptz[])) AS v(id, generation, updated_at)
 WHERE t.id = v.id AND t.status IN ('queued', 'running')
   AND t.dispatch_generation = v.generation AND t.updated_at = v.updated_at;

-- name: requeue_stranded_tasks
-- The queue lost these: back to pending under a new dispatch generation (a fresh Cloud
-- Tasks name), only if each row is still exactly as we read it (status, generation,
-- updated_at), so a delivery that claimed or finished it meanwhile wins.
UPDATE generation_tasks AS t
   SET status = 'pending', dispatch_generation = t.dispatch_generation + 1,
       lease_until = NULL, next_attempt_at = now(), updated_at = now()
  FROM unnest(CAST(:ids AS uuid[]), CAST(:statuses AS text[]),
              CAST(:generations AS integer[]), CAST(:updated AS timestamptz[]))
       AS v(id, status, generation, updated_at)
 WHERE t.id = v.id AND t.status = v.status
   AND t.dispatch_generation = v.generation AND t.updated_at = v.updated_at
RETURNING t.id, t.job_id, t.dispatch_generation, v.status AS was_status;

-- name: task_generation
-- Which generation of a task is current (core/dispatch/cloudtasks/handover.py): a delivery of an
-- older one is superseded.
SELECT status, dispatch_generation
  FROM generation_tasks
 WHERE id = :task_id;

-- name: mark_handover
-- Outbox step 1 of a hand-over: note the generation about to be created (one above what
-- the delivery carried, or the row's own when it carried none), only while the row is
-- unfinished and the delivery's generation is still current (an older one changes
-- nothing). Returns when the new Cloud Task is due: the row's next attempt, or the end
-- of a live lease another delivery holds. Same generation, same name: marking twice is
-- harmless.
UPDATE generation_tasks
   SET handover_generation = GREATEST(dispatch_generation,
                                      COALESCE(:generation, dispatch_generation)) + 1,
       handover_marked_at = now()
 WHERE id = :task_id AND status IN ('queued', 'running')
   AND dispatch_generation <= COALESCE(:generation, dispatch_generation)
RETURNING handover_generation,
          GREATEST(EXTRACT(EPOCH FROM (
              CASE WHEN status = 'running' THEN GREATEST(lease_until, next_attempt_at)
                   ELSE next_attempt_at END - now())), 0)::float AS due_in_s;

-- name: finish_handover
-- Outbox step 2: the Cloud Task exists; the row now belongs to that generation, so
-- deliveries of older ones are answered "superseded". updated_at moves: the row was just
-- handed over, which is what the stranded check measures from. If another path (the
-- stranded sweep, a boot clean-up) moved the row to this generation or past it meanwhile,
-- only the mark is cleared.
UPDATE generation_tasks
   SET dispatch_generation = GREATEST(dispatch_generation, :generation),
       cloud_task_name = CASE WHEN dispatch_generation < :generation THEN :name
                              ELSE cloud_task_name END,
       updated_at = CASE WHEN dispatch_generation < :generation THEN now()
                         ELSE updated_at END,
       handover_generation = NULL, handover_marked_at = NULL
 WHERE id = :task_id AND handover_generation = :generation;

-- name: unfinished_handovers
-- Hand-overs a crash (or a failed CreateTask) cut short, older than a grace period so a
-- delivery still handing over is left alone (core.dispatch.cloudtasks.sweeper.sweep_handovers).
SELECT id, handover_generation,
       GREATEST(EXTRACT(EPOCH FROM (
           CASE WHEN status = 'running' THEN GREATEST(lease_until, next_attempt_at)
                ELSE next_attempt_at END - now())), 0)::float AS due_in_s
  FROM generation_tasks
 WHERE handover_generation IS NOT NULL
   AND handover_marked_at < now() - make_interval(secs => :grace_s)
   AND status IN ('queued', 'running')
 ORDER BY handover_marked_at
 LIMIT :limit;

-- name: drop_finished_handovers
-- A row that finished while marked (an older generation's retry ran it) needs no new
-- Cloud Task; a pending one is the general sweep's.
UPDATE generation_tasks
   SET handover_generation = NULL, handover_marked_at = NULL
 WHERE handover_generation IS NOT NULL
   AND handover_marked_at < now() - make_interval(secs => :grace_s)
   AND status NOT IN ('queued', 'running');

-- name: expired_lease_ids
-- Running rows whose lease ended :grace_s ago (their holder died), read from
-- generation_tasks_running_lease_idx only: when there are none this touches no table row.
SELECT id
  FROM generation_tasks
 WHERE status = 'running' AND lease_until < now() - make_interval(secs => :grace_s)
 ORDER BY lease_until
 LIMIT :limit;
