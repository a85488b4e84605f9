"""Waiting that a stop cuts short: the background loops' one way to pause between rounds."""

from __future__ import annotations

import asyncio
import contextlib


async def stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds``, or less if ``stop`` is set meanwhile; True when stopped."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()
