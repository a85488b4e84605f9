"""Jobs and tasks as the API and the dashboard read them: the views, one job, the lists
and counts. Reads of one statement run in autocommit."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any
from uuid import UUID

from sqlalchemy import Engine

from core.classify import MODERATION_CODES
from core.db import get_engine, transaction
from core.db.queries import q
from core.errors import InvalidInput, NotFound
from core.status import JOB_STATUSES, JOB_TERMINAL, TASK_STATUSES, progress_percentage

MAX_PAGE = 1000


@dataclass(frozen=True)
class JobRow:
    """The columns every reading of a job carries (the API's view, the dashboard's reports),
    and what follows from its counters."""

    id: UUID
    status: str
    total_tasks: int
    completed_tasks: int
    failed_tasks: int
    cancelled_tasks: int
    style: str
    count_per_prompt: int
    provider: str
    model: str
    size: str
    quality: str
    estimated_cost_usd: Decimal | None
    created_at: datetime

    @property
    def progress_percentage(self) -> float:
        return progress_percentage(total=self.total_tasks, completed=self.completed_tasks,
                                   failed=self.failed_tasks, cancelled=self.cancelled_tasks)

    @property
    def is_finished(self) -> bool:
        return self.status in JOB_TERMINAL


@dataclass(frozen=True)
class JobView(JobRow):
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    mode: str = "realtime"
    batch_fallback: str = "batch"
    output_format: str | None = None
    output_compression: int | None = None
    background: str | None = None
    moderation: str | None = None
    # Who and what (core.jobs.meta); the webhook URL is never part of a view (it may be secret)
    name: str | None = None
    tags: list[str] = field(default_factory=list)
    submitted_by: str | None = None
    # Order of work (core.jobs.schedule): priority and spend cap; spend as of the last check
    priority: str = "normal"
    max_cost_usd: Decimal | None = None
    spent_usd: Decimal | None = None

    def summary(self) -> dict[str, Any]:
        """The deployment guide's response shape."""
        return {
            "id": str(self.id),
            "status": self.status,
            "total_tasks": self.total_tasks,
            "completed_tasks": self.completed_tasks,
            "failed_tasks": self.failed_tasks,
        }

    def status_body(self) -> dict[str, Any]:
        return {**self.summary(), "progress_percentage": self.progress_percentage}

    def detail(self) -> dict[str, Any]:
        body = _shallow(self)
        body["id"] = str(self.id)
        body["progress_percentage"] = self.progress_percentage
        body["estimated_cost_usd"] = (
            float(self.estimated_cost_usd) if self.estimated_cost_usd is not None else None
        )
        for key in ("created_at", "updated_at", "started_at", "finished_at"):
            body[key] = body[key].isoformat() if body[key] else None
        for key in ("max_cost_usd", "spent_usd"):
            body[key] = float(body[key]) if body[key] is not None else None
        body["tags"] = list(self.tags or [])
        return body


@dataclass(frozen=True)
class TaskView:
    id: UUID
    job_id: UUID
    prompt_index: int
    image_index: int
    prompt: str
    style: str
    status: str
    attempts: int
    last_error_code: str | None
    last_error: str | None
    image_path: str | None
    thumbnail_path: str | None
    latency_ms: int | None
    input_tokens: int | None
    output_tokens: int | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    input_image_tokens: int | None = None
    billed_mode: str | None = None

    def to_dict(self) -> dict[str, Any]:
        body = _shallow(self)
        body["id"], body["job_id"] = str(self.id), str(self.job_id)
        for key in ("created_at", "updated_at", "started_at", "finished_at"):
            body[key] = body[key].isoformat() if body[key] else None
        return body


@dataclass(frozen=True)
class FailedTask:
    """A failed task as the pages that act on failures read it (the failures table, the
    edit-and-resubmit list)."""

    id: UUID
    prompt_index: int
    image_index: int
    prompt: str
    last_error_code: str | None
    last_error: str | None

    @property
    def refused(self) -> bool:
        """A moderation refusal: the same prompt would be refused again."""
        return self.last_error_code in MODERATION_CODES


@lru_cache(maxsize=8)
def _autocommit(engine: Engine) -> Engine:
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def _reader(engine: Engine | None) -> Engine:
    """Hot reads (status, task pages) in autocommit: no BEGIN/COMMIT round trips around
    a single SELECT."""
    return _autocommit(engine or get_engine())


def _shallow(view: JobView | TaskView) -> dict[str, Any]:
    # dataclasses.asdict deep-copies every value (datetimes, UUIDs): ~20x slower, and a
    # 1,000-row page of tasks is a hot read. The views are frozen, so no copy is needed.
    return {f.name: getattr(view, f.name) for f in fields(view)}


def job_view(row: Any) -> JobView:
    return JobView(**dict(row._mapping))


def _task(row: Any) -> TaskView:
    return TaskView(**dict(row._mapping))


def get_job(job_id: UUID, *, engine: Engine | None = None) -> JobView:
    with transaction(_reader(engine)) as conn:
        row = conn.execute(q("job_by_id"), {"job_id": job_id}).first()
    if row is None:
        raise NotFound(f"job {job_id} not found")
    return job_view(row)


def list_jobs(*, status: str | None = None, created_after: datetime | None = None,
              created_before: datetime | None = None, limit: int = 50, offset: int = 0,
              engine: Engine | None = None) -> list[JobView]:
    _check_status(status, JOB_STATUSES)
    check_page(limit, offset, MAX_PAGE)
    with transaction(engine) as conn:
        rows = conn.execute(q("list_jobs"), {
            "status": status, "created_after": created_after, "created_before": created_before,
            "limit": limit, "offset": offset,
        }).all()
    return [job_view(r) for r in rows]


def list_tasks(job_id: UUID, *, status: str | None = None, error_code: str | None = None,
               limit: int = 100, offset: int = 0, engine: Engine | None = None
               ) -> list[TaskView]:
    _check_status(status, TASK_STATUSES)
    check_page(limit, offset, MAX_PAGE)
    with transaction(_reader(engine)) as conn:
        if conn.execute(q("job_by_id"), {"job_id": job_id}).first() is None:
            raise NotFound(f"job {job_id} not found")
        rows = conn.execute(q("list_tasks"), {
            "job_id": job_id, "status": status, "error_code": error_code,
            "limit": limit, "offset": offset,
        }).all()
    return [_task(r) for r in rows]


def count_tasks(
    job_id: UUID, *, status: str | None = None, error_code: str | None = None,
    engine: Engine | None = None,
) -> int:
    with transaction(_reader(engine)) as conn:
        return int(conn.execute(q("count_tasks"), {
            "job_id": job_id, "status": status, "error_code": error_code}).scalar_one())


def task_counts(job_id: UUID, *, engine: Engine | None = None) -> dict[str, int]:
    """Tasks per status, counted from the rows (the truth the counters must match)."""
    with transaction(engine) as conn:
        rows = conn.execute(q("task_counts_by_status"), {"job_id": job_id}).all()
    return {r.status: int(r.n) for r in rows}


def _check_status(status: str | None, statuses: tuple[str, ...]) -> None:
    if status is not None and status not in statuses:
        raise InvalidInput("status", f"must be one of {', '.join(statuses)}")


def check_page(limit: int, offset: int, max_page: int) -> None:
    """InvalidInput naming ``limit`` or ``offset`` for a page a list does not serve."""
    if not 1 <= limit <= max_page:
        raise InvalidInput("limit", f"must be between 1 and {max_page}")
    if offset < 0:
        raise InvalidInput("offset", "must be >= 0")
