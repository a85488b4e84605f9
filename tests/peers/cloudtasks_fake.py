"""A small Cloud Tasks server for tests: the google.cloud.tasks.v2.CloudTasks gRPC service
(messages from the google-cloud-tasks protos), on 127.0.0.1, for the real client over a
real insecure channel. It covers what gcloud-tasks-emulator does not:

- CreateTask answers ALREADY_EXISTS for a name it has seen (Cloud Tasks remembers names
  for about an hour after the task ran or was deleted);
- each delivery is an HTTP POST with ``Authorization: Bearer <OIDC token>``, the token
  signed by ``TestIdentity`` (an RSA key whose certificate ``TestIdentity.serve()`` serves
  on loopback, in Google's ``{kid: PEM certificate}`` format), plus the X-CloudTasks-*
  headers as Cloud Tasks sends them (short queue name);
- queue create/get/update/pause/resume; a paused queue delivers nothing;
- ``create_latency_s`` and ``max_in_flight_creates`` to observe how many CreateTask calls a
  client keeps in flight; ``fail_creates`` makes the next N CreateTask calls UNAVAILABLE.
- GetTask finds a task from its creation until it is gone: delivered (2xx), given up
  after max_attempts, deleted (DeleteTask) or purged (PurgeQueue); then NOT_FOUND, as in
  Cloud Tasks. ``get_task_calls`` counts lookups; ``fail_get_tasks`` (a status code) makes
  every GetTask fail with it.

Non-2xx answers are retried after the queue's min_backoff (doubling, capped at
max_backoff) up to max_attempts, like Cloud Tasks.
"""

from __future__ import annotations

import datetime as dt
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
from google.protobuf import empty_pb2

SERVICE = "google.cloud.tasks.v2.CloudTasks"
GOOGLE_ISSUER = "https://accounts.google.com"


SERVICE_ACCOUNT = "image-tasks@test-project.iam.gserviceaccount.com"


