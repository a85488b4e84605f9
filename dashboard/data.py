"""The dashboard's one door to data: settings, a cached engine, and thin calls into core.

Pages call these functions and never write SQL. Reads that feed charts are cached for a
few seconds (several operators watching one batch cost one query per interval); every
action clears those caches so the operator sees its effect at once.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import TypeVar
from uuid import UUID

import pandas as pd
import streamlit as st
from sqlalchemy import Engine

from core import db
from core.config import Settings, get_settings
from core.dispatch import Dispatcher, get_dispatcher
from core.dispatch.order_of_work import JobOrder
from core.dispatch.order_of_work import order_of_work as core_order_of_work
from core.errors import AppError, StorageError
from core.jobs import export, export_links, lifecycle, reports, views
from core.jobs import schedule as job_schedule
from core.jobs.meta import JobMeta
from core.jobs.schedule import Schedule
from core.jobs.validation import BatchSpec
from core.storage import Storage, get_storage

CHART_TTL_S = 5
T = TypeVar("T")


def settings() -> Settings:
    return get_settings()


@st.cache_resource(show_spinner=False)
def _engine_for(url: str) -> Engine:
    return db.get_engine(url)


def database_url() -> str:
    return db.resolve_database_url(settings())


def engine() -> Engine:
    """One pooled engine per database for the whole Streamlit server (all sessions)."""
    return _engine_for(database_url())


def storage() -> Storage:
    return get_storage(settings())


def dispatcher() -> Dispatcher:
    return get_dispatcher(settings())


# ---- reads ---------------------------------------------------------------------------

def job(job_id: UUID) -> views.JobView:
    return views.get_job(job_id, engine=engine())


def recent_jobs(statuses: Sequence[str], created_after: datetime | None,
                created_before: datetime | None, limit: int, offset: int
                ) -> tuple[list[reports.JobReport], int]:
    kwargs = {"statuses": statuses, "created_after": created_after,
              "created_before": created_before, "engine": engine()}
    return (reports.recent_jobs(limit=limit, offset=offset, **kwargs),  # type: ignore[arg-type]
            reports.count_jobs(**kwargs))  # type: ignore[arg-type]


def recent_job_ids(limit: int = 50) -> list[UUID]:
    return reports.recent_job_ids(limit=limit, engine=engine())


@st.cache_data(ttl=CHART_TTL_S, show_spinner=False, max_entries=64)
def _series(url: str, job_ids: tuple[str, ...]) -> pd.DataFrame:
    points = reports.task_state_series([UUID(j) for j in job_ids], engine=_engine_for(url))
    return pd.DataFrame(
        [(p.bucket, p.succeeded, p.failed, p.cancelled, p.remaining) for p in points],
        columns=["time", "succeeded", "failed", "cancelled", "remaining"])


def task_state_series(job_ids: Sequence[UUID]) -> pd.DataFrame:
    return _series(database_url(), tuple(sorted(str(j) for j in job_ids)))


def performance(job_id: UUID) -> reports.JobPerformance:
    return reports.job_performance(job_id, engine=engine())


def gallery(job_id: UUID, limit: int, offset: int) -> tuple[list[reports.GalleryItem], int]:
    return (reports.gallery_page(job_id, limit=limit, offset=offset, engine=engine()),
            views.count_tasks(job_id, status="succeeded", engine=engine()))


def failures(job_id: UUID, error_code: str | None, limit: int, offset: int
             ) -> tuple[list[reports.FailureRow], int]:
    return (reports.failures_page(job_id, error_code=error_code, limit=limit, offset=offset,
                                  engine=engine()),
            reports.count_failures(job_id, error_code=error_code, engine=engine()))


def error_codes(job_id: UUID) -> list[tuple[str, int]]:
    return reports.error_codes(job_id, engine=engine())


def tasks(job_id: UUID, status: str | None, limit: int, offset: int
          ) -> tuple[list[views.TaskView], int]:
    return (views.list_tasks(job_id, status=status, limit=limit, offset=offset,
                            engine=engine()),
            views.count_tasks(job_id, status=status, engine=engine()))


def queue_depth() -> reports.QueueDepth:
    return reports.queue_depth(engine=engine())


@st.cache_data(ttl=CHART_TTL_S, show_spinner=False, max_entries=8)
def _throughput(url: str, window_s: float, bucket_s: int) -> pd.DataFrame:
    points = reports.recent_throughput(window_s=window_s, bucket_s=bucket_s,
                                       engine=_engine_for(url))
    points = reports.fill_buckets(points, now=datetime.now(UTC), window_s=window_s,
                                  bucket_s=bucket_s)
    return pd.DataFrame([(p.bucket, p.succeeded, p.failed) for p in points],
                        columns=["time", "succeeded", "failed"])


def recent_throughput(window_s: float = 3600.0, bucket_s: int = 60) -> pd.DataFrame:
    return _throughput(database_url(), window_s, bucket_s)


def _queue_call(action: Callable[[], T]) -> T:
    """Run a queue call; a client error (Cloud Tasks API: permission, quota, network)
    becomes an AppError the page can show instead of a traceback."""
    try:
        return action()
    except AppError:
        raise
    except Exception as exc:
        raise AppError(f"{type(exc).__name__}: {str(exc)[:300]}") from exc


def queue_paused() -> bool:
    return _queue_call(lambda: dispatcher().is_paused())


def image_source(key: str) -> bytes | str:
    """What st.image needs: the bytes for local storage (the browser then needs no route
    to the worker), a URL for a bucket (public or signed)."""
    store = storage()
    if store.name == "local":
        return store.read(key)
    return store.url(key)


def try_image_source(key: str | None) -> bytes | str | None:
    if not key:
        return None
    try:
        return image_source(key)
    except StorageError:
        return None


def tasks_csv(job_id: UUID) -> Callable[[], bytes]:
    """Deferred: the CSV is built only when the operator clicks download."""
    eng = engine()
    return lambda: export.tasks_csv_bytes(job_id, engine=eng)


def images_zip_link(job_id: UUID) -> str | None:
    """A signed link to the worker's streamed ZIP of the job's images; None when the
    dashboard does not know the worker's address (WORKER_URL)."""
    s = settings()
    if not s.WORKER_URL:
        return None
    return export_links.zip_link(s.WORKER_URL, job_id, export_links.signing_key(s))


