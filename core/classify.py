"""Error classification, in one place: what a failure means for the queue.

Retryable: 408, 409, 429, 5xx, timeouts, connection errors. Permanent: content policy /
moderation refusals and other invalid requests, authentication errors (loudly: no retry
will fix a wrong key).
"""

from __future__ import annotations

from core.errors import TaskFailure

MODERATION_CODES = frozenset(
    {"moderation_blocked", "content_policy_violation", "content_filter", "safety_violation"}
)
# Refusals: failures a retry cannot cure (the same prompt is refused again, and may be
# billed again). "Retry all failed" leaves them alone unless the operator asks.
REFUSAL_CODES = MODERATION_CODES | {"invalid_request"}
MAX_MESSAGE_CHARS = 1000


def _clip(message: str) -> str:
    message = " ".join(message.split())
    return message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 1] + "…"


def classify_http(
    status: int, *, code: str | None = None, message: str = "", retry_after_s: float | None = None
) -> TaskFailure:
    """A provider's HTTP error answer as a TaskFailure."""
    msg = _clip(message or f"HTTP {status}")
    if code in MODERATION_CODES:
        return TaskFailure(retryable=False, code=code, message=msg)
    if status == 429:
        return TaskFailure(
            retryable=True, code=code or "rate_limited", message=msg,
            retry_after_s=retry_after_s, rate_limited=True,
        )
    if status in (408, 409):
        return TaskFailure(retryable=True, code=code or f"http_{status}", message=msg,
                           retry_after_s=retry_after_s)
    if status in (502, 503, 504):
        return TaskFailure(
            retryable=True, code=code or "upstream_unavailable", message=msg,
            retry_after_s=retry_after_s, upstream_unavailable=True,
        )
    if status >= 500:
        return TaskFailure(retryable=True, code=code or "upstream_error", message=msg,
                           retry_after_s=retry_after_s)
    if status in (401, 403):
        return TaskFailure(retryable=False, code=code or "authentication_error", message=msg)
    return TaskFailure(retryable=False, code=code or "invalid_request", message=msg)


def timeout(message: str = "the model call timed out") -> TaskFailure:
    return TaskFailure(retryable=True, code="timeout", message=_clip(message),
                       upstream_unavailable=True)


def connection_error(message: str = "could not reach the model provider") -> TaskFailure:
    return TaskFailure(retryable=True, code="connection_error", message=_clip(message),
                       upstream_unavailable=True)


def storage_error(message: str) -> TaskFailure:
    return TaskFailure(retryable=True, code="storage_error", message=_clip(message),
                       upstream_unavailable=True)


def internal_error(exc: BaseException) -> TaskFailure:
    """An unexpected exception: retried, since a bug fix or a transient state may cure it."""
    return TaskFailure(retryable=True, code="internal_error",
                       message=_clip(f"{type(exc).__name__}: {exc}"))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form); None if absent or a date."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
