"""How many deliveries may be in flight: a fixed limit, or one that adapts."""

from __future__ import annotations

from typing import Protocol


class ConcurrencyLimit(Protocol):
    @property
    def current(self) -> int: ...

    @property
    def ceiling(self) -> int: ...

    def on_result(self, *, ok: bool, overloaded: bool) -> None: ...


class FixedLimit:
    def __init__(self, limit: int) -> None:
        self._limit = limit

    @property
    def current(self) -> int:
        return self._limit

    @property
    def ceiling(self) -> int:
        return self._limit

    def on_result(self, *, ok: bool, overloaded: bool) -> None:
        return None
