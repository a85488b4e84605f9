"""The provider client's side of rate limiting: a pacer fed by the provider's headers.

Image APIs cap images (and requests) per minute and say where a client stands in every
answer: ``x-ratelimit-limit-images`` / ``-remaining-images`` / ``-reset-images`` (and the
``-requests`` family), and on a refusal ``Retry-After`` / ``retry-after-ms``. A call sent
into an exhausted window is wasted twice: the provider refuses it and the task spends an
attempt. So the client keeps one ``ProviderPacer`` per provider endpoint, shared by every
delivery in the process:

- a 429 (or ``remaining`` 0) blocks every call until its Retry-After / reset;
- once the window runs low (``remaining`` under ``TIGHT_FRACTION`` of the limit, or after
  a 429) calls get distinct start slots ``60 / limit`` seconds apart, a token bucket at the
  provider's own rate, so waiters leave a block one by one instead of as a burst;
- plenty of ``remaining`` lifts the pacing again.

``reserve(max_wait_s)`` gives the delay before this call may start, or ``None`` when that
is more than the caller will wait (then the caller answers "rate limited, retry after",
and the queue holds the task). The decisions take ``now`` explicitly: pure and testable.
Usage in a provider::

    pacer = pacer_for(base_url)
    delay = pacer.reserve(max_wait_s=settings.PROVIDER_RATE_WAIT_S)
    if delay is None:
        raise rate_limited(retry_after_s=pacer.blocked_for_s())
    await asyncio.sleep(delay)
    response = ...  # the call; then, for success and error answers alike:
    pacer.observe(status=response.status_code, headers=response.headers)
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping

from core.classify import parse_retry_after

# Pace once fewer than this fraction of the per-minute limit remains.
TIGHT_FRACTION = 0.1
# Without any header, a 429 blocks for this long.
DEFAULT_BLOCK_S = 1.0
MAX_BLOCK_S = 120.0
# Pacing stays on this long after a 429 even if a later answer shows room.
TIGHT_AFTER_429_S = 60.0
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_reset(value: str | None) -> float | None:
    """OpenAI's reset header ("1s", "6m0s", "20ms", "0.5s", or plain seconds) in seconds."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """retry-after-ms (precise) first, then retry-after in seconds."""
    ms = parse_retry_after(headers.get("retry-after-ms"))
    if ms is not None:
        return ms / 1000.0
    return parse_retry_after(headers.get("retry-after"))


class ProviderPacer:
    """Shared per provider endpoint; see the module doc. Not thread-safe (one event loop)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.blocked_until = float("-inf")
        self.next_slot = float("-inf")
        self.limit_per_min: float | None = None
        self.remaining: float | None = None
        self.tight_until = float("-inf")
        self.refusals = 0  # 429s observed (for logs and benchmarks)

    # -- decisions -------------------------------------------------------------------
    def interval_s(self) -> float:
        return 60.0 / self.limit_per_min if self.limit_per_min else 0.0

    def tight(self, now: float) -> bool:
        if now < self.tight_until:
            return True
        if self.limit_per_min and self.remaining is not None:
            return self.remaining < max(1.0, self.limit_per_min * TIGHT_FRACTION)
        return False

    def blocked_for_s(self) -> float:
        return max(0.0, self.blocked_until - self._clock(), self.next_slot - self._clock())

    def reserve(self, max_wait_s: float, now: float | None = None) -> float | None:
        """Seconds to wait before this call starts (its slot is taken), or None when that
        is longer than ``max_wait_s`` (nothing is taken)."""
        now = self._clock() if now is None else now
        start = max(now, self.blocked_until)
        paced = self.tight(now) and self.interval_s() > 0
        if paced:
            start = max(start, self.next_slot)
        delay = start - now
        if delay > max_wait_s:
            return None
        if paced:
            self.next_slot = start + self.interval_s()
        if self.remaining is not None:
            self.remaining = max(0.0, self.remaining - 1)
        return delay

    def observe(self, *, status: int, headers: Mapping[str, str], now: float | None = None
                ) -> None:
        """Learn from one answer (success or error) of the provider."""
        now = self._clock() if now is None else now
        h = {k.lower(): v for k, v in headers.items()}
        limit, remaining, reset = self._window(h)
        if limit is not None:
            self.limit_per_min = limit
        if remaining is not None:
            self.remaining = remaining
        if status == 429:
            self.refusals += 1
            wait = retry_after_s(h)
            if wait is None:
                wait = reset if reset is not None else DEFAULT_BLOCK_S
            self.blocked_until = max(self.blocked_until, now + min(wait, MAX_BLOCK_S))
            self.tight_until = now + TIGHT_AFTER_429_S
            # Slots handed out before the refusal were too early: restart after the block.
            self.next_slot = max(self.next_slot, self.blocked_until)
        elif remaining is not None and remaining <= 0 and reset:
            self.blocked_until = max(self.blocked_until, now + min(reset, MAX_BLOCK_S))

    @staticmethod
    def _window(h: Mapping[str, str]) -> tuple[float | None, float | None, float | None]:
        """(limit, remaining, reset_s) of the tighter family: images, else requests."""
        best: tuple[float | None, float | None, float | None] = (None, None, None)
        for family in ("images", "requests"):
            limit = parse_retry_after(h.get(f"x-ratelimit-limit-{family}"))
            remaining = parse_retry_after(h.get(f"x-ratelimit-remaining-{family}"))
            reset = parse_reset(h.get(f"x-ratelimit-reset-{family}"))
            if limit is None and remaining is None:
                continue
            if best[1] is None or (remaining is not None and remaining < best[1]):
                best = (limit, remaining, reset)
        return best


_pacers: dict[str, ProviderPacer] = {}


def pacer_for(key: str) -> ProviderPacer:
    """The process-wide pacer for one provider endpoint (e.g. its base URL and model)."""
    if key not in _pacers:
        _pacers[key] = ProviderPacer()
    return _pacers[key]
