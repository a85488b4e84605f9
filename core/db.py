"""Engines and schema. One sync engine (admin API, dashboard) and one async engine (the
task endpoint's hot path), both psycopg 3, both with pre-ping so a restarted PostgreSQL
costs one failed checkout, not a dead pool."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from core import embedded_pg
from core.config import Settings, get_settings
from core.errors import DatabaseUnavailable

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "sql" / "init_db.sql"
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


@lru_cache(maxsize=4)
def get_engine(url: str | None = None) -> Engine:
    settings = get_settings()
    engine = create_engine(
        url or resolve_database_url(settings),
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
    return create_async_engine(
        url or resolve_database_url(settings),
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


def apply_schema(engine: Engine | None = None) -> None:
    """Run sql/init_db.sql (idempotent) in one transaction."""
    engine = engine or get_engine()
    ddl = SCHEMA_FILE.read_text(encoding="utf-8")
    with engine.begin() as conn:
        # exec_driver_sql: the file is plain SQL with no bind parameters.
        conn.exec_driver_sql(ddl)


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
