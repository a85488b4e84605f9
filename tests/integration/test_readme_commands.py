"""The psql commands of the README and the docs pages run verbatim with DATABASE_URL in
psql's `postgresql://` form (a page once wrote `postgresql+psycopg://`, which psql rejects),
and the same URL works for the CLI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, need

# The pages a reader copies commands from: the README and every page under docs/.
PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def _psql_commands() -> dict[str, list[Path]]:
    """Each distinct `psql "$DATABASE_URL" ...` command, with the pages that show it."""
    found: dict[str, list[Path]] = {}
    for page in PAGES:
        for command in re.findall(r'(psql "\$DATABASE_URL"[^`\n]*)', page.read_text()):
            found.setdefault(command.strip(), []).append(page)
    return found


def test_pages_show_a_psql_command() -> None:
    """The collector reads README.md and docs/*.md and finds the deployment guide's schema
    command: a regex that matched nothing would make the test below pass on no commands."""
    commands = _psql_commands()
    assert 'psql "$DATABASE_URL" -f sql/init_db.sql' in commands, sorted(commands)
    pages = {page.name for shown in commands.values() for page in shown}
    assert "README.md" in pages and "deployment.md" in pages, pages


def test_docs_psql_commands_run_verbatim(db_url: str) -> None:
    need(shutil.which("psql") is not None, "psql not installed")
    commands = _psql_commands()
    assert commands, "neither README.md nor docs/*.md shows a psql command"
    url = db_url.replace("postgresql+psycopg://", "postgresql://", 1)
    assert url.startswith("postgresql://")
    env = {**os.environ, "DATABASE_URL": url}
    for command in commands:
        for _ in range(2):  # idempotent
            done = subprocess.run(["bash", "-c", command + " -v ON_ERROR_STOP=1 -q"],
                                  cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                                  timeout=120)
            assert done.returncode == 0, (command, [p.name for p in commands[command]],
                                          done.stderr[-2000:])


@pytest.mark.parametrize("form", ["postgresql://", "postgres://", "postgresql+psycopg://"])
def test_cli_accepts_every_url_form(form: str, db_url: str) -> None:
    url = form + db_url.split("://", 1)[1]
    done = subprocess.run([sys.executable, "-m", "cli", "init-db"], cwd=REPO_ROOT,
                          env={**os.environ, "ENVIRONMENT": "test", "DATABASE_URL": url},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"schema applied: version \d+, already current", done.stdout.strip())
