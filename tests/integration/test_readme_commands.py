"""The README's psql commands run verbatim with DATABASE_URL in psql's `postgresql://`
form (issue 10: the README said `postgresql+psycopg://`, which psql rejects), and the same
URL works for the CLI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, need

README = (REPO_ROOT / "README.md").read_text()


def _psql_commands() -> list[str]:
    found = re.findall(r'(psql "\$DATABASE_URL"[^`\n]*)', README)
    return sorted({c.strip() for c in found})


def test_readme_psql_commands_run_verbatim(db_url: str) -> None:
    need(shutil.which("psql") is not None, "psql not installed")
    commands = _psql_commands()
    assert commands, "the README shows no psql command"
    url = db_url.replace("postgresql+psycopg://", "postgresql://", 1)
    assert url.startswith("postgresql://")
    env = {**os.environ, "DATABASE_URL": url}
    for command in commands:
        for _ in range(2):  # idempotent
            done = subprocess.run(["bash", "-c", command + " -v ON_ERROR_STOP=1 -q"],
                                  cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                                  timeout=120)
            assert done.returncode == 0, (command, done.stderr[-2000:])


@pytest.mark.parametrize("form", ["postgresql://", "postgres://", "postgresql+psycopg://"])
def test_cli_accepts_every_url_form(form: str, db_url: str) -> None:
    url = form + db_url.split("://", 1)[1]
    done = subprocess.run([sys.executable, "-m", "cli.main", "init-db"], cwd=REPO_ROOT,
                          env={**os.environ, "ENVIRONMENT": "test", "DATABASE_URL": url},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "schema applied"
