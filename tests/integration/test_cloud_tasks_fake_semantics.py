"""testing/cloudtasks_fake.py behaves as Cloud Tasks documents it (RetryConfig,
HttpRequest, the X-CloudTasks-* headers), seen through the real google-cloud-tasks client
and a scripted HTTP target on loopback. The worker's recovery tests rest on this."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest
from google.api_core import exceptions as gexc
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport
from google.protobuf import duration_pb2, timestamp_pb2

from testing.cloudtasks_fake import (
    CloudTasksFake,
    gcloud_queue,
    retry_delay_s,
)

PARENT = "projects/p/locations/l"


class Target:
    """An HTTP target answering scripted (status, delay_s, headers) per request."""

    def __init__(self) -> None:
        self.script: list[tuple[int, float, dict[str, str]]] = []
        self.default: tuple[int, float, dict[str, str]] = (200, 0.0, {})
        self.seen: list[tuple[float, dict[str, str]]] = []
        target = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                target.seen.append((time.time(), {k.lower(): v for k, v in self.headers.items()}))
                status, delay_s, headers = (target.script.pop(0) if target.script
                                            else target.default)
                time.sleep(delay_s)
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("content-length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the fake gave up waiting (dispatch deadline)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/t"


@pytest.fixture
def client(fake: CloudTasksFake) -> Iterator[tasks_v2.CloudTasksClient]:
    channel = grpc.insecure_channel(fake.host)
    yield tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
    channel.close()


@pytest.fixture
def target() -> Iterator[Target]:
    server = Target()
    yield server
    server.server.shutdown()
    server.server.server_close()


def _queue(client: tasks_v2.CloudTasksClient, name: str, **retry: Any) -> str:
    path = f"{PARENT}/queues/{name}"
    config = tasks_v2.RetryConfig(**retry) if retry else None
    client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=path, retry_config=config))
    return path


def _task(client: tasks_v2.CloudTasksClient, queue: str, target: Target, name: str, *,
          deadline_s: int | None = None, at: float | None = None) -> tasks_v2.Task:
    task = tasks_v2.Task(name=f"{queue}/tasks/{name}", http_request=tasks_v2.HttpRequest(
        url=target.url, http_method=tasks_v2.HttpMethod.POST, body=b"{}"))
    if deadline_s is not None:
        task.dispatch_deadline = duration_pb2.Duration(seconds=deadline_s)
    if at is not None:
        stamp = timestamp_pb2.Timestamp()
        stamp.FromNanoseconds(int(at * 1e9))
        task.schedule_time = stamp
    return client.create_task(parent=queue, task=task)


def _seconds(s: float) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=int(s), nanos=round((s - int(s)) * 1e9))


def test_the_guides_gcloud_queue_reads_back_with_cloud_tasks_default_retry_config(
    client: tasks_v2.CloudTasksClient,
) -> None:
    path = f"{PARENT}/queues/guide"
    client.create_queue(parent=PARENT, queue=gcloud_queue(
        path, max_dispatches_per_second=10, max_concurrent_dispatches=100))
    queue = client.get_queue(name=path)
    retry = queue.retry_config
    assert (retry.max_attempts, retry.min_backoff, retry.max_backoff, retry.max_doublings) == (
        100, dt.timedelta(seconds=0.1), dt.timedelta(seconds=3600), 16)
    assert queue.rate_limits.max_concurrent_dispatches == 100


def test_retry_schedule_is_cloud_tasks_doubling_then_linear_then_capped() -> None:
    # The RetryConfig reference's example: 10 s, 300 s, 3 doublings -> 10, 20, 40, 80, 160,
    # 240, 300, 300.
    retry = tasks_v2.RetryConfig(min_backoff=_seconds(10), max_backoff=_seconds(300),
                                 max_doublings=3)
    assert [retry_delay_s(retry, k) for k in range(1, 9)] == [10, 20, 40, 80, 160, 240, 300,
                                                               300]


def test_every_failed_dispatch_is_an_attempt_and_the_task_is_dropped_at_max_attempts(
    client: tasks_v2.CloudTasksClient, fake: CloudTasksFake, target: Target,
) -> None:
    queue = _queue(client, "q", max_attempts=4, min_backoff=_seconds(0.2),
                   max_backoff=_seconds(1), max_doublings=1)
    target.default = (503, 0.0, {})
    task = _task(client, queue, target, "t1")
    deadline = time.monotonic() + 10
    while task.name not in fake.dropped and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake.dropped == [task.name]
    times = [t for t, _ in target.seen]
    assert len(times) == 4
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # 0.2, 0.4, then linear by 0.4 (capped at 1): 0.8
    for gap, expected in zip(gaps, (0.2, 0.4, 0.8), strict=True):
        assert expected - 0.02 <= gap <= expected + 0.3
    assert [h["x-cloudtasks-taskretrycount"] for _, h in target.seen] == ["0", "1", "2", "3"]
    # 5xx answers are not executions (the header's documented meaning).
    assert {h["x-cloudtasks-taskexecutioncount"] for _, h in target.seen} == {"0"}
    with pytest.raises(gexc.NotFound):
        client.get_task(name=task.name)
    with pytest.raises(gexc.AlreadyExists):  # a dropped name is remembered
        _task(client, queue, target, "t1")


def test_unlimited_attempts_keep_retrying_and_4xx_answers_count_as_executions(
    client: tasks_v2.CloudTasksClient, fake: CloudTasksFake, target: Target,
) -> None:
    queue = _queue(client, "u", max_attempts=-1, min_backoff=_seconds(0.05),
                   max_backoff=_seconds(0.05))
    target.script = [(500, 0, {})] + [(404, 0, {})] * 5
    task = _task(client, queue, target, "t")
    deadline = time.monotonic() + 10
    while len(target.seen) < 7 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(target.seen) >= 7 and fake.dropped == []
    assert [h["x-cloudtasks-taskexecutioncount"] for _, h in target.seen[:7]] == [
        "0", "0", "1", "2", "3", "4", "5"]
    # The 7th answer (200) delivers it: the fake drops the task once that answer is read,
    # a moment after the target has seen the request.
    deadline = time.monotonic() + 5
    while fake.live.get(task.name) is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.live.get(task.name) is None


def test_schedule_time_is_honoured_and_names_of_finished_tasks_are_remembered(
    client: tasks_v2.CloudTasksClient, fake: CloudTasksFake, target: Target,
) -> None:
    queue = _queue(client, "s")
    at = time.time() + 1.5
    _task(client, queue, target, "later", at=at)
    deadline = time.monotonic() + 5
    while not target.seen and time.monotonic() < deadline:
        time.sleep(0.02)
    assert target.seen and target.seen[0][0] >= at
    time.sleep(0.2)
    with pytest.raises(gexc.AlreadyExists):
        _task(client, queue, target, "later")


def test_a_delivery_past_its_dispatch_deadline_fails_and_is_retried_while_it_still_runs(
    client: tasks_v2.CloudTasksClient, fake: CloudTasksFake, target: Target,
) -> None:
    queue = _queue(client, "d", max_attempts=3, min_backoff=_seconds(0.1),
                   max_backoff=_seconds(0.1))
    # Cloud Tasks' floor is 15 s: the first answer takes 16 s, the retry answers at once.
    target.script = [(200, 16.0, {})]
    task = _task(client, queue, target, "slow", deadline_s=15)
    deadline = time.monotonic() + 25
    while len(target.seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    first, second = target.seen[0][0], target.seen[1][0]
    assert 15.0 <= second - first < 16.0  # retried before the first answered
    (cut, *_) = fake.deliveries_for(task.name)
    assert cut.status == 0


def test_retry_after_on_429_holds_the_whole_queue(
    client: tasks_v2.CloudTasksClient, fake: CloudTasksFake, target: Target,
) -> None:
    queue = _queue(client, "r", min_backoff=_seconds(0.1), max_backoff=_seconds(0.1))
    target.script = [(429, 0.0, {"Retry-After": "2"})]
    _task(client, queue, target, "a")
    time.sleep(0.3)
    _task(client, queue, target, "b")  # another task, due now, waits for the throttle
    deadline = time.monotonic() + 6
    while len(target.seen) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    first = target.seen[0][0]
    assert all(t - first >= 2.0 - 0.05 for t, _ in target.seen[1:])
