"""The aiwebimage CLI on the local queue: pause/resume act on the local dispatcher (the
queue_state table it reads), init-db is idempotent, the Cloud Tasks-only commands say
what they need instead of failing obscurely."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import Engine, text

from cli.main import main as cli
from tests.conftest import REPO_ROOT


def test_pause_and_resume_the_local_queue(engine: Engine,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["queue", "pause"]) == 0
    assert capsys.readouterr().out.strip() == "paused"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT paused FROM queue_state")).scalar_one() is True
    assert cli(["queue", "resume"]) == 0
    assert capsys.readouterr().out.strip() == "running"
    assert cli(["queue", "status"]) == 0
    assert capsys.readouterr().out.strip() == "running"


def test_cloud_tasks_commands_name_what_they_need(engine: Engine,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["queue", "describe"]) == 2
    assert "USE_CLOUD_TASKS" in capsys.readouterr().err


def test_init_db_runs_as_a_console_command_and_is_idempotent(
    env: dict[str, str], engine: Engine,
) -> None:
    for _ in range(2):
        result = subprocess.run([sys.executable, "-m", "cli.main", "init-db"], cwd=REPO_ROOT,
                                env=env | {"PATH": "/usr/bin:/bin"}, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "schema applied" in result.stdout
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM generation_jobs")).scalar_one() == 0
