"""Dispatch: handing tasks to a queue (Cloud Tasks, or the PostgreSQL-backed local one)."""

from __future__ import annotations

from core.config import Settings, get_settings
from core.dispatch.base import Dispatcher, EnqueueResult, TaskRef

__all__ = ["Dispatcher", "EnqueueResult", "TaskRef", "get_dispatcher"]

_dispatchers: dict[tuple[bool, int], Dispatcher] = {}


def get_dispatcher(settings: Settings | None = None) -> Dispatcher:
    """Cloud Tasks when USE_CLOUD_TASKS, else the local table-backed queue."""
    settings = settings or get_settings()
    key = (settings.USE_CLOUD_TASKS, id(settings))
    if key not in _dispatchers:
        if settings.USE_CLOUD_TASKS:
            from core.dispatch.cloudtasks.dispatcher import CloudTasksDispatcher

            _dispatchers[key] = CloudTasksDispatcher.from_settings(settings)
        else:
            from core.dispatch.local.dispatcher import LocalDispatcher

            _dispatchers[key] = LocalDispatcher(settings)
    return _dispatchers[key]
