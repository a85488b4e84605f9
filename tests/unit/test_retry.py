"""Retry policy: a table of cases, one per line."""

from __future__ import annotations

import random

import pytest

from core import classify
from core.delivery.retry import RetryPolicy, compute_backoff, decide
from core.errors import TaskFailure

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


HOUR = 3600.0


@pytest.mark.parametrize(
    ("failure", "attempt", "free", "streak_s", "final", "status", "free_attempt"),
    [
        (MOD, 1, 0, None, True, 200, False),  # permanent: recorded, answered 200, queue stops
        (RATE, 1, 0, None, False, 429, True),  # rate limited: 429, the attempt given back
        (DOWN, 2, 0, None, False, 503, False),  # upstream down: 503
        (BOOM, 3, 0, None, False, 500, False),  # other server error: 500 with backoff
        (BOOM, 5, 0, None, True, 200, False),  # last allowed attempt: failed for good
        (BOOM, 5, 1, None, False, 500, False),  # one attempt was given back: one more try
        (BOOM, 9, 4, None, True, 200, False),  # 9 tries, 4 given back: 5 charged, final
        (RATE, 7, 0, None, False, 429, True),  # a 429 never ends a task inside its budget
        (RATE, 40, 38, 300.0, False, 429, True),  # 5-minute outage: still free
        (RATE, 5, 0, HOUR, True, 200, False),  # streak older than the budget: charged, final
        (RATE, 3, 0, HOUR, False, 429, False),  # past the budget, attempts left: charged
        (classify.timeout(), 1, 0, None, False, 503, False),  # timeouts retry
    ],
)
def test_decide(failure: TaskFailure, attempt: int, free: int, streak_s: float | None,
                final: bool, status: int, free_attempt: bool) -> None:
    decision = decide(failure, attempt=attempt, policy=NO_JITTER, free_attempts=free,
                      rate_limited_for_s=streak_s)
    assert (decision.final, decision.http_status, decision.free_attempt) == (
        final, status, free_attempt)


def test_rate_limit_streak_continues_only_on_rate_limits() -> None:
    assert decide(RATE, attempt=1, policy=NO_JITTER).rate_limited
    assert decide(RATE, attempt=3, policy=NO_JITTER, rate_limited_for_s=HOUR).rate_limited
    assert not decide(BOOM, attempt=1, policy=NO_JITTER).rate_limited


def test_retry_after_60_is_waited_at_every_try_of_a_long_outage() -> None:
    minute = classify.classify_http(429, retry_after_s=60.0)
    policy = RetryPolicy(max_attempts=5, min_backoff_s=1.0, max_backoff_s=300.0,
                         max_doublings=5, jitter=0.0)
    for attempt in range(1, 8):
        decision = decide(minute, attempt=attempt, policy=policy, free_attempts=attempt - 1,
                          rate_limited_for_s=60.0 * (attempt - 1))
        assert not decision.final and decision.delay_s >= 60.0 and decision.free_attempt


def test_retry_after_is_honoured_as_a_floor_but_capped() -> None:
    assert decide(RATE, attempt=1, policy=NO_JITTER).delay_s == 30.0
    huge = classify.classify_http(429, retry_after_s=10_000.0)
    assert decide(huge, attempt=1, policy=NO_JITTER).delay_s == 100.0
    short = classify.classify_http(429, retry_after_s=0.1)
    assert decide(short, attempt=4, policy=NO_JITTER).delay_s == 8.0
