"""Dispatch: handing tasks to a queue (Cloud Tasks, or the PostgreSQL-backed local one)."""

from __future__ import annotations

from collections import OrderedDict

from core.config import Settings, get_settings
from core.dispatch.base import Dispatcher, EnqueueResult, TaskRef

__all__ = ["Dispatcher", "EnqueueResult", "TaskRef", "get_dispatcher"]

# A process uses one settings object (get_settings()); tests and the CLI make a few more.
# The cache holds the settings it was made for, so an id cannot be reused while cached,
# and keeps the last few: an evicted Cloud Tasks dispatcher's thread pool ends with it.
MAX_CACHED_DISPATCHERS = 4
_dispatchers: OrderedDict[int, tuple[Settings, Dispatcher]] = OrderedDict()


def get_dispatcher(settings: Settings | None = None) -> Dispatcher:
    """Cloud Tasks when USE_CLOUD_TASKS, else the local table-backed queue; one per
    settings object, the last MAX_CACHED_DISPATCHERS of them kept."""
    settings = settings or get_settings()
    cached = _dispatchers.get(id(settings))
    if cached is not None and cached[0] is settings:
        _dispatchers.move_to_end(id(settings))
        return cached[1]
    dispatcher: Dispatcher
    if settings.USE_CLOUD_TASKS:
        from core.dispatch.cloudtasks.dispatcher import CloudTasksDispatcher

        dispatcher = CloudTasksDispatcher.from_settings(settings)
    else:
        from core.dispatch.local.dispatcher import LocalDispatcher

        dispatcher = LocalDispatcher(settings)
    _dispatchers[id(settings)] = (settings, dispatcher)
    while len(_dispatchers) > MAX_CACHED_DISPATCHERS:
        _dispatchers.popitem(last=False)
    return dispatcher
