"""What every benchmark shares: its own database, real worker processes, figure lines.

Benchmarks create (and drop) a database ``aiwi_bench_*`` on the server DATABASE_URL names,
or on the embedded server; everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from core import db
from core.db import embedded_pg

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Figure:
    """One measured figure and its goal; ok None = informational (no goal)."""

    name: str
    value: float | None
    unit: str
    goal: str = ""
    ok: bool | None = None
    note: str = ""

    def line(self) -> str:
        value = "not measured" if self.value is None else f"{self.value:,.3g} {self.unit}"
        if self.value is not None and abs(self.value) >= 1000:
            value = f"{self.value:,.0f} {self.unit}"
        verdict = {True: "PASS", False: "MISS", None: "info"}[self.ok]
        goal = f"goal {self.goal}" if self.goal else "no goal"
        note = f" ({self.note})" if self.note else ""
        return f"[{verdict}] {self.name}: {value.strip()} | {goal}{note}"


def figure(name: str, value: float | None, unit: str, *, goal: str = "",
           check: Callable[[float], bool] | None = None, note: str = "") -> Figure:
    ok = None if check is None or value is None else bool(check(value))
    if check is not None and value is None:
        ok = False
    fig = Figure(name, value, unit, goal, ok, note)
    print(fig.line(), flush=True)
    return fig


# -- database -----------------------------------------------------------------------
def server_url() -> str:
    configured = os.environ.get("DATABASE_URL")
    if configured:
        return embedded_pg.to_sqlalchemy_url(configured)
    return embedded_pg.start()


def with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def admin_connection(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(libpq(with_database(url, "postgres")), autocommit=True)


@contextlib.contextmanager
def bench_database(tag: str, *, schema: bool = True) -> Iterator[str]:
    """A fresh database ``aiwi_bench_<tag>`` with the schema; dropped afterwards."""
    server = server_url()
    name = f"aiwi_bench_{tag}"
    with admin_connection(server) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_database(server, name)
    if schema:
        engine = create_engine(url)
        db.apply_schema(engine)
        engine.dispose()
    try:
        yield url
    finally:
        db.reset_engines()
        with admin_connection(server) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sync_engine(url: str, pool_size: int = 5) -> Engine:
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size)


# -- worker processes -------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(db_url: str, workdir: Path) -> dict[str, str]:
    """A worker environment tuned for measuring, not for debugging."""
    return {
        "ENVIRONMENT": "test",
        "DATABASE_URL": db_url,
        "LOCAL_STORAGE_DIR": str(workdir / "images"),
        "IMAGE_PROVIDER": "demo",
        "STORAGE_BACKEND": "local",
        "DEMO_LATENCY_MS": "0",
        "DEMO_IMAGE_PX": "16",
        "DISPATCH_POLL_S": "0.05",
        "DISPATCH_DEADLINE_S": "60",
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "json",
        # Enough pooled connections for the deliveries in flight: below that, SQLAlchemy
        # opens and closes an overflow connection (a PostgreSQL backend) per checkout.
        "DB_POOL_SIZE": "26",
    }


_SCRUB = ("API_KEY", "TASK_SECRET", "OPENAI_API_KEY", "OPENAI_BASE_URL", "SUPABASE_URL",
          "SUPABASE_KEY", "USE_CLOUD_TASKS", "WORKER_URL", "CLOUD_TASKS_EMULATOR_HOST",
          "MAX_ATTEMPTS", "LOCAL_MAX_CONCURRENCY")


@dataclass
class Worker:
    """A real ``python -m worker`` process on loopback."""

    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> Worker:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
        env.update(self.env, PORT=str(self.port), HOST="127.0.0.1")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "worker"], cwd=REPO_ROOT,
                                         env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.logs()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("worker did not become healthy")

    def cpu_s(self) -> float:
        """User + system CPU seconds this process has used so far (from /proc)."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def postgres_cpu_s() -> float | None:
    """User + system CPU seconds of the embedded PostgreSQL so far: its backends and other
    children alive now, plus what its exited children used (from /proc). None when
    DATABASE_URL names another server (its processes may not be on this machine)."""
    if os.environ.get("DATABASE_URL"):
        return None
    try:
        postmaster = int((embedded_pg.DEFAULT_PGDATA / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")

    def fields(pid: int | str) -> list[str] | None:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None

    own = fields(postmaster)
    if own is None:
        return None
    total = sum(int(v) for v in own[11:15])  # utime, stime, cutime, cstime
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            child = fields(entry.name)
            if child is not None and int(child[1]) == postmaster:
                total += int(child[11]) + int(child[12])
    return total / ticks


def transactions(url: str) -> int:
    """Transactions committed or rolled back in ``url``'s database so far (each autocommit
    statement is one). The statistics collector lags by up to a second (PGSTAT_MIN_INTERVAL);
    read after a pause."""
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        row = conn.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                           "WHERE datname = current_database()").fetchone()
    return int(row[0]) if row else 0


@contextlib.contextmanager
def workdir(tag: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"aiwi-bench-{tag}-") as d:
        yield Path(d)


@contextlib.contextmanager
def running_worker(env: dict[str, str], log_path: Path) -> Iterator[Worker]:
    worker = Worker(env=env, log_path=log_path).start()
    try:
        yield worker
    finally:
        worker.stop()


# -- jobs ------------------------------------------------------------------------------
def submit(worker_url: str, prompts: list[str], *, style: str = "none",
           count_per_prompt: int = 1, timeout_s: float = 60.0) -> str:
    response = httpx.post(worker_url + "/api/admin/generate/batch", timeout=timeout_s, json={
        "prompts": prompts, "style": style, "count_per_prompt": count_per_prompt})
    response.raise_for_status()
    return str(response.json()["id"])


def job_row(engine: Engine, job_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT status, total_tasks, completed_tasks, failed_tasks, created_at, "
            "started_at, finished_at, EXTRACT(EPOCH FROM finished_at - created_at) AS run_s "
            "FROM generation_jobs WHERE id = :id"), {"id": job_id}).one()


def wait_finished(engine: Engine, job_id: str, timeout_s: float,
                  interval_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        row = job_row(engine, job_id)
        if row.finished_at is not None or time.monotonic() > deadline:
            return row
        time.sleep(interval_s)


def load_note() -> str:
    """The machine's load while measuring: other work on the cores skews every figure."""
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f} on {os.cpu_count()} cores"
