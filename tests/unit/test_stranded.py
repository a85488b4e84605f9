"""Stranded tasks in Cloud Tasks mode: which rows are worth asking the queue about, and
what its GetTask answer means. Tables of cases, one per line."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from google.api_core import exceptions as gexc
from google.cloud import tasks_v2

from core.config import Settings
from core.dispatch.cloudtasks.dispatcher import queue_delivers, task_presence
from core.dispatch.cloudtasks.stranded import STRANDED_AFTER_S, Candidate, is_candidate, judge

NOW = datetime(2026, 11, 29, 6, 0, tzinfo=UTC)
STALE_S = 1800.0


def ago(seconds: float | None) -> datetime | None:
    return None if seconds is None else NOW - timedelta(seconds=seconds)


def row(status: str, *, updated_s: float, lease_s: float | None = None,
        checked_s: float = 7200.0) -> Candidate:
    """A row last touched ``updated_s`` ago, lease ending ``lease_s`` ago (negative: in the
    future), last checked (next_attempt_at) ``checked_s`` ago."""
    updated = ago(updated_s)
    checked = ago(checked_s)
    assert updated is not None and checked is not None
    return Candidate(id=uuid.uuid4(), job_id=uuid.uuid4(), status=status,
                     dispatch_generation=0, updated_at=updated, lease_until=ago(lease_s),
                     next_attempt_at=checked, cloud_task_name=None)


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        (row("queued", updated_s=3600), True),  # queued an hour, never checked: ask
        (row("queued", updated_s=1801), True),  # just past the threshold
        (row("queued", updated_s=1800), False),  # exactly at it: not yet (strictly older)
        (row("queued", updated_s=60), False),  # recently handed over or released
        (row("queued", updated_s=3600, checked_s=600), False),  # checked 10 min ago: wait
        (row("queued", updated_s=3600, checked_s=-30), False),  # backing off (future due)
        (row("running", updated_s=7200, lease_s=3600), True),  # lease dead for an hour
        (row("running", updated_s=7200, lease_s=60), False),  # just expired: queue retries
        (row("running", updated_s=7200, lease_s=-60), False),  # live lease: in progress
        (row("running", updated_s=7200, lease_s=None), False),  # no lease recorded
        (row("running", updated_s=7200, lease_s=3600, checked_s=60), False),  # checked
        (row("pending", updated_s=7200), False),  # sweep_pending's, not ours
        (row("succeeded", updated_s=7200), False),  # finished rows are done
        (row("failed", updated_s=7200), False),
        (row("cancelled", updated_s=7200), False),
    ],
)
def test_candidates(candidate: Candidate, expected: bool) -> None:
    assert is_candidate(candidate, now=NOW, stale_s=STALE_S) is expected


def test_zero_stale_s_takes_anything_unfinished_and_old() -> None:
    assert is_candidate(row("queued", updated_s=1, checked_s=1), now=NOW, stale_s=0)
    assert not is_candidate(row("queued", updated_s=0, checked_s=1), now=NOW, stale_s=0)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (None, True),  # GetTask found it: the queue holds it (waiting, backing off, running)
        (gexc.NotFound("task"), False),  # ran, deleted, purged or given up: gone
        (gexc.MethodNotImplemented("501"), None),  # an emulator without GetTask: unknown
        (gexc.ServiceUnavailable("down"), None),  # transient: ask next sweep
        (gexc.DeadlineExceeded("slow"), None),
        (gexc.PermissionDenied("no cloudtasks.tasks.get"), None),  # misconfigured IAM
        (gexc.InternalServerError("oops"), None),
        (gexc.RetryError("gave up", cause=gexc.ServiceUnavailable("down")), None),
        (ValueError("anything else"), None),
    ],
)
def test_what_a_get_task_answer_means(error: BaseException | None,
                                      expected: bool | None) -> None:
    assert task_presence(error) is expected


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (tasks_v2.Queue.State.RUNNING, True),
        (tasks_v2.Queue.State.PAUSED, False),  # holds its tasks: nothing is lost
        (tasks_v2.Queue.State.DISABLED, False),
        (tasks_v2.Queue.State.STATE_UNSPECIFIED, False),
    ],
)
def test_only_a_running_queue_is_swept(state: int, expected: bool) -> None:
    assert queue_delivers(state) is expected


def test_only_a_definite_not_found_moves_a_row() -> None:
    rows = [row("queued", updated_s=3600) for _ in range(4)]
    verdicts = judge(rows, [False, True, None, False])
    assert verdicts.stranded == [rows[0], rows[3]]
    assert verdicts.held == [rows[1]]
    assert verdicts.unknown == [rows[2]]
    with pytest.raises(ValueError):
        judge(rows, [False])


def test_default_threshold_is_above_the_queues_longest_backoff() -> None:
    # A task between two Cloud Tasks retries sits queued for up to max_backoff; the sweep
    # must not take that for stranded (it would ask needlessly, never wrongly).
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.STRANDED_AFTER_S == STRANDED_AFTER_S
    assert settings.STRANDED_AFTER_S > settings.RETRY_MAX_BACKOFF_S
