"""get_dispatcher keeps one dispatcher per settings object, and only the last few."""

from __future__ import annotations

from core import dispatch
from core.config import Settings


def _settings() -> Settings:
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_same_settings_same_dispatcher_and_the_cache_stays_bounded() -> None:
    first = _settings()
    kept = dispatch.get_dispatcher(first)
    assert dispatch.get_dispatcher(first) is kept
    others = [_settings() for _ in range(dispatch.MAX_CACHED_DISPATCHERS * 3)]
    for other in others:
        assert dispatch.get_dispatcher(other) is not kept
    assert len(dispatch._dispatchers) == dispatch.MAX_CACHED_DISPATCHERS
    # The first settings were evicted: asking again makes a new dispatcher, not a stale one.
    assert dispatch.get_dispatcher(first) is not kept

