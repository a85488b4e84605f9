"""The job counter rule in SQL (job_tasks_ended in sql/init_db.sql, which every statement
that ends a task calls) against the rule in core.status, on real job rows of a real
PostgreSQL: every starting status, every end state of a 3-task job's counters and every
move of succeeded / failed tasks that reaches it. The statements that end tasks of several
jobs move those jobs in job id order (their lock order)."""

from __future__ import annotations

import itertools
import uuid

from sqlalchemy import Engine, text

from core.config import Settings
from core.db.queries import q
from core.status import JOB_TERMINAL, job_status_after

STATUSES = ("pending", "running", "completed", "completed_with_errors", "failed", "cancelled")
TOTAL = 3


def test_sql_counter_rule_is_the_python_rule(settings: Settings, engine: Engine) -> None:
    # (status before, counters after: completed, failed, cancelled; the move: succeeded,
    # failed), with the counters before = after - move.
    cases = [(status, c, f, x, dc, df) for status in STATUSES
             for c, f, x in itertools.product(range(TOTAL + 1), repeat=3) if c + f + x <= TOTAL
             for dc in range(c + 1) for df in range(f + 1)]
    ids = [uuid.uuid4() for _ in cases]
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO generation_jobs (id, status, total_tasks, completed_tasks, "
            "failed_tasks, cancelled_tasks, style, count_per_prompt, provider, model, size, "
            "quality) SELECT id, s, :total, c, f, x, 'none', 1, 'demo', 'demo', '1024x1024', "
            "'low' FROM unnest(CAST(:id AS uuid[]), CAST(:s AS text[]), CAST(:c AS int[]), "
            "CAST(:f AS int[]), CAST(:x AS int[])) AS u(id, s, c, f, x)"), {
                "total": TOTAL, "id": ids, "s": [k[0] for k in cases],
                "c": [k[1] - k[4] for k in cases], "f": [k[2] - k[5] for k in cases],
                "x": [k[3] for k in cases]})
        rows = conn.execute(text(
            "SELECT moved.* FROM unnest(CAST(:id AS uuid[]), CAST(:dc AS int[]), "
            "CAST(:df AS int[])) WITH ORDINALITY AS u(id, dc, df, n) "
            "CROSS JOIN LATERAL job_tasks_ended(u.id, u.dc, u.df) moved ORDER BY u.n"), {
                "id": ids, "dc": [k[4] for k in cases], "df": [k[5] for k in cases]}).all()
        # A statement of its own: the function's UPDATE is not in the calling one's snapshot.
        finished = dict(conn.execute(text(
            "SELECT id, finished_at IS NOT NULL FROM generation_jobs WHERE id = ANY(:id)"),
            {"id": ids}).all())
    assert len(rows) == len(cases) > 6 * 20  # every end state, most of them by several moves
    for row, job_id, (status, c, f, x, dc, df) in zip(rows, ids, cases, strict=True):
        case = (status, c, f, x, dc, df)
        assert (row.id, row.total_tasks) == (job_id, TOTAL), case
        assert (row.completed_tasks, row.failed_tasks, row.cancelled_tasks) == (c, f, x), case
        assert row.status == job_status_after(status, total=TOTAL, completed=c, failed=f,
                                              cancelled=x), case
        # finished once: when the counters reach the total of a job not yet ended
        assert finished[job_id] == (status not in JOB_TERMINAL and c + f + x >= TOTAL), case


def test_a_job_that_is_gone_moves_nothing(settings: Settings, engine: Engine) -> None:
    with engine.begin() as conn:
        assert conn.execute(text("SELECT * FROM job_tasks_ended(:id, 1, 0)"),
                            {"id": uuid.uuid4()}).all() == []


