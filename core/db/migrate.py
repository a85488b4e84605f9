"""The schema's version and its upgrade.

A new database is made by sql/init_db.sql (the complete current schema); an existing one
is upgraded by the numbered files of sql/migrations/ (``NNNN_name.sql``) above the
highest version recorded in schema_migrations, each in its own transaction with its
version recorded in that transaction. Versions 1 to 9 predate the files: databases were
made and upgraded by re-running the whole of sql/init_db.sql, which its version 9 left
behind (frozen in tests/migrations/baseline_v9.sql).

Every step runs under a transaction-level advisory lock, so runners started together
(two workers booting against one database) take turns: the second finds the schema the
first left and runs nothing. A transaction-level lock, not a session one, because a
transaction pooler (pgbouncer, Supabase's port 6543) may hand the next statement of a
session to another server connection. Against a current schema the runner executes the
lock and two SELECTs, no DDL.

Who runs it: ``aiwebimage init-db`` and every non-production start (worker, demo, tests).
A production start runs no schema change: it refuses, naming the command, a database
whose schema is older than the code (``require_current``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError

from core.errors import ConfigError

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
SCHEMA_FILE = SQL_DIR / "init_db.sql"
MIGRATIONS_DIR = SQL_DIR / "migrations"
# The last version of the re-run-it-all sql/init_db.sql: migration files start above it.
BASELINE_VERSION = 9
# pg_advisory_xact_lock key of schema changes: "AIWISCHM" in ASCII.
LOCK_KEY = 0x4149574953434D48
COMMAND = "`aiwebimage init-db` (python -m cli init-db)"
_FILE_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")


@dataclass(frozen=True)
class Migration:
    version: int
    path: Path

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class Upgrade:
    """What a run found and did: ``before`` None = the database had no schema."""

    before: int | None
    after: int
    applied: tuple[str, ...]  # sql/init_db.sql or migration file names, in order

    def describe(self) -> str:
        if not self.applied:
            return f"version {self.after}, already current"
        return f"version {self.after} ({', '.join(self.applied)})"


@cache
def migrations() -> tuple[Migration, ...]:
    """The migration files in version order (a misnamed or duplicate file: ValueError)."""
    found: dict[int, Migration] = {}
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        match = _FILE_NAME.fullmatch(path.name)
        if match is None:
            raise ValueError(f"{path}: a migration is named NNNN_name.sql (lower case)")
        version = int(match.group(1))
        if version <= BASELINE_VERSION or version in found:
            raise ValueError(f"{path}: version {version} is taken or not above "
                             f"{BASELINE_VERSION}")
        found[version] = Migration(version, path)
    return tuple(found[v] for v in sorted(found))


def latest_version() -> int:
    """The schema version this code needs (and sql/init_db.sql records)."""
    return max((m.version for m in migrations()), default=BASELINE_VERSION)


def schema_version(conn: Connection) -> int | None:
    """The highest version recorded; None for a database without the schema."""
    row = conn.execute(text(
        "SELECT to_regclass('schema_migrations') IS NOT NULL AS versioned, "
        "to_regclass('generation_jobs') IS NOT NULL AS has_jobs")).one()
    version = (conn.execute(text("SELECT max(version) FROM schema_migrations")).scalar()
               if row.versioned else None)
    if version is None and row.has_jobs:
        raise ConfigError("DATABASE_URL: the database has a generation_jobs table but no "
                          "recorded schema version (schema_migrations): it was not made "
                          "by sql/init_db.sql, so it cannot be upgraded")
    return version


def require_current(engine: Engine) -> int:
    """The database's schema version; ConfigError naming the command to run if the
    database has no schema or an older one than this code."""
    try:
        with engine.connect() as conn:
            version = schema_version(conn)
    except OperationalError as exc:
        raise ConfigError(f"DATABASE_URL: could not read the schema version "
                          f"({type(exc.orig).__name__})") from None
    latest = latest_version()
    if version is None:
        raise ConfigError(f"DATABASE_URL: the database has no schema; create it with "
                          f"{COMMAND}")
    if version < latest:
        raise ConfigError(f"DATABASE_URL: the database schema is at version {version} and "
                          f"this code needs version {latest}; upgrade it with {COMMAND}")
    return version


def migrate_schema(engine: Engine) -> Upgrade:
    """Bring the database's schema to this code's version (see the module docstring)."""
    applied: list[str] = []
    found: list[int | None] = []
    # READ COMMITTED: each statement after the lock sees what the previous holder
    # committed (a snapshot taken before the lock was granted would not).
    with engine.connect().execution_options(isolation_level="READ COMMITTED") as conn:
        while True:  # each step records a version, or raises
            with conn.begin():
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
                found.append(schema_version(conn))
                name = _apply_next(conn, found[-1])
            if name is None:
                break
            applied.append(name)
    before, after = found[0], found[-1]
    assert after is not None  # the last step found a schema and had nothing to do
    if applied:
        log.info("schema upgraded to version %d: %s", after, ", ".join(applied),
                 extra={"action": "schema_upgrade", "before": before, "applied": applied})
    elif after > latest_version():
        log.warning("the database schema (version %d) is newer than this code (version %d)",
                    after, latest_version(), extra={"action": "schema_newer"})
    return Upgrade(before=before, after=after, applied=tuple(applied))


def _apply_next(conn: Connection, version: int | None) -> str | None:
    """Run the step after ``version`` in the caller's transaction; its name, or None when
    the schema is current."""
    if version is None:
        _run_file(conn, SCHEMA_FILE)
        made = schema_version(conn)
        if made != latest_version():
            raise RuntimeError(f"sql/init_db.sql records version {made} but sql/migrations/ "
                               f"reaches {latest_version()}: add the newer migrations' "
                               f"changes and version to sql/init_db.sql")
        return "sql/init_db.sql"
    if version < BASELINE_VERSION:
        raise ConfigError(f"DATABASE_URL: the database schema is at version {version}, older "
                          f"than the oldest this release upgrades ({BASELINE_VERSION}); "
                          f"upgrade it with the previous release's {COMMAND} first")
    pending = [m for m in migrations() if m.version > version]
    if not pending:
        return None
    migration = pending[0]
    _run_file(conn, migration.path)
    conn.execute(text("INSERT INTO schema_migrations (version) VALUES (:version)"),
                 {"version": migration.version})
    return migration.name


def _run_file(conn: Connection, path: Path) -> None:
    """A file of several SQL statements, in the caller's transaction. On the driver's own
    cursor with no parameters, so a '%' in the file (a RAISE message) is not a placeholder."""
    cursor = conn.connection.cursor()
    try:
        cursor.execute(path.read_text(encoding="utf-8"))
    finally:
        cursor.close()
