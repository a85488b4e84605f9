"""An embedded PostgreSQL for the demo and the tests, used when DATABASE_URL is unset.

pgserver ships the server binaries in its wheel and runs as root; the data folder lives in
the checkout (``.pgdata/``) and is reused on the next run. The server listens on a unix
socket only, so nothing outside this machine can reach it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from core.errors import ConfigError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PGDATA = REPO_ROOT / ".pgdata"
_server: object | None = None


def start(pgdata: Path = DEFAULT_PGDATA) -> str:
    """Start (or reuse) the embedded server and return a SQLAlchemy URL for it."""
    global _server
    try:
        import pgserver  # type: ignore[import-untyped]
    except ImportError:
        # pgserver is the `embedded` extra: the slim images do not carry it.
        raise ConfigError(
            "DATABASE_URL is unset and the embedded PostgreSQL (pgserver) is not installed: "
            "set DATABASE_URL=postgresql://user:password@host:5432/dbname, or "
            "pip install '.[embedded]'") from None
    pgdata.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives this process so a demo restart or the next
    # test session reuses it; `stop()` or `make stop` shuts it down cleanly.
    _server = pgserver.get_server(str(pgdata), cleanup_mode=None)
    uri: str = _server.get_uri()  # type: ignore[attr-defined]
    log.info("embedded postgres ready", extra={"action": "embedded_pg_start"})
    return to_sqlalchemy_url(uri)


def stop(pgdata: Path = DEFAULT_PGDATA) -> None:
    """Stop the embedded server cleanly (fast shutdown), if it runs."""
    if not (pgdata / "postmaster.pid").exists():
        return
    import pgserver  # type: ignore[import-untyped]

    server = pgserver.get_server(str(pgdata), cleanup_mode="stop")
    server.cleanup()


def to_sqlalchemy_url(uri: str) -> str:
    """``postgresql://`` as libpq spells it, with the psycopg 3 driver named for SQLAlchemy."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if uri.startswith(prefix):
            return "postgresql+psycopg://" + uri[len(prefix) :]
    return uri
