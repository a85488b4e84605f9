"""Fault-injection tests: real PostgreSQL, real worker processes, faults injected from
outside (SIGKILL, a stopped database, a broken storage folder, a provider storm, duplicate
deliveries). Shared helpers live here so each test file reads like its scenario."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, text

from tests.conftest import wait_for
from tests.support.worker_api import submit  # noqa: F401  (its files import it from here)

TASK = "/api/admin/worker/process-task"


def rows_by_status(engine: Engine, job_id: str) -> dict[str, int]:
    with engine.connect() as conn:
        return {status: int(n) for status, n in conn.execute(text(
            "SELECT status, count(*) FROM generation_tasks WHERE job_id = :j GROUP BY status"),
            {"j": job_id}).all()}


def wait_finished(engine: Engine, job_id: str, timeout_s: float = 60.0) -> dict[str, int]:
    """Wait until no task of the job is pending, queued or running (read from the rows, so
    it works while the worker is down)."""
    def finished() -> dict[str, int] | None:
        rows = rows_by_status(engine, job_id)
        busy = sum(rows.get(s, 0) for s in ("pending", "queued", "running"))
        return rows if busy == 0 else None

    result: dict[str, int] = wait_for(finished, timeout_s=timeout_s, interval_s=0.2,
                                      message=f"job {job_id} to finish")
    return result


def assert_counters_match_rows(engine: Engine, job_id: str) -> dict[str, int]:
    """The job's counters equal GROUP BY status over its task rows, read in one statement
    (one snapshot: deliveries keep landing while a running batch is checked)."""
    with engine.connect() as conn:
        found = conn.execute(text(
            "SELECT j.completed_tasks, j.failed_tasks, j.cancelled_tasks, j.total_tasks, "
            "       (SELECT json_object_agg(status, n) FROM (SELECT status, count(*) AS n "
            "          FROM generation_tasks WHERE job_id = j.id GROUP BY status) s) AS rows "
            "  FROM generation_jobs j WHERE j.id = :j"), {"j": job_id}).one()
    rows = {status: int(n) for status, n in (found.rows or {}).items()}
    counters = (found.completed_tasks, found.failed_tasks, found.cancelled_tasks,
                found.total_tasks)
    truth = (rows.get("succeeded", 0), rows.get("failed", 0), rows.get("cancelled", 0),
             sum(rows.values()))
    assert counters == truth, f"counters {counters} != rows {truth} ({rows})"
    return rows


def stored_objects(images_root: Path, job_id: str) -> tuple[set[str], set[str], list[Path]]:
    """(task ids with an image, task ids with a thumbnail, temporary files left over)."""
    job_dir = images_root / job_id
    # pathlib's glob also matches dot files: temporary files are counted apart.
    pngs = {p.stem for p in job_dir.glob("*.png") if not p.name.startswith(".")}
    thumbs = {p.stem for p in (job_dir / "thumbs").glob("*.webp") if not p.name.startswith(".")}
    leftovers = [p for p in images_root.rglob("*") if p.name.startswith(".tmp-")]
    return pngs, thumbs, leftovers


def task_ids(engine: Engine, job_id: str, status: str | None = None) -> set[str]:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT id FROM generation_tasks WHERE job_id = :j "
            "AND (CAST(:s AS text) IS NULL OR status = :s)"), {"j": job_id, "s": status}).all()
    return {str(r.id) for r in rows}


def assert_exactly_once(engine: Engine, images_root: Path, job_id: str) -> None:
    """One success row per succeeded task, its image and thumbnail stored once under the
    ids-only key, no other object, no temporary file left visible."""
    succeeded = task_ids(engine, job_id, "succeeded")
    pngs, thumbs, leftovers = stored_objects(images_root, job_id)
    assert pngs == succeeded, f"{len(pngs)} images for {len(succeeded)} succeeded tasks"
    assert thumbs == succeeded
    assert leftovers == []
    with engine.connect() as conn:
        wrong = conn.execute(text(
            "SELECT count(*) FROM generation_tasks WHERE job_id = :j AND status = 'succeeded' "
            "AND image_path <> job_id::text || '/' || id::text || '.png'"),
            {"j": job_id}).scalar()
    assert wrong == 0
