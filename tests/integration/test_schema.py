"""sql/init_db.sql as the deployment guide runs it: a second run on its own database
changes nothing; on a database at an older version it refuses to record versions it does
not hold and names the command that upgrades. The hot reads have their indexes."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import Engine, inspect, text

from core.db.migrate import SCHEMA_FILE
from tests.conftest import _libpq
from tests.migrations import catalog


def _run_schema_file(url: str) -> None:
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute(SCHEMA_FILE.read_text(encoding="utf-8"))


def test_schema_file_runs_again_on_its_own_database_and_changes_nothing(
        engine: Engine, db_url: str) -> None:
    before = catalog.read(db_url)
    _run_schema_file(db_url)
    _run_schema_file(db_url)
    assert catalog.differences(before, catalog.read(db_url)) == []


def test_schema_file_refuses_to_pass_an_older_database_off_as_current(
        engine: Engine, db_url: str) -> None:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM schema_migrations WHERE version > 9"))
    with pytest.raises(psycopg.errors.RaiseException, match="schema version 9") as raised:
        _run_schema_file(db_url)
    assert "aiwebimage init-db" in str(raised.value.diag.message_hint)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT max(version) FROM schema_migrations")).scalar() == 9


def test_hot_reads_have_indexes(engine: Engine) -> None:
    names = {i["name"] for i in inspect(engine).get_indexes("generation_tasks")}
    assert {"generation_tasks_job_status_idx", "generation_tasks_due_idx"} <= names
    job_indexes = {i["name"] for i in inspect(engine).get_indexes("generation_jobs")}
    assert "generation_jobs_status_created_idx" in job_indexes


def test_deployment_guide_monitoring_queries_run_unchanged(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT status, COUNT(*) FROM generation_jobs GROUP BY status;")).all()
        conn.execute(text("SELECT status, COUNT(*) FROM generation_tasks GROUP BY status;")).all()
