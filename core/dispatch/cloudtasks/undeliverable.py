"""Cloud Tasks mode: deliveries that never reach the handler, shown within seconds.

With a wrong WORKER_URL (404), a refused connection or mismatched auth (401/403) the queue
retries on its own schedule and our handler never runs, so nothing of ours sees it; the
queue that ``aiwebimage queue create`` makes retries for about 7 hours before it drops the
task (core.dispatch.undeliverable.on_dropped_by_queue, the old and slow bound). Here the
worker's frequent checks (core.dispatch.cloudtasks.checks, every LEASE_CHECK_INTERVAL_S) ask
the queue about a bounded slice of rows it was handed that no delivery has claimed, and read what
the queue itself recorded: ``dispatch_count`` and ``last_attempt.response_status`` (a
google.rpc.Status). GetTask's default BASIC view carries both; FULL would add only the
request body and needs the extra cloudtasks.tasks.fullView permission, so it is not asked.

The rule (``judge``, pure): the last attempt was answered NOT_FOUND, UNAUTHENTICATED or
PERMISSION_DENIED (what HTTP 404 / 401 / 403 become), or UNAVAILABLE while this worker
cannot connect to the task URL either (a refused or unreachable target; our own handler
answering 503, say with the database down, is reachable and so not counted, and it
would have been charged as an attempt if it had claimed). Anything else (a deadline, a
5xx, no answer yet) is the queue's ordinary retrying. The tries are the queue's dispatch
count, so looking twice at the same task counts nothing twice; at UNDELIVERABLE_MAX_TRIES
the task fails as `undeliverable` (the job's counters move once, in SQL) and its Cloud
Task is deleted, so the queue stops retrying it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from uuid import UUID

import httpx
from google.api_core import exceptions as gexc
from google.rpc import code_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db.queries import q
from core.dispatch import undeliverable
from core.dispatch.undeliverable import Cause

log = logging.getLogger(__name__)

# A row handed over this recently is left alone (its first delivery is under way), and a
# row looked at this recently waits: so the worst case until shown is one check interval
# plus this, and a long backlog is looked at a slice per check.
GRACE_S = 2.0
CHECK_BATCH = 50
LOOKUP_CONCURRENCY = 8
LOOKUP_TIMEOUT_S = 10.0
PROBE_TIMEOUT_S = 3.0
# Rows not looked at for this long belong to the stranded sweep (never below this, so a
# small STRANDED_AFTER_S in tests does not empty the window).
MIN_WINDOW_S = 600.0

# An unreachable target fails its tasks only once its tries span this long (may_fail).
UNREACHABLE_SPREAD_S = 60.0

# google.rpc codes Cloud Tasks records for answers that mean "not our handler, or it
# refused the delivery before looking": the HTTP status they stand for.
NEVER_REACHED = {code_pb2.NOT_FOUND: 404, code_pb2.UNAUTHENTICATED: 401,
                 code_pb2.PERMISSION_DENIED: 403}


@dataclass(frozen=True)
class Seen:
    """What GetTask said about one Cloud Task, reduced to what the rule reads."""

    dispatch_count: int
    answered: bool  # last_attempt has a response (not in flight, not never tried)
    code: int | None  # last_attempt.response_status.code, when answered
    first_dispatch_s: float | None = None  # first_attempt.dispatch_time (epoch seconds)


def seen_from_task(task: Any) -> Seen:
    """From a tasks_v2.Task (pure)."""
    from google.cloud import tasks_v2

    pb = tasks_v2.Task.pb(task) if isinstance(task, tasks_v2.Task) else task
    answered = pb.HasField("last_attempt") and pb.last_attempt.HasField("response_time")
    code = pb.last_attempt.response_status.code if answered else None
    first = (pb.first_attempt.dispatch_time.ToNanoseconds() / 1e9
             if pb.first_attempt.HasField("dispatch_time") else None)
    return Seen(int(pb.dispatch_count), answered, code, first)


def needs_probe(seen: Seen) -> bool:
    """Whether the rule needs to know if this worker can reach the task URL (pure)."""
    return seen.answered and seen.code == code_pb2.UNAVAILABLE and seen.dispatch_count > 0


def judge(seen: Seen, *, url: str, unreachable: Cause | None) -> Cause | None:
    """The undeliverable cause the queue's record shows, or None (pure). ``unreachable``:
    what this worker's own probe of the task URL found (None: it answered, or not asked)."""
    if seen.dispatch_count <= 0 or not seen.answered or seen.code is None:
        return None
    status = NEVER_REACHED.get(seen.code)
    if status is not None:
        cause = undeliverable.classify(url, status=status)
        assert cause is not None  # 401/403/404 are all undeliverable statuses
        return Cause(cause.code, f"Cloud Tasks deliveries get {cause.detail}")
    if seen.code == code_pb2.UNAVAILABLE and unreachable is not None:
        return Cause(unreachable.code,
                     f"Cloud Tasks deliveries cannot connect: {unreachable.detail}")
    return None


