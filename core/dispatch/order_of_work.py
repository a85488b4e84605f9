"""What each running job waits for, for /healthz, the Job, Queue and order-of-work
views: a paused queue, a budget or its own spend cap reached (with what was spent), or
nothing but its turn (fair share, priority). Pure decisions over rows read by the callers."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine

from core.db import transaction
from core.db.queries import q
from core.dispatch.fair import priority_rank

SHARE_WINDOW_S = 300  # "its share of deliveries in the last minutes"


def usd(value: Any) -> str:
    return "unknown" if value is None else f"${Decimal(value):.2f}"


def budget_reason(hold: Any) -> str:
    scope = "daily budget (BUDGET_DAILY_USD)" if hold.scope == "daily" else (
        f"daily budget of API key {hold.scope.split(':', 1)[1]!r} (BUDGET_DAILY_USD_BY_KEY)")
    return (f"{scope} reached: {usd(hold.spent_usd)} of {usd(hold.limit_usd)} spent today; "
            "dispatch held, tasks wait")


def cap_reason(job: Any) -> str:
    return (f"job {job.name or job.id} reached its spend cap: {usd(job.spent_usd)} of "
            f"{usd(job.max_cost_usd)} (max_cost_usd); its tasks wait until the cap is raised")


def ahead_of(job: Any, others: list[Any]) -> str | None:
    """The highest priority above ``job``'s among the other jobs with work left, if any."""
    above = sorted((priority_rank(o.priority), o.priority) for o in others
                   if o.id != job.id and (o.waiting or o.in_flight)
                   and priority_rank(o.priority) < priority_rank(job.priority))
    return above[0][1] if above else None


def waits_for(job: Any, *, paused: bool, holds: list[Any], at_cap: bool,
              higher: str | None = None, starvation_s: float = 30.0) -> str:
    """One line: what keeps ``job`` from more deliveries (``higher``: the priority of a
    job served before it, see ahead_of)."""
    if paused:
        return "queue paused"
    for hold in holds:
        if hold.held and (hold.scope == "daily" or hold.scope == f"key:{job.submitted_by}"):
            return budget_reason(hold)
    if at_cap:
        return f"spend cap reached: {usd(job.spent_usd)} of {usd(job.max_cost_usd)}"
    if job.waiting == 0:
        return "nothing waiting (last deliveries in flight)"
    if higher is not None:
        return (f"{higher}-priority jobs first; at least one delivery every "
                f"{starvation_s:g} s (PRIORITY_STARVATION_S)")
    return f"its turn ({job.priority} priority, fair share)"


@dataclass(frozen=True)
class JobOrder:
    id: str
    name: str | None
    priority: str
    status: str
    in_flight: int
    waiting: int
    done: int
    total: int
    share: float | None  # of the deliveries finished in the last SHARE_WINDOW_S
    spent_usd: float | None
    max_cost_usd: float | None
    waits_for: str


def order_of_work(*, paused: bool, engine: Engine | None = None, limit: int = 50,
                  starvation_s: float = 30.0) -> list[JobOrder]:
    with transaction(engine) as conn:
        rows = conn.execute(q("order_of_work"), {"window_s": SHARE_WINDOW_S,
                                                 "limit": limit}).all()
        holds = conn.execute(q("spend_holds")).all()
        capped = {r.id for r in conn.execute(q("jobs_at_cap"), {"limit": 1000}).all()}
    return [JobOrder(
        id=str(r.id), name=r.name, priority=r.priority, status=r.status,
        in_flight=int(r.in_flight), waiting=int(r.waiting), done=int(r.completed_tasks),
        total=int(r.total_tasks), share=r.recent_share,
        spent_usd=None if r.spent_usd is None else float(r.spent_usd),
        max_cost_usd=None if r.max_cost_usd is None else float(r.max_cost_usd),
        waits_for=waits_for(r, paused=paused, holds=list(holds), at_cap=r.id in capped,
                            higher=ahead_of(r, list(rows)), starvation_s=starvation_s))
        for r in rows]
