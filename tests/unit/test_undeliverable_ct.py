"""The Cloud Tasks undeliverable rule (core.dispatch.cloudtasks.undeliverable.judge), as a table,
and the fake's HTTP -> google.rpc mapping it is tested against."""

from __future__ import annotations

import pytest
from google.cloud import tasks_v2
from google.rpc import code_pb2, status_pb2

from core.dispatch.cloudtasks.undeliverable import (
    UNREACHABLE_SPREAD_S,
    Seen,
    judge,
    may_fail,
    needs_probe,
    seen_from_task,
)
from core.dispatch.undeliverable import Cause
from testing.cloudtasks_fake import rpc_code_for

URL = "http://127.0.0.1:8080/api/admin/worker/process-task"
REFUSED = Cause("connect_refused", f"connection refused by {URL}")


@pytest.mark.parametrize(("seen", "unreachable", "expected"), [
    # never tried, or the attempt still in flight: nothing known yet
    (Seen(0, False, None), None, None),
    (Seen(3, False, None), REFUSED, None),
    # the answers that mean "not our handler / refused before looking"
    (Seen(1, True, code_pb2.NOT_FOUND), None, "http_404"),
    (Seen(4, True, code_pb2.UNAUTHENTICATED), None, "http_401"),
    (Seen(2, True, code_pb2.PERMISSION_DENIED), None, "http_403"),
    # unavailable counts only while this worker cannot connect either
    (Seen(2, True, code_pb2.UNAVAILABLE), None, None),
    (Seen(2, True, code_pb2.UNAVAILABLE), REFUSED, "connect_refused"),
    # the queue's ordinary retrying: deadline, 5xx, 429, success
    (Seen(5, True, code_pb2.DEADLINE_EXCEEDED), REFUSED, None),
    (Seen(5, True, code_pb2.INTERNAL), REFUSED, None),
    (Seen(5, True, code_pb2.RESOURCE_EXHAUSTED), None, None),
    (Seen(1, True, code_pb2.OK), None, None),
])
def test_judge(seen: Seen, unreachable: Cause | None, expected: str | None) -> None:
    cause = judge(seen, url=URL, unreachable=unreachable)
    assert (cause.code if cause else None) == expected
    if cause is not None:
        assert URL in cause.detail and cause.detail.startswith("Cloud Tasks deliveries")


@pytest.mark.parametrize(("code", "first_ago_s", "expected"), [
    ("http_404", 0.0, True),  # an answer that waiting will not change
    ("http_401", None, True),
    ("connect_refused", 5.0, False),  # may be one host restarting: not yet
    ("connect_refused", None, False),
    ("connect_refused", UNREACHABLE_SPREAD_S, True),
    ("tls_error", UNREACHABLE_SPREAD_S + 1, True),
])
def test_may_fail(code: str, first_ago_s: float | None, expected: bool) -> None:
    now = 1_000_000.0
    seen = Seen(5, True, code_pb2.UNAVAILABLE,
                None if first_ago_s is None else now - first_ago_s)
    assert may_fail(seen, Cause(code, "x"), now_s=now) is expected


def test_only_an_answered_unavailable_needs_the_probe() -> None:
    assert needs_probe(Seen(1, True, code_pb2.UNAVAILABLE))
    assert not needs_probe(Seen(1, True, code_pb2.NOT_FOUND))
    assert not needs_probe(Seen(1, False, None))


def test_seen_from_a_task_reads_the_last_attempt() -> None:
    task = tasks_v2.Task(dispatch_count=3, response_count=3)
    pb = tasks_v2.Task.pb(task)
    pb.last_attempt.dispatch_time.GetCurrentTime()
    assert seen_from_task(task) == Seen(3, False, None)  # dispatched, not answered
    pb.first_attempt.dispatch_time.FromSeconds(1_700_000_000)
    assert seen_from_task(task).first_dispatch_s == 1_700_000_000.0
    pb.last_attempt.response_time.GetCurrentTime()
    pb.last_attempt.response_status.CopyFrom(status_pb2.Status(code=code_pb2.NOT_FOUND))
    assert seen_from_task(task) == Seen(3, True, code_pb2.NOT_FOUND, 1_700_000_000.0)
    assert seen_from_task(tasks_v2.Task()) == Seen(0, False, None)


@pytest.mark.parametrize(("http", "code"), [
    (200, code_pb2.OK), (404, code_pb2.NOT_FOUND), (401, code_pb2.UNAUTHENTICATED),
    (403, code_pb2.PERMISSION_DENIED), (503, code_pb2.UNAVAILABLE),
    (429, code_pb2.RESOURCE_EXHAUSTED), (500, code_pb2.INTERNAL),
    (0, code_pb2.UNAVAILABLE), (-1, code_pb2.DEADLINE_EXCEEDED),
])
def test_the_fakes_response_status_codes(http: int, code: int) -> None:
    assert rpc_code_for(http) == code