def production_worker_env(*, port: int, tasks_host: str, certs_url: str,
                          queue_name: str = "images") -> dict[str, str]:
    """Settings for a worker in production mode behind this fake: OIDC verification on
    (ENVIRONMENT=production and USE_CLOUD_TASKS), the demo model, local storage."""
    return {
        "ENVIRONMENT": "production", "API_KEY": "test-admin-key-0123456789",
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


@dataclass
class Delivery:
    task_name: str
    url: str
    status: int  # 0 = could not connect
    authorization: str | None
    headers: dict[str, str]


@dataclass
class _Pending:
    task: tasks_v2.Task
    queue: str
    due: float
    dispatch_count: int = 0
    response_count: int = 0


@dataclass
class _QueueState:
    queue: tasks_v2.Queue
    paused: bool = False
    pending: list[_Pending] = field(default_factory=list)


class CloudTasksFake:
    def __init__(self, identity: TestIdentity, *, create_latency_s: float = 0.0,
                 delivery_threads: int = 8) -> None:
        self.identity = identity
        self.create_latency_s = create_latency_s
        self.fail_creates = 0
        self.queues: dict[str, _QueueState] = {}
        self.seen_names: set[str] = set()
        self.create_calls = 0
        self.in_flight_creates = 0
        self.max_in_flight_creates = 0
        self.deliveries: list[Delivery] = []
        # Tasks the queue holds (waiting, backing off or being delivered), by name.
        self.live: dict[str, _Pending] = {}
        self.get_task_calls = 0
        self.fail_get_tasks: grpc.StatusCode | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = futures.ThreadPoolExecutor(delivery_threads)
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
        self._grpc.stop(grace=0.5).wait(5)
        self._loop.join(timeout=5)
        self._pool.shutdown(wait=True, cancel_futures=True)

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
            "DeleteTask": grpc.unary_unary_rpc_method_handler(
                self.delete_task, request_deserializer=tasks_v2.DeleteTaskRequest.deserialize,
                response_serializer=lambda message: message.SerializeToString()),
            "PurgeQueue": unary(self.purge_queue, tasks_v2.PurgeQueueRequest, tasks_v2.Queue),
            "DeleteQueue": grpc.unary_unary_rpc_method_handler(
                self.delete_queue, request_deserializer=tasks_v2.DeleteQueueRequest.deserialize,
                response_serializer=lambda message: message.SerializeToString()),
        })

    def _queue(self, name: str, context: grpc.ServicerContext) -> _QueueState:
        state = self.queues.get(name)
        if state is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Queue {name} does not exist.")
        assert state is not None
        return state

    def _view(self, state: _QueueState) -> tasks_v2.Queue:
        queue = tasks_v2.Queue(state.queue)
        queue.state = (tasks_v2.Queue.State.PAUSED if state.paused
                       else tasks_v2.Queue.State.RUNNING)
        return queue

    def create_queue(self, request: tasks_v2.CreateQueueRequest,
                     context: grpc.ServicerContext) -> tasks_v2.Queue:
        with self._lock:
            if request.queue.name in self.queues:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, "Queue already exists.")
            self.queues[request.queue.name] = _QueueState(tasks_v2.Queue(request.queue))
            return self._view(self.queues[request.queue.name])

    def get_queue(self, request: tasks_v2.GetQueueRequest,
                  context: grpc.ServicerContext) -> tasks_v2.Queue:
        with self._lock:
            return self._view(self._queue(request.name, context))

    def update_queue(self, request: tasks_v2.UpdateQueueRequest,
                     context: grpc.ServicerContext) -> tasks_v2.Queue:
        with self._lock:
            state = self._queue(request.queue.name, context)
            paths = list(request.update_mask.paths) if request.update_mask else []
            if not paths:
                state.queue = tasks_v2.Queue(request.queue)
            for path in paths:  # "rate_limits.max_dispatches_per_second", ...
                section, _, leaf = path.partition(".")
                source = getattr(request.queue, section)
                if leaf:
                    setattr(getattr(state.queue, section), leaf, getattr(source, leaf))
                else:
                    setattr(state.queue, section, source)
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
                pending = _Pending(task, request.parent, time.monotonic())
                state.pending.append(pending)
                self.live[task.name] = pending
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
            task.dispatch_count = pending.dispatch_count
            task.response_count = pending.response_count
            return task

    def delete_task(self, request: tasks_v2.DeleteTaskRequest,
                    context: grpc.ServicerContext) -> empty_pb2.Empty:
        with self._lock:
            pending = self.live.pop(request.name, None)
            if pending is None:
                context.abort(grpc.StatusCode.NOT_FOUND, "Requested entity was not found.")
            assert pending is not None
            state = self.queues.get(pending.queue)
            if state is not None:
                state.pending = [p for p in state.pending if p is not pending]
        return empty_pb2.Empty()

    def purge_queue(self, request: tasks_v2.PurgeQueueRequest,
                    context: grpc.ServicerContext) -> tasks_v2.Queue:
        with self._lock:
            state = self._queue(request.name, context)
            state.pending = []
            for name in [n for n, p in self.live.items() if p.queue == request.name]:
                del self.live[name]
            return self._view(state)

    # -- delivery ---------------------------------------------------------------------
    def _deliver_loop(self) -> None:
        while not self._stop.wait(0.02):
            now = time.monotonic()
            with self._lock:
                due: list[_Pending] = []
                for state in self.queues.values():
                    if state.paused:
                        continue
                    ready = [p for p in state.pending if p.due <= now]
                    state.pending = [p for p in state.pending if p.due > now]
                    due.extend(ready)
            for pending in due:
                self._pool.submit(self._deliver, pending)

    def _deliver(self, pending: _Pending) -> None:
        task = pending.task
        request = task.http_request
        short_queue = pending.queue.rsplit("/", 1)[-1]
        headers = dict(request.headers)
        headers.update({
            "X-CloudTasks-QueueName": short_queue,
            "X-CloudTasks-TaskName": task.name.rsplit("/", 1)[-1],
            "X-CloudTasks-TaskRetryCount": str(pending.dispatch_count),
            "X-CloudTasks-TaskExecutionCount": str(pending.response_count),
            # Cloud Run puts a trace context on each request it receives.
            "X-Cloud-Trace-Context": f"{abs(hash(task.name)):032x}"[:32] + "/1;o=1",
        })
        oidc = request.oidc_token
        if oidc.service_account_email:
            token = self.identity.token(audience=oidc.audience or request.url,
                                        email=oidc.service_account_email)
            headers["Authorization"] = f"Bearer {token}"
        http = urllib.request.Request(request.url, data=request.body, method="POST",
                                      headers=headers)
        status = 0
        try:
            with urllib.request.urlopen(http, timeout=30) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError:
            status = 0
        with self._lock:
            self.deliveries.append(Delivery(task.name, request.url, status,
                                            headers.get("Authorization"), headers))
            pending.dispatch_count += 1
            if status:
                pending.response_count += 1
            state = self.queues.get(pending.queue)
            gone = self.live.get(task.name) is not pending  # deleted or purged meanwhile
            if 200 <= status < 300 or state is None or gone:
                if not gone:
                    del self.live[task.name]  # delivered: the task no longer exists
                return
            retry = state.queue.retry_config
            if retry.max_attempts and pending.dispatch_count >= retry.max_attempts:
                del self.live[task.name]  # Cloud Tasks gives up and drops the task
                return
            min_s = (retry.min_backoff.total_seconds() if retry.min_backoff else 0.0) or 0.1
            max_s = (retry.max_backoff.total_seconds() if retry.max_backoff else 0.0) or 3600.0
            pending.due = time.monotonic() + min(max_s, min_s * 2 ** (pending.dispatch_count
                                                                       - 1))
            state.pending.append(pending)

    def deliveries_for(self, task_name: str) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if d.task_name == task_name]
