"""The embedded PostgreSQL (pgserver) ships without pg_trgm: the schema still applies,
search still answers (by scanning) and says so once in the log."""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine

from core import db
from core.db import embedded_pg
from core.jobs import search
from core.jobs.lifecycle import submit_batch
from core.jobs.meta import JobMeta
from core.jobs.validation import Limits, validate_batch
from tests.conftest import need


def test_embedded_server_without_pg_trgm_falls_back_with_a_message(
    tmp_path: Path, settings: object, caplog: pytest.LogCaptureFixture,
) -> None:
    try:
        import pgserver  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        need(False, "pgserver is not installed")
    pgdata = tmp_path / "pgdata"
    url = embedded_pg.start(pgdata)
    engine = create_engine(url)
    try:
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"),
                             autocommit=True) as conn:
            available = conn.execute("SELECT count(*) FROM pg_available_extensions "
                                     "WHERE name = 'pg_trgm'").fetchone()
        db.apply_schema(engine)  # the DO block takes its "not available" branch
        assert search.prompt_index_present(engine) == (available == (1,))
        spec = validate_batch(["a green teapot", "a lamp"], "none", 1, Limits())
        job = submit_batch(spec, engine=engine, meta=JobMeta(name="fallback"))
        with caplog.at_level(logging.WARNING, logger="core.jobs.search"):
            found = search.search_jobs(search.SearchQuery.of(text="teapot"), engine=engine)
        assert [j.id for j in found.jobs] == [job.id]
        if available == (0,):  # pgserver 0.1.4: no contrib extensions
            assert "pg_trgm is not installed" in caplog.text
        else:  # a pgserver that ships pg_trgm gets the index
            assert search.prompt_index_present(engine)
    finally:
        engine.dispose()
        embedded_pg.stop(pgdata)
    # The server this test started does not outlive it (pytest keeps its folder).
    assert embedded_pg.postmaster(pgdata) is None
