"""A small Cloud Tasks server for tests: the google.cloud.tasks.v2.CloudTasks gRPC service
(messages from the google-cloud-tasks protos), on 127.0.0.1, for the real client over a
real insecure channel. It behaves as Cloud Tasks documents (RetryConfig, HttpRequest,
the X-CloudTasks-* request headers), where gcloud-tasks-emulator does not:

- Queues: create/get/update/pause/resume/purge/delete. A field left unset at creation gets
  Cloud Tasks' default (``CLOUD_TASKS_DEFAULT_RETRY``: max_attempts 100, min_backoff 0.1 s,
  max_backoff 3600 s, max_doublings 16, no max_retry_duration; 500 dispatches/s, 1000
  concurrent), so ``gcloud_queue()`` (what ``gcloud tasks queues create`` with only rate
  and concurrency flags sends) reads back as the real service would show it. A paused
  queue delivers nothing; max_concurrent_dispatches and max_dispatches_per_second bound
  deliveries.
- Retries follow the queue's RetryConfig: every dispatch is an attempt (a 503, a refused
  connection or a deadline passed included); the k-th retry waits min_backoff doubled
  k-1 times up to max_doublings, then growing linearly by min_backoff * 2^max_doublings,
  capped at max_backoff (Cloud Tasks' schedule); after max_attempts (-1: unlimited) and
  max_retry_duration (0: none) the task is dropped (``dropped`` lists them).
- ``dispatch_deadline`` (default 600 s, 15 s - 30 min): a delivery with no answer by then
  counts as failed and is retried on schedule, while the first may still be running.
- 429 or 503 with ``Retry-After`` slows the whole queue (no dispatch before it passes), as
  Cloud Tasks' system throttling considers it; the task's own retry stays on its schedule.
- Headers as Cloud Tasks sets them: X-CloudTasks-TaskRetryCount = earlier dispatches of
  the task (all of them), X-CloudTasks-TaskExecutionCount = earlier answers from the
  handler that were not 5xx; QueueName / TaskName short; an OIDC ``Authorization:
  Bearer`` token signed by ``TestIdentity`` (an RSA key whose certificate
  ``TestIdentity.serve()`` serves on loopback in Google's ``{kid: PEM}`` format).
- ``schedule_time`` is honoured exactly (no delivery before it).
- CreateTask answers ALREADY_EXISTS for a name it has seen, including tasks that already
  ran, were dropped or deleted (Cloud Tasks remembers names for about an hour or more).
- GetTask finds a task from creation until it is gone (delivered 2xx, dropped, deleted,
  purged), then NOT_FOUND; ``get_task_calls`` counts lookups; ``fail_get_tasks`` (a status
  code) makes every GetTask fail with it. It reports ``dispatch_count`` (an attempt in
  flight included), ``response_count``, ``first_attempt`` (only its dispatch_time, as Cloud
  Tasks keeps no more of it) and ``last_attempt`` (schedule, dispatch and response times and
  ``response_status``: a google.rpc.Status whose code is the HTTP answer mapped as
  google/rpc/code.proto maps them (``rpc_code_for``: 404 NOT_FOUND, 401 UNAUTHENTICATED,
  403 PERMISSION_DENIED, 503 UNAVAILABLE...); no answer is UNAVAILABLE for a connection
  that could not be made and DEADLINE_EXCEEDED for a dispatch deadline passed).
- ``create_latency_s`` / ``max_in_flight_creates`` observe how many CreateTask calls a
  client keeps in flight; ``fail_creates`` makes the next N CreateTask calls UNAVAILABLE.
- ``deliveries`` records every dispatch (start and end wall times, status, headers).
"""
from __future__ import annotations

import datetime as dt
import heapq
import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt
from google.auth import jwt as google_jwt
from google.cloud import tasks_v2
from google.protobuf import empty_pb2, timestamp_pb2
from google.rpc import code_pb2, status_pb2

SERVICE = "google.cloud.tasks.v2.CloudTasks"
GOOGLE_ISSUER = "https://accounts.google.com"


SERVICE_ACCOUNT = "image-tasks@test-project.iam.gserviceaccount.com"
API_KEY = "test-admin-key-0123456789"
ADMIN = {"X-API-Key": API_KEY}  # the admin headers for a worker in production_worker_env


