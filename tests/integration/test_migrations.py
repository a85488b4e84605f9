"""Numbered migrations (core/db/migrate.py) on a real PostgreSQL: a database made by the
first released schema (tests/migrations/baseline_v9.sql) and upgraded by every migration
has the same catalog as one made by sql/init_db.sql; an existing database upgrades in
place with its rows; a start against a current schema runs no DDL (an event trigger
counts it); runners started together take turns; production refuses an older schema."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from core.db.migrate import Upgrade, latest_version, migrate_schema, migrations
from core.db.queries import q
from core.errors import ConfigError
from tests.conftest import (
    _ISOLATED_ENV,
    REPO_ROOT,
    WorkerProcess,
    _admin,
    _libpq,
    _with_database,
    free_port,
    need,
)
from tests.migrations import catalog

BASELINE = REPO_ROOT / "tests" / "migrations" / "baseline_v9.sql"
BASELINE_VERSIONS = [1, 2, 3, 4, 5, 7, 8, 9]


@pytest.fixture
def new_database(server_url: str) -> Iterator[Callable[[], str]]:
    """Make empty databases (dropped at the end); each call returns one's URL."""
    made: list[str] = []

    def make() -> str:
        name = f"aiwi_m_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with _admin(server_url) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return _with_database(server_url, name)

    yield make
    with _admin(server_url) as conn:
        for name in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _sql(url: str, statements: str) -> None:
    with psycopg.connect(_libpq(url)) as conn:
        conn.execute(statements)  # a file of statements, no parameters


def _from_baseline(url: str) -> str:
    """The database as the version 9 file left it: what every deployed database is."""
    _sql(url, BASELINE.read_text(encoding="utf-8"))
    return url


def _migrate(url: str) -> Upgrade:
    engine = create_engine(url, poolclass=NullPool)
    try:
        return migrate_schema(engine)
    finally:
        engine.dispose()


def test_the_migrations_and_init_db_make_the_same_schema(
        new_database: Callable[[], str]) -> None:
    upgraded, fresh = _from_baseline(new_database()), new_database()
    every = tuple(m.name for m in migrations())
    assert "0010_job_tasks_ended.sql" in every
    assert _migrate(upgraded) == Upgrade(before=9, after=latest_version(), applied=every)
    assert _migrate(fresh) == Upgrade(before=None, after=latest_version(),
                                      applied=("sql/init_db.sql",))
    made_by_migrations, made_by_init_db = catalog.read(upgraded), catalog.read(fresh)
    assert catalog.differences(made_by_migrations, made_by_init_db) == []
    versions = sorted(v for (v,) in made_by_init_db["versions"])
    assert versions == BASELINE_VERSIONS + [m.version for m in migrations()]
    assert any(f[0].startswith("job_tasks_ended(") for f in made_by_init_db["functions"])


def test_the_comparison_sees_a_function_body_a_check_and_a_default(
        new_database: Callable[[], str]) -> None:
    """The catalog comparison above can fail: each drift a migration could leave behind
    shows up as a difference."""
    url = new_database()
    _migrate(url)
    before = catalog.read(url)
    with psycopg.connect(_libpq(url)) as conn:
        body = conn.execute("SELECT pg_get_functiondef('job_tasks_ended'::regproc)").fetchone()
        assert body is not None and "j.failed_tasks + failed," in body[0]
        conn.execute(body[0].replace("j.failed_tasks + failed,", "j.failed_tasks,", 1))
        conn.execute("ALTER TABLE generation_jobs DROP CONSTRAINT generation_jobs_priority_check,"
                     " ADD CONSTRAINT generation_jobs_priority_check"
                     " CHECK (priority IN ('high', 'normal', 'low', 'urgent'))")
        conn.execute("ALTER TABLE generation_tasks ALTER COLUMN crashes SET DEFAULT 1")
    found = catalog.differences(before, catalog.read(url))
    for part, name in (("functions", "job_tasks_ended"),
                       ("constraints", "generation_jobs_priority_check"),
                       ("columns", "'crashes'")):
        assert any(d.startswith(part) and name in d for d in found), (part, name, found)


