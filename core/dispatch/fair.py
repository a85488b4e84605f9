"""Fair share and priority between running jobs (issue 13): the pure rule.

The same rule is spelled in SQL, in ``dispatch_claim_due`` (core/queries.sql, the local
dispatcher's claim) and ``window_pick`` (core/schedule.sql, the Cloud Tasks window refill);
tests/integration/test_fair_share.py checks the SQL against ``pick`` here.

A candidate task is its job's nth delivery in flight if started now. Candidates are served
in the order of ``order_key``:

1. every job's first delivery in flight, whatever its priority: a lower-priority job is
   slowed by a higher one, never starved (it keeps one delivery going, so it finishes);
2. priority: high, then normal, then low;
3. the smallest nth: round-robin, so jobs of one priority share the deliveries equally;
4. the older job, then the task due first.

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


def order_key(*, nth: int, priority: str, job_created: datetime, due: datetime
              ) -> tuple[int, int, datetime, datetime]:
    """Sort key of a candidate (smaller first)."""
    return (-1 if nth == 1 else priority_rank(priority), nth, job_created, due)


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
                                             job_created=job.created, due=due), job.key))
    return [key for _, key in sorted(candidates)[:slots]]