def _ends(task_ids: list[uuid.UUID], tokens: list[uuid.UUID], status: str,
          **columns: list[str]) -> dict[str, object]:
    """end_tasks' binds for these tasks, all ending as ``status``: every column an array."""
    names = ("image_path", "thumbnail_path", "input_tokens", "output_tokens", "error_code",
             "error_message")
    return {"task_id": task_ids, "token": tokens, "status": [status] * len(task_ids),
            "latency_ms": [1] * len(task_ids),
            **{n: columns.get(n, [None] * len(task_ids)) for n in names}}


def _job(conn: object, job_id: uuid.UUID) -> None:
    conn.execute(text(  # type: ignore[attr-defined]
        "INSERT INTO generation_jobs (id, status, total_tasks, style, count_per_prompt, "
        "provider, model, size, quality) VALUES (:id, 'running', 2, 'none', 1, 'demo', "
        "'demo', '1024x1024', 'low')"), {"id": job_id})


def test_statements_that_end_tasks_of_several_jobs_move_them_in_id_order(
        settings: Settings, engine: Engine) -> None:
    jobs = sorted(uuid.uuid4() for _ in range(3))
    # Task ids in the reverse order of their jobs': the callers sort by task id.
    tasks = sorted((uuid.uuid4() for _ in range(6)), reverse=True)
    tokens = [uuid.uuid4() for _ in tasks]
    with engine.begin() as conn:
        conn.execute(text(
            "CREATE TABLE moved_jobs (n serial PRIMARY KEY, job_id uuid NOT NULL);"
            "CREATE FUNCTION note_moved_job() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO moved_jobs (job_id) VALUES (NEW.id); RETURN NEW; END $$;"
            "CREATE TRIGGER note_moved_job BEFORE UPDATE ON generation_jobs FOR EACH ROW "
            "EXECUTE FUNCTION note_moved_job()"))
        for job_id in jobs:
            _job(conn, job_id)
        for n, (task_id, token) in enumerate(zip(tasks, tokens, strict=True)):
            # Tasks 0-2 (jobs 0-2) and 3-5 (jobs 0-2 again), running under a claim; the
            # last three on an expired lease with no attempt left.
            conn.execute(text(
                "INSERT INTO generation_tasks (id, job_id, prompt_index, prompt, style, "
                "status, attempts, claim_token, lease_until) VALUES (:id, :job, :n, 'p', "
                "'none', 'running', 1, :token, now() + make_interval(secs => :lease_s))"),
                {"id": task_id, "job": jobs[n % 3], "n": n, "token": token,
                 "lease_s": 60 if n < 3 else -60})
    order = text("SELECT job_id FROM moved_jobs ORDER BY n")
    with engine.begin() as conn:
        done = conn.execute(q("end_tasks"), _ends(
            tasks[:2], tokens[:2], "succeeded", image_path=["a", "b"],
            thumbnail_path=["a", "b"])).all()
        assert {r.task_id for r in done} == set(tasks[:2])
        assert conn.execute(order).scalars().all() == [jobs[0], jobs[1]]
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE moved_jobs"))
        failed = conn.execute(q("take_over_abandoned"), {
            "owner": None, "boot": None, "task_ids": None, "limit": 10, "max_attempts": 1,
            "to_status": "queued"}).all()
        assert {(r.id, r.status) for r in failed} == {(t, "failed") for t in tasks[3:]}
        assert conn.execute(order).scalars().all() == jobs
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE moved_jobs"))
        conn.execute(q("end_tasks"), _ends(
            [tasks[2]], [tokens[2]], "failed", error_code=["x"], error_message=["x"])).all()
        assert conn.execute(order).scalars().all() == [jobs[2]]
        final = conn.execute(text("SELECT id, status, completed_tasks, failed_tasks "
                                  "FROM generation_jobs ORDER BY id")).all()
    assert [tuple(r) for r in final] == [(jobs[0], "completed_with_errors", 1, 1),
                                         (jobs[1], "completed_with_errors", 1, 1),
                                         (jobs[2], "failed", 0, 2)]