def _rows(url: str) -> dict[str, list[str]]:
    """Every row of every table but schema_migrations, as JSON text."""
    with psycopg.connect(_libpq(url)) as conn:
        tables = [t for (t,) in conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace "
            "AND relkind = 'r' AND relname <> 'schema_migrations'")]
        return {t: sorted(r for (r,) in conn.execute(
            f"SELECT row_to_json(t)::text FROM {t} t")) for t in tables}


def test_a_database_made_by_the_baseline_upgrades_in_place_with_its_rows(
        new_database: Callable[[], str]) -> None:
    url = _from_baseline(new_database())
    job, done, running, token = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(_libpq(url)) as conn:
        conn.execute(
            "INSERT INTO generation_jobs (id, status, total_tasks, completed_tasks, style, "
            "count_per_prompt, provider, model, size, quality, name, tags, priority, "
            "max_cost_usd, started_at) VALUES (%s, 'running', 2, 1, 'none', 1, 'demo', "
            "'demo', '1024x1024', 'low', 'kept', '{a,b}', 'high', 1.5, now())", (job,))
        conn.execute(
            "INSERT INTO generation_tasks (id, job_id, prompt_index, prompt, style, status, "
            "attempts, image_path, finished_at) VALUES (%s, %s, 0, 'a teapot', 'none', "
            "'succeeded', 1, 'x.png', now())", (done, job))
        conn.execute(
            "INSERT INTO generation_tasks (id, job_id, prompt_index, prompt, style, status, "
            "attempts, claim_token, lease_until, lease_owner) VALUES (%s, %s, 1, 'a lamp', "
            "'none', 'running', 1, %s, now() + interval '1 hour', 'w1')",
            (running, job, token))
        conn.execute("INSERT INTO openai_batches (job_id, task_count, state) "
                     "VALUES (%s, 0, 'done')", (job,))
        conn.execute("INSERT INTO audit_log (actor, action, job_id, detail) "
                     "VALUES ('alice', 'clone', %s, '{\"n\": 1}')", (job,))
        conn.execute("INSERT INTO queue_state (queue_name, paused) VALUES ('default', true)")
        conn.execute("INSERT INTO delivery_problems (cause, url, detail, occurrences) "
                     "VALUES ('http_404', 'http://w/tasks', 'not found', 3)")
        conn.execute("INSERT INTO spend_holds (scope, held, spent_usd) "
                     "VALUES ('daily', true, 9.5)")
    before = _rows(url)
    assert sum(map(len, before.values())) == 8

    upgrade = _migrate(url)

    assert upgrade.before == 9 and upgrade.after == latest_version() and upgrade.applied
    assert _rows(url) == before
    # The upgraded database serves this code's statements: the running task completes
    # through the one the worker uses, and its job ends (counters, status, webhook outbox).
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            moved = conn.execute(q("complete_task"), {
                "task_id": running, "token": token, "image_path": "y.png",
                "thumbnail_path": "y.webp", "latency_ms": 5, "input_tokens": None,
                "output_tokens": None}).one()
            ended = conn.execute(text("SELECT job_status FROM job_notifications "
                                      "WHERE job_id = :j"), {"j": job}).scalars().all()
    finally:
        engine.dispose()
    assert (moved.id, moved.status, moved.completed_tasks, moved.total_tasks) == (
        job, "completed", 2, 2)
    assert ended == ["completed"]


_DDL_WATCH = """
    CREATE SCHEMA ddl_watch;
    CREATE TABLE ddl_watch.commands (n bigserial PRIMARY KEY, tag text NOT NULL);
    CREATE FUNCTION ddl_watch.record() RETURNS event_trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO ddl_watch.commands (tag) VALUES (tg_tag);
    END
    $$;
    CREATE EVENT TRIGGER ddl_watch ON ddl_command_start EXECUTE FUNCTION ddl_watch.record();
"""


def _ddl_seen(url: str) -> list[str]:
    with psycopg.connect(_libpq(url)) as conn:
        return [t for (t,) in conn.execute("SELECT tag FROM ddl_watch.commands ORDER BY n")]


