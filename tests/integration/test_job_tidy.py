"""Delete (with images, audited), retention, clone and edit-and-resubmit through the real
worker and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy import Engine, text

from core.jobs import retention
from core.status import job_status_after
from core.storage.local import LocalStorage
from tests.conftest import WorkerProcess, wait_for
from tests.integration.test_end_to_end import assert_counters_match_rows
from tests.support.worker_api import job_status, submit, wait_done


def _files(root: Path, job_id: str) -> list[Path]:
    return [p for p in (root / job_id).rglob("*") if p.is_file()] if (root / job_id).exists() \
        else []


def test_delete_refuses_running_then_removes_rows_and_images_with_audit(
    start_worker: Callable[..., WorkerProcess], env: dict[str, str], engine: Engine,
) -> None:
    images = Path(env["LOCAL_STORAGE_DIR"])
    worker = start_worker(DEMO_LATENCY_MS="300", LOCAL_MAX_CONCURRENCY="1")
    job = submit(worker, [f"p{i}" for i in range(6)], name="to delete")
    refused = httpx.delete(f"{worker.url}/api/admin/jobs/{job['id']}")
    assert refused.status_code == 409
    assert "cancel it first" in refused.json()["detail"]
    assert httpx.post(f"{worker.url}/api/admin/jobs/{job['id']}/cancel").status_code == 200
    wait_for(lambda: httpx.delete(f"{worker.url}/api/admin/jobs/{job['id']}").status_code
             == 200, timeout_s=30, message="delete after the running task finished")
    assert httpx.get(f"{worker.url}/api/admin/jobs/{job['id']}").status_code == 404
    assert _files(images, job["id"]) == []

    done = submit(worker, ["a", "b"])
    wait_done(worker, done["id"])
    assert len(_files(images, done["id"])) == 4  # two images, two thumbnails
    r = httpx.delete(f"{worker.url}/api/admin/jobs/{done['id']}")
    assert r.status_code == 200 and r.json() == {
        "deleted": done["id"], "tasks": 2, "objects_deleted": 4}
    assert _files(images, done["id"]) == []
    with engine.connect() as conn:
        left = conn.execute(text("SELECT count(*) FROM generation_tasks WHERE job_id = :j"),
                            {"j": done["id"]}).scalar()
    assert left == 0
    entries = httpx.get(f"{worker.url}/api/admin/audit").json()["entries"]
    assert [(e["action"], e["job_id"]) for e in entries[:2]] == [
        ("delete_job", done["id"]), ("delete_job", job["id"])]
    assert entries[0]["actor"].startswith("anonymous") and entries[0]["at"]
    assert httpx.delete(f"{worker.url}/api/admin/jobs/{done['id']}").status_code == 404


def test_retention_deletes_only_jobs_finished_long_enough_ago(
    start_worker: Callable[..., WorkerProcess], env: dict[str, str], engine: Engine,
) -> None:
    worker = start_worker()
    old, new = submit(worker, ["old"]), submit(worker, ["new"])
    wait_done(worker, old["id"])
    wait_done(worker, new["id"])
    with engine.begin() as conn:
        conn.execute(text("UPDATE generation_jobs SET finished_at = now() - interval '31 days'"
                          " WHERE id = :j"), {"j": old["id"]})
    worker.stop()
    # The sweep runs when the worker starts, then every RETENTION_SWEEP_INTERVAL_S.
    worker.env["JOB_RETENTION_DAYS"] = "30"
    worker.start()
    wait_for(lambda: httpx.get(f"{worker.url}/api/admin/jobs/{old['id']}").status_code == 404,
             timeout_s=20, message="retention delete")
    assert httpx.get(f"{worker.url}/api/admin/jobs/{new['id']}").status_code == 200
    assert not _files(Path(env["LOCAL_STORAGE_DIR"]), old["id"])
    actors = {e["actor"] for e in httpx.get(f"{worker.url}/api/admin/audit").json()["entries"]}
    assert actors == {"retention (JOB_RETENTION_DAYS)"}
    # Off by default: the same call with a far longer period deletes nothing.
    assert retention.sweep_expired(10_000, LocalStorage(env["LOCAL_STORAGE_DIR"]),
                                   engine=engine) == []


def test_clone_and_resubmit_an_edited_refused_prompt(
    start_worker: Callable[..., WorkerProcess], engine: Engine,
) -> None:
    worker = start_worker(MAX_ATTEMPTS="1")
    job = submit(worker, ["a teapot", "a nude [[demo:moderation_blocked]]", "a cup"],
                  name="Kitchen", tags=["kitchen"])
    wait_done(worker, job["id"])
    failed = httpx.get(f"{worker.url}/api/admin/jobs/{job['id']}/tasks",
                       params={"status": "failed"}).json()["tasks"]
    assert [t["last_error_code"] for t in failed] == ["moderation_blocked"]
    url = f"{worker.url}/api/admin/jobs/{job['id']}/tasks/{failed[0]['id']}/resubmit"
    assert httpx.post(url, json={"prompt": "  "}).json()["field"] == "prompt"
    r = httpx.post(url, json={"prompt": "a teapot in a blue glaze"})
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["total_tasks"]) == ("running", 4)
    again = httpx.post(url, json={"prompt": "a teapot in a red glaze"})
    assert again.status_code == 409 and "already resubmitted" in again.json()["detail"]
    final = wait_done(worker, job["id"])
    assert (final["total_tasks"], final["completed_tasks"], final["failed_tasks"]) == (4, 3, 1)
    # The SQL rule that ended the job again agrees with core.status.
    assert final["status"] == job_status_after("running", total=4, completed=3, failed=1,
                                               cancelled=0) == "completed_with_errors"
    assert_counters_match_rows(engine, job["id"])
    retried = httpx.post(f"{worker.url}/api/admin/jobs/{job['id']}/retry-failed").json()
    assert retried["requeued"] == 0  # the replaced refusal is history, not retried
    ok = httpx.get(f"{worker.url}/api/admin/jobs/{job['id']}/tasks",
                   params={"status": "succeeded"}).json()["tasks"]
    assert "a teapot in a blue glaze" in [t["prompt"] for t in ok]
    not_failed = httpx.post(f"{worker.url}/api/admin/jobs/{job['id']}/tasks/"
                            f"{ok[0]['id']}/resubmit", json={"prompt": "x"})
    assert not_failed.status_code == 409

    clone = httpx.post(f"{worker.url}/api/admin/jobs/{job['id']}/clone")
    assert clone.status_code == 200, clone.text
    copy = wait_done(worker, clone.json()["id"])
    assert copy["total_tasks"] == 3 and copy["failed_tasks"] == 0  # the edit, not the refusal
    detail = httpx.get(f"{worker.url}/api/admin/jobs/{copy['id']}").json()
    assert (detail["name"], detail["tags"]) == ("Kitchen (copy)", ["kitchen"])
    prompts = [t["prompt"] for t in httpx.get(
        f"{worker.url}/api/admin/jobs/{copy['id']}/tasks").json()["tasks"]]
    assert prompts == ["a teapot", "a cup", "a teapot in a blue glaze"]
    assert job_status(worker, job["id"])["total_tasks"] == 4
