"""Deliveries that cannot reach the task handler: recorded, counted, shown, bounded.

A wrong WORKER_URL (404), a dead host or port (connection refused), a TLS error or an
auth mismatch (401/403) used to loop silently: the task stayed `queued` with 0 attempts
and no error. Here such a delivery is recorded on its row (``last_error`` with the status
and the URL, never a header or secret), upserted into ``delivery_problems`` (what
/healthz, /metrics and the dashboard banner read), logged once per cause and URL, and
after ``UNDELIVERABLE_MAX_TRIES`` undeliverable tries the task fails as `undeliverable`.

Why fail the tasks rather than pause the queue: our table is the only record of what
failed; a failed task ends its job (the operator sees it finished with errors, not stuck
at 0 %), and "Retry failed" re-runs exactly those tasks once the URL is fixed. A queue
that paused itself would also hold every healthy job behind a transient refusal (a worker
restarting) until someone resumed it by hand. The tries are spread by the retry backoff,
so a worker that restarts within that time loses nothing.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

import httpx
from prometheus_client import Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncEngine

from core import metrics
from core.db.queries import q

log = logging.getLogger(__name__)

ERROR_CODE = "undeliverable"
# Statuses that mean "this is not our handler, or it refused us before looking":
# 404/405 a wrong path, 401/403 an OIDC or TASK_SECRET mismatch (ours or Cloud Run's).
UNDELIVERABLE_STATUSES = frozenset({401, 403, 404, 405})
# Cloud Tasks mode: each hand-over the queue dropped (after its own max_attempts tries)
# without our handler answering counts one try; this many and the task fails.
QUEUE_DROPS_BEFORE_FAILING = 2
# How long a cause stays on /healthz and the dashboard after it was last seen.
PROBLEM_WINDOW_S = 300.0

UNDELIVERABLE = Counter(
    "aiwebimage_undeliverable_deliveries_total",
    "Deliveries that never reached the task handler, by cause.",
    ["cause"],
    registry=metrics.REGISTRY,
)

# From the delivery_problems table at scrape time, so /metrics shows causes seen by any
# process (a separate dispatcher, the Cloud Tasks sweeper), not only this one.
RECENT = Gauge(
    "aiwebimage_undeliverable_recent",
    "Undeliverable deliveries per cause seen in the last PROBLEM_WINDOW_S (all processes).",
    ["cause"],
    registry=metrics.REGISTRY,
)

_logged: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Cause:
    """Why a delivery did not reach the handler: a short code and one line for people."""

    code: str  # http_404 | connect_refused | connect_error | tls_error | http_401 ...
    detail: str


def safe_url(url: str) -> str:
    """The URL as shown and stored: no user:password@ and no query (pure)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def classify(url: str, *, status: int | None = None,
             error: BaseException | None = None) -> Cause | None:
    """The undeliverable cause of one delivery, or None when the handler (probably) ran
    or the failure is an ordinary retry (timeouts, 429/5xx, a dropped connection) (pure)."""
    url = safe_url(url)
    if error is not None:
        if isinstance(error, httpx.ConnectTimeout):
            return Cause("connect_timeout", f"connection to {url} timed out")
        if isinstance(error, httpx.ConnectError):
            text = str(error)
            if _is_tls(error, text):
                return Cause("tls_error", f"TLS error connecting to {url}: {_short(text)}")
            if "refused" in text.lower() or any(
                    isinstance(e, ConnectionRefusedError) for e in _chain(error)):
                return Cause("connect_refused", f"connection refused by {url}")
            return Cause("connect_error", f"cannot connect to {url}: {_short(text)}")
        return None
    if status is not None and status in UNDELIVERABLE_STATUSES:
        hint = {404: "no task handler at this URL (check WORKER_URL)",
                405: "no task handler at this URL (check WORKER_URL)",
                401: "the handler refused the delivery's credentials (TASK_SECRET or OIDC "
                     "audience/service account)",
                403: "the delivery's identity may not call the handler (TASK_SECRET, "
                     "CLOUD_TASKS_SERVICE_ACCOUNT or the run.invoker role)"}[status]
        return Cause(f"http_{status}", f"HTTP {status} from {url}: {hint}")
    return None


def _chain(error: BaseException) -> list[BaseException]:
    """The error and its causes (httpx wraps the OSError that says what happened)."""
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _is_tls(error: BaseException, text: str) -> bool:
    if any(isinstance(e, ssl.SSLError) for e in _chain(error)):
        return True
    return "ssl" in text.lower() or "certificate" in text.lower()


def _short(text: str, limit: int = 160) -> str:
    line = text.splitlines()[0] if text else "no detail"
    return line[:limit]