def test_a_second_worker_start_runs_no_ddl(
        new_database: Callable[[], str], start_worker: Callable[..., WorkerProcess]) -> None:
    url = new_database()
    with psycopg.connect(_libpq(url)) as conn:
        superuser = conn.execute("SELECT rolsuper FROM pg_roles "
                                 "WHERE rolname = current_user").fetchone()
    need(bool(superuser and superuser[0]), "an event trigger needs a superuser")
    _sql(url, _DDL_WATCH)  # every DDL command from now on is a row of ddl_watch.commands

    first = start_worker(DATABASE_URL=url)  # an empty database: this start makes the schema
    first.stop()
    made = _ddl_seen(url)
    assert "CREATE TABLE" in made and "CREATE FUNCTION" in made, made  # the trigger counts

    start_worker(DATABASE_URL=url)  # healthy: its start-up, schema step included, is done
    assert _ddl_seen(url) == made  # the second start ran no DDL at all


@pytest.mark.parametrize("made_by", ["nothing", "baseline"])
def test_runners_started_together_take_turns(
        made_by: str, new_database: Callable[[], str]) -> None:
    url = new_database()
    if made_by == "baseline":
        _from_baseline(url)
    runners = 4
    together = threading.Barrier(runners)

    def run(_: int) -> Upgrade:
        together.wait(timeout=30)
        return _migrate(url)

    with ThreadPoolExecutor(runners) as pool:
        results = list(pool.map(run, range(runners)))
    first = ("sql/init_db.sql",) if made_by == "nothing" else tuple(
        m.name for m in migrations())
    # Each step was done once, by whichever runner held the lock for it (a migration is a
    # transaction of its own, so two runners may share the work); the rest found it done.
    done = [step for r in results for step in r.applied]
    assert sorted(done) == sorted(first), done
    assert {r.after for r in results} == {latest_version()}
    with psycopg.connect(_libpq(url)) as conn:
        recorded = [v for (v,) in conn.execute("SELECT version FROM schema_migrations "
                                               "ORDER BY version")]
    assert recorded == BASELINE_VERSIONS + [m.version for m in migrations()]


def test_the_runner_refuses_what_it_cannot_upgrade(new_database: Callable[[], str]) -> None:
    unversioned = new_database()
    _sql(unversioned, "CREATE TABLE generation_jobs (id uuid PRIMARY KEY)")
    with pytest.raises(ConfigError, match="no recorded schema version"):
        _migrate(unversioned)
    older = _from_baseline(new_database())
    _sql(older, "DELETE FROM schema_migrations WHERE version > 8")
    with pytest.raises(ConfigError, match="version 8, older than the oldest"):
        _migrate(older)


def _production_env(env: dict[str, str], url: str, tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in _ISOLATED_ENV and k != "DATABASE_URL"}
    return {**clean, **env, "ENVIRONMENT": "production", "DATABASE_URL": url,
            "API_KEY": "k" * 32, "TASK_SECRET": "t" * 32, "IMAGE_PROVIDER": "demo",
            "STORAGE_BACKEND": "local", "HOME": str(tmp_path), "PORT": str(free_port()),
            "HOST": "127.0.0.1"}


def test_production_refuses_an_older_schema_until_init_db_upgrades_it(
        new_database: Callable[[], str], env: dict[str, str], tmp_path: Path) -> None:
    url = _from_baseline(new_database())
    values = _production_env(env, url, tmp_path)
    refused = subprocess.run([sys.executable, "-m", "worker"], cwd=REPO_ROOT, env=values,
                             capture_output=True, text=True, timeout=90)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "Traceback" not in refused.stderr + refused.stdout
    line, = refused.stderr.strip().splitlines()
    assert f"version 9 and this code needs version {latest_version()}" in line
    assert "aiwebimage init-db" in line
    assert catalog.read(url)["versions"] == [(v,) for v in BASELINE_VERSIONS]  # untouched

    upgraded = subprocess.run([sys.executable, "-m", "cli", "init-db"], cwd=REPO_ROOT,
                              env=values, capture_output=True, text=True, timeout=90)
    assert upgraded.returncode == 0, upgraded.stderr[-2000:]
    assert upgraded.stdout.strip() == (f"schema applied: version {latest_version()} "
                                       f"({', '.join(m.name for m in migrations())})")
    worker = WorkerProcess(env=values, log_path=tmp_path / "worker.log")
    try:
        worker.start()  # healthy: production starts on the current schema
    finally:
        worker.stop()
