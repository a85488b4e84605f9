"""Retry policy: pure decisions about a failed attempt, no I/O.

Mirrors a Cloud Tasks queue's retry config (min/max backoff, max doublings) so the local
dispatcher and Cloud Tasks behave alike, and honours Retry-After from the model provider.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.errors import TaskFailure

if TYPE_CHECKING:
    from core.config import Settings


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    min_backoff_s: float = 1.0
    max_backoff_s: float = 300.0
    max_doublings: int = 5
    # Fraction of the delay that is randomised, so a burst of failures does not come back
    # as a burst.
    jitter: float = 0.2


def compute_backoff(
    attempt: int, policy: RetryPolicy, *, rng: random.Random | None = None
) -> float:
    """Delay before the attempt after ``attempt`` (1-based), Cloud Tasks style.

    The delay doubles ``max_doublings`` times, then grows linearly by the last doubled
    step, capped at ``max_backoff_s``.
    """
    if attempt < 1:
        attempt = 1
    doublings = min(attempt - 1, policy.max_doublings)
    delay = policy.min_backoff_s * (2**doublings)
    if attempt - 1 > policy.max_doublings:
        delay += policy.min_backoff_s * (2**policy.max_doublings) * (
            attempt - 1 - policy.max_doublings
        )
    delay = min(delay, policy.max_backoff_s)
    if policy.jitter and delay > 0:
        r = (rng or random).random()
        delay *= 1.0 - policy.jitter + 2 * policy.jitter * r
        delay = min(delay, policy.max_backoff_s)
    return delay


@dataclass(frozen=True)
class RetryDecision:
    final: bool  # True: mark the task failed now
    delay_s: float  # when not final: wait this long before the next attempt
    http_status: int  # what the task endpoint answers the queue
    retry_after_s: float | None = None


def decide(
    failure: TaskFailure,
    *,
    attempt: int,
    policy: RetryPolicy,
    rng: random.Random | None = None,
) -> RetryDecision:
    """What to do after ``attempt`` failed with ``failure``.

    A permanent failure, or the last allowed attempt, is final and answered 200: only 2xx
    stops Cloud Tasks, and our tables keep the record. Otherwise the answer tells the
    queue how to retry: 429 slows it down, 503 for an upstream outage, 500 for the rest.
    """
    if not failure.retryable or attempt >= policy.max_attempts:
        return RetryDecision(final=True, delay_s=0.0, http_status=200)
    delay = compute_backoff(attempt, policy, rng=rng)
    if failure.retry_after_s is not None:
        delay = max(delay, min(failure.retry_after_s, policy.max_backoff_s))
    if failure.rate_limited:
        status = 429
    elif failure.upstream_unavailable:
        status = 503
    else:
        status = 500
    retry_after = failure.retry_after_s if failure.retry_after_s is not None else None
    return RetryDecision(final=False, delay_s=delay, http_status=status, retry_after_s=retry_after)


def policy_from_settings(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=settings.MAX_ATTEMPTS,
        min_backoff_s=settings.RETRY_MIN_BACKOFF_S,
        max_backoff_s=settings.RETRY_MAX_BACKOFF_S,
        max_doublings=settings.RETRY_MAX_DOUBLINGS,
    )
