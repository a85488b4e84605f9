"""core.db.hotsql's conversion of named SQL to psycopg placeholders (pure)."""

from __future__ import annotations

import re

import pytest

from core.db import hotsql
from core.db.queries import q

HOT = ["claim_task", "task_state", "renew_lease", "complete_task",
       "release_task", "take_over_abandoned", "free_dispatch_holds", "set_job_status",
       "dispatch_claim_due", "dispatch_defer", "claim_tasks", "end_tasks"]


@pytest.mark.parametrize("name", HOT)
def test_the_hot_statements_keep_the_binds_sqlalchemy_sees(name: str) -> None:
    converted = hotsql.psycopg_sql(name).decode()
    binds = set(re.findall(r"%\((\w+)\)s", converted))
    assert binds == set(q(name).compile().params)  # the same names text() binds


def test_casts_percent_signs_and_escaped_colons(monkeypatch: pytest.MonkeyPatch) -> None:
    hotsql.psycopg_sql.cache_clear()
    monkeypatch.setattr(hotsql, "sql", lambda name: (
        "SELECT :a, x::int, x LIKE '5%', '\\:literal', now()::date WHERE id = :id_1"))
    try:
        assert hotsql.psycopg_sql("any") == (
            b"SELECT %(a)s, x::int, x LIKE '5%%', ':literal', now()::date WHERE id = %(id_1)s")
    finally:
        hotsql.psycopg_sql.cache_clear()