def images_zip(job_id: UUID) -> Callable[[], bytes]:
    """Deferred: built on click, one image at a time through a temporary file. Streamlit
    serves a download from memory, so the finished ZIP is handed over as bytes."""
    eng, store = engine(), storage()

    def build() -> bytes:
        with tempfile.TemporaryFile() as out:
            export.write_images_zip(job_id, store, out, engine=eng)
            out.seek(0)
            return out.read()

    return build


def image_bytes_for_download(key: str) -> bytes:
    return storage().read(key)


# ---- actions -------------------------------------------------------------------------

def _changed() -> None:
    _series.clear()
    _throughput.clear()


def changed() -> None:
    """After an action elsewhere (dashboard.team_widgets): charts show its effect at once."""
    _changed()


def submit(spec: BatchSpec, options: lifecycle.GenerationOptions,
           meta: JobMeta | None = None, schedule: Schedule | None = None
           ) -> lifecycle.Submitted:
    submitted = lifecycle.submit(spec, options=options, engine=engine(), settings=settings(),
                                 meta=meta, schedule=schedule)
    _changed()
    return submitted


def retry_preview(job_id: UUID, include_refusals: bool) -> lifecycle.RetryResult:
    """What "Retry all failed" would do: how many, at what estimated cost (dry run)."""
    return lifecycle.retry_failed(job_id, None, include_refusals=include_refusals, dry_run=True,
                             engine=engine(), settings=settings())


def retry_failed(job_id: UUID, task_ids: Sequence[UUID] | None, *,
                 include_refusals: bool = False) -> lifecycle.RetryResult:
    result = lifecycle.retry_failed(job_id, task_ids, include_refusals=include_refusals,
                               engine=engine(), settings=settings())
    _changed()
    return result


def cancel(job_id: UUID) -> views.JobView:
    if not settings().USE_CLOUD_TASKS:
        view = lifecycle.cancel_job(job_id, engine=engine())
    else:  # the job's Cloud Tasks in the window go too (core.dispatch.cloudtasks.window)
        from core.dispatch.cloudtasks.window import cancel_window, drop_window

        names, _ = cancel_window(dispatcher(), job_id, engine=engine())
        view = lifecycle.cancel_job(job_id, engine=engine())
        drop_window(dispatcher(), names)
    _changed()
    return view


def order_of_work() -> list[JobOrder]:
    """Per running job its priority, share, spend and what it waits for. The paused flag
    comes from the table's mirror of the queue (core.dispatch.queue_state), not from a
    Cloud Tasks call: the Job page draws this on every refresh, and an unreachable queue
    must not hold each refresh for the client's retry deadline or break the page."""
    from core.dispatch import queue_state

    paused = queue_state.is_paused(settings().QUEUE_NAME, engine=engine())
    return core_order_of_work(paused=paused, engine=engine(),
                              starvation_s=settings().PRIORITY_STARVATION_S)


def set_schedule(job_id: object, *, priority: str, max_cost_usd: Decimal | None,
                 clear_cap: bool) -> None:
    job_schedule.set_schedule(UUID(str(job_id)), priority=priority, max_cost_usd=max_cost_usd,
                              clear_cap=clear_cap, engine=engine())
    if settings().USE_CLOUD_TASKS:  # the window follows the new order now
        from core.dispatch.cloudtasks import window

        window.refill(dispatcher(), window=settings().CLOUD_TASKS_WINDOW,
                      starvation_s=settings().PRIORITY_STARVATION_S, engine=engine())


def pause_queue() -> None:
    _queue_call(lambda: dispatcher().pause())


def resume_queue() -> None:
    _queue_call(lambda: dispatcher().resume())


