"""Reads for the API and the dashboard: a job's batches with their state and counts."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Engine

from core.db import transaction
from core.db.queries import q


@dataclass(frozen=True)
class BatchView:
    id: UUID
    state: str  # ours: preparing ... submitted, ingesting, done
    openai_status: str | None  # OpenAI's: validating, in_progress, finalizing, completed...
    task_count: int
    openai_batch_id: str | None
    input_file_id: str | None
    output_file_id: str | None
    error_file_id: str | None
    request_total: int | None
    request_completed: int | None
    request_failed: int | None
    cancel_requested: bool
    last_error: str | None
    created_at: datetime
    submitted_at: datetime | None
    finished_at: datetime | None

    @property
    def label(self) -> str:
        """What the operator reads: OpenAI's status once it has one, else our step."""
        if self.state == "done" and self.openai_status is None:
            return "not sent (cancelled)"
        return (self.openai_status or self.state).replace("_", " ")

    def to_dict(self) -> dict[str, Any]:
        body = {f.name: getattr(self, f.name) for f in fields(self)}
        body["id"] = str(self.id)
        for key in ("created_at", "submitted_at", "finished_at"):
            body[key] = body[key].isoformat() if body[key] else None
        body["label"] = self.label
        return body


def job_batches(job_id: UUID, *, engine: Engine | None = None) -> list[BatchView]:
    with transaction(engine) as conn:
        rows = conn.execute(q("batches_of_job"), {"job_id": job_id}).all()
    return [BatchView(**dict(r._mapping)) for r in rows]
