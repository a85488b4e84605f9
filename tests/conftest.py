"""Test fixtures: a real PostgreSQL (DATABASE_URL, or the embedded server), the schema
built once in a template database, and a fresh database per test cloned from it."""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url

from core import db
from core.config import Settings, get_settings
from core.db import embedded_pg

# Fixtures several files share; loaded after this module, whose helpers they import.
pytest_plugins = ("tests.support.cloud_tasks",)

REPO_ROOT = Path(__file__).resolve().parent.parent
IN_CI = bool(os.environ.get("CI"))
_counter = itertools.count()

# Variables a developer's shell may carry that would change what the tests exercise.
_ISOLATED_ENV = (
    "ENVIRONMENT", "USE_CLOUD_TASKS", "IMAGE_PROVIDER", "STORAGE_BACKEND", "OPENAI_API_KEY",
    "SUPABASE_URL", "SUPABASE_KEY", "API_KEY", "TASK_SECRET", "WORKER_URL", "MAX_ATTEMPTS",
    "LOCAL_STORAGE_DIR", "CLOUD_TASKS_EMULATOR_HOST", "OPENAI_BASE_URL",
    "TASK_LEASE_S", "LEASE_RENEW_S", "WORKER_ID", "K_SERVICE", "SHUTDOWN_GRACE_S",
    "RATE_LIMIT_BUDGET_S", "STAGING_DIR",
)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist the controller starts the embedded server (when DATABASE_URL is
    unset) before the workers exist, so they find it running instead of racing to start
    it in one data folder."""
    if not hasattr(config, "workerinput") and not os.environ.get("DATABASE_URL"):
        embedded_pg.start()


def pytest_unconfigure(config: pytest.Config) -> None:
    """The embedded server this run started stops with the run, so no server the tests
    started outlives `make test`; one that was running before (`make demo`, a developer's
    earlier run) is left as it was. A process of the tests still holding it is named."""
    if not hasattr(config, "workerinput") and not os.environ.get("DATABASE_URL"):
        said = embedded_pg.release()
        if "in use by" in said:
            print(f"\n{said}", file=sys.stderr)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Nothing the tests started outlives the run: no PostgreSQL in pytest's temporary
    folder (the embedded server in .pgdata/ is pytest_unconfigure's) and no other process
    of the tests (a worker, a dashboard, an emulator: anything started since the run began
    with pytest in its environment). Each one left running is stopped, and fails the run
    naming it. Under pytest-xdist the controller checks, after every worker is done."""
    if hasattr(session.config, "workerinput"):
        return
    try:
        import psutil
    except ImportError:  # pgserver's dependency: without it, no embedded servers either
        return
    # pytest's own factory: the public one is a fixture, out of a hook's reach.
    factory = session.config._tmp_path_factory  # type: ignore[attr-defined]
    basetemp = factory.getbasetemp().resolve()
    ours = {p.pid for p in psutil.Process().parents()} | {os.getpid()}
    leftover: list[str] = []
    for proc in psutil.process_iter(["pid", "name", "cmdline", "create_time"]):
        args = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and "-D" in args[:-1]:
            pgdata = Path(args[args.index("-D") + 1]).resolve()
            if pgdata.is_relative_to(basetemp):
                leftover.append(str(pgdata))
                embedded_pg.stop(pgdata)
        elif (proc.info["name"] != "postgres" and proc.info["pid"] not in ours
              and proc.info["create_time"] >= _RUN_STARTED and _started_by_tests(proc, args)):
            leftover.append(" ".join(args)[:120])
            with contextlib.suppress(psutil.Error):
                proc.kill()
    if leftover:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print("\nleft running by the tests (now stopped): " + "; ".join(leftover),
              file=sys.stderr)


_RUN_STARTED = time.time()


