"""Retry policy: pure decisions about a failed attempt, no I/O.

Mirrors a Cloud Tasks queue's retry config (min/max backoff, max doublings) so the local
dispatcher and Cloud Tasks behave alike, and honours Retry-After from the model provider.
Our table decides every retry (the release stores next_attempt_at; a claim before it is
refused), so the queue's own schedule never burns attempts.

A rate limit is the provider's state, not the task's: while a task's rate-limit streak is
younger than ``rate_limit_budget_s`` a 429 gives its attempt back, so a provider outage of
minutes fails nothing; the budget is time, so an outage of hours still ends the task.
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
    # How long a streak of 429s may go on without using up attempts (see the module doc).
    rate_limit_budget_s: float = 3600.0


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
    # Give the attempt back (it does not count against max_attempts).
    free_attempt: bool = False
    # The task's rate-limit streak goes on (else it ends).
    rate_limited: bool = False


def decide(
    failure: TaskFailure,
    *,
    attempt: int,
    policy: RetryPolicy,
    free_attempts: int = 0,
    rate_limited_for_s: float | None = None,
    rng: random.Random | None = None,
) -> RetryDecision:
    """What to do after ``attempt`` failed with ``failure``.

    ``free_attempts`` of the task's attempts were given back before; ``rate_limited_for_s``
    is how long its current rate-limit streak has lasted (None: no streak). A permanent
    failure, or the last charged attempt, is final and answered 200: only 2xx stops Cloud
    Tasks, and our tables keep the record. Otherwise the answer tells the queue how to
    retry: 429 slows it down, 503 for an upstream outage, 500 for the rest.
    """
    if not failure.retryable:
        return RetryDecision(final=True, delay_s=0.0, http_status=200)
    # The raw attempt number keeps growing, so the backoff does even when attempts are
    # given back.
    delay = compute_backoff(attempt, policy, rng=rng)
    if failure.retry_after_s is not None:
        delay = max(delay, min(failure.retry_after_s, policy.max_backoff_s))
    retry_after = failure.retry_after_s
    if failure.rate_limited and (rate_limited_for_s or 0.0) < policy.rate_limit_budget_s:
        return RetryDecision(final=False, delay_s=delay, http_status=429,
                             retry_after_s=retry_after, free_attempt=True, rate_limited=True)
    if attempt - free_attempts >= policy.max_attempts:
        return RetryDecision(final=True, delay_s=0.0, http_status=200)
    if failure.rate_limited:
        status = 429
    elif failure.upstream_unavailable:
        status = 503
    else:
        status = 500
    return RetryDecision(final=False, delay_s=delay, http_status=status,
                         retry_after_s=retry_after, rate_limited=failure.rate_limited)


def policy_from_settings(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=settings.MAX_ATTEMPTS,
        min_backoff_s=settings.RETRY_MIN_BACKOFF_S,
        max_backoff_s=settings.RETRY_MAX_BACKOFF_S,
        max_doublings=settings.RETRY_MAX_DOUBLINGS,
        rate_limit_budget_s=settings.RATE_LIMIT_BUDGET_S,
    )
