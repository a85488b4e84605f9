"""``make demo``: the product on the embedded default, in one command.

Starts the embedded PostgreSQL (when DATABASE_URL is unset), the worker with its local
dispatcher and the demo model, and the Streamlit dashboard; prints the URLs; on Ctrl-C
stops what it started, the database last and cleanly. An embedded server that was already
running (the tests leave theirs), or that another process still uses, is left running,
and the demo says so and how to stop it.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from core import db, startup
from core.config import Settings
from core.db import embedded_pg

REPO_ROOT = Path(__file__).resolve().parent.parent


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args!r} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout_s:.0f}s")


def describe(settings: Settings) -> str:
    """The model and store this run really uses (with OPENAI_API_KEY set, `make demo` calls
    OpenAI, and must not say "demo model")."""
    model = (f"OpenAI model {settings.OPENAI_IMAGE_MODEL}" if settings.provider_name == "openai"
             else "the offline demo model")
    store = (f"Supabase bucket {settings.SUPABASE_BUCKET}" if settings.storage_name == "supabase"
             else f"local storage in {settings.LOCAL_STORAGE_DIR}")
    return f"{model}, {store}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument("--dashboard-port", type=int,
                        default=int(os.environ.get("DASHBOARD_PORT", "8501")))
    parser.add_argument("--no-dashboard", action="store_true")
    args = parser.parse_args(argv)

    settings = startup.settings_or_exit("demo")
    embedded = settings.DATABASE_URL is None
    url = db.resolve_database_url(settings)
    db.apply_schema(db.get_engine(url))
    env = {**os.environ, "DATABASE_URL": url, "PORT": str(args.port), "HOST": "127.0.0.1",
           "LOG_FORMAT": os.environ.get("LOG_FORMAT", "text")}
    if "WORKER_URL" not in os.environ:
        env["WORKER_URL"] = f"http://127.0.0.1:{args.port}"
    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        worker = subprocess.Popen([sys.executable, "-m", "worker"], cwd=REPO_ROOT, env=env)
        children.append(worker)
        _wait_http(f"http://127.0.0.1:{args.port}/healthz", worker)
        lines = [f"  API:        http://127.0.0.1:{args.port}/docs",
                 f"  Health:     http://127.0.0.1:{args.port}/healthz"]
        if not args.no_dashboard:
            dashboard = subprocess.Popen(
                [sys.executable, "-m", "dashboard",
                 "--server.headless", "true", "--server.port", str(args.dashboard_port),
                 "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
                cwd=REPO_ROOT, env=env)
            children.append(dashboard)
            _wait_http(f"http://127.0.0.1:{args.dashboard_port}/_stcore/health", dashboard)
            lines.insert(0, f"  Dashboard:  http://127.0.0.1:{args.dashboard_port}")
        print(f"\nAIWebImageService demo is running ({describe(settings)}, "
              f"{'embedded' if embedded else 'configured'} PostgreSQL):\n"
              + "\n".join(lines) + "\nPress Ctrl-C to stop.\n", flush=True)
        while not stopping and all(c.poll() is None for c in children):
            time.sleep(0.3)
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        db.reset_engines()
        if embedded:
            print(embedded_pg.release(), flush=True)
    failed = [c for c in children if c.returncode not in (0, -signal.SIGTERM, None)]
    return 1 if failed and not stopping else 0


if __name__ == "__main__":
    sys.exit(main())
