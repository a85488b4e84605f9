"""What the Cloud Tasks queue's retry config means for our retries, read at worker start.

With the hand-over (core/dispatch/cloudtasks/handover.py) the worker schedules every task retry
itself; the queue's RetryConfig only carries deliveries that never reached the handler.
It matters in two ways (pure judgement here, GetQueue in ``log_queue_config``):

- too early: the queue drops a task it could not deliver after ``drop_after_s`` (the sum
  of its backoffs over max_attempts, or max_retry_duration if longer). A worker
  unreachable longer than that (a broken deploy, a database outage answered 503) leaves
  such tasks to the stranded sweep, after STRANDED_AFTER_S.
- too late: the gap between the queue's tries grows to max_backoff; after a long outage a
  task the queue still holds may wait that long once the worker is back, and the stranded
  sweep leaves a task the queue holds alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from core.config import Settings

log = logging.getLogger(__name__)

# A worker outage shorter than this must not make the queue drop tasks.
DROP_TOO_EARLY_S = 900.0
# An undelivered task should not wait longer than this for the queue's next try.
GAP_TOO_LATE_S = 900.0
VIEWER_ROLE = "roles/cloudtasks.viewer"


@dataclass(frozen=True)
class RetryShape:
    max_attempts: int  # -1 unlimited
    min_backoff_s: float
    max_backoff_s: float
    max_doublings: int
    max_retry_duration_s: float = 0.0


def queue_delay_s(shape: RetryShape, failures: int) -> float:
    """Cloud Tasks' wait after ``failures`` failed tries (pure): min_backoff doubled up to
    max_doublings times, then growing linearly by that last step, capped at max_backoff."""
    k = max(1, failures)
    if k - 1 <= shape.max_doublings:
        delay = shape.min_backoff_s * 2 ** (k - 1)
    else:
        step = shape.min_backoff_s * 2 ** shape.max_doublings
        delay = step * (k - shape.max_doublings)
    return min(delay, shape.max_backoff_s)


def drop_after_s(shape: RetryShape) -> float | None:
    """How long the queue keeps trying a task that never reaches the handler; None if it
    never gives up (pure)."""
    if shape.max_attempts == -1:
        return None
    tries = sum(queue_delay_s(shape, k) for k in range(1, max(1, shape.max_attempts)))
    return max(tries, shape.max_retry_duration_s)


def _outage_before_gap_s(shape: RetryShape, gap_s: float) -> float:
    """How long a task has been failing when the queue's next wait first exceeds gap_s."""
    elapsed, k = 0.0, 1
    while k < 10_000 and queue_delay_s(shape, k) <= gap_s:
        elapsed += queue_delay_s(shape, k)
        k += 1
    return elapsed


def shape_of(queue: Any) -> RetryShape:
    retry = queue.retry_config
    return RetryShape(
        max_attempts=retry.max_attempts,
        min_backoff_s=retry.min_backoff.total_seconds() if retry.min_backoff else 0.0,
        max_backoff_s=retry.max_backoff.total_seconds() if retry.max_backoff else 0.0,
        max_doublings=retry.max_doublings,
        max_retry_duration_s=(retry.max_retry_duration.total_seconds()
                              if retry.max_retry_duration else 0.0),
    )


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:g} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def judge(queue_name: str, shape: RetryShape, *, stranded_after_s: float
          ) -> tuple[int, str]:
    """The one line the worker logs about the queue, and its level (pure)."""
    attempts = "unlimited" if shape.max_attempts == -1 else str(shape.max_attempts)
    drop = drop_after_s(shape)
    line = (f"queue {queue_name}: max_attempts {attempts}, backoff "
            f"{shape.min_backoff_s:g}\u2013{shape.max_backoff_s:g} s, max_doublings "
            f"{shape.max_doublings}: transport retries only (undelivered tasks kept "
            f"{'until retention ends' if drop is None else 'about ' + _span(drop)}); "
            f"task retries are scheduled by the worker")
    problems = []
    if drop is not None and drop < DROP_TOO_EARLY_S:
        problems.append(
            f"drops a task the worker cannot be reached for after about {_span(drop)}: "
            f"a longer outage leaves it to the stranded sweep (STRANDED_AFTER_S "
            f"{stranded_after_s:g} s); raise max_attempts or max_backoff")
    if shape.max_backoff_s > GAP_TOO_LATE_S:
        problems.append(
            f"max_backoff {shape.max_backoff_s:g} s: after an outage of more than about "
            f"{_span(_outage_before_gap_s(shape, GAP_TOO_LATE_S))} an undelivered task "
            f"may wait up to {_span(shape.max_backoff_s)} once the worker is back "
            f"(`aiwebimage queue create` uses RETRY_MAX_BACKOFF_S)")
    if problems:
        return logging.WARNING, line + "; WARNING: " + "; ".join(problems)
    return logging.INFO, line


def log_queue_config(settings: Settings, dispatcher: Any) -> tuple[int, str]:
    """(Blocking.) GetQueue, then one line; a failure to read is one WARNING naming the
    role the worker's service account lacks."""
    from google.api_core import exceptions as gexc

    try:
        queue = dispatcher.describe_queue(timeout=10.0)
    except (gexc.GoogleAPICallError, gexc.RetryError) as exc:
        level = logging.WARNING
        reason = type(exc).__name__
        why = ("the worker's service account lacks " + VIEWER_ROLE
               if isinstance(exc, gexc.PermissionDenied)
               else f"if the worker's service account lacks {VIEWER_ROLE}, grant it")
        message = (f"queue {settings.QUEUE_NAME}: could not read its retry config "
                   f"(GetQueue: {reason}); {why} (cloudtasks.queues.get) so the worker "
                   f"can check it; task retries are scheduled by the worker either way")
        log.log(level, message, extra={"action": "queue_config_unread", "reason": reason})
        return level, message
    level, message = judge(settings.QUEUE_NAME, shape_of(queue),
                           stranded_after_s=settings.STRANDED_AFTER_S)
    log.log(level, message, extra={"action": "queue_config", "queue": settings.QUEUE_NAME})
    return level, message
