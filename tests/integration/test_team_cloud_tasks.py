"""Edit-and-resubmit and clone in Cloud Tasks mode (production settings, the Cloud Tasks
fake, OIDC tokens): the new tasks are handed to the queue and delivered once."""

from __future__ import annotations

import httpx
from sqlalchemy import Engine, text

from testing.cloudtasks_fake import ADMIN, CloudTasksFake
from tests.conftest import WorkerProcess
from tests.support.worker_api import wait_done


def test_resubmitted_and_cloned_tasks_go_through_the_queue(
    prod_worker: WorkerProcess, fake: CloudTasksFake, engine: Engine,
) -> None:
    url = prod_worker.url
    job_id = httpx.post(url + "/api/admin/generate/batch", headers=ADMIN, timeout=30, json={
        "prompts": ["[[demo:moderation_blocked]] a cat", "a dog"], "name": "pets",
    }).json()["id"]  # no webhook: only loopback is ever targeted, and production wants https
    assert wait_done(prod_worker, job_id, 60, headers=ADMIN)["status"] == "completed_with_errors"
    failed = httpx.get(f"{url}/api/admin/jobs/{job_id}/tasks", headers=ADMIN,
                       params={"status": "failed"}).json()["tasks"][0]
    r = httpx.post(f"{url}/api/admin/jobs/{job_id}/tasks/{failed['id']}/resubmit",
                   headers=ADMIN, json={"prompt": "a sleeping cat"}, timeout=30)
    assert r.status_code == 200, r.text
    final = wait_done(prod_worker, job_id, 60, headers=ADMIN)
    assert (final["total_tasks"], final["completed_tasks"], final["failed_tasks"]) == (3, 2, 1)
    with engine.connect() as conn:
        name = conn.execute(text("SELECT cloud_task_name FROM generation_tasks WHERE id = :t"),
                            {"t": r.json()["task_id"]}).scalar_one()
    assert name and len(fake.deliveries_for(name)) == 1

    clone = httpx.post(f"{url}/api/admin/jobs/{job_id}/clone", headers=ADMIN, timeout=30)
    assert clone.status_code == 200, clone.text
    assert wait_done(prod_worker, clone.json()["id"], 60, headers=ADMIN)["status"] == "completed"
    # Production refuses a webhook on a private address, naming only the field.
    bad = httpx.post(url + "/api/admin/generate/batch", headers=ADMIN, timeout=30, json={
        "prompts": ["x"], "webhook_url": "https://169.254.169.254/computeMetadata/SECRET"})
    assert bad.status_code == 422 and bad.json()["field"] == "webhook_url"
    assert "SECRET" not in bad.text and "SECRET" not in prod_worker.logs()
