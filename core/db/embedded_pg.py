"""An embedded PostgreSQL for the demo and the tests, used when DATABASE_URL is unset.

pgserver ships the server binaries in its wheel; as root it runs them as its own
``pgserver`` user. The data folder lives in the checkout (``.pgdata/``) and is reused on
the next run. The server listens on a unix socket only, so nothing outside this machine
can reach it. It outlives the processes that use it (a demo restart or the next test
session finds it running); ``stop()`` (``make stop``) shuts it down whoever started it.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import subprocess
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

from core.errors import ConfigError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PGDATA = REPO_ROOT / ".pgdata"
# pgserver's list of the processes holding a handle on the server in a data folder: it
# stops the server only when the last one lets go, and a killed process never does.
HANDLES_FILE = ".handle_pids.json"
_server: object | None = None
# Data folders whose server this process started (not found already running).
_started_here: set[Path] = set()


def _pgserver() -> ModuleType:
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI, cron) and
            # falls back to /tmp/runtime-<uid>, where pgserver keeps only its lock file:
            # nothing a user can act on, so every command would print it for nothing.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            import pgserver  # type: ignore[import-untyped]
    except ImportError:
        # pgserver is the `embedded` extra: the slim images do not carry it.
        raise ConfigError(
            "DATABASE_URL is unset and the embedded PostgreSQL (pgserver) is not installed: "
            "set DATABASE_URL=postgresql://user:password@host:5432/dbname, or "
            "pip install '.[embedded]'") from None
    return pgserver


def _alive(pid: int) -> Any:
    """The process ``pid`` as psutil sees it, or None when it is gone (or a zombie: a
    killed child its parent has not reaped yet holds nothing any more)."""
    import psutil  # pgserver's dependency, present whenever pgserver is

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process
    except psutil.Error:
        return None


def postmaster(pgdata: Path = DEFAULT_PGDATA) -> Any:
    """The running server of ``pgdata`` (a psutil.Process), or None."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    process = _alive(pid)
    if process is None or process.name() != "postgres":  # a stale file, the pid reused
        return None
    return process


def _owner(path: Path) -> str:
    import pwd

    return pwd.getpwuid(path.stat().st_uid).pw_name


def start(pgdata: Path = DEFAULT_PGDATA) -> str:
    """Start (or reuse) the embedded server and return a SQLAlchemy URL for it."""
    global _server
    pgserver = _pgserver()
    pgdata.mkdir(parents=True, exist_ok=True)
    before = postmaster(pgdata)
    # cleanup_mode=None: the server outlives this process so a demo restart or the next
    # test session reuses it; `stop()` or `make stop` shuts it down cleanly.
    server = _server = pgserver.get_server(str(pgdata), cleanup_mode=None)
    if before is None or before.pid != server.get_pid():
        _started_here.add(pgdata.resolve())
    uri: str = server.get_uri()
    log.info("embedded postgres ready", extra={"action": "embedded_pg_start"})
    return to_sqlalchemy_url(uri)


def users(pgdata: Path = DEFAULT_PGDATA) -> list[int]:
    """The live processes other than this one that hold a handle on the server (pgserver's
    list, without the pids of processes that were killed)."""
    try:
        pids = json.loads((pgdata / HANDLES_FILE).read_text())
    except (OSError, ValueError):
        return []
    return [pid for pid in pids if pid != os.getpid() and _alive(pid) is not None]


def stop(pgdata: Path = DEFAULT_PGDATA, timeout_s: int = 60) -> bool:
    """Stop the server in ``pgdata`` (fast shutdown: sessions are ended, nothing is lost),
    whoever started it and whoever still holds a handle on it. Returns once the server has
    exited; True when one was running. pgserver's own cleanup stops it only when its list
    of handle holders is exactly the caller, and a killed process stays on that list."""
    global _server
    pgdata = pgdata.resolve()
    if not (pgdata / "postmaster.pid").exists():
        return False
    _pgserver()
    # pg_ctl is made at import time (one function per bundled binary), unseen by mypy.
    from pgserver._commands import pg_ctl  # type: ignore[attr-defined]
    from pgserver.postgres_server import PostgresServer

    # The lock pgserver takes to start a server, so no start in another process races this.
    with PostgresServer._lock:
        # This process's handle would otherwise hand out the stopped server's URL again.
        mine = PostgresServer._instances.pop(pgdata, None)
        if mine is not None:
            atexit.unregister(mine._cleanup)
            _server = None
        running = postmaster(pgdata)
        if running is not None:
            # pg_ctl refuses to run as root: as root, pgserver runs the server as its own
            # `pgserver` user, who owns the data folder; pg_ctl runs as that owner.
            user = _owner(pgdata) if os.geteuid() == 0 else None
            try:
                pg_ctl(["-w", "-t", str(timeout_s), "-m", "fast", "stop"], pgdata=pgdata,
                       user=user)
            except subprocess.CalledProcessError:
                if postmaster(pgdata) is not None:
                    raise RuntimeError(f"could not stop the embedded PostgreSQL in {pgdata}; "
                                       f"its log: {pgdata / 'log'}") from None
        # Every handle on the stopped server is void; a later start begins a new list.
        (pgdata / HANDLES_FILE).unlink(missing_ok=True)
    _started_here.discard(pgdata)
    log.info("embedded postgres stopped", extra={"action": "embedded_pg_stop"})
    return running is not None


def release(pgdata: Path = DEFAULT_PGDATA) -> str:
    """At the end of a process that used the server (``make demo``): stop it when this
    process started it and no other live process uses it, else leave it running. Returns
    the one line that says which, and how to stop it when it is left running."""
    others = users(pgdata)
    if pgdata.resolve() in _started_here and not others:
        stop(pgdata)
        return "embedded PostgreSQL stopped"
    if postmaster(pgdata) is None:
        return "embedded PostgreSQL is not running"
    why = (f"in use by process{'es' if len(others) > 1 else ''} "
           f"{', '.join(str(pid) for pid in others)}" if others
           else "it was already running")
    return f"embedded PostgreSQL left running ({why}); `make stop` stops it"


def to_sqlalchemy_url(uri: str) -> str:
    """``postgresql://`` as libpq spells it, with the psycopg 3 driver named for SQLAlchemy."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if uri.startswith(prefix):
            return "postgresql+psycopg://" + uri[len(prefix) :]
    return uri