def note(cause: Cause, url: str, *, max_tries: int) -> None:
    """Count the cause; log it once per (cause, URL) per process, at ERROR."""
    url = safe_url(url)
    UNDELIVERABLE.labels(cause=cause.code).inc()
    if (cause.code, url) in _logged:
        return
    _logged.add((cause.code, url))
    log.error("deliveries cannot reach the task handler: %s; tasks fail as undeliverable "
              "after %d such tries", cause.detail, max_tries,
              extra={"action": "undeliverable", "cause": cause.code, "url": url})


async def record(engine: AsyncEngine, *, task_id: UUID, marker: datetime | None,
                 cause: Cause, url: str, max_tries: int, min_delay_s: float,
                 max_delay_s: float) -> str | None:
    """Record one undeliverable try on the task's row; the task's status after it
    ('failed' at the bound), or None when the row had moved on (finished, reclaimed)."""
    note(cause, url, max_tries=max_tries)
    async with engine.begin() as conn:
        row = (await conn.execute(q("record_undeliverable"), _params(
            task_id, marker, cause, url, max_tries, min_delay_s, max_delay_s))).first()
    return None if row is None else str(row.status)


def record_sync(conn: Any, *, task_id: UUID, cause: Cause, url: str, max_tries: int,
                min_delay_s: float, max_delay_s: float) -> str | None:
    """The same for a sync connection (the Cloud Tasks sweeper)."""
    note(cause, url, max_tries=max_tries)
    row = conn.execute(q("record_undeliverable"), _params(
        task_id, None, cause, url, max_tries, min_delay_s, max_delay_s)).first()
    return None if row is None else str(row.status)


def on_dropped_by_queue(conn: Any, rows: Sequence[Any], settings: Any) -> set[UUID]:
    """The Cloud Tasks sweeper's hook: of the rows it just moved back to pending because
    the queue no longer holds them, those our handler never answered (attempts 0) count
    an undeliverable try. Returns the ids that failed at the bound (not to enqueue)."""
    if not rows or not getattr(settings, "WORKER_URL", None):
        return set()
    from core.worker_url import task_url

    url = safe_url(task_url(settings.WORKER_URL))
    cause = Cause("dropped_by_queue",
                  f"Cloud Tasks gave up after its retries without reaching the handler at "
                  f"{url} (check WORKER_URL, the service's ingress and the run.invoker role)")
    found = conn.execute(q("record_dropped_by_queue"), {
        "ids": [r.id for r in rows], "detail": cause.detail,
        "max_tries": QUEUE_DROPS_BEFORE_FAILING}).all()
    if found:
        seen(conn, cause, url, len(found))
        note(cause, url, max_tries=QUEUE_DROPS_BEFORE_FAILING)
    return {r.id for r in found if r.status == "failed"}


def seen(conn: Any, cause: Cause, url: str, times: int) -> Any:
    """Count ``times`` more occurrences of ``cause`` in delivery_problems (what /healthz,
    /metrics and the banner read), in the caller's transaction; a coroutine for an async
    connection."""
    return conn.execute(q("note_delivery_problem"), {
        "cause": cause.code, "url": safe_url(url), "detail": cause.detail[:500], "n": times})


def _params(task_id: UUID, marker: datetime | None, cause: Cause, url: str,
            max_tries: int, min_delay_s: float, max_delay_s: float) -> dict[str, Any]:
    return {"task_id": task_id, "marker": marker, "cause": cause.code, "url": safe_url(url),
            "detail": cause.detail[:500], "max_tries": max_tries,
            "min_delay_s": min_delay_s, "max_delay_s": max_delay_s}


@dataclass(frozen=True)
class Problem:
    cause: str
    url: str
    detail: str
    occurrences: int
    age_s: float


def recent_problems_rows(rows: Any) -> list[Problem]:
    return [Problem(r.cause, r.url, r.detail, int(r.occurrences), float(r.age_s))
            for r in rows]


async def recent_problems(engine: AsyncEngine,
                          window_s: float = PROBLEM_WINDOW_S) -> list[Problem]:
    """Causes seen in the last ``window_s`` (for /healthz and /metrics)."""
    async with engine.connect() as conn:
        rows = (await conn.execute(q("recent_delivery_problems"),
                                   {"window_s": window_s})).all()
    return recent_problems_rows(rows)


def recent_problems_sync(engine: Any, window_s: float = PROBLEM_WINDOW_S) -> list[Problem]:
    """The same for the dashboard (sync engine)."""
    with engine.connect() as conn:
        rows = conn.execute(q("recent_delivery_problems"), {"window_s": window_s}).all()
    return recent_problems_rows(rows)


def set_recent(problems: list[Problem]) -> None:
    RECENT.clear()
    for problem in problems:
        RECENT.labels(cause=problem.cause).set(problem.occurrences)


def reason(problem: Problem) -> str:
    """One line for /healthz and the dashboard banner."""
    return (f"deliveries do not reach the task handler: {problem.detail} "
            f"({problem.occurrences} so far, last {int(problem.age_s)} s ago)")