def may_fail(seen: Seen, cause: Cause, *, now_s: float) -> bool:
    """Whether this cause may end the task at the bound (pure). A 404/401/403 is an answer
    that will not change by waiting; an unreachable target may be a single host
    restarting, so its tries must also span UNREACHABLE_SPREAD_S since the first dispatch
    (a restart within that loses nothing; with the queue's backoff the bound then falls
    within about a minute)."""
    if not cause.code.startswith(("connect_", "tls_")):
        return True
    return (seen.first_dispatch_s is not None
            and now_s - seen.first_dispatch_s >= UNREACHABLE_SPREAD_S)


class TaskInspector(Protocol):
    """The queue calls the check makes (CloudTasksDispatcher has a client that does)."""

    def get(self, name: str) -> Any: ...

    def delete(self, name: str) -> None: ...


class ClientInspector:
    """GetTask / DeleteTask through a CloudTasksDispatcher's client, no client retry (an
    unanswered lookup is asked again next check)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def get(self, name: str) -> Any:
        return self.client.get_task(name=name, timeout=LOOKUP_TIMEOUT_S, retry=None)

    def delete(self, name: str) -> None:
        self.client.delete_task(name=name, timeout=LOOKUP_TIMEOUT_S, retry=None)


def probe(url: str) -> Cause | None:
    """Can this worker connect to the task URL? A connect-level cause when not; None when
    anything answers (a GET of the POST-only route is 405 from our handler)."""
    try:
        httpx.get(url, timeout=PROBE_TIMEOUT_S)
    except httpx.HTTPError as exc:
        return undeliverable.classify(url, error=exc)
    return None


@dataclass
class Check:
    looked: int = 0
    recorded: int = 0
    failed: int = 0
    gone: int = 0
    unknown: int = 0
    errors: list[str] = field(default_factory=list)


_warned: set[str] = set()


def _warn_once(kind: str, message: str, *args: object) -> None:
    """A missing IAM role says so once per process, as the stranded sweep's does; the
    check goes on (the queue's drop still ends such tasks, only later)."""
    if kind in _warned:
        log.debug(message, *args)
        return
    _warned.add(kind)
    log.warning(message, *args, extra={"action": "undelivered_check_error", "kind": kind})


def _lookup(inspector: TaskInspector, name: str) -> Seen | Literal[False] | None:
    """Seen when the queue holds the task; False when it does not; None: cannot tell."""
    try:
        return seen_from_task(inspector.get(name))
    except gexc.NotFound:
        return False
    except gexc.PermissionDenied:
        _warn_once("get_task_denied",
                   "cannot read Cloud Tasks tasks (GetTask PERMISSION_DENIED: grant the "
                   "worker's service account roles/cloudtasks.viewer); deliveries that "
                   "never reach the handler end only when the queue drops them")
    except (gexc.GoogleAPICallError, gexc.RetryError) as exc:
        _warn_once(f"get_task_{type(exc).__name__}",
                   "Cloud Tasks GetTask failed (%s); asking again next check",
                   type(exc).__name__)
    return None


async def check_undelivered(settings: Any, engine: AsyncEngine, dispatcher: Any, *,
                            inspector: TaskInspector | None = None,
                            grace_s: float = GRACE_S,
                            limit: int = CHECK_BATCH) -> Check:
    """One round: look at up to ``limit`` unclaimed queued rows, record what the queue's
    record shows (core.dispatch.undeliverable), fail and delete at the bound."""
    result = Check()
    if not settings.WORKER_URL or not hasattr(dispatcher, "task_name"):
        return result
    window_s = max(MIN_WINDOW_S, float(settings.STRANDED_AFTER_S))
    async with engine.connect() as conn:
        rows = (await conn.execute(q("undelivered_candidates"), {
            "grace_s": grace_s, "window_s": window_s, "limit": limit})).all()
    if not rows:
        return result
    from core.dispatch.base import TaskRef
    from core.worker_url import task_url

    inspector = inspector or ClientInspector(dispatcher.client)
    names = [r.cloud_task_name or dispatcher.task_name(TaskRef(r.id, r.dispatch_generation))
             for r in rows]
    found = await asyncio.to_thread(_lookup_all, inspector, names)
    url = undeliverable.safe_url(task_url(settings.WORKER_URL))
    unreachable = (await asyncio.to_thread(probe, url)
                   if any(isinstance(s, Seen) and needs_probe(s) for s in found) else None)
    result.looked = len(rows)
    held: list[UUID] = []
    gone: list[UUID] = []
    to_delete: list[str] = []
    for row, name, seen in zip(rows, names, found, strict=True):
        if seen is False:
            gone.append(row.id)
            continue
        if seen is None:
            result.unknown += 1
            continue
        held.append(row.id)
        cause = judge(seen, url=url, unreachable=unreachable)
        if cause is None:
            continue
        status = await _record(engine, row, cause, url, seen.dispatch_count,
                               settings.UNDELIVERABLE_MAX_TRIES,
                               may_fail(seen, cause, now_s=time.time()))
        if status is not None:
            result.recorded += 1
        if status == "failed":
            result.failed += 1
            to_delete.append(name)
    async with engine.begin() as conn:
        if held:
            await conn.execute(q("touch_undelivered_checked"), {"ids": held})
        if gone:
            await conn.execute(q("leave_to_stranded_sweep"),
                               {"ids": gone, "window_s": window_s})
    result.gone = len(gone)
    if to_delete:
        result.errors = await asyncio.to_thread(_delete_all, inspector, to_delete)
        log.error("tasks failed as undeliverable: their deliveries never reached the task "
                  "handler", extra={"action": "undeliverable_failed", "failed": result.failed,
                                    "url": url, "task_names": to_delete[:20]})
    return result


async def _record(engine: AsyncEngine, row: Any, cause: Cause, url: str, tries: int,
                  max_tries: int, fail_at_bound: bool) -> str | None:
    async with engine.begin() as conn:
        out = (await conn.execute(q("record_undeliverable_seen"), {
            "task_id": row.id, "generation": row.dispatch_generation, "tries": tries,
            "max_tries": max_tries, "may_fail": fail_at_bound,
            "detail": cause.detail[:500]})).first()
        if out is not None and out.new_tries:
            await undeliverable.seen(conn, cause, url, out.new_tries)
    if out is None:
        return None  # nothing new since the last look, or the row moved on
    undeliverable.note(cause, url, max_tries=max_tries)
    return str(out.status)


def _lookup_all(inspector: TaskInspector,
                names: Sequence[str]) -> list[Seen | Literal[False] | None]:
    with ThreadPoolExecutor(min(LOOKUP_CONCURRENCY, len(names)),
                            thread_name_prefix="undelivered") as pool:
        return list(pool.map(lambda n: _lookup(inspector, n), names))


def _delete_all(inspector: TaskInspector, names: Sequence[str]) -> list[str]:
    """Delete the failed tasks' Cloud Tasks so the queue stops retrying them; one already
    gone is fine. Errors are returned (and logged once): the row is failed either way."""
    errors: list[str] = []
    for name in names:
        try:
            inspector.delete(name)
        except gexc.NotFound:
            continue
        except (gexc.GoogleAPICallError, gexc.RetryError) as exc:
            errors.append(f"{type(exc).__name__}: {name.rsplit('/', 1)[-1]}")
    if errors:
        _warn_once("delete_task", "could not delete %d failed tasks' Cloud Tasks (%s); the "
                   "queue retries them until it drops them", len(errors), errors[0])
    return errors
