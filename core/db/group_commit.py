"""Group commit: concurrent callers' rows of one hot statement sent as ONE statement.

With many deliveries in flight on one event loop, claims and completions arrive a few at
a time. Each as its own statement costs a round trip, a pool checkout, psycopg's execute
machinery and, on the server, a statement and a commit (a WAL flush). A ``Coalescer``
collects the rows that arrive while the previous batch is on its way (or within the same
turn of the event loop, when none is) and runs them as one statement over arrays; each
caller awaits its own row's result. Nothing waits for a timer: an idle queue sends one
row at once, a busy one sends larger batches, as PostgreSQL's own group commit does.

The contract per caller is the single statement's: its result arrives after the batch
statement (autocommit) has committed. If the server refused the batch (a bad value in one
row, a deadlock), nothing of it was written, and each row is run again alone, so every
caller gets its own answer or its own error. If the connection broke mid-statement the
outcome is unknown, so every caller gets that error, as each would have alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
log = logging.getLogger(__name__)

# Rows per statement at most: one statement's locks and its result stay small.
MAX_BATCH = 64


@dataclass
class _Waiting(Generic[Item, Result]):
    item: Item
    key: Hashable
    future: asyncio.Future[Result]


def take_batch(waiting: list[_Waiting[Item, Result]], max_batch: int,
               ) -> tuple[list[_Waiting[Item, Result]], list[_Waiting[Item, Result]]]:
    """The next batch (in arrival order, at most one row per key, e.g. per task id) and
    what stays waiting (pure). A second row for the same key waits for the next batch,
    so two deliveries of one task meet each other in order, as two statements would."""
    batch: list[_Waiting[Item, Result]] = []
    rest: list[_Waiting[Item, Result]] = []
    keys: set[Hashable] = set()
    for entry in waiting:
        if len(batch) < max_batch and entry.key not in keys:
            keys.add(entry.key)
            batch.append(entry)
        else:
            rest.append(entry)
    return batch, rest


class Coalescer(Generic[Item, Result]):
    """Runs ``run_batch(items)`` (one statement; results in the items' order) for the
    items callers ``submit``, one batch in flight at a time.

    ``retry_alone(exc)`` says whether a failed batch may be run again row by row (the
    server refused it, so nothing of it was written)."""

    def __init__(self, run_batch: Callable[[list[Item]], Awaitable[list[Result]]], *,
                 retry_alone: Callable[[BaseException], bool],
                 max_batch: int = MAX_BATCH) -> None:
        self._run_batch = run_batch
        self._retry_alone = retry_alone
        self.max_batch = max_batch
        self._waiting: list[_Waiting[Item, Result]] = []
        self._busy = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0  # statements sent (for the benchmark's figures)
        self.rows = 0

    async def submit(self, item: Item, key: Hashable) -> Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._waiting.append(_Waiting(item, key, future))
        if not self._busy:
            # Started on the next turn of the loop: callers woken in this turn join it.
            self._busy = True
            loop.call_soon(self._start)
        # A cancelled caller leaves its row in the batch (it may already be written);
        # its result is dropped, as a cancelled single statement's would be.
        return await future

    def _start(self) -> None:
        self._waiting = [w for w in self._waiting if not w.future.done()]
        batch, self._waiting = take_batch(self._waiting, self.max_batch)
        if not batch:
            self._busy = False
            return
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[_Waiting[Item, Result]]) -> None:
        try:
            await self._settle(batch)
        finally:
            # The next batch is whatever arrived meanwhile; none: idle until a submit.
            self._start()

    async def _settle(self, batch: list[_Waiting[Item, Result]]) -> None:
        self.batches += 1
        self.rows += len(batch)
        try:
            results = await self._run_batch([w.item for w in batch])
        except Exception as exc:
            if len(batch) > 1 and self._retry_alone(exc):
                log.info("group statement refused (%s): its %d rows run alone",
                         type(exc).__name__, len(batch),
                         extra={"action": "group_commit_split", "rows": len(batch)})
                await asyncio.gather(*(self._settle([w]) for w in batch))
                return
            for w in batch:
                _set(w.future, exc=exc)
            return
        except BaseException:  # cancelled (the loop ends): callers must not hang
            for w in batch:
                w.future.cancel()
            raise
        for w, result in zip(batch, results, strict=True):
            _set(w.future, result=result)

    async def close(self) -> None:
        """Wait for the batches on their way (the pool closes after them)."""
        while self._tasks:
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._tasks)


def _set(future: asyncio.Future[Result], *, result: Result | None = None,
         exc: BaseException | None = None) -> None:
    if future.done():  # its caller was cancelled
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)  # type: ignore[arg-type]
