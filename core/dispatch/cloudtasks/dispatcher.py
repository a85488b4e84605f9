"""Google Cloud Tasks as the queue: one HTTP-target task per generation task.

Each task POSTs ``{"task_id": ...}`` to WORKER_URL + TASK_PATH with an OIDC token for
CLOUD_TASKS_SERVICE_ACCOUNT (audience WORKER_URL). Its name is a hash of (task id,
dispatch generation): enqueueing the same generation twice is answered AlreadyExists
(treated as done), and a retry-failed or sweeper hand-over (a new generation) gets a fresh
name, so Cloud Tasks' name deduplication (about an hour) never swallows it. Hash-like
names also spread load, as Cloud Tasks advises against sequential ones.

There is no batch CreateTask: a batch is many calls, CREATE_CONCURRENCY in flight (firing
all at once ends in DEADLINE_EXCEEDED). Rows are marked queued after their call succeeds;
a task whose call failed stays pending for the sweeper.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import tasks_v2
from google.protobuf import duration_pb2, timestamp_pb2
from sqlalchemy import Engine

from core import worker_url as worker_urls
from core.config import Settings
from core.db import transaction
from core.db.queries import q
from core.dispatch import queue_state
from core.dispatch.base import EnqueueResult, TaskRef
from core.errors import ConfigError

log = logging.getLogger(__name__)

# Spelled once, in core/worker_url.py; the batch poller reads it here.
# 32-100 in flight is what Cloud Tasks' guidance allows for bulk creation.
CREATE_CONCURRENCY = 50
CREATE_TIMEOUT_S = 30.0
LOOKUP_TIMEOUT_S = 10.0
MARK_SLICE = 500
# The guide's queue settings.
QUEUE_MAX_DISPATCHES_PER_SECOND = 10.0
QUEUE_MAX_CONCURRENT_DISPATCHES = 100
# The table decides every retry (core/dispatch/cloudtasks/handover.py): a delivery that reached the
# handler is answered 2xx once its next attempt is a new Cloud Task. The queue's own
# retries only carry deliveries that never reached the handler (instance starting,
# connection lost, database down), so they may go on for hours: 100 attempts (Cloud Tasks'
# own default) at our backoff (1 s doubling to 32 s, then +32 s a try, up to 300 s) keep a
# task about 7 hours before the queue drops it.
QUEUE_MAX_ATTEMPTS = 100
# Cloud Tasks accepts dispatch deadlines from 15 s to 30 min.
MIN_DEADLINE_S, MAX_DEADLINE_S = 15, 1800


def task_id_for(task: TaskRef) -> str:
    """The Cloud Tasks task id (last name segment) for one hand-over: hash-like and stable."""
    digest = hashlib.sha256(f"{task.id}:{task.generation}".encode()).hexdigest()
    return f"{digest[:32]}-g{task.generation}"


def dispatch_deadline_s(settings: Settings) -> int:
    return int(min(MAX_DEADLINE_S, max(MIN_DEADLINE_S, settings.DISPATCH_DEADLINE_S)))


def build_task(settings: Settings, queue_path: str, task: TaskRef, *,
               schedule_at_s: float | None = None) -> tasks_v2.Task:
    """The CreateTask payload for one generation task (pure). ``schedule_at_s`` (epoch
    seconds): not delivered before then (a hand-over's next attempt)."""
    if not settings.WORKER_URL:
        raise ConfigError("WORKER_URL is required with USE_CLOUD_TASKS")
    request = tasks_v2.HttpRequest(
        http_method=tasks_v2.HttpMethod.POST,
        url=worker_urls.task_url(settings.WORKER_URL),  # base or full task URL
        headers={"Content-Type": "application/json"},
        body=json.dumps({"task_id": str(task.id)}).encode(),
    )
    if settings.CLOUD_TASKS_SERVICE_ACCOUNT:
        request.oidc_token = tasks_v2.OidcToken(
            service_account_email=settings.CLOUD_TASKS_SERVICE_ACCOUNT,
            audience=worker_urls.oidc_audience(settings.WORKER_URL))
    built = tasks_v2.Task(
        name=f"{queue_path}/tasks/{task_id_for(task)}",
        http_request=request,
        dispatch_deadline=duration_pb2.Duration(seconds=dispatch_deadline_s(settings)),
    )
    if schedule_at_s is not None:
        stamp = timestamp_pb2.Timestamp()
        stamp.FromNanoseconds(int(schedule_at_s * 1e9))
        built.schedule_time = stamp
    return built


def queue_config(settings: Settings, queue_path: str, *,
                 max_dispatches_per_second: float = QUEUE_MAX_DISPATCHES_PER_SECOND,
                 max_concurrent_dispatches: int = QUEUE_MAX_CONCURRENT_DISPATCHES,
                 ) -> tasks_v2.Queue:
    """The queue as the guide sets it up (pure): transport retries for hours, at our
    backoff; task retries are the worker's."""
    return tasks_v2.Queue(
        name=queue_path,
        rate_limits=tasks_v2.RateLimits(
            max_dispatches_per_second=max_dispatches_per_second,
            max_concurrent_dispatches=max_concurrent_dispatches),
        retry_config=tasks_v2.RetryConfig(
            max_attempts=QUEUE_MAX_ATTEMPTS,
            min_backoff=_duration(settings.RETRY_MIN_BACKOFF_S),
            max_backoff=_duration(settings.RETRY_MAX_BACKOFF_S),
            max_doublings=settings.RETRY_MAX_DOUBLINGS),
    )


def task_presence(error: BaseException | None) -> bool | None:
    """What a GetTask answer says about a task (pure): found (no error) means the queue
    still holds it; NOT_FOUND means it is gone (it ran, was deleted or purged, or the queue
    gave up after max_attempts); any other error, such as an emulator's UNIMPLEMENTED or a
    timeout, says nothing, and a row must not be handed over twice on a guess."""
    if error is None:
        return True
    if isinstance(error, gexc.NotFound):
        return False
    return None


def queue_delivers(state: int) -> bool:
    """Only a RUNNING queue delivers; paused or disabled ones hold their tasks (pure)."""
    return state == tasks_v2.Queue.State.RUNNING


def _duration(seconds: float) -> duration_pb2.Duration:
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))


