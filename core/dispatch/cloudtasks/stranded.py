"""Which rows the queue may have lost, and what to do about each (pure; the I/O is in
core.dispatch.cloudtasks.sweeper.sweep_stranded).

In Cloud Tasks mode a row can stay queued, or running with a dead lease, after Cloud
Tasks dropped its task: the queue gave up after max_attempts without our handler
recording a final state, or the queue was purged, or the task deleted. Time alone cannot
tell such a row from one waiting in a paused queue or behind a long backlog, so time only
picks candidates; the queue itself (GetTask) decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

STRANDED_AFTER_S = 1800.0


@dataclass(frozen=True)
class Candidate:
    id: UUID
    job_id: UUID
    status: str
    dispatch_generation: int
    updated_at: datetime
    lease_until: datetime | None
    next_attempt_at: datetime
    cloud_task_name: str | None


def is_candidate(row: Candidate, *, now: datetime, stale_s: float) -> bool:
    """Worth asking the queue about: queued and untouched for ``stale_s``, or running with a
    lease that expired ``stale_s`` ago; in both cases not checked within ``stale_s``
    (``next_attempt_at`` records the last check). core/dispatch/cloudtasks/cloud_tasks.sql
    stranded_candidates is the same rule in SQL."""
    cutoff = now - timedelta(seconds=stale_s)
    if row.next_attempt_at >= cutoff:
        return False
    if row.status == "queued":
        return row.updated_at < cutoff
    if row.status == "running":
        # A live or freshly expired lease: the queue's retry (handed over at the lease end)
        # or the worker's expired-lease check (core.dispatch.cloudtasks.checks) takes it over first.
        return row.lease_until is not None and row.lease_until < cutoff
    return False  # pending is sweep_pending's; finished rows are done


@dataclass(frozen=True)
class Verdicts:
    stranded: list[Candidate]  # the queue no longer has it: hand it over again
    held: list[Candidate]  # the queue still has it: leave it
    unknown: list[Candidate]  # the queue could not say: leave it, ask next sweep


def judge(rows: Sequence[Candidate], presence: Sequence[bool | None]) -> Verdicts:
    """Sort candidates by the queue's answer for each (True held, False gone, None unknown).
    Only a definite "gone" moves a row: re-enqueueing one the queue still holds would
    deliver it twice."""
    if len(rows) != len(presence):
        raise ValueError("one answer per candidate")
    verdicts = Verdicts([], [], [])
    for row, held in zip(rows, presence, strict=True):
        if held is False:
            verdicts.stranded.append(row)
        elif held is True:
            verdicts.held.append(row)
        else:
            verdicts.unknown.append(row)
    return verdicts
