"""The SQL file is the schema; the models must match it column for column."""

from __future__ import annotations

from sqlalchemy import Engine, inspect, text

from core import db
from core.models import Base


def test_models_match_sql_schema_column_for_column(engine: Engine) -> None:
    inspector = inspect(engine)
    for table in Base.metadata.sorted_tables:
        live = {c["name"]: c for c in inspector.get_columns(table.name)}
        assert set(live) == {c.name for c in table.columns}, table.name
        for column in table.columns:
            live_col = live[column.name]
            assert live_col["nullable"] == column.nullable, f"{table.name}.{column.name}"
            assert type(live_col["type"]).__name__.upper().startswith(
                _pg_type_name(column.type)
            ), f"{table.name}.{column.name}: {live_col['type']} vs {column.type}"
        live_pk = inspector.get_pk_constraint(table.name)["constrained_columns"]
        assert live_pk == [c.name for c in table.primary_key.columns]


def _pg_type_name(sa_type: object) -> str:
    name = type(sa_type).__name__.upper()
    return {"DATETIME": "TIMESTAMP", "INTEGER": "INTEGER", "TEXT": "TEXT",
            "NUMERIC": "NUMERIC", "BOOLEAN": "BOOLEAN", "UUID": "UUID",
            "BIGINTEGER": "BIGINT"}.get(name, name)


def test_schema_file_is_idempotent(engine: Engine) -> None:
    with engine.connect() as conn:
        before = conn.execute(text("SELECT count(*) FROM schema_migrations")).scalar()
    db.apply_schema(engine)
    db.apply_schema(engine)
    with engine.connect() as conn:
        applied = conn.execute(text("SELECT count(*) FROM schema_migrations")).scalar()
    # Running it again changes nothing, and there is one row per version block of the file.
    assert applied == before
    assert applied == db.SCHEMA_FILE.read_text().count("INSERT INTO schema_migrations")


def test_hot_reads_have_indexes(engine: Engine) -> None:
    names = {i["name"] for i in inspect(engine).get_indexes("generation_tasks")}
    assert {"generation_tasks_job_status_idx", "generation_tasks_due_idx"} <= names
    job_indexes = {i["name"] for i in inspect(engine).get_indexes("generation_jobs")}
    assert "generation_jobs_status_created_idx" in job_indexes


def test_deployment_guide_monitoring_queries_run_unchanged(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT status, COUNT(*) FROM generation_jobs GROUP BY status;")).all()
        conn.execute(text("SELECT status, COUNT(*) FROM generation_tasks GROUP BY status;")).all()
