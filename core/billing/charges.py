"""What a job was billed: each succeeded task's usage times its model's rates (core.billing.prices),
batch-mode tasks at half price, summed per job. Shown beside the estimate (API, dashboard,
CSV). Without rates for the model the cost is None and the tokens are shown instead."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import Engine

from core.billing import prices
from core.db import transaction
from core.db.queries import q


@dataclass(frozen=True)
class JobCost:
    actual_usd: Decimal | None  # None: the model has no known rates (see tokens)
    billed_tasks: int
    input_tokens: int
    input_image_tokens: int
    output_tokens: int
    by_mode: dict[str, Decimal | None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "actual_cost_usd": _float(self.actual_usd),
            "billed_tasks": self.billed_tasks,
            "tokens": {"input": self.input_tokens, "input_image": self.input_image_tokens,
                       "output": self.output_tokens},
            "actual_cost_by_mode_usd": {m: _float(v) for m, v in self.by_mode.items()},
        }


def _float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def task_cost_usd(model: str, provider: str, *, input_tokens: int | None,
                  output_tokens: int | None, input_image_tokens: int | None,
                  billed_mode: str | None) -> Decimal | None:
    """One task's billed cost (None when it has no usage or its model has no rates)."""
    if provider == "demo":
        return Decimal(0)
    if output_tokens is None:
        return None
    usage = prices.Usage(input_tokens=input_tokens or 0, output_tokens=output_tokens,
                       input_image_tokens=input_image_tokens or 0)
    return prices.task_cost_usd(model, usage, mode=billed_mode or "realtime")


def job_cost(job_id: UUID, model: str, provider: str, *, engine: Engine | None = None
             ) -> JobCost:
    with transaction(engine) as conn:
        rows = conn.execute(q("job_billed_tokens"), {"job_id": job_id}).all()
    by_mode: dict[str, Decimal | None] = {}
    for r in rows:
        by_mode[r.mode] = task_cost_usd(model, provider, input_tokens=int(r.input_tokens),
                                        output_tokens=int(r.output_tokens),
                                        input_image_tokens=int(r.input_image_tokens),
                                        billed_mode=r.mode)
    known = [v for v in by_mode.values() if v is not None]
    total: Decimal | None = sum(known, Decimal(0)) if len(known) == len(by_mode) else None
    return JobCost(
        actual_usd=total, billed_tasks=sum(int(r.tasks) for r in rows),
        input_tokens=sum(int(r.input_tokens) for r in rows),
        input_image_tokens=sum(int(r.input_image_tokens) for r in rows),
        output_tokens=sum(int(r.output_tokens) for r in rows), by_mode=by_mode)
