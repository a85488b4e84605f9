"""The delivery hot path's statements on a psycopg async pool, not SQLAlchemy.

Claim, renew, complete, fail, release, the takeover and the dispatcher's claim and defer
run here: each step is one autocommit statement, one round trip, on a connection from a
``psycopg_pool.AsyncConnectionPool``. SQLAlchemy's async layer cost about 2 ms of CPU per
checkout-and-statement on a 2-core machine (a greenlet hop, a pre-ping round trip and
the compiled-statement machinery) against about 0.15 ms here; everything else (admin
API, dashboard, sweeper) stays on SQLAlchemy.

The SQL text stays in core/*.sql under its name: ``:name`` binds become psycopg's
``%(name)s`` once per query. Statements are prepared on each server connection (the
pgbench ceiling uses the same), except through a transaction pooler (core.db.pooler_mode),
where the next transaction may run on another server connection that never saw the
PREPARE.

A connection that sat idle for a while is pinged before use, so a restarted PostgreSQL
costs one ping, not a failed delivery; under load (reused within a second) no ping is
sent. Errors come out as SQLAlchemy's DBAPIError family (OperationalError for a
database that is down or a pool that timed out), so callers and the worker's error
handlers treat both layers alike.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import weakref
from collections.abc import Sequence
from functools import cache
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import await_only

from core.config import get_settings
from core.db.group_commit import Coalescer
from core.db.queries import sql

# The same rule as SQLAlchemy's text(): ':name', not '::type' casts.
_BIND = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")
# A connection idle longer than this is pinged before it is handed out.
PING_AFTER_IDLE_S = 1.0
# How long a statement waits for a pooled connection: as SQLAlchemy's pool did, unless the
# pool's last attempt to connect failed (the database is down), when a delivery is
# answered 503 at once instead of waiting for a connection that is not coming.
WAIT_FOR_CONNECTION_S = 30.0
WAIT_WHILE_DOWN_S = 0.5
# SQLSTATE classes of a statement the server refused and rolled back (data, integrity,
# deadlock or serialization, syntax or access, a limit): a group statement refused with one
# of them is run again row by row (core.db.group_commit).
_REFUSED_CLASSES = ("22", "23", "40", "42", "54")
Row = dict[str, Any]
log = logging.getLogger(__name__)
_last_used: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], float] = (
    weakref.WeakKeyDictionary())


@cache
def psycopg_sql(name: str) -> bytes:
    """Query ``name`` with psycopg placeholders (pure once loaded)."""
    converted = _BIND.sub(r"%(\1)s", sql(name).replace("%", "%%"))
    return converted.replace("\\:", ":").encode("utf-8")  # text()'s escaped colon


def libpq_url(engine: AsyncEngine) -> str:
    """The engine's database as a libpq URI (same host, port, user, database, options)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class HotPool:
    """Named statements on one psycopg async pool (one event loop)."""

    def __init__(self, conninfo: str, *, prepare: bool, max_size: int) -> None:
        self.prepare = prepare
        self.down = False  # the pool's last connection attempt failed
        self._groups: dict[tuple[str, tuple[tuple[str, Any], ...]],
                           Coalescer[dict[str, Any], Row | None]] = {}
        kwargs: dict[str, Any] = {"autocommit": True, "row_factory": dict_row}
        if not prepare:
            kwargs["prepare_threshold"] = None
        self.pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            # min_size 0: connections are opened when a statement needs one, and none is
            # being opened in the background when a loop ends (a connection attempt that
            # is cancelled retries, and would keep asyncio.run from finishing).
            conninfo, kwargs=kwargs, min_size=0, max_size=max_size,
            check=_check_if_idle, reset=_note_return, open=False, name="hot-path",
            timeout=WAIT_FOR_CONNECTION_S, connection_class=self._connection_class())

    def _connection_class(self) -> type[psycopg.AsyncConnection[Any]]:
        hot = self

        class Connection(psycopg.AsyncConnection[Any]):
            """Records whether the pool can reach the database (see WAIT_WHILE_DOWN_S)."""

            @classmethod
            async def connect(cls, *args: Any, **kwargs: Any) -> Any:
                try:
                    conn = await super().connect(*args, **kwargs)
                except psycopg.OperationalError:
                    hot.down = True
                    raise
                hot.down = False
                return conn

        return Connection

    def _wait_s(self) -> float:
        return WAIT_WHILE_DOWN_S if self.down else WAIT_FOR_CONNECTION_S

    async def open(self) -> None:
        await self.pool.open(wait=False)

    async def close(self) -> None:
        for group in list(self._groups.values()):
            await group.close()
        if self._groups:
            log.info("hot pool closed", extra={
                "action": "hot_pool_close",
                "group_statements": {n: {"statements": b, "rows": r}
                                     for n, (b, r) in self.group_stats().items()}})
        await self.pool.close()

    async def one(self, name: str, binds: dict[str, Any]) -> Row | None:
        rows = await self.all(name, binds)
        return rows[0] if rows else None

    async def all(self, name: str, binds: dict[str, Any]) -> list[Row]:
        query = psycopg_sql(name)
        try:
            async with self.pool.connection(self._wait_s()) as conn:
                cur = await conn.execute(query, binds, prepare=self.prepare or None)
                return await cur.fetchall() if cur.description else []
        except psycopg.Error as exc:
            raise _translated(name, exc) from exc

    async def count(self, name: str, binds: dict[str, Any]) -> int:
        """Rows the statement changed (an UPDATE without RETURNING)."""
        query = psycopg_sql(name)
        try:
            async with self.pool.connection(self._wait_s()) as conn:
                cur = await conn.execute(query, binds, prepare=self.prepare or None)
                return max(cur.rowcount, 0)
        except psycopg.Error as exc:
            raise _translated(name, exc) from exc

    async def grouped(self, name: str, shared: dict[str, Any], row: dict[str, Any],
                      ) -> Row | None:
        """One row of a group statement (core.db.group_commit): ``row``'s values go into the
        statement's arrays beside the rows of other callers that arrive meanwhile with the
        same ``shared`` binds. Returns the result row whose ``task_id`` or ``id`` is this
        row's ``task_id`` (None: the statement did not touch it)."""
        key = (name, tuple(sorted(shared.items())))
        group = self._groups.get(key)
        if group is None:
            group = Coalescer(lambda rows: self._run_group(name, shared, rows),
                              retry_alone=_refused)
            self._groups[key] = group
        try:
            return await group.submit(row, row["task_id"])
        except psycopg.Error as exc:
            raise _translated(name, exc) from exc

    async def _run_group(self, name: str, shared: dict[str, Any],
                         rows: list[dict[str, Any]]) -> list[Row | None]:
        # Sorted by task id: statements that share rows lock them in the same order.
        ordered = sorted(rows, key=lambda r: r["task_id"])
        binds = {**shared, **{column: [r[column] for r in ordered] for column in rows[0]}}
        async with self.pool.connection(self._wait_s()) as conn:
            cur = await conn.execute(psycopg_sql(name), binds, prepare=self.prepare or None)
            found = await cur.fetchall() if cur.description else []
        by_task = {r.get("task_id", r.get("id")): r for r in found}
        return [by_task.get(r["task_id"]) for r in rows]

    def group_stats(self) -> dict[str, tuple[int, int]]:
        """Statements and rows per group statement so far (name: (statements, rows))."""
        stats: dict[str, tuple[int, int]] = {}
        for (name, _), group in self._groups.items():
            statements, rows = stats.get(name, (0, 0))
            stats[name] = (statements + group.batches, rows + group.rows)
        return stats

    async def pipeline(self, steps: Sequence[tuple[str, dict[str, Any]]]) -> list[list[Row]]:
        """Independent statements sent together on one connection, in order: one round
        trip for all. Each is still its own autocommit statement."""
        names = ",".join(n for n, _ in steps)
        try:
            async with self.pool.connection(self._wait_s()) as conn:
                async with conn.pipeline():
                    cursors = [await conn.execute(psycopg_sql(n), b,
                                                  prepare=self.prepare or None)
                               for n, b in steps]
                # Out of the pipeline block every result has arrived (a cursor's
                # description is unknown until then).
                return [await cur.fetchall() if cur.description else [] for cur in cursors]
        except psycopg.Error as exc:
            raise _translated(names, exc) from exc


