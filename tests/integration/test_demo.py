"""`make demo` runs `python -m worker.demo`: it must come up, answer, and stop cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import REPO_ROOT, free_port, wait_for


def test_demo_starts_worker_and_dashboard_and_stops_on_ctrl_c(
    env: dict[str, str], tmp_path: Path
) -> None:
    port, dashboard_port = free_port(), free_port()
    args = [sys.executable, "-m", "worker.demo", "--port", str(port),
            "--dashboard-port", str(dashboard_port)]
    out = tmp_path / "demo.log"
    with out.open("wb") as log:
        proc = subprocess.Popen(args, cwd=REPO_ROOT, env={**os.environ, **env}, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "demo is running" in out.read_text(errors="replace"),
                 timeout_s=90, message="the demo banner")
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json()["status"] == "ok"
        assert httpx.get(f"http://127.0.0.1:{dashboard_port}/_stcore/health").status_code == 200
        batch = httpx.post(f"http://127.0.0.1:{port}/api/admin/generate/batch",
                           json={"prompts": ["a demo kite"], "style": "illustration"})
        assert batch.status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    banner = out.read_text(errors="replace")
    assert f"http://127.0.0.1:{dashboard_port}" in banner
    time.sleep(0.2)
    for p in (port, dashboard_port):  # children are gone
        try:
            httpx.get(f"http://127.0.0.1:{p}/", timeout=1)
            raise AssertionError(f"port {p} still answers after the demo stopped")
        except httpx.HTTPError:
            pass
