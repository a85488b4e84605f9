"""Undeliverable deliveries on the dashboard: a banner on the Queue and Job pages when they do not
reach the task handler (recorded by the real recording function on a real task row), and
"Retry all failed" in Cloud Tasks mode with the queue unreachable says the tasks wait
for the sweeper and gives the error, instead of "Requeued N"."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from core.config import Settings
from core.dispatch import undeliverable
from core.jobs import views
from testing.openai_stub import OpenAIStub
from tests.conftest import free_port
from tests.dashboard.conftest import open_page, seeded_job, submit


def test_queue_and_job_pages_show_undeliverable_deliveries(settings: Settings,
                                                          engine: Engine) -> None:
    job = submit(settings, engine, ["a tram"])
    (task,) = views.list_tasks(job.id, limit=10, engine=engine)
    url = "http://127.0.0.1:9/v2/api/admin/worker/process-task"
    cause = undeliverable.classify(url, status=404)
    assert cause is not None
    with engine.begin() as conn:
        undeliverable.record_sync(conn, task_id=task.id, cause=cause, url=url, max_tries=5,
                                  min_delay_s=0.1, max_delay_s=1.0)
    for page, query in (("app_pages/queue.py", {}),
                        ("app_pages/job.py", {"job_id": str(job.id)})):
        at = open_page(page, **query)
        banners = [e.value for e in at.error]
        assert any("do not reach the task handler" in b and "HTTP 404" in b and url in b
                   for b in banners), (page, banners)


@pytest.fixture
def unreachable_queue(env: dict[str, str]) -> dict[str, str]:
    env.update({"USE_CLOUD_TASKS": "true", "GCP_PROJECT": "p", "QUEUE_NAME": "images",
                "WORKER_URL": "http://127.0.0.1:9",
                # Nothing listens there: every CreateTask fails.
                "CLOUD_TASKS_EMULATOR_HOST": f"127.0.0.1:{free_port()}"})
    return env


@pytest.mark.usefixtures("unreachable_queue")
def test_retry_all_failed_says_the_tasks_wait_for_the_sweeper(settings: Settings,
                                                             engine: Engine) -> None:
    job = seeded_job(settings, engine, ["[[demo:moderation_blocked]] a moth", "a fern"])
    assert job.failed_tasks == 1
    at = open_page("app_pages/job.py", job_id=str(job.id))
    # A refusal is left alone unless asked: ask, so there is one to hand over.
    at.checkbox(key="retry_include_refusals").check().run()
    at.button(key="retry_all").click().run()
    messages = [e.value for e in at.error] + [w.value for w in at.warning]
    assert not any("Requeued 1" in s.value for s in at.success)
    assert any("could not be handed to the queue" in m and "sweeper" in m for m in messages), (
        messages, [s.value for s in at.success])
    with engine.connect() as conn:
        status = conn.execute(text("SELECT status FROM generation_tasks WHERE job_id = :j "
                                   "AND last_error_code = 'moderation_blocked'"),
                              {"j": job.id}).scalar()
    assert status == "pending"  # for the sweeper, not lost


@pytest.fixture
def rejected_key(env: dict[str, str]) -> Iterator[dict[str, str]]:
    with OpenAIStub(api_key="sk-the-right-key") as stub:
        env.update({"IMAGE_PROVIDER": "openai", "OPENAI_API_KEY": "sk-wrong-key-123",
                    "OPENAI_BASE_URL": stub.base_url})
        yield env


@pytest.mark.usefixtures("rejected_key")
def test_queue_page_says_the_provider_is_not_authenticated(settings: Settings) -> None:
    at = open_page("app_pages/queue.py")
    banners = [e.value for e in at.error]
    assert any("not authenticated" in b and "OPENAI_API_KEY was rejected" in b
               for b in banners), banners
    assert not any("sk-wrong-key-123" in b for b in banners)


@pytest.mark.usefixtures("unreachable_queue")
def test_submit_says_when_tasks_did_not_reach_the_queue(settings: Settings,
                                                       engine: Engine) -> None:
    at = open_page("app_pages/submit.py")
    at.text_area(key="prompts_text").set_value("a heron\na reed").run()
    at.button(key="submit").click().run()
    assert any("Submitted job" in s.value for s in at.success)
    messages = [e.value for e in at.error]
    assert any("2 of 2 task(s) could not be handed to the queue" in m and "sweeper" in m
               for m in messages), messages
