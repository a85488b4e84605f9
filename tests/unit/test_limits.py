"""AIMD concurrency limit (core.dispatch.local.limits): pure, driven by a hand clock."""

from __future__ import annotations

import pytest

from core.config import Settings
from core.dispatch.local.limits import AdaptiveLimit, FixedLimit, limit_from_settings


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_fixed_limit_ignores_overload() -> None:
    limit = FixedLimit(5)
    limit.on_result(ok=False, overloaded=True, retry_after_s=10)
    assert (limit.current, limit.ceiling) == (5, 5)


def test_overload_halves_once_per_cooldown() -> None:
    clock = Clock()
    limit = AdaptiveLimit(minimum=1, maximum=40, clock=clock, cooldown_s=1.0)
    for _ in range(10):  # one burst of refusals from one over-full window
        limit.on_result(ok=False, overloaded=True)
    assert limit.current == 20
    clock.t += 1.5
    limit.on_result(ok=False, overloaded=True)
    assert limit.current == 10


def test_never_below_minimum() -> None:
    clock = Clock()
    limit = AdaptiveLimit(minimum=3, maximum=8, clock=clock, cooldown_s=0.0)
    for _ in range(10):
        clock.t += 1
        limit.on_result(ok=False, overloaded=True)
    assert limit.current == 3


def test_successes_add_one_per_window_up_to_maximum() -> None:
    limit = AdaptiveLimit(minimum=1, maximum=12, initial=4, clock=Clock())
    for _ in range(5):  # about one window's worth of successes
        limit.on_result(ok=True, overloaded=False)
    assert limit.current == 5
    for _ in range(500):
        limit.on_result(ok=True, overloaded=False)
    assert limit.current == 12


def test_plain_failure_does_not_change_the_limit() -> None:
    limit = AdaptiveLimit(maximum=10, clock=Clock())
    limit.on_result(ok=False, overloaded=False)
    assert limit.current == 10


def test_retry_after_holds_the_queue_then_resumes() -> None:
    clock = Clock()
    limit = AdaptiveLimit(maximum=10, clock=clock)
    limit.on_result(ok=False, overloaded=True, retry_after_s=2.0)
    assert limit.current == 0  # hold: start nothing
    assert limit.hold_left_s() == pytest.approx(2.0)
    clock.t += 2.01
    assert limit.current == 5


def test_refusals_inside_the_retry_after_cut_once() -> None:
    clock = Clock()
    limit = AdaptiveLimit(maximum=32, clock=clock, cooldown_s=0.5)
    limit.on_result(ok=False, overloaded=True, retry_after_s=3.0)
    clock.t += 2.0  # still answers to deliveries sent before the cut
    limit.on_result(ok=False, overloaded=True, retry_after_s=1.0)
    clock.t += 1.1
    assert limit.current == 16


def test_a_huge_retry_after_is_capped() -> None:
    clock = Clock()
    limit = AdaptiveLimit(maximum=4, clock=clock)
    limit.on_result(ok=False, overloaded=True, retry_after_s=86_400)
    assert limit.hold_left_s() == pytest.approx(60.0)


def test_bad_bounds_refused() -> None:
    with pytest.raises(ValueError):
        AdaptiveLimit(minimum=5, maximum=2)


def test_settings_choose_the_limit() -> None:
    adaptive = limit_from_settings(Settings(LOCAL_MAX_CONCURRENCY=7, ADAPTIVE_CONCURRENCY=True))
    assert isinstance(adaptive, AdaptiveLimit)
    assert (adaptive.current, adaptive.ceiling) == (7, 7)
    fixed = limit_from_settings(Settings(LOCAL_MAX_CONCURRENCY=7, ADAPTIVE_CONCURRENCY=False))
    assert isinstance(fixed, FixedLimit)
