"""The sweeper: re-enqueues tasks left pending (enqueue cut off, process died), and in
Cloud Tasks mode tasks the queue lost (sweep_stranded)."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import cast

from sqlalchemy import Engine

from core.db import transaction
from core.db.queries import q
from core.dispatch import Dispatcher, EnqueueResult, TaskRef, undeliverable
from core.dispatch.base import TaskLookup
from core.dispatch.cloudtasks.stranded import STRANDED_AFTER_S, Candidate, is_candidate, judge

log = logging.getLogger(__name__)

# A batch being enqueued right now is younger than this; leave it to its submitter.
PENDING_GRACE_S = 30.0
SWEEP_BATCH = 1000
# GetTask calls per stranded sweep, and in flight at once: a backlog of 100,000 queued rows
# is checked a slice per sweep (each checked row waits stale_s for its next check).
STRANDED_BATCH = 500
LOOKUP_CONCURRENCY = 8


def sweep_pending(
    dispatcher: Dispatcher,
    *,
    engine: Engine | None = None,
    grace_s: float = PENDING_GRACE_S,
    max_tasks: int = 100_000,
) -> EnqueueResult:
    """Hand every task pending for longer than ``grace_s`` to the queue again. Cloud Tasks
    mode: pending rows wait for the window (window.py), so this is a window refill (which
    also picks up rows a cut-short hand-over left pending)."""
    settings = getattr(dispatcher, "settings", None)
    if getattr(dispatcher, "name", "") == "cloud_tasks" and settings is not None:
        from core.dispatch.cloudtasks.window import refill

        return refill(dispatcher, window=settings.CLOUD_TASKS_WINDOW,
                      starvation_s=settings.PRIORITY_STARVATION_S, engine=engine)
    total = EnqueueResult()
    while total.enqueued + total.already_enqueued + total.failed < max_tasks:
        with transaction(engine) as conn:
            rows = conn.execute(q("pending_tasks_for_sweep"),
                                {"grace_s": grace_s, "limit": SWEEP_BATCH}).all()
        if not rows:
            break
        result = dispatcher.enqueue([TaskRef(r.id, r.dispatch_generation) for r in rows])
        total.add(result)
        if result.enqueued == 0:
            break  # nothing moved: the queue is refusing; try again next sweep
    if total.enqueued or total.failed:
        log.info("sweep re-enqueued pending tasks",
                 extra={"action": "sweep", "enqueued": total.enqueued, "failed": total.failed})
    return total


@dataclass
class StrandedSweep:
    skipped: str | None = None  # why nothing was checked
    checked: int = 0
    held: int = 0
    unknown: int = 0
    requeued: int = 0
    enqueue: EnqueueResult = field(default_factory=EnqueueResult)


def sweep_stranded(
    dispatcher: Dispatcher,
    *,
    engine: Engine | None = None,
    stale_s: float = STRANDED_AFTER_S,
    limit: int = STRANDED_BATCH,
) -> StrandedSweep:
    """Ask the queue about rows that have sat queued (or running on a dead lease) for
    ``stale_s``; the ones it no longer holds go back to pending under a new dispatch
    generation and are enqueued again. Nothing happens while the queue is paused or its
    state is unknown: a paused queue holds its tasks, and a guess could deliver twice."""
    if not all(hasattr(dispatcher, m) for m in ("holds", "task_name", "queue_running")):
        return StrandedSweep(skipped="queue cannot look tasks up")
    lookup = cast(TaskLookup, dispatcher)
    running = lookup.queue_running()
    if running is not True:
        skipped = "queue paused" if running is False else "queue state unknown"
        # Paused is an operator's choice; unreadable (often a missing IAM role) silently
        # disables this recovery, so it is said louder.
        log.log(logging.DEBUG if running is False else logging.WARNING,
                "stranded sweep skipped: %s", skipped,
                extra={"action": "stranded_sweep_skipped", "reason": skipped})
        return StrandedSweep(skipped=skipped)
    with transaction(engine) as conn:
        rows = conn.execute(q("stranded_candidates"),
                            {"stale_s": stale_s, "limit": limit}).all()
    candidates = [c for c in (_candidate(r) for r in rows)
                  if is_candidate(c, now=rows[0].db_now, stale_s=stale_s)]
    result = StrandedSweep(checked=len(candidates))
    if not candidates:
        return result
    names = [c.cloud_task_name or lookup.task_name(TaskRef(c.id, c.dispatch_generation))
             for c in candidates]
    with ThreadPoolExecutor(min(LOOKUP_CONCURRENCY, len(names)),
                            thread_name_prefix="get-task") as pool:
        presence = list(pool.map(lookup.holds, names))
    verdicts = judge(candidates, presence)
    if verdicts.stranded and lookup.queue_running() is not True:
        # The queue went away (or paused) while we asked: its NOT_FOUNDs prove nothing.
        verdicts = judge(candidates, [None if p is False else p for p in presence])
    result.held, result.unknown = len(verdicts.held), len(verdicts.unknown)
    with transaction(engine) as conn:
        if verdicts.held:
            conn.execute(q("touch_held_tasks"), _guard(verdicts.held))
        moved = (conn.execute(q("requeue_stranded_tasks"), {
            **_guard(verdicts.stranded),
            "statuses": [c.status for c in verdicts.stranded]}).all()
            if verdicts.stranded else [])
        # Never reached the handler -> counted, bounded (core.dispatch.undeliverable)
        ended = undeliverable.on_dropped_by_queue(conn, moved,
                                                  getattr(dispatcher, "settings", None))
    moved = [r for r in moved if r.id not in ended]
    by_id = {c.id: name for c, name in zip(candidates, names, strict=True)}
    for row in moved:
        log.warning("queue no longer holds the task: handed over again",
                    extra={"action": "stranded_requeue", "task_id": str(row.id),
                           "job_id": str(row.job_id), "was_status": row.was_status,
                           "cloud_task_name": by_id.get(row.id),
                           "dispatch_generation": row.dispatch_generation})
    result.requeued = len(moved)
    if moved:
        # Rows the handover misses stay pending: sweep_pending retries them.
        result.enqueue = dispatcher.enqueue(
            [TaskRef(r.id, r.dispatch_generation) for r in moved])
    if result.unknown:
        log.info("queue could not say whether it holds some tasks; asking next sweep",
                 extra={"action": "stranded_unknown", "unknown": result.unknown})
    return result


def _candidate(row: object) -> Candidate:
    return Candidate(**{k: getattr(row, k) for k in Candidate.__dataclass_fields__})


def _guard(rows: list[Candidate]) -> dict[str, object]:
    return {"ids": [c.id for c in rows], "generations": [c.dispatch_generation for c in rows],
            "updated": [c.updated_at for c in rows]}
