"""Spend limits (docs/order-of-work.md): a cap per job (``max_cost_usd``), a daily budget
(BUDGET_DAILY_USD) and daily budgets per named API key (BUDGET_DAILY_USD_BY_KEY).

Spend is what was billed: each succeeded task's usage times its model's rates
(core.billing.charges), its estimate (core.billing.prices) where the usage is unknown.
``check`` recomputes it every SPEND_CHECK_S and writes, per unfinished job, ``spent_usd``
over ``spent_tasks`` succeeded tasks and the cost of one image ``spend_unit_usd``; per
budget a row of
``spend_holds``. The claims (``dispatch_claim_due``, ``window_pick``) then start nothing that
would pass a limit: a capped job's spend is projected in the claim itself (spent plus one
unit per delivery in flight and per delivery it would start), so it stops at its cap give or
take what is in flight; a daily budget holds once the check sees it reached (one check
interval of deliveries late at most). Held tasks wait queued or pending, never fail;
raising the cap or the budget lets the next claim start them.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Engine

from core.billing import charges
from core.config import Settings, key_budgets
from core.db import transaction
from core.db.queries import q

log = logging.getLogger(__name__)

_CENT = Decimal("0.0001")
_UNIT = Decimal("0.00000001")


@dataclass(frozen=True)
class Budget:
    scope: str  # daily | key:<name>
    limit_usd: Decimal
    spent_usd: Decimal

    @property
    def reached(self) -> bool:
        return self.spent_usd >= self.limit_usd


def unit_estimate_usd(job: Any) -> Decimal | None:
    """The estimate of one image of ``job`` (None: no published price)."""
    if job.estimated_cost_usd is None or not job.total_tasks:
        return None
    return Decimal(job.estimated_cost_usd) / job.total_tasks


def spent_by_job(conn: Connection, jobs: list[Any], since: datetime | None
                 ) -> dict[UUID, tuple[Decimal, int, int]]:
    """(spent USD, succeeded tasks counted, of which billed) per job."""
    by_id = {j.id: j for j in jobs}
    out: dict[UUID, tuple[Decimal, int, int]] = {}
    if not jobs:
        return out
    rows = conn.execute(q("spend_tokens_by_job"), {"ids": list(by_id), "since": since}).all()
    acc: dict[UUID, list[Any]] = defaultdict(lambda: [Decimal(0), 0, 0])
    for r in rows:
        job = by_id[r.job_id]
        unit = unit_estimate_usd(job) or Decimal(0)
        billed = None
        if r.billed_tasks:
            billed = charges.task_cost_usd(
                job.model, job.provider, input_tokens=int(r.input_tokens),
                output_tokens=int(r.output_tokens),
                input_image_tokens=int(r.input_image_tokens), billed_mode=r.mode)
        if billed is None:  # no rates for the model: its estimate stands in
            billed = unit * int(r.billed_tasks)
        a = acc[r.job_id]
        a[0] += billed + unit * int(r.unbilled_tasks)
        a[1] += int(r.billed_tasks) + int(r.unbilled_tasks)
        a[2] += int(r.billed_tasks)
    for job_id, (usd, n, billed_n) in acc.items():
        out[job_id] = (usd, n, billed_n)
    return out


def check(settings: Settings, engine: Engine | None = None) -> list[Budget]:
    """Recompute spend and budgets; returns the budgets configured, with their spend."""
    with transaction(engine) as conn:
        jobs = list(conn.execute(q("spend_jobs")).all())
        since = conn.execute(q("start_of_day")).one().since
        unfinished = [j for j in jobs if j.status in ("pending", "running")]
        totals = spent_by_job(conn, unfinished, None)
        for job in unfinished:
            usd, n, billed_n = totals.get(job.id, (Decimal(0), 0, 0))
            estimate = unit_estimate_usd(job)
            unit = (usd / n) if n and billed_n else estimate
            conn.execute(q("set_job_spend"), {
                "job_id": job.id, "spent_usd": usd.quantize(_CENT), "spent_tasks": n,
                # the column's scale, so an unchanged value compares equal (no write)
                "unit_usd": None if unit is None else unit.quantize(_UNIT)})
        budgets = _budgets(settings, conn, jobs, since)
        for b in budgets:
            conn.execute(q("set_spend_hold"), {"scope": b.scope, "held": b.reached,
                                               "spent_usd": b.spent_usd.quantize(_CENT),
                                               "limit_usd": b.limit_usd})
        conn.execute(q("clear_spend_holds_except"), {"scopes": [b.scope for b in budgets]})
    for b in budgets:
        if b.reached:
            log.warning("spend budget reached: dispatch held", extra={
                "action": "budget_reached", "scope": b.scope,
                "spent_usd": float(b.spent_usd), "limit_usd": float(b.limit_usd)})
    return budgets


def _budgets(settings: Settings, conn: Connection, jobs: list[Any], since: datetime
             ) -> list[Budget]:
    per_key = key_budgets(settings.BUDGET_DAILY_USD_BY_KEY)
    if settings.BUDGET_DAILY_USD is None and not per_key:
        return []
    today = spent_by_job(conn, jobs, since)
    total = sum((v[0] for v in today.values()), Decimal(0))
    budgets = []
    if settings.BUDGET_DAILY_USD is not None:
        budgets.append(Budget("daily", Decimal(str(settings.BUDGET_DAILY_USD)), total))
    by_key: dict[str, Decimal] = defaultdict(Decimal)
    for job in jobs:
        if job.submitted_by and job.id in today:
            by_key[job.submitted_by] += today[job.id][0]
    for name, usd in per_key.items():
        budgets.append(Budget(f"key:{name}", Decimal(str(usd)), by_key.get(name, Decimal(0))))
    return budgets


def holds(engine: Engine | None = None) -> list[dict[str, Any]]:
    """The budgets as the last check saw them (for /healthz, the Queue page)."""
    with transaction(engine) as conn:
        rows = conn.execute(q("spend_holds")).all()
    return [{"scope": r.scope, "held": r.held, "spent_usd": float(r.spent_usd),
             "limit_usd": None if r.limit_usd is None else float(r.limit_usd),
             "checked_at": r.updated_at.isoformat()} for r in rows]