def make_client(settings: Settings) -> tasks_v2.CloudTasksClient:
    """The real client: Google's endpoint with default credentials, or the emulator at
    CLOUD_TASKS_EMULATOR_HOST over an insecure channel."""
    if settings.CLOUD_TASKS_EMULATOR_HOST:
        import grpc
        from google.cloud.tasks_v2.services.cloud_tasks.transports import (
            CloudTasksGrpcTransport,
        )

        channel = grpc.insecure_channel(settings.CLOUD_TASKS_EMULATOR_HOST)
        return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
    return tasks_v2.CloudTasksClient()


@dataclass(frozen=True)
class _Created:
    ref: TaskRef
    name: str
    state: str  # created | exists | failed
    error: str = ""


class CloudTasksDispatcher:
    name = "cloud_tasks"

    def __init__(self, settings: Settings, client: Any, engine: Engine | None = None,
                 *, concurrency: int = CREATE_CONCURRENCY) -> None:
        if not settings.GCP_PROJECT:
            raise ConfigError("GCP_PROJECT is required with USE_CLOUD_TASKS")
        self.settings = settings
        self.client = client
        self._engine = engine
        self.concurrency = max(1, concurrency)
        self.queue_path = client.queue_path(settings.GCP_PROJECT, settings.GCP_LOCATION,
                                            settings.QUEUE_NAME)
        self._pool_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine | None = None
                      ) -> CloudTasksDispatcher:
        return cls(settings, make_client(settings), engine)

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency,
                                                thread_name_prefix="create-task")
            return self._pool

    def create_one(self, ref: TaskRef, *, delay_s: float = 0.0) -> tuple[str, str, str]:
        """One CreateTask, due ``delay_s`` from now (core.dispatch.cloudtasks.handover): (state
        created | exists | failed, task name, error)."""
        at = time.time() + delay_s if delay_s > 0 else None
        created = self._create(ref, schedule_at_s=at)
        return created.state, created.name, created.error

    def _create(self, ref: TaskRef, *, schedule_at_s: float | None = None) -> _Created:
        task = build_task(self.settings, self.queue_path, ref, schedule_at_s=schedule_at_s)
        try:
            self.client.create_task(parent=self.queue_path, task=task,
                                    timeout=CREATE_TIMEOUT_S)
        except gexc.AlreadyExists:
            return _Created(ref, task.name, "exists")
        except gexc.GoogleAPICallError as exc:
            return _Created(ref, task.name, "failed", f"{type(exc).__name__}: {exc.message}")
        return _Created(ref, task.name, "created")

    def enqueue(self, tasks: Sequence[TaskRef]) -> EnqueueResult:
        result = EnqueueResult()
        # Slices: rows turn queued as their tasks are created (progress shows, and a crash
        # half way leaves only the unfinished slices pending for the sweeper).
        for start in range(0, len(tasks), MARK_SLICE):
            self._enqueue_slice(tasks[start : start + MARK_SLICE], result)
        if result.failed:
            log.warning("some tasks could not be enqueued; the sweeper will retry them",
                        extra={"action": "enqueue_partial", "failed": result.failed,
                               "enqueued": result.enqueued, "error": result.errors[0]})
        return result

    def _enqueue_slice(self, tasks: Sequence[TaskRef], result: EnqueueResult) -> None:
        # The pool bounds calls in flight; map keeps results in order.
        created = list(self._executor().map(self._create, tasks))
        handed = [c for c in created if c.state != "failed"]
        for c in created:
            if c.state == "created":
                result.enqueued += 1
            elif c.state == "exists":
                result.already_enqueued += 1
            else:
                result.failed += 1
                if len(result.errors) < 5:
                    result.errors.append(c.error)
        if handed:
            with transaction(self._engine) as conn:
                conn.execute(q("mark_tasks_queued_named"), {
                    "ids": [c.ref.id for c in handed], "names": [c.name for c in handed]})

    def delete(self, names: Sequence[str]) -> int:
        """Delete these Cloud Tasks (a cancelled job's window); a task already
        gone counts as deleted. Returns how many the queue no longer holds."""

        def one(name: str) -> bool:
            try:
                self.client.delete_task(name=name, timeout=LOOKUP_TIMEOUT_S, retry=None)
            except gexc.NotFound:
                return True
            except (gexc.GoogleAPICallError, gexc.RetryError):
                return False  # its delivery finds the task cancelled: answered 200, no work
            return True

        return sum(self._executor().map(one, names))

    # -- queue state ------------------------------------------------------------------
    def pause(self) -> None:
        self.client.pause_queue(name=self.queue_path)
        queue_state.set_paused(self.settings.QUEUE_NAME, True, self._engine)

    def resume(self) -> None:
        self.client.resume_queue(name=self.queue_path)
        queue_state.set_paused(self.settings.QUEUE_NAME, False, self._engine)

    def is_paused(self) -> bool:
        """The queue's own state; our mirror when the API cannot be reached."""
        try:
            queue = self.client.get_queue(name=self.queue_path, timeout=10.0)
        except gexc.GoogleAPICallError:
            return queue_state.is_paused(self.settings.QUEUE_NAME, self._engine)
        paused = queue.state == tasks_v2.Queue.State.PAUSED
        queue_state.set_paused(self.settings.QUEUE_NAME, paused, self._engine)
        return paused

    # -- stranded tasks (core.dispatch.cloudtasks.sweeper.sweep_stranded) --------------------
    def task_name(self, task: TaskRef) -> str:
        return f"{self.queue_path}/tasks/{task_id_for(task)}"

    def holds(self, task_name: str) -> bool | None:
        # No client-side retry: an unanswered lookup is "cannot tell", checked next sweep.
        try:
            self.client.get_task(name=task_name, timeout=LOOKUP_TIMEOUT_S, retry=None)
        except (gexc.GoogleAPICallError, gexc.RetryError) as exc:
            return task_presence(exc)
        return task_presence(None)

    def queue_running(self) -> bool | None:
        try:
            queue = self.client.get_queue(name=self.queue_path, timeout=LOOKUP_TIMEOUT_S)
        except (gexc.GoogleAPICallError, gexc.RetryError):
            return None
        queue_state.set_paused(self.settings.QUEUE_NAME,
                               queue.state == tasks_v2.Queue.State.PAUSED, self._engine)
        return queue_delivers(queue.state)

    # -- administration (cli.main) ------------------------------------------------------
    def create_queue(self, **limits: Any) -> tasks_v2.Queue:
        """Create the queue with the guide's settings; an existing queue is updated."""
        queue = queue_config(self.settings, self.queue_path, **limits)
        parent = self.queue_path.rsplit("/queues/", 1)[0]
        try:
            return self.client.create_queue(parent=parent, queue=queue)
        except gexc.AlreadyExists:
            return self.client.update_queue(queue=queue)

    def describe_queue(self, timeout: float | None = None) -> tasks_v2.Queue:
        if timeout is None:
            return self.client.get_queue(name=self.queue_path)
        return self.client.get_queue(name=self.queue_path, timeout=timeout, retry=None)

    def update_limits(self, *, max_dispatches_per_second: float | None = None,
                      max_concurrent_dispatches: int | None = None) -> tasks_v2.Queue:
        limits = tasks_v2.RateLimits()
        paths = []
        if max_dispatches_per_second is not None:
            limits.max_dispatches_per_second = max_dispatches_per_second
            paths.append("rate_limits.max_dispatches_per_second")
        if max_concurrent_dispatches is not None:
            limits.max_concurrent_dispatches = max_concurrent_dispatches
            paths.append("rate_limits.max_concurrent_dispatches")
        from google.protobuf import field_mask_pb2

        return self.client.update_queue(
            queue=tasks_v2.Queue(name=self.queue_path, rate_limits=limits),
            update_mask=field_mask_pb2.FieldMask(paths=paths))

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
        transport = getattr(self.client, "transport", None)
        if transport is not None:
            transport.close()
