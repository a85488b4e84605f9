"""The local queue: the generation_tasks table itself. Enqueueing marks rows queued; the
dispatch loop (core.dispatch.local.loop) delivers them to the worker over HTTP."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine

from core.config import Settings
from core.db import transaction
from core.db.queries import q
from core.dispatch import queue_state
from core.dispatch.base import EnqueueResult, TaskRef

# Large batches are marked in slices so one UPDATE never holds thousands of row locks
# for long while deliveries try to claim the same rows.
ENQUEUE_SLICE = 5000


class LocalDispatcher:
    name = "local"

    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self._engine = engine

    def enqueue(self, tasks: Sequence[TaskRef]) -> EnqueueResult:
        result = EnqueueResult()
        ids = [t.id for t in tasks]
        for start in range(0, len(ids), ENQUEUE_SLICE):
            chunk = ids[start : start + ENQUEUE_SLICE]
            with transaction(self._engine) as conn:
                moved = conn.execute(
                    q("mark_tasks_queued"), {"ids": chunk, "cloud_task_name": None}
                ).rowcount
            result.enqueued += moved
            result.already_enqueued += len(chunk) - moved
        return result

    def pause(self) -> None:
        queue_state.set_paused(self.settings.QUEUE_NAME, True, self._engine)

    def resume(self) -> None:
        queue_state.set_paused(self.settings.QUEUE_NAME, False, self._engine)

    def is_paused(self) -> bool:
        return queue_state.is_paused(self.settings.QUEUE_NAME, self._engine)
