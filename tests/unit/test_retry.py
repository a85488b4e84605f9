"""Retry policy: a table of cases, one per line."""

from __future__ import annotations

import random

import pytest

from core import classify
from core.errors import TaskFailure
from core.retry import RetryPolicy, compute_backoff, decide

NO_JITTER = RetryPolicy(max_attempts=5, min_backoff_s=1.0, max_backoff_s=100.0,
                        max_doublings=3, jitter=0.0)


@pytest.mark.parametrize(
    ("attempt", "expected_s"),
    [
        (0, 1.0),  # nonsense attempt numbers are read as the first
        (1, 1.0),  # first retry waits the minimum
        (2, 2.0),  # doubling
        (3, 4.0),
        (4, 8.0),  # third doubling: max_doublings reached
        (5, 16.0),  # then linear by the last doubled step (8 s)
        (6, 24.0),
        (50, 100.0),  # capped at max_backoff_s
    ],
)
def test_backoff_follows_cloud_tasks_shape(attempt: int, expected_s: float) -> None:
    assert compute_backoff(attempt, NO_JITTER) == expected_s


def test_jitter_stays_within_its_band_and_under_the_cap() -> None:
    policy = RetryPolicy(min_backoff_s=10.0, max_backoff_s=15.0, max_doublings=5, jitter=0.2)
    rng = random.Random(7)
    delays = [compute_backoff(1, policy, rng=rng) for _ in range(200)]
    assert min(delays) >= 8.0 and max(delays) <= 12.0
    assert len({round(d, 6) for d in delays}) > 100  # really randomised
    assert all(compute_backoff(9, policy, rng=rng) <= 15.0 for _ in range(50))


RATE = classify.classify_http(429, message="slow down", retry_after_s=30.0)
DOWN = classify.classify_http(503, message="down")
BOOM = classify.classify_http(500, message="boom")
MOD = classify.classify_http(400, code="moderation_blocked", message="no")


@pytest.mark.parametrize(
    ("failure", "attempt", "final", "status"),
    [
        (MOD, 1, True, 200),  # permanent: recorded, answered 200 so the queue stops
        (RATE, 1, False, 429),  # rate limited: 429 slows the queue
        (DOWN, 2, False, 503),  # upstream down: 503
        (BOOM, 3, False, 500),  # other server error: 500 with backoff
        (BOOM, 5, True, 200),  # last allowed attempt: failed for good
        (RATE, 7, True, 200),  # beyond the budget (queue counted more): final
        (classify.timeout(), 1, False, 503),  # timeouts retry
    ],
)
def test_decide(failure: TaskFailure, attempt: int, final: bool, status: int) -> None:
    decision = decide(failure, attempt=attempt, policy=NO_JITTER)
    assert (decision.final, decision.http_status) == (final, status)


def test_retry_after_is_honoured_as_a_floor_but_capped() -> None:
    assert decide(RATE, attempt=1, policy=NO_JITTER).delay_s == 30.0
    huge = classify.classify_http(429, retry_after_s=10_000.0)
    assert decide(huge, attempt=1, policy=NO_JITTER).delay_s == 100.0
    short = classify.classify_http(429, retry_after_s=0.1)
    assert decide(short, attempt=4, policy=NO_JITTER).delay_s == 8.0