def _refused(exc: BaseException) -> bool:
    """Whether nothing of a failed statement was written, so its rows may run again
    alone: the server refused it (SQLSTATE), or psycopg refused a value before sending.
    A broken connection's outcome is unknown: not retried."""
    if not isinstance(exc, psycopg.Error):
        return False
    if exc.sqlstate is not None:
        return exc.sqlstate[:2] in _REFUSED_CLASSES
    return isinstance(exc, psycopg.DataError | psycopg.ProgrammingError)


async def _check_if_idle(conn: psycopg.AsyncConnection[Any]) -> None:
    """Ping a connection that sat idle (the server may have restarted meanwhile); the pool
    discards it and hands out another if the ping fails."""
    last = _last_used.get(conn)
    if last is None or time.monotonic() - last > PING_AFTER_IDLE_S:
        await conn.execute(b"")


async def _note_return(conn: psycopg.AsyncConnection[Any]) -> None:
    _last_used[conn] = time.monotonic()


def _translated(name: str, exc: psycopg.Error) -> DBAPIError:
    """psycopg's error as SQLAlchemy's class for it (OperationalError, IntegrityError...);
    parameters hidden: they carry prompts."""
    translated = DBAPIError.instance(
        f"-- name: {name}", None, exc, psycopg.Error, hide_parameters=True,
        connection_invalidated=isinstance(exc, psycopg.OperationalError))
    assert isinstance(translated, DBAPIError)  # always, for a psycopg.Error
    return translated


