"""How many deliveries may be in flight: a fixed limit, or one that adapts (AIMD).

The provider's rate limit is not known in advance. ``AdaptiveLimit`` finds it the way TCP
finds a link's capacity: additive increase while deliveries succeed (+1 per window of
successes), multiplicative decrease on an overload answer (429/503), at most once per
cooldown so a burst of 429s from one over-full window halves the limit once, not N times.
A 429 with ``Retry-After`` also holds the whole queue until then: the limit is the
provider's, not the task's, so every delivery started before it ends would be refused too.

Pure: no I/O; time comes from an injectable clock, so tests drive it by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from core.config import Settings

# A hold from Retry-After never exceeds this: a bogus header must not stop the queue.
MAX_HOLD_S = 60.0


class ConcurrencyLimit(Protocol):
    @property
    def current(self) -> int:
        """Deliveries allowed in flight now (0 = hold: start nothing)."""
        ...

    @property
    def ceiling(self) -> int: ...

    def on_result(
        self, *, ok: bool, overloaded: bool, retry_after_s: float | None = None
    ) -> None: ...


@dataclass(frozen=True)
class FixedLimit:
    """A constant limit with plain per-task backoff: ignores overload signals."""

    current: int

    @property
    def ceiling(self) -> int:
        return self.current

    def on_result(
        self, *, ok: bool, overloaded: bool, retry_after_s: float | None = None
    ) -> None:
        return None


class AdaptiveLimit:
    """AIMD concurrency between ``minimum`` and ``maximum`` (see the module doc)."""

    def __init__(
        self,
        *,
        minimum: int = 1,
        maximum: int,
        initial: int | None = None,
        decrease_factor: float = 0.5,
        cooldown_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= minimum <= maximum:
            raise ValueError("need 1 <= minimum <= maximum")
        if not 0.0 < decrease_factor < 1.0:
            raise ValueError("decrease_factor must be between 0 and 1")
        self.minimum = minimum
        self.maximum = maximum
        self.decrease_factor = decrease_factor
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._window = float(min(max(initial if initial is not None else maximum, minimum),
                                 maximum))
        self._quiet_until = float("-inf")  # no further cut before this
        self._hold_until = float("-inf")
        self.decreases = 0  # how often the limit was cut (for logs and benchmarks)

    @property
    def current(self) -> int:
        if self._clock() < self._hold_until:
            return 0
        return int(self._window)

    @property
    def ceiling(self) -> int:
        return self.maximum

    @property
    def window(self) -> float:
        return self._window

    def hold_left_s(self) -> float:
        return max(0.0, self._hold_until - self._clock())

    def on_result(
        self, *, ok: bool, overloaded: bool, retry_after_s: float | None = None
    ) -> None:
        now = self._clock()
        if ok:
            # +1 per window of successes: linear growth per round trip, like TCP.
            self._window = min(float(self.maximum), self._window + 1.0 / self._window)
            return
        if not overloaded:
            return  # a plain failure says nothing about capacity
        if retry_after_s is not None and retry_after_s > 0:
            self._hold_until = max(self._hold_until, now + min(retry_after_s, MAX_HOLD_S))
        # Answers to deliveries sent before the last cut say nothing new: cut once per
        # cooldown (at least the hold, so the refusals of one burst count once).
        if now < self._quiet_until:
            return
        self._quiet_until = now + max(self.cooldown_s, min(retry_after_s or 0.0, MAX_HOLD_S))
        self.decreases += 1
        self._window = max(float(self.minimum), self._window * self.decrease_factor)


def limit_from_settings(settings: Settings) -> ConcurrencyLimit:
    """The local dispatcher's limit: adaptive up to LOCAL_MAX_CONCURRENCY, or fixed."""
    if not settings.ADAPTIVE_CONCURRENCY:
        return FixedLimit(settings.LOCAL_MAX_CONCURRENCY)
    maximum = settings.LOCAL_MAX_CONCURRENCY
    minimum = min(settings.ADAPTIVE_MIN_CONCURRENCY, maximum)
    return AdaptiveLimit(minimum=minimum, maximum=maximum,
                         cooldown_s=settings.ADAPTIVE_COOLDOWN_S)
