"""A job's place in the order of work (docs/order-of-work.md): its priority and its spend
cap, set at submit and changeable while it runs (API, dashboard). How they are applied:
core.dispatch.fair (the rule), dispatch_claim_due / window_pick (the claims),
core.billing.spend."""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import UUID

from sqlalchemy import Engine

from core.db import transaction
from core.db.queries import q
from core.dispatch.fair import DEFAULT_PRIORITY, PRIORITIES
from core.errors import InvalidInput, NotFound

MAX_COST_USD = Decimal("1000000")


@dataclass(frozen=True)
class Schedule:
    priority: str = DEFAULT_PRIORITY
    max_cost_usd: Decimal | None = None

    def binds(self, estimate_usd: Decimal | None, tasks: int) -> dict[str, Any]:
        """insert_job's binds; the cost of one image starts as the estimate's."""
        unit = estimate_usd / tasks if estimate_usd is not None and tasks else None
        return {"priority": self.priority, "max_cost_usd": self.max_cost_usd,
                "spend_unit_usd": unit}


def clean_priority(value: object) -> str:
    if not isinstance(value, str) or value.strip().lower() not in PRIORITIES:
        raise InvalidInput("priority", f"must be one of {', '.join(PRIORITIES)}")
    return value.strip().lower()


def clean_max_cost(value: object) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidInput("max_cost_usd", "must be a number of US dollars")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise InvalidInput("max_cost_usd", "must be a number of US dollars") from None
    if not number.is_finite() or not math.isfinite(float(number)) or number < 0:
        raise InvalidInput("max_cost_usd", "must be a number >= 0")
    if number > MAX_COST_USD:
        raise InvalidInput("max_cost_usd", f"must be at most {MAX_COST_USD}")
    return number.quantize(Decimal("0.0001"))


def clean_schedule(*, priority: object = None, max_cost_usd: object = None) -> Schedule:
    return Schedule(priority=DEFAULT_PRIORITY if priority is None else clean_priority(priority),
                    max_cost_usd=clean_max_cost(max_cost_usd))


def set_schedule(job_id: UUID, *, priority: object = None, max_cost_usd: object = None,
                 clear_cap: bool = False, engine: Engine | None = None) -> dict[str, Any]:
    """Change a job's priority and/or cap (raising the cap resumes a job held at it)."""
    new_priority = None if priority is None else clean_priority(priority)
    cap = None if clear_cap else clean_max_cost(max_cost_usd)
    with transaction(engine) as conn:
        row = conn.execute(q("set_job_schedule"), {
            "job_id": job_id, "priority": new_priority, "max_cost_usd": cap,
            "clear_cap": clear_cap}).first()
    if row is None:
        raise NotFound(f"job {job_id} not found")
    return {"id": str(row.id), "status": row.status, "priority": row.priority,
            "max_cost_usd": None if row.max_cost_usd is None else float(row.max_cost_usd)}