def production_worker_env(*, port: int, tasks_host: str, certs_url: str,
                          queue_name: str = "images") -> dict[str, str]:
    """Settings for a worker in production mode behind this fake: OIDC verification on
    (ENVIRONMENT=production and USE_CLOUD_TASKS), the demo model, local storage."""
    return {
        "ENVIRONMENT": "production", "API_KEY": API_KEY,
        "USE_CLOUD_TASKS": "true", "GCP_PROJECT": "test-project",
        "GCP_LOCATION": "us-central1", "QUEUE_NAME": queue_name,
        "CLOUD_TASKS_SERVICE_ACCOUNT": SERVICE_ACCOUNT,
        "WORKER_URL": f"http://127.0.0.1:{port}", "CLOUD_TASKS_EMULATOR_HOST": tasks_host,
        "OIDC_CERTS_URL": certs_url, "IMAGE_PROVIDER": "demo", "STORAGE_BACKEND": "local",
    }


class TestIdentity:
    """A signing key standing in for Google's: tokens it signs verify against the
    certificate it serves."""

    __test__ = False  # not a pytest class

    def __init__(self, key_id: str = "test-key-1") -> None:
        self.key_id = key_id
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-oidc")])
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        self._signer = crypt.RSASigner.from_string(pem, key_id=key_id)
        self._server: ThreadingHTTPServer | None = None
        self.cert_fetches = 0

    def token(self, *, audience: str, email: str, email_verified: bool = True,
              issuer: str = GOOGLE_ISSUER, lifetime_s: int = 600, **extra: Any) -> str:
        now = int(time.time())
        claims = {"iss": issuer, "aud": audience, "email": email,
                  "email_verified": email_verified, "sub": "1234567890", "iat": now,
                  "exp": now + lifetime_s, **extra}
        return google_jwt.encode(self._signer, claims).decode()

    def serve(self) -> str:
        """Serve the certificate on loopback; returns the certs URL (OIDC_CERTS_URL)."""
        identity = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                identity.cert_fetches += 1
                body = json.dumps({identity.key_id: identity.cert_pem}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}/oauth2/v1/certs"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


# What Cloud Tasks picks for what a CreateQueue leaves unset (the RetryConfig and
# RateLimits reference pages; "gcloud tasks queues create" without retry flags).
CLOUD_TASKS_DEFAULT_RETRY = {"max_attempts": 100, "min_backoff_s": 0.1,
                             "max_backoff_s": 3600.0, "max_doublings": 16}
DEFAULT_MAX_DISPATCHES_PER_SECOND = 500.0
DEFAULT_MAX_CONCURRENT_DISPATCHES = 1000
DEFAULT_DISPATCH_DEADLINE_S = 600.0


def gcloud_queue(queue_path: str, *, max_dispatches_per_second: float,
                 max_concurrent_dispatches: int) -> tasks_v2.Queue:
    """The queue the deployment guide's ``gcloud tasks queues create QUEUE
    --max-dispatches-per-second=R --max-concurrent-dispatches=C`` sends: rate limits
    only, no retry config (so the service's defaults apply)."""
    return tasks_v2.Queue(name=queue_path, rate_limits=tasks_v2.RateLimits(
        max_dispatches_per_second=max_dispatches_per_second,
        max_concurrent_dispatches=max_concurrent_dispatches))


# google/rpc/code.proto's "HTTP Mapping" notes, read backwards (an HTTP answer -> a code).
_RPC_CODE_FOR_HTTP = {
    400: code_pb2.INVALID_ARGUMENT, 401: code_pb2.UNAUTHENTICATED,
    403: code_pb2.PERMISSION_DENIED, 404: code_pb2.NOT_FOUND, 409: code_pb2.ABORTED,
    429: code_pb2.RESOURCE_EXHAUSTED, 499: code_pb2.CANCELLED, 501: code_pb2.UNIMPLEMENTED,
    503: code_pb2.UNAVAILABLE, 504: code_pb2.DEADLINE_EXCEEDED,
}
NO_ANSWER_REFUSED, NO_ANSWER_DEADLINE = 0, -1  # Delivery.status when nothing answered


