"""Fair share and priority between running jobs (docs/order-of-work.md): the pure rule.

The same rule is spelled in SQL, in ``dispatch_claim_due`` (core/dispatch/local/local.sql,
the local dispatcher's claim) and ``window_pick`` (core/dispatch/cloudtasks/window.sql, the
Cloud Tasks window refill);
tests/integration/test_fair_share.py checks the SQL against ``pick`` here.

A candidate task is its job's nth delivery in flight if started now. Candidates are served
in the order of ``order_key``:

1. a starved job's first delivery, whatever its priority: a job with nothing in flight that
   has not had a delivery finish for ``PRIORITY_STARVATION_S`` (30 s; since it was
   submitted, if none has). A lower-priority job is therefore slowed by a higher one but
   never starved: it gets at least one delivery every starvation period plus one image's
   time, so it finishes;
2. priority: high, then normal, then low. Strict otherwise: a high job takes every slot
   that frees (it only waits for slots to free);
3. the smallest nth: round-robin, so jobs of one priority share the deliveries equally;
4. the job with fewer tasks left (of two jobs level on 1-3, the one nearer its end, so a
   small job is not behind a big one's tie turns), then the older job, then the task due
   first.

A job whose spend would pass its cap (``max_cost_usd``) starts nothing more (``within_cap``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

PRIORITIES = ("high", "normal", "low")
PRIORITY_RANK = {name: rank for rank, name in enumerate(PRIORITIES)}
DEFAULT_PRIORITY = "normal"


def priority_rank(priority: str) -> int:
    return PRIORITY_RANK.get(priority, PRIORITY_RANK[DEFAULT_PRIORITY])


def starved(*, in_flight: int, waiting_since: datetime, now: datetime,
            starvation_s: float) -> bool:
    """A job nothing of which ran for the starvation period: ``waiting_since`` is when its
    last delivery finished, or when it was submitted."""
    return in_flight == 0 and (now - waiting_since).total_seconds() >= starvation_s


def order_key(*, nth: int, priority: str, starved: bool, tasks_left: int,
              job_created: datetime, due: datetime
              ) -> tuple[int, int, int, datetime, datetime]:
    """Sort key of a candidate (smaller first)."""
    first_of_starved = starved and nth == 1
    return (-1 if first_of_starved else priority_rank(priority), nth, tasks_left,
            job_created, due)


def within_cap(*, spent_usd: Decimal, unit_usd: Decimal, nth: int,
               max_cost_usd: Decimal | None) -> bool:
    """Starting the nth delivery in flight keeps the projected spend within the cap."""
    return max_cost_usd is None or spent_usd + nth * unit_usd <= max_cost_usd


@dataclass(frozen=True)
class JobQueue:
    """One running job as the claim sees it."""

    key: str
    priority: str
    created: datetime
    in_flight: int
    waiting: Sequence[datetime]  # due times of its waiting tasks, earliest first
    starved: bool = False
    tasks_left: int = 0  # not finished (waiting and in flight)
    spent_usd: Decimal = Decimal(0)
    unit_usd: Decimal = Decimal(0)
    max_cost_usd: Decimal | None = None


def pick(jobs: Sequence[JobQueue], slots: int) -> list[str]:
    """Which jobs the next ``slots`` deliveries go to, in order (pure). Each job offers at
    most ``slots`` candidates, as the SQL reads at most that many per job."""
    candidates = []
    for job in jobs:
        for i, due in enumerate(job.waiting[:slots]):
            nth = job.in_flight + i + 1
            if within_cap(spent_usd=job.spent_usd, unit_usd=job.unit_usd, nth=nth,
                          max_cost_usd=job.max_cost_usd):
                candidates.append((order_key(nth=nth, priority=job.priority,
                                             starved=job.starved, tasks_left=job.tasks_left,
                                             job_created=job.created, due=due), job.key))
    return [key for _, key in sorted(candidates)[:slots]]
