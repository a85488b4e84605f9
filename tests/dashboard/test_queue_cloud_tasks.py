"""The Queue page against a Cloud Tasks queue (gcloud-tasks-emulator with the real
google-cloud-tasks client): pause and resume change the queue's own state."""

from __future__ import annotations

import pytest
from google.cloud import tasks_v2
from sqlalchemy import Engine

from core.config import Settings
from core.dispatch import get_dispatcher
from core.dispatch.cloudtasks.dispatcher import CloudTasksDispatcher
from tests.dashboard.conftest import open_page


# The emulator's fixtures (tests/support/cloud_tasks.py) set USE_CLOUD_TASKS and friends
# in `env` before `settings`.
@pytest.mark.usefixtures("cloud_env")
def test_queue_page_pauses_and_resumes_the_cloud_tasks_queue(settings: Settings,
                                                             engine: Engine) -> None:
    dispatcher = get_dispatcher(settings)
    assert isinstance(dispatcher, CloudTasksDispatcher)
    dispatcher.create_queue()

    def state() -> tasks_v2.Queue.State:
        return dispatcher.client.get_queue(name=dispatcher.queue_path).state

    at = open_page("app_pages/queue.py")
    assert any(f"Cloud Tasks queue **{settings.QUEUE_NAME}** is running" in s.value
               for s in at.success)

    at.button(key="pause").click().run()
    assert state() == tasks_v2.Queue.State.PAUSED
    assert any("is paused" in w.value for w in at.warning)

    at.button(key="resume").click().run()
    assert state() == tasks_v2.Queue.State.RUNNING
    assert any("is running" in s.value for s in at.success)