def _started_by_tests(proc: Any, args: list[str]) -> bool:
    """A process a test started: pytest in its environment, and not pytest itself or one
    of pytest-xdist's workers (those end on their own when the run does)."""
    line = " ".join(args)
    if not args or "pytest" in line or "execnet" in line or "exec(eval(" in line:
        return False
    try:
        return "PYTEST_VERSION" in proc.environ()
    except Exception:  # gone meanwhile, or not ours to read
        return False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with the most slow tests first, the rest in their usual order. pytest-xdist's
    --dist loadfile hands out files in this order: a file of minutes started last was the
    run's tail, one worker busy while the other three had finished."""
    slow: dict[str, int] = {}
    for item in items:
        if item.get_closest_marker("slow") is not None:
            slow[str(item.path)] = slow.get(str(item.path), 0) + 1
    items.sort(key=lambda item: -slow.get(str(item.path), 0))  # stable: order kept within


def need(condition: bool, reason: str) -> None:
    """Skip on a laptop that lacks a service; fail in CI, where nothing may silently pass."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def _libpq(url: str) -> str:
    """A SQLAlchemy URL as psycopg wants it."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@pytest.fixture(scope="session")
def server_url() -> str:
    """The server: DATABASE_URL when set, else the embedded one (started if needed)."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        return embedded_pg.to_sqlalchemy_url(configured)
    return embedded_pg.start()


def _with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def _admin(server_url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(_libpq(_with_database(server_url, "postgres")), autocommit=True)


@pytest.fixture(scope="session")
def template_db(server_url: str) -> Iterator[str]:
    name = f"aiwi_tpl_{os.getpid()}"
    with _admin(server_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    engine = create_engine(_with_database(server_url, name), poolclass=None)
    db.apply_schema(engine)
    engine.dispose()
    yield name
    with _admin(server_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_url(server_url: str, template_db: str) -> Iterator[str]:
    """A fresh database with the schema, dropped after the test."""
    name = f"aiwi_t_{os.getpid()}_{next(_counter)}"
    with _admin(server_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    url = _with_database(server_url, name)
    yield url
    db.reset_engines()
    with _admin(server_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for this test's settings and worker processes. Tests may add to it
    before asking for ``settings`` or starting a worker."""
    for name in _ISOLATED_ENV:
        monkeypatch.delenv(name, raising=False)
    values = {
        "ENVIRONMENT": "test",
        "DATABASE_URL": db_url,
        "LOCAL_STORAGE_DIR": str(tmp_path / "images"),
        "STAGING_DIR": str(tmp_path / "staging"),
        "DEMO_LATENCY_MS": "0",
        "RETRY_MIN_BACKOFF_S": "0.05",
        "RETRY_MAX_BACKOFF_S": "0.5",
        "DISPATCH_POLL_S": "0.05",
        "DISPATCH_DEADLINE_S": "20",
        "LOG_FORMAT": "json",
        "DB_POOL_SIZE": "5",
        # Nothing in a test may reach the real OpenAI: a test that turns the OpenAI
        # provider on without its own stub gets a loopback address that refuses.
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
    }
    return values


@pytest.fixture
def settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings built from ``env`` (the real environment path, not a hand-made object)."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    db.reset_engines()
    yield get_settings()
    get_settings.cache_clear()
    db.reset_engines()


@pytest.fixture
def engine(settings: Settings, db_url: str) -> Iterator[Engine]:
    eng = db.get_engine(db_url)
    yield eng
    eng.dispose()


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout_s``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class WorkerProcess:
    """A real ``python -m worker`` process on loopback."""

    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> WorkerProcess:
        env = {**os.environ, **self.env, "PORT": str(self.port), "HOST": "127.0.0.1"}
        self.starts += 1
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "worker"], cwd=REPO_ROOT, env=env, stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.logs()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        # Not left running behind the error: a caller that never got the worker back
        # cannot stop it.
        stop_process(self.proc)
        raise RuntimeError(f"worker did not become healthy:\n{self.logs()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, like a crashed instance."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def start_worker(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker processes with the test's env plus overrides; all stopped at the end."""
    started: list[WorkerProcess] = []

    def _start(**overrides: str) -> WorkerProcess:
        worker = WorkerProcess(env={**env, **overrides},
                               log_path=tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        return worker.start()

    yield _start
    for worker in started:
        worker.stop()


def wait_for(predicate: Callable[[], Any], timeout_s: float = 60.0, interval_s: float = 0.1,
             message: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {message}")
