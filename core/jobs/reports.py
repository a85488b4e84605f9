"""Dashboard reads: recent jobs, charts, job performance, gallery and failure pages,
queue depth. Every query lives in core/jobs/reports.sql and aggregates or pages in SQL, so
what reaches Python is at most one page of rows or one point per time bucket."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import Engine

from core.db import transaction
from core.db.queries import q
from core.errors import InvalidInput
from core.jobs.views import FailedTask, JobRow, check_page
from core.status import JOB_STATUSES

MAX_PAGE = 500
# A chart needs no more points than a screen has room for; buckets grow to fit.
MAX_CHART_POINTS = 120
_NICE_BUCKETS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600,
                   43200, 86400, 604800)


@dataclass(frozen=True)
class JobReport(JobRow):
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float
    cost_so_far_usd: Decimal | None


@dataclass(frozen=True)
class SeriesPoint:
    bucket: datetime
    succeeded: int
    failed: int
    cancelled: int
    remaining: int


@dataclass(frozen=True)
class JobPerformance:
    succeeded: int
    failed: int
    retrying: int
    images_per_min: float | None
    recent_images_per_min: float | None
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: int | None
    mean_attempts: float | None


@dataclass(frozen=True)
class GalleryItem:
    id: UUID
    prompt_index: int
    image_index: int
    prompt: str
    image_path: str | None
    thumbnail_path: str | None
    latency_ms: int | None
    attempts: int
    finished_at: datetime | None


@dataclass(frozen=True)
class FailureRow(FailedTask):
    attempts: int
    last_attempt_at: datetime | None


@dataclass(frozen=True)
class QueueDepth:
    pending: int
    due: int
    backing_off: int
    in_flight: int
    lease_expired: int
    oldest_waiting_s: float | None

    @property
    def waiting(self) -> int:
        return self.pending + self.due + self.backing_off


@dataclass(frozen=True)
class ThroughputPoint:
    bucket: datetime
    succeeded: int
    failed: int


def _statuses(statuses: Sequence[str] | None) -> list[str] | None:
    if not statuses:
        return None
    unknown = sorted(set(statuses) - set(JOB_STATUSES))
    if unknown:
        raise InvalidInput("status", f"unknown {', '.join(unknown)}; one of "
                                     f"{', '.join(JOB_STATUSES)}")
    return list(statuses)


def _rows(engine: Engine | None, name: str, params: dict[str, Any]) -> list[Any]:
    with transaction(engine) as conn:
        return list(conn.execute(q(name), params).all())


def _scalar(engine: Engine | None, name: str, params: dict[str, Any]) -> int:
    with transaction(engine) as conn:
        return int(conn.execute(q(name), params).scalar_one())


def recent_jobs(
    *,
    statuses: Sequence[str] | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
    engine: Engine | None = None,
) -> list[JobReport]:
    """Jobs newest first, with duration and cost so far."""
    check_page(limit, offset, MAX_PAGE)
    rows = _rows(engine, "report_recent_jobs", {
        "statuses": _statuses(statuses), "created_after": created_after,
        "created_before": created_before, "limit": limit, "offset": offset})
    return [JobReport(**dict(r._mapping)) for r in rows]


def count_jobs(
    *,
    statuses: Sequence[str] | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    engine: Engine | None = None,
) -> int:
    return _scalar(engine, "report_count_jobs", {
        "statuses": _statuses(statuses), "created_after": created_after,
        "created_before": created_before})


def bucket_seconds(span_s: float, max_points: int = MAX_CHART_POINTS) -> int:
    """The smallest round bucket width that draws ``span_s`` in at most ``max_points``."""
    needed = max(span_s, 0.0) / max(max_points, 1)
    for width in _NICE_BUCKETS_S:
        if width >= needed:
            return width
    return int(math.ceil(needed / 86400) * 86400)


def task_state_series(job_ids: Sequence[UUID], *, engine: Engine | None = None
                      ) -> list[SeriesPoint]:
    """Cumulative succeeded / failed / cancelled tasks of the jobs over time, and how
    many remained, one point per bucket in which something finished and one per job
    submitted (a job's tasks only remain from the moment it exists)."""
    ids = [UUID(str(j)) for j in job_ids]
    if not ids:
        return []
    with transaction(engine) as conn:
        span = conn.execute(q("report_jobs_span"), {"job_ids": ids}).one()
        if span.first_created is None:
            return []
        width = bucket_seconds((span.last_moment - span.first_created).total_seconds())
        rows = conn.execute(q("report_task_state_series"),
                            {"job_ids": ids, "bucket_s": width}).all()
        created = conn.execute(q("report_jobs_created"), {"job_ids": ids}).all()
    step = timedelta(seconds=width)
    # Each finish point is the state at the end of its bucket, when all in it had finished.
    finished = [(min(r.bucket + step, span.last_moment), int(r.succeeded), int(r.failed),
                 int(r.cancelled)) for r in rows]
    return burn_up(finished, [(c.created_at, int(c.total_tasks)) for c in created],
                   end=span.last_moment, hold=step)


def burn_up(finished: Sequence[tuple[datetime, int, int, int]],
            created: Sequence[tuple[datetime, int]], *, end: datetime, hold: timedelta
            ) -> list[SeriesPoint]:
    """The chart's points (pure). ``finished``: (moment, cumulative succeeded, failed,
    cancelled); ``created``: (moment, tasks) per job. "remaining" at a moment counts only
    tasks of jobs created by then. The last state is held for ``hold`` past ``end``: a
    step chart draws a point's state up to the next point, so without a point after it
    the final state would have no width at all."""
    if not created:
        return []
    moments = sorted({m for m, *_ in finished} | {m for m, _ in created})
    done = sorted(finished)
    jobs = sorted(created)
    points: list[SeriesPoint] = []
    state = (0, 0, 0)
    existing = 0
    i = j = 0
    for moment in moments:
        while i < len(done) and done[i][0] <= moment:
            state = done[i][1:]
            i += 1
        while j < len(jobs) and jobs[j][0] <= moment:
            existing += jobs[j][1]
            j += 1
        points.append(SeriesPoint(moment, *state, remaining=max(existing - sum(state), 0)))
    last = points[-1]
    points.append(SeriesPoint(max(end, last.bucket) + hold, last.succeeded, last.failed,
                              last.cancelled, last.remaining))
    return points


def per_minute(count: int, seconds: float | None) -> float | None:
    """A rate in images per minute; None when there is no time to divide by yet."""
    if seconds is None or seconds <= 0:
        return None
    return round(count * 60.0 / seconds, 1)


def job_performance(job_id: UUID, *, window_s: float = 300.0, engine: Engine | None = None
                    ) -> JobPerformance:
    """Images per minute (over the job's active time, and over the last ``window_s``) and
    latency percentiles of succeeded tasks."""
    with transaction(engine) as conn:
        r = conn.execute(q("report_job_performance"),
                         {"job_id": job_id, "window_s": window_s}).one()
    return JobPerformance(
        succeeded=int(r.succeeded), failed=int(r.failed), retrying=int(r.retrying),
        images_per_min=per_minute(int(r.succeeded), r.active_s),
        # The same measure as images_per_min, over the part of the window the job was
        # active in: dividing by the full five minutes would show a 10-second job at a
        # fraction of the rate it ran at.
        recent_images_per_min=per_minute(int(r.recent_succeeded), r.recent_active_s),
        p50_ms=r.p50_ms, p90_ms=r.p90_ms, p99_ms=r.p99_ms, max_ms=r.max_ms,
        mean_attempts=round(r.mean_attempts, 2) if r.mean_attempts is not None else None,
    )


def gallery_page(job_id: UUID, *, limit: int = 24, offset: int = 0,
                 engine: Engine | None = None) -> list[GalleryItem]:
    check_page(limit, offset, MAX_PAGE)
    rows = _rows(engine, "report_gallery_page",
                 {"job_id": job_id, "limit": limit, "offset": offset})
    return [GalleryItem(**dict(r._mapping)) for r in rows]


def failures_page(job_id: UUID, *, error_code: str | None = None, limit: int = 50,
                  offset: int = 0, engine: Engine | None = None) -> list[FailureRow]:
    check_page(limit, offset, MAX_PAGE)
    rows = _rows(engine, "report_failures_page", {
        "job_id": job_id, "error_code": error_code, "limit": limit, "offset": offset})
    return [FailureRow(**dict(r._mapping)) for r in rows]


def count_failures(job_id: UUID, *, error_code: str | None = None,
                   engine: Engine | None = None) -> int:
    return _scalar(engine, "report_count_failures",
                   {"job_id": job_id, "error_code": error_code})


def error_codes(job_id: UUID, *, engine: Engine | None = None) -> list[tuple[str, int]]:
    """Distinct error codes of the job's failed tasks with their counts, commonest first."""
    rows = _rows(engine, "report_error_codes", {"job_id": job_id})
    return [(r.error_code, int(r.n)) for r in rows]


def queue_depth(*, engine: Engine | None = None) -> QueueDepth:
    with transaction(engine) as conn:
        r = conn.execute(q("report_queue_depth")).one()
    return QueueDepth(pending=int(r.pending), due=int(r.due), backing_off=int(r.backing_off),
                      in_flight=int(r.in_flight), lease_expired=int(r.lease_expired),
                      oldest_waiting_s=r.oldest_waiting_s)


def recent_throughput(*, window_s: float = 3600.0, bucket_s: int = 60,
                      engine: Engine | None = None) -> list[ThroughputPoint]:
    """Tasks finished per ``bucket_s`` over the last ``window_s``, across all jobs."""
    rows = _rows(engine, "report_recent_throughput",
                 {"window_s": window_s, "bucket_s": bucket_s})
    return [ThroughputPoint(r.bucket, int(r.succeeded), int(r.failed)) for r in rows]


def recent_job_ids(*, limit: int = 20, engine: Engine | None = None) -> list[UUID]:
    return [r.id for r in _rows(engine, "report_job_ids_recent", {"limit": limit})]


def fill_buckets(points: Sequence[ThroughputPoint], *, now: datetime, window_s: float,
                 bucket_s: int) -> list[ThroughputPoint]:
    """One point per bucket over the whole window, zeros where nothing finished (pure):
    a chart of only the buckets that had work would squeeze "the last hour" into the
    few minutes something happened."""
    step = timedelta(seconds=bucket_s)
    epoch = datetime(2000, 1, 1, tzinfo=now.tzinfo)  # the SQL's date_bin origin
    last = epoch + step * ((now - epoch) // step)
    count = max(int(window_s // bucket_s), 1)
    by_bucket = {p.bucket.astimezone(now.tzinfo): p for p in points}
    filled = []
    for i in range(count - 1, -1, -1):
        bucket = last - step * i
        p = by_bucket.get(bucket)
        filled.append(ThroughputPoint(bucket, p.succeeded if p else 0, p.failed if p else 0))
    return filled