# One pool per (engine, event loop): a pool's locks and workers belong to the loop that
# opened it (tests run each case on a fresh loop). The engine is kept with its pool so
# its id is not reused while the entry lives.
_pools: dict[tuple[int, int],
             tuple[HotPool, AsyncEngine, weakref.ref[asyncio.AbstractEventLoop]]] = {}


async def get(engine: AsyncEngine) -> HotPool:
    """The hot pool for ``engine``'s database on the running loop, opened on first use."""
    loop = asyncio.get_running_loop()
    key = (id(engine), id(loop))
    found = _pools.get(key)
    if found is not None and found[1] is engine and found[2]() is loop:
        return found[0]
    _forget_closed_loops()
    from core import db

    settings = get_settings()
    mode, _ = db.pooler_mode(settings.DB_POOLER, engine.url.render_as_string())
    hot = HotPool(libpq_url(engine), prepare=mode != "transaction",
                  max_size=max(settings.DB_POOL_SIZE, 2))
    _pools[key] = (hot, engine, weakref.ref(loop))
    if not event.contains(engine.sync_engine, "engine_disposed", _disposed):
        event.listen(engine.sync_engine, "engine_disposed", _disposed)
    # Does not wait for the first connections: a statement waits for one instead.
    await hot.open()
    return hot


def _disposed(sync_engine: Engine) -> None:
    """``await engine.dispose()`` closes the engine's hot pool on the running loop too.
    AsyncEngine.dispose runs the sync dispose in a greenlet, so the close can be awaited
    here; a sync dispose elsewhere (no greenlet) leaves the pool to close() or its loop."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    for key, (hot, engine, loop_ref) in list(_pools.items()):
        if engine.sync_engine is sync_engine and loop_ref() is loop:
            del _pools[key]
            try:
                await_only(hot.close())
            except Exception:  # not in a greenlet, or the close failed: nothing to keep
                log.debug("hot pool not closed with its engine", exc_info=True)


async def warm(engine: AsyncEngine) -> None:
    """Keep the pool's connections open from now on (the worker's start): the first wave
    of deliveries would otherwise open them one after another (the pool grows one at a
    time), a few ms each, while every delivery of the wave waits."""
    hot = await get(engine)
    await hot.pool.resize(min_size=hot.pool.max_size)


async def close(engine: AsyncEngine) -> None:
    """Close this engine's hot pool on the running loop (the worker's shutdown)."""
    loop = asyncio.get_running_loop()
    found = _pools.pop((id(engine), id(loop)), None)
    if found is not None:
        await found[0].close()


def _forget_closed_loops() -> None:
    for key, (_, _, loop_ref) in list(_pools.items()):
        loop = loop_ref()
        if loop is None or loop.is_closed():
            del _pools[key]
