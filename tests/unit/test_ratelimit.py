"""The provider pacer (core.providers.ratelimit): pure decisions from rate-limit headers."""

from __future__ import annotations

import pytest

from core.providers.ratelimit import ProviderPacer, parse_reset, retry_after_s


@pytest.mark.parametrize(("value", "seconds"), [
    ("1s", 1.0),
    ("6m0s", 360.0),
    ("20ms", 0.02),
    ("0.5s", 0.5),
    ("1h2m3s", 3723.0),
    ("2.5", 2.5),  # plain seconds
    ("", None),
    ("soon", None),
    ("5x", None),
])
def test_parse_reset(value: str, seconds: float | None) -> None:
    result = parse_reset(value)
    assert result == (pytest.approx(seconds) if seconds is not None else None)


def test_retry_after_prefers_milliseconds() -> None:
    assert retry_after_s({"retry-after": "3", "retry-after-ms": "1500"}) == 1.5
    assert retry_after_s({"retry-after": "3"}) == 3.0
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None


def test_no_headers_no_wait() -> None:
    pacer = ProviderPacer(clock=lambda: 0.0)
    assert [pacer.reserve(5.0, now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]


def test_429_blocks_every_call_until_retry_after() -> None:
    pacer = ProviderPacer(clock=lambda: 10.0)
    pacer.observe(status=429, headers={"Retry-After": "2"}, now=10.0)
    assert pacer.reserve(5.0, now=10.5) == pytest.approx(1.5)
    assert pacer.reserve(5.0, now=12.5) == 0.0


def test_429_without_header_blocks_a_default_second() -> None:
    pacer = ProviderPacer()
    pacer.observe(status=429, headers={}, now=0.0)
    assert pacer.reserve(5.0, now=0.0) == pytest.approx(1.0)


def test_longer_than_the_caller_waits_reserves_nothing() -> None:
    pacer = ProviderPacer()
    pacer.observe(status=429, headers={"retry-after": "30"}, now=0.0)
    assert pacer.reserve(5.0, now=0.0) is None
    assert pacer.reserve(40.0, now=0.0) == pytest.approx(30.0)


def test_low_remaining_paces_at_the_providers_rate() -> None:
    pacer = ProviderPacer()
    pacer.observe(status=200, now=0.0, headers={
        "x-ratelimit-limit-images": "600", "x-ratelimit-remaining-images": "3",
        "x-ratelimit-reset-images": "0s"})
    # 600 images/min: one start slot every 0.1 s, handed out in order.
    delays = [pacer.reserve(5.0, now=0.0) for _ in range(4)]
    assert delays == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_plenty_remaining_does_not_pace() -> None:
    pacer = ProviderPacer()
    pacer.observe(status=200, now=0.0, headers={
        "x-ratelimit-limit-images": "600", "x-ratelimit-remaining-images": "500"})
    assert [pacer.reserve(5.0, now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]


def test_after_a_429_waiters_leave_one_by_one() -> None:
    pacer = ProviderPacer()
    pacer.observe(status=429, now=0.0, headers={
        "retry-after-ms": "500", "x-ratelimit-limit-images": "120",
        "x-ratelimit-remaining-images": "0"})
    delays = [pacer.reserve(5.0, now=0.0) for _ in range(3)]
    assert delays == pytest.approx([0.5, 1.0, 1.5])


def test_zero_remaining_with_reset_blocks() -> None:
    pacer = ProviderPacer()
    pacer.observe(status=200, now=0.0, headers={
        "x-ratelimit-limit-requests": "50", "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "2s"})
    assert pacer.reserve(5.0, now=0.0) == pytest.approx(2.0)


def test_the_tighter_family_decides() -> None:
    pacer = ProviderPacer()
    pacer.observe(status=200, now=0.0, headers={
        "x-ratelimit-limit-requests": "5000", "x-ratelimit-remaining-requests": "4999",
        "x-ratelimit-limit-images": "60", "x-ratelimit-remaining-images": "1"})
    assert pacer.limit_per_min == 60
    assert pacer.reserve(5.0, now=0.0) == 0.0
    assert pacer.reserve(5.0, now=0.0) == pytest.approx(1.0)
