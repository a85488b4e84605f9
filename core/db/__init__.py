"""Engines and schema. One sync engine (admin API, dashboard) and one async engine (the
task endpoint's hot path), both psycopg 3, both with pre-ping so a restarted PostgreSQL
costs one failed checkout, not a dead pool. The schema's creation and upgrade:
core/db/migrate.py."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from core.config import Settings, get_settings
from core.db import embedded_pg
from core.db.migrate import Upgrade, migrate_schema
from core.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

# Supabase's transaction pooler (pgbouncer in transaction mode) listens on 6543.
TRANSACTION_POOLER_PORT = 6543

_sync_engines: list[Engine] = []


def resolve_database_url(settings: Settings | None = None) -> str:
    """DATABASE_URL when set; otherwise the embedded server (never in production)."""
    settings = settings or get_settings()
    if settings.DATABASE_URL is not None and settings.DATABASE_URL.get_secret_value():
        return embedded_pg.to_sqlalchemy_url(settings.DATABASE_URL.get_secret_value())
    if settings.ENVIRONMENT == "production":
        raise DatabaseUnavailable("DATABASE_URL is required in production")
    return _embedded_url()


@lru_cache(maxsize=1)
def _embedded_url() -> str:
    return embedded_pg.start()


def pooler_mode(setting: str, url: str) -> tuple[str, str]:
    """(mode, why) for DB_POOLER and a database URL (pure): transaction | session | direct."""
    if setting != "auto":
        return setting, f"DB_POOLER={setting}"
    from sqlalchemy.engine import make_url

    port = make_url(url).port
    if port == TRANSACTION_POOLER_PORT:
        return "transaction", f"port {TRANSACTION_POOLER_PORT} (Supabase's transaction pooler)"
    return "direct", "DB_POOLER=auto, not port 6543 (direct connection or session pooler)"


def connect_args(mode: str) -> dict[str, Any]:
    """psycopg connection options for a pooler mode (pure). In transaction mode each
    transaction may run on another server connection, so a statement psycopg prepared on
    one is missing on the next (InvalidSqlStatementName) or already there
    (DuplicatePreparedStatement): prepare_threshold=None turns preparing off."""
    return {"prepare_threshold": None} if mode == "transaction" else {}


_announced: set[str] = set()


def _connect_args_for(url: str) -> dict[str, Any]:
    mode, why = pooler_mode(get_settings().DB_POOLER, url)
    if mode not in _announced:
        _announced.add(mode)
        log.info("database connection mode: %s (%s)%s", mode, why,
                 "; prepared statements off" if mode == "transaction" else "",
                 extra={"action": "db_mode", "mode": mode})
    return connect_args(mode)


@lru_cache(maxsize=4)
def get_engine(url: str | None = None) -> Engine:
    settings = get_settings()
    url = url or resolve_database_url(settings)
    engine = create_engine(
        url,
        connect_args=_connect_args_for(url),
        pool_pre_ping=True,
        pool_size=settings.DB_POOL_SIZE,
        max_overflow=settings.DB_POOL_SIZE,
        pool_recycle=1800,
    )
    _sync_engines.append(engine)
    return engine


@lru_cache(maxsize=4)
def get_async_engine(url: str | None = None) -> AsyncEngine:
    settings = get_settings()
    url = url or resolve_database_url(settings)
    return create_async_engine(
        url,
        connect_args=_connect_args_for(url),
        pool_pre_ping=True,
        pool_size=settings.DB_POOL_SIZE,
        max_overflow=settings.DB_POOL_SIZE * 2,
        pool_recycle=1800,
    )


def reset_engines() -> None:
    """Dispose and forget cached engines (tests, or after settings change)."""
    for cached in (get_engine, get_async_engine):
        cached.cache_clear()
    for engine in list(_sync_engines):
        engine.dispose()
    _sync_engines.clear()
    _embedded_url.cache_clear()


def apply_schema(engine: Engine | None = None) -> Upgrade:
    """Create or upgrade the schema to this code's version (core.db.migrate.migrate_schema:
    sql/init_db.sql for a new database, then sql/migrations/; nothing when current)."""
    return migrate_schema(engine or get_engine())


@contextmanager
def transaction(engine: Engine | None = None) -> Iterator[Connection]:
    """A connection in a transaction; an unreachable database becomes DatabaseUnavailable."""
    engine = engine or get_engine()
    try:
        with engine.begin() as conn:
            yield conn
    except OperationalError as exc:
        raise DatabaseUnavailable() from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise DatabaseUnavailable() from exc
        raise
