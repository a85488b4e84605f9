"""The embedded PostgreSQL's stop, in a data folder of the test's own: `make stop` stops it
even after a process that used it was SIGKILLed (pgserver's own cleanup waits for that
process, which never lets go), without a warning a user cannot act on; and what
`make demo` says at Ctrl-C about the server (core.db.embedded_pg.release) is true."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from core.db import embedded_pg
from tests.conftest import REPO_ROOT, need, wait_for

# A process that starts (or joins) the server and holds its handle until it is killed.
HOLDER = """
import sys
from pathlib import Path
from core.db import embedded_pg
print(embedded_pg.start(Path(sys.argv[1])), flush=True)
sys.stdin.read()
"""


def _env() -> dict[str, str]:
    """A user's shell: no DATABASE_URL, and (as in containers and CI) no XDG_RUNTIME_DIR."""
    return {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "XDG_RUNTIME_DIR")}


@pytest.fixture
def pgdata(tmp_path: Path) -> Iterator[Path]:
    try:
        import pgserver  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        need(False, "pgserver is not installed")
    folder = tmp_path / "pgdata"
    yield folder
    if embedded_pg.postmaster(folder) is not None:  # the test failed half-way
        embedded_pg.stop(folder)


def _holder(pgdata: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(pgdata)], cwd=REPO_ROOT,
                            env=_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline()  # printed once the server answers
    assert url.startswith("postgresql+psycopg://"), proc.communicate(timeout=30)
    return proc


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.communicate(timeout=10)  # reaped (not a zombie that still looks alive), pipes closed


def _exited(process: psutil.Process) -> bool:
    """Gone, or a zombie (the postmaster's parent is whatever adopted it, which may not
    reap it): either way it serves nothing."""
    try:
        return bool(process.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def test_make_stop_stops_the_server_after_a_user_of_it_was_killed(pgdata: Path) -> None:
    holder = _holder(pgdata)
    server = embedded_pg.postmaster(pgdata)
    assert server is not None
    _kill(holder)
    # The dead pid stays on pgserver's list: its own cleanup would never stop the server.
    assert holder.pid in json.loads((pgdata / embedded_pg.HANDLES_FILE).read_text())
    assert embedded_pg.postmaster(pgdata) is not None

    # What `make stop` runs, on this folder.
    done = subprocess.run([sys.executable, "-m", "core.db.stop_embedded", "--pgdata",
                           str(pgdata)], cwd=REPO_ROOT, env=_env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"embedded PostgreSQL stopped ({pgdata})"
    assert done.stderr == ""  # no XDG_RUNTIME_DIR warning, nothing else
    assert not (pgdata / "postmaster.pid").exists()
    wait_for(lambda: _exited(server), timeout_s=30, message="the postmaster exited")

    again = subprocess.run([sys.executable, "-m", "core.db.stop_embedded", "--pgdata",
                            str(pgdata)], cwd=REPO_ROOT, env=_env(), capture_output=True,
                           text=True, timeout=60)
    assert (again.returncode, again.stdout.strip()) == (
        0, f"embedded PostgreSQL was not running ({pgdata})")


def test_release_stops_the_server_this_process_started(pgdata: Path) -> None:
    embedded_pg.start(pgdata)
    assert embedded_pg.postmaster(pgdata) is not None
    assert embedded_pg.release(pgdata) == "embedded PostgreSQL stopped"
    assert not (pgdata / "postmaster.pid").exists()
    assert embedded_pg.postmaster(pgdata) is None


def test_release_leaves_a_server_others_use_or_that_ran_before(pgdata: Path) -> None:
    holder = _holder(pgdata)  # started it, and still uses it
    try:
        embedded_pg.start(pgdata)  # this process joins a running server
        assert embedded_pg.release(pgdata) == (
            f"embedded PostgreSQL left running (in use by process {holder.pid}); "
            "`make stop` stops it")
        assert embedded_pg.postmaster(pgdata) is not None
        _kill(holder)
        assert embedded_pg.release(pgdata) == (
            "embedded PostgreSQL left running (it was already running); `make stop` stops it")
        assert embedded_pg.postmaster(pgdata) is not None
    finally:
        if holder.poll() is None:
            _kill(holder)
    assert embedded_pg.stop(pgdata)
    assert embedded_pg.postmaster(pgdata) is None
