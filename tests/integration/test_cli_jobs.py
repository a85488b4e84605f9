"""``aiwebimage jobs ...`` as a user runs it: the installed console script in a
subprocess, against the test's real PostgreSQL, with a real worker delivering the job."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import REPO_ROOT, WorkerProcess, wait_for

CLI = str(Path(sys.executable).with_name("aiwebimage"))


def _cli(env: dict[str, str], *args: str, cwd: Path = REPO_ROOT
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], cwd=cwd, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


def _ok(env: dict[str, str], *args: str, cwd: Path = REPO_ROOT) -> Any:
    done = _cli(env, *args, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_jobs_commands_end_to_end(start_worker: Callable[..., WorkerProcess],
                                  env: dict[str, str], tmp_path: Path) -> None:
    assert shutil.which(CLI), CLI
    version = _cli(env, "--version")
    assert version.returncode == 0 and version.stdout.startswith("aiwebimage 0.")

    prompts = tmp_path / "batch.csv"
    prompts.write_text("Prompt Text;id\na green teapot, studio light;1\n"
                       "[[demo:moderation_blocked]] refused;2\n", encoding="utf-8")
    worker = start_worker()  # shares env (database, storage); its dispatcher delivers
    job = _ok(env, "jobs", "submit", str(prompts), "--count", "2")
    assert job["total_tasks"] == 4 and job["status"] in ("pending", "running")
    job_id = job["id"]

    def finished() -> Any:
        body = _ok(env, "jobs", "status", job_id)
        return body if body["progress_percentage"] == 100.0 else None

    status = wait_for(finished, timeout_s=60, interval_s=0.5, message="job finished")
    assert (status["completed_tasks"], status["failed_tasks"]) == (2, 2)
    # The same body as the API's status endpoint.
    api = httpx.get(f"{worker.url}/api/admin/jobs/{job_id}/status", timeout=10).json()
    assert status == api

    listed = _ok(env, "jobs", "list", "--limit", "5")
    assert [j["id"] for j in listed["jobs"]] == [job_id]

    dry = _cli(env, "jobs", "retry", job_id, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["requeued"] == 0  # refusals are left alone
    assert "2 refusal(s) left alone" in dry.stderr
    forced = _ok(env, "jobs", "retry", job_id, "--include-refusals", "--dry-run")
    assert (forced["requeued"], forced["dry_run"]) == (2, True)

    out = tmp_path / "images.zip"
    exported = _ok(env, "jobs", "export", job_id, "-o", str(out))
    assert exported == {"file": str(out), "images": 2, "missing": 0}
    with zipfile.ZipFile(out) as zf:
        assert len(zf.namelist()) == 3 and "manifest.csv" in zf.namelist()
    table = _ok(env, "jobs", "export", job_id, "--tasks-csv", "-o",
                str(tmp_path / "t.csv"))
    assert table["rows"] == 4
    assert "a green teapot, studio light" in (tmp_path / "t.csv").read_text()

    # Errors: the API's message, one line, status 2, no traceback.
    cancel_done = _cli(env, "jobs", "cancel", job_id)
    api_cancel = httpx.post(f"{worker.url}/api/admin/jobs/{job_id}/cancel", timeout=10)
    assert cancel_done.returncode == 2
    assert cancel_done.stderr.strip() == f"error: {api_cancel.json()['detail']}"
    missing = _cli(env, "jobs", "status", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        "error: job 00000000-0000-0000-0000-000000000000 not found")
    bad = _cli(env, "jobs", "status", "nope")
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: job_id:")
    too_long = tmp_path / "long.txt"
    too_long.write_text("a fine prompt\n" + "x" * 5000 + "\n")
    refused = _cli(env, "jobs", "submit", str(too_long))
    api_refused = httpx.post(f"{worker.url}/api/admin/generate/batch", timeout=10,
                             json={"prompts": ["a fine prompt", "x" * 5000]})
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip() == f"error: {api_refused.json()['message']}"
    nofile = _cli(env, "jobs", "submit", str(tmp_path / "absent.txt"))
    assert nofile.returncode == 2 and nofile.stderr.startswith("error: file: cannot read")
