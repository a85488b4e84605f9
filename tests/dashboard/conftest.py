"""Dashboard fixtures: the app under streamlit.testing.v1.AppTest against the test's real
PostgreSQL, and jobs seeded through real deliveries (core.delivery.processing.TaskProcessor with the
demo model and its failure markers), not hand-written rows."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from uuid import UUID

import pytest
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import create_async_engine
from streamlit.testing.v1 import AppTest

from core import db
from core.config import Settings
from core.delivery.processing import DeliveryOutcome, TaskProcessor
from core.jobs import lifecycle, views
from core.jobs.validation import limits_from_settings, validate_batch
from core.providers import get_provider
from core.storage import get_storage
from tests.conftest import REPO_ROOT

APP = str(REPO_ROOT / "dashboard" / "app.py")
RUN_TIMEOUT_S = 60


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    # Small demo pictures: seeding draws real PNGs, and the tests only need them to exist.
    env["DEMO_IMAGE_PX"] = "64"
    return env


def app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=RUN_TIMEOUT_S)


def open_page(page: str, **query: str) -> AppTest:
    """The app run once (navigation registered), then switched to ``page``."""
    at = app().run()
    assert not at.exception, at.exception
    at.switch_page(page)
    at.query_params.update(query)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def submit(settings: Settings, engine: Engine, prompts: Sequence[str], count: int = 1
           ) -> views.JobView:
    spec = validate_batch(list(prompts), "none", count, limits_from_settings(settings))
    return lifecycle.submit_batch(spec, engine=engine, settings=settings)


def deliver(settings: Settings, task_ids: Sequence[UUID]) -> list[DeliveryOutcome]:
    """Run one real delivery per task, as the worker's task endpoint would."""

    async def run() -> list[DeliveryOutcome]:
        aengine = create_async_engine(db.resolve_database_url(settings))
        processor = TaskProcessor(settings, aengine,
                                  lambda name: get_provider(name, settings),
                                  get_storage(settings))
        try:
            return [await processor.process(task_id) for task_id in task_ids]
        finally:
            await aengine.dispose()

    return asyncio.run(run())


def seeded_job(settings: Settings, engine: Engine, prompts: Sequence[str]) -> views.JobView:
    """A job whose every task was delivered once: markers fail, the rest succeed."""
    job = submit(settings, engine, prompts)
    tasks = views.list_tasks(job.id, limit=1000, engine=engine)
    outcomes = deliver(settings, [t.id for t in tasks])
    assert all(o.http_status == 200 for o in outcomes), outcomes
    return views.get_job(job.id, engine=engine)