def rpc_code_for(status: int) -> int:
    """The google.rpc code an attempt's response_status carries for an HTTP answer (pure)."""
    if 200 <= status < 300:
        return code_pb2.OK
    if status == NO_ANSWER_REFUSED:
        return code_pb2.UNAVAILABLE
    if status == NO_ANSWER_DEADLINE:
        return code_pb2.DEADLINE_EXCEEDED
    if status in _RPC_CODE_FOR_HTTP:
        return _RPC_CODE_FOR_HTTP[status]
    return code_pb2.FAILED_PRECONDITION if status < 500 else code_pb2.INTERNAL


def _stamp(wall_s: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(wall_s * 1e9))
    return stamp


def _seconds(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    return float(value.seconds) + value.nanos / 1e9


def retry_delay_s(retry: tasks_v2.RetryConfig, failures: int) -> float:
    """Cloud Tasks' wait before the retry after ``failures`` failed attempts (pure): the
    interval starts at min_backoff, doubles max_doublings times, then grows linearly by
    min_backoff * 2^max_doublings, capped at max_backoff."""
    pb = tasks_v2.RetryConfig.pb(retry)
    min_s = _seconds(pb.min_backoff)
    max_s = _seconds(pb.max_backoff)
    doublings = pb.max_doublings
    k = max(1, failures)
    if k - 1 <= doublings:
        delay = min_s * 2 ** (k - 1)
    else:
        step = min_s * 2 ** doublings
        delay = step + step * (k - 1 - doublings)
    return min(delay, max_s) if max_s > 0 else delay


def with_defaults(queue: tasks_v2.Queue) -> tasks_v2.Queue:
    """The queue as Cloud Tasks stores it: unset retry and rate fields get its defaults."""
    pb = tasks_v2.Queue.pb(queue)
    out = tasks_v2.Queue.pb(tasks_v2.Queue())
    out.CopyFrom(pb)
    retry = out.retry_config
    if not pb.HasField("retry_config") or pb.retry_config.max_attempts == 0:
        retry.max_attempts = CLOUD_TASKS_DEFAULT_RETRY["max_attempts"]
    if not pb.retry_config.HasField("min_backoff"):
        retry.min_backoff.FromTimedelta(dt.timedelta(
            seconds=CLOUD_TASKS_DEFAULT_RETRY["min_backoff_s"]))
    if not pb.retry_config.HasField("max_backoff"):
        retry.max_backoff.FromTimedelta(dt.timedelta(
            seconds=CLOUD_TASKS_DEFAULT_RETRY["max_backoff_s"]))
    if not pb.HasField("retry_config"):  # an explicit 0 cannot be told from unset
        retry.max_doublings = CLOUD_TASKS_DEFAULT_RETRY["max_doublings"]
    if out.rate_limits.max_dispatches_per_second <= 0:
        out.rate_limits.max_dispatches_per_second = DEFAULT_MAX_DISPATCHES_PER_SECOND
    if out.rate_limits.max_concurrent_dispatches <= 0:
        out.rate_limits.max_concurrent_dispatches = DEFAULT_MAX_CONCURRENT_DISPATCHES
    return tasks_v2.Queue.wrap(out)


@dataclass
class Delivery:
    task_name: str
    url: str
    status: int  # 0 = no answer (could not connect, or the dispatch deadline passed)
    authorization: str | None
    headers: dict[str, str]
    started_at: float = 0.0  # wall clock (time.time())
    finished_at: float = 0.0
    retry_after: str | None = None


@dataclass
class _Pending:
    task: tasks_v2.Task
    queue: str
    due: float  # monotonic
    dispatch_count: int = 0
    response_count: int = 0
    execution_count: int = 0  # answers that were not 5xx
    first_attempt_at: float | None = None
    in_flight: bool = False
    first_dispatch_wall: float | None = None  # wall clock, for first_attempt
    # last_attempt: (scheduled, dispatched, answered wall times, HTTP status or NO_ANSWER_*)
    last_attempt: tuple[float, float, float | None, int | None] | None = None


@dataclass
class _QueueState:
    queue: tasks_v2.Queue
    paused: bool = False
    # (due, sequence, pending): the next task to deliver first.
    heap: list[tuple[float, int, _Pending]] = field(default_factory=list)
    in_flight: int = 0
    throttled_until: float = 0.0  # monotonic: a Retry-After holds the whole queue
    next_dispatch_at: float = 0.0  # max_dispatches_per_second


class CloudTasksFake:
    def __init__(self, identity: TestIdentity, *, create_latency_s: float = 0.0,
                 delivery_threads: int = 8) -> None:
        # delivery_threads is kept for callers; deliveries run one thread each, bounded
        # by the queue's max_concurrent_dispatches, as a deadline can hold one for minutes.
        del delivery_threads
        self.identity = identity
        self.create_latency_s = create_latency_s
        self.fail_creates = 0
        self.queues: dict[str, _QueueState] = {}
        self.seen_names: set[str] = set()
        self.create_calls = 0
        self.in_flight_creates = 0
        self.max_in_flight_creates = 0
        self.deliveries: list[Delivery] = []
        self.dropped: list[str] = []  # tasks given up after max_attempts
        self.created: dict[str, tasks_v2.Task] = {}  # every task created, by name
        # Tasks the queue holds (waiting, backing off or being delivered), by name.
        self.live: dict[str, _Pending] = {}
        self.get_task_calls = 0
        self.get_queue_calls = 0
        self.fail_get_tasks: grpc.StatusCode | None = None
        self.fail_get_queue: grpc.StatusCode | None = None
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=128))
        self._grpc.add_generic_rpc_handlers((self._handlers(),))
        self.port = self._grpc.add_insecure_port("127.0.0.1:0")
        self._loop = threading.Thread(target=self._deliver_loop, daemon=True)

    @property
    def host(self) -> str:
        """What CLOUD_TASKS_EMULATOR_HOST should be."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> CloudTasksFake:
        self._grpc.start()
        self._loop.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            self._wake.notify_all()
        self._grpc.stop(grace=0.5).wait(5)
        self._loop.join(timeout=5)
        for thread in list(self._threads):
            thread.join(timeout=2)

    def __enter__(self) -> CloudTasksFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the gRPC service -------------------------------------------------------------
    def _handlers(self) -> grpc.GenericRpcHandler:
        def unary(fn: Any, request_type: Any, response_type: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=request_type.deserialize,
                response_serializer=response_type.serialize)

        def empty(fn: Any, request_type: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=request_type.deserialize,
                response_serializer=lambda message: message.SerializeToString())

        return grpc.method_handlers_generic_handler(SERVICE, {
            "CreateQueue": unary(self.create_queue, tasks_v2.CreateQueueRequest,
                                 tasks_v2.Queue),
            "GetQueue": unary(self.get_queue, tasks_v2.GetQueueRequest, tasks_v2.Queue),
            "UpdateQueue": unary(self.update_queue, tasks_v2.UpdateQueueRequest,
                                 tasks_v2.Queue),
            "PauseQueue": unary(self.pause_queue, tasks_v2.PauseQueueRequest, tasks_v2.Queue),
            "ResumeQueue": unary(self.resume_queue, tasks_v2.ResumeQueueRequest,
                                 tasks_v2.Queue),
            "CreateTask": unary(self.create_task, tasks_v2.CreateTaskRequest, tasks_v2.Task),
            "GetTask": unary(self.get_task, tasks_v2.GetTaskRequest, tasks_v2.Task),
            "DeleteTask": empty(self.delete_task, tasks_v2.DeleteTaskRequest),
            "PurgeQueue": unary(self.purge_queue, tasks_v2.PurgeQueueRequest, tasks_v2.Queue),
            "DeleteQueue": empty(self.delete_queue, tasks_v2.DeleteQueueRequest),
        })

    def _queue(self, name: str, context: grpc.ServicerContext) -> _QueueState:
        state = self.queues.get(name)
        if state is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Queue {name} does not exist.")
        assert state is not None
        return state

    def _view(self, state: _QueueState) -> tasks_v2.Queue:
        queue = tasks_v2.Queue(state.queue)
        # The stubs type proto-plus enum members as int, the field as the enum.
        queue.state = (tasks_v2.Queue.State.PAUSED  # type: ignore[assignment]
                       if state.paused else tasks_v2.Queue.State.RUNNING)
        return queue

    def create_queue(self, request: tasks_v2.CreateQueueRequest,
                     context: grpc.ServicerContext) -> tasks_v2.Queue:
        with self._lock:
            if request.queue.name in self.queues:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, "Queue already exists.")
            self.queues[request.queue.name] = _QueueState(with_defaults(request.queue))
            return self._view(self.queues[request.queue.name])

    def get_queue(self, request: tasks_v2.GetQueueRequest,
                  context: grpc.ServicerContext) -> tasks_v2.Queue:
        with self._lock:
            self.get_queue_calls += 1
            if self.fail_get_queue is not None:
                context.abort(self.fail_get_queue, "fake: get_queue failing")
            return self._view(self._queue(request.name, context))

    def update_queue(self, request: tasks_v2.UpdateQueueRequest,
                     context: grpc.ServicerContext) -> tasks_v2.Queue:
        with self._lock:
            state = self._queue(request.queue.name, context)
            paths = list(request.update_mask.paths) if request.update_mask else []
            if not paths:
                state.queue = with_defaults(request.queue)
            for path in paths:  # "rate_limits.max_dispatches_per_second", ...
                section, _, leaf = path.partition(".")
                source = getattr(request.queue, section)
                if leaf:
                    setattr(getattr(state.queue, section), leaf, getattr(source, leaf))
                else:
                    setattr(state.queue, section, source)
            self._wake.notify_all()
            return self._view(state)

    def delete_queue(self, request: tasks_v2.DeleteQueueRequest,
                     context: grpc.ServicerContext) -> empty_pb2.Empty:
        with self._lock:
            self._queue(request.name, context)
            del self.queues[request.name]
            for name in [n for n, p in self.live.items() if p.queue == request.name]:
                del self.live[name]  # its tasks go with it
        return empty_pb2.Empty()

    def pause_queue(self, request: tasks_v2.PauseQueueRequest,
                    context: grpc.ServicerContext) -> tasks_v2.Queue:
        with self._lock:
            state = self._queue(request.name, context)
            state.paused = True
            return self._view(state)

    def resume_queue(self, request: tasks_v2.ResumeQueueRequest,
                     context: grpc.ServicerContext) -> tasks_v2.Queue:
        with self._lock:
            state = self._queue(request.name, context)
            state.paused = False
            self._wake.notify_all()
            return self._view(state)

    def create_task(self, request: tasks_v2.CreateTaskRequest,
                    context: grpc.ServicerContext) -> tasks_v2.Task:
        with self._lock:
            self.create_calls += 1
            self.in_flight_creates += 1
            self.max_in_flight_creates = max(self.max_in_flight_creates,
                                             self.in_flight_creates)
        try:
            if self.create_latency_s:
                time.sleep(self.create_latency_s)
            with self._lock:
                if self.fail_creates > 0:
                    self.fail_creates -= 1
                    context.abort(grpc.StatusCode.UNAVAILABLE, "fake: service unavailable")
                state = self._queue(request.parent, context)
                task = tasks_v2.Task(request.task)
                if not task.name:
                    task.name = f"{request.parent}/tasks/{time.time_ns()}"
                if task.name in self.seen_names:
                    context.abort(grpc.StatusCode.ALREADY_EXISTS,
                                  "Requested entity already exists")
                self.seen_names.add(task.name)
                now_wall, now = time.time(), time.monotonic()
                pb = tasks_v2.Task.pb(task)
                if pb.HasField("schedule_time"):
                    due = now + (pb.schedule_time.ToNanoseconds() / 1e9 - now_wall)
                else:
                    due = now
                    pb.schedule_time.FromNanoseconds(int(now_wall * 1e9))
                pb.create_time.FromNanoseconds(int(now_wall * 1e9))
                if not pb.HasField("dispatch_deadline"):
                    pb.dispatch_deadline.FromTimedelta(
                        dt.timedelta(seconds=DEFAULT_DISPATCH_DEADLINE_S))
                pending = _Pending(task, request.parent, due)
                self._push(state, pending)
                self.live[task.name] = pending
                self.created[task.name] = task
                return task
        finally:
            with self._lock:
                self.in_flight_creates -= 1

    def get_task(self, request: tasks_v2.GetTaskRequest,
                 context: grpc.ServicerContext) -> tasks_v2.Task:
        with self._lock:
            self.get_task_calls += 1
            if self.fail_get_tasks is not None:
                context.abort(self.fail_get_tasks, "fake: get_task failing")
            pending = self.live.get(request.name)
            if pending is None:
                context.abort(grpc.StatusCode.NOT_FOUND, "Requested entity was not found.")
            assert pending is not None
            task = tasks_v2.Task(pending.task)
            # Cloud Tasks counts an attempt dispatched but not yet answered.
            task.dispatch_count = pending.dispatch_count + (1 if pending.in_flight else 0)
            task.response_count = pending.response_count
            pb = tasks_v2.Task.pb(task)
            if pending.first_dispatch_wall is not None:
                pb.first_attempt.dispatch_time.CopyFrom(_stamp(pending.first_dispatch_wall))
            if pending.last_attempt is not None:
                scheduled, dispatched, answered, status = pending.last_attempt
                pb.last_attempt.schedule_time.CopyFrom(_stamp(scheduled))
                pb.last_attempt.dispatch_time.CopyFrom(_stamp(dispatched))
                if answered is not None and status is not None:
                    pb.last_attempt.response_time.CopyFrom(_stamp(answered))
                    code = rpc_code_for(status)
                    pb.last_attempt.response_status.CopyFrom(status_pb2.Status(
                        code=code, message=code_pb2.Code.Name(code)))
            return task

    def delete_task(self, request: tasks_v2.DeleteTaskRequest,
                    context: grpc.ServicerContext) -> empty_pb2.Empty:
        with self._lock:
            pending = self.live.pop(request.name, None)
            if pending is None:
                context.abort(grpc.StatusCode.NOT_FOUND, "Requested entity was not found.")
        return empty_pb2.Empty()  # its heap entry is skipped: no longer live

    def purge_queue(self, request: tasks_v2.PurgeQueueRequest,
                    context: grpc.ServicerContext) -> tasks_v2.Queue:
        with self._lock:
            state = self._queue(request.name, context)
            state.heap = []
            for name in [n for n, p in self.live.items() if p.queue == request.name]:
                del self.live[name]
            return self._view(state)

    # -- delivery ---------------------------------------------------------------------
    def _push(self, state: _QueueState, pending: _Pending) -> None:
        heapq.heappush(state.heap, (pending.due, next(self._seq), pending))
        self._wake.notify_all()

    def _deliver_loop(self) -> None:
        with self._lock:
            while not self._stop.is_set():
                wait_s = 0.5
                now = time.monotonic()
                for state in self.queues.values():
                    wait_s = min(wait_s, self._dispatch_ready(state, now))
                self._wake.wait(max(0.005, wait_s))

    def _dispatch_ready(self, state: _QueueState, now: float) -> float:
        """(Under the lock.) Start every delivery the queue allows now; returns how long
        until something may change."""
        if state.paused:
            return 0.5
        limits = state.queue.rate_limits
        while state.heap:
            due, _, pending = state.heap[0]
            if self.live.get(pending.task.name) is not pending:
                heapq.heappop(state.heap)  # deleted or purged meanwhile
                continue
            start_at = max(due, state.throttled_until, state.next_dispatch_at)
            if start_at > now:
                return start_at - now
            if state.in_flight >= limits.max_concurrent_dispatches:
                return 0.5  # woken when one finishes
            heapq.heappop(state.heap)
            state.in_flight += 1
            state.next_dispatch_at = now + 1.0 / limits.max_dispatches_per_second
            pending.in_flight = True
            if pending.first_attempt_at is None:
                pending.first_attempt_at = now
            wall = time.time()
            if pending.first_dispatch_wall is None:
                pending.first_dispatch_wall = wall
            pending.last_attempt = (wall - (now - due), wall, None, None)
            thread = threading.Thread(target=self._deliver, args=(state, pending),
                                      daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
            thread.start()
        return 0.5

    def _deliver(self, state: _QueueState, pending: _Pending) -> None:
        task = pending.task
        request = task.http_request
        short_queue = pending.queue.rsplit("/", 1)[-1]
        eta_ns = tasks_v2.Task.pb(task).schedule_time.ToNanoseconds()
        with self._lock:
            retry_count, execution_count = pending.dispatch_count, pending.execution_count
        headers = dict(request.headers)
        headers.update({
            "X-CloudTasks-QueueName": short_queue,
            "X-CloudTasks-TaskName": task.name.rsplit("/", 1)[-1],
            "X-CloudTasks-TaskRetryCount": str(retry_count),
            "X-CloudTasks-TaskExecutionCount": str(execution_count),
            "X-CloudTasks-TaskETA": f"{eta_ns / 1e9:.6f}",
            # Cloud Run puts a trace context on each request it receives.
            "X-Cloud-Trace-Context": f"{abs(hash(task.name)):032x}"[:32] + "/1;o=1",
        })
        oidc = request.oidc_token
        if oidc.service_account_email:
            token = self.identity.token(audience=oidc.audience or request.url,
                                        email=oidc.service_account_email)
            headers["Authorization"] = f"Bearer {token}"
        deadline_s = _seconds(tasks_v2.Task.pb(task).dispatch_deadline) or \
            DEFAULT_DISPATCH_DEADLINE_S
        http = urllib.request.Request(request.url, data=request.body, method="POST",
                                      headers=headers)
        status, retry_after = 0, None
        no_answer = NO_ANSWER_REFUSED
        started = time.time()
        try:
            with urllib.request.urlopen(http, timeout=deadline_s) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
            retry_after = exc.headers.get("Retry-After")
        except TimeoutError:
            no_answer = NO_ANSWER_DEADLINE  # the dispatch deadline passed
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                no_answer = NO_ANSWER_DEADLINE
        except OSError:
            pass  # refused or reset: no answer
        finished = time.time()
        with self._lock:
            self.deliveries.append(Delivery(task.name, request.url, status,
                                            headers.get("Authorization"), headers,
                                            started, finished, retry_after))
            state.in_flight -= 1
            pending.in_flight = False
            if pending.last_attempt is not None:
                pending.last_attempt = (*pending.last_attempt[:2], finished,
                                        status or no_answer)
            pending.dispatch_count += 1
            if status:
                pending.response_count += 1
                if status < 500:
                    pending.execution_count += 1
            self._after_attempt(state, pending, status, retry_after)
            self._wake.notify_all()

    def _after_attempt(self, state: _QueueState, pending: _Pending, status: int,
                       retry_after: str | None) -> None:
        """(Under the lock.) Delete, drop or schedule the retry, as Cloud Tasks does."""
        name = pending.task.name
        if self.live.get(name) is not pending or self.queues.get(pending.queue) is not state:
            return  # deleted, purged or its queue deleted meanwhile
        if 200 <= status < 300:
            del self.live[name]  # delivered: the task no longer exists
            return
        now = time.monotonic()
        if status in (429, 503) and retry_after:
            try:
                state.throttled_until = max(state.throttled_until,
                                            now + max(0.0, float(retry_after)))
            except ValueError:
                pass  # an HTTP date: not sent by our worker
        retry = state.queue.retry_config
        max_attempts = retry.max_attempts
        max_duration_s = _seconds(tasks_v2.RetryConfig.pb(retry).max_retry_duration)
        age_s = now - (pending.first_attempt_at or now)
        if (max_attempts != -1 and pending.dispatch_count >= max_attempts
                and (max_duration_s <= 0 or age_s >= max_duration_s)):
            del self.live[name]  # Cloud Tasks gives up and deletes the task
            self.dropped.append(name)
            return
        pending.due = now + retry_delay_s(retry, pending.dispatch_count)
        self._push(state, pending)

    def deliveries_for(self, task_name: str) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if d.task_name == task_name]

    def queue_config(self, queue_path: str) -> tasks_v2.Queue:
        with self._lock:
            return tasks_v2.Queue(self.queues[queue_path].queue)
