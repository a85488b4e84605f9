"""The job status rule spelled in SQL (job_status_after / job_finished_at_after in
sql/init_db.sql, used by every statement that moves a job's counters) against the rule in
core.status, over every combination of a small job's counters, on a real PostgreSQL."""

from __future__ import annotations

import itertools

from sqlalchemy import Engine, text

from core.config import Settings
from core.status import JOB_TERMINAL, job_status_after

STATUSES = ("pending", "running", "completed", "completed_with_errors", "failed", "cancelled")


def test_sql_status_rule_is_the_python_rule(settings: Settings, engine: Engine) -> None:
    cases = [(status, 3, c, f, x) for status in STATUSES
             for c, f, x in itertools.product(range(4), repeat=3) if c + f + x <= 3]
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT s, t AS total, c, f, x, job_status_after(s, t, c, f, x) AS after, "
            "job_finished_at_after(s, NULL, t, c, f, x) IS NOT NULL AS finishes "
            "FROM unnest(CAST(:s AS text[]), CAST(:t AS int[]), CAST(:c AS int[]), "
            "CAST(:f AS int[]), CAST(:x AS int[])) AS u(s, t, c, f, x)"), {
                "s": [k[0] for k in cases], "t": [k[1] for k in cases],
                "c": [k[2] for k in cases], "f": [k[3] for k in cases],
                "x": [k[4] for k in cases]}).all()
    assert len(rows) == len(cases) == 6 * 20
    for r in rows:
        assert r.after == job_status_after(r.s, total=r.total, completed=r.c, failed=r.f,
                                           cancelled=r.x), r
        # finished once: when the counters reach the total of a job not yet ended
        assert r.finishes == (r.s not in JOB_TERMINAL and r.c + r.f + r.x >= r.total), r
