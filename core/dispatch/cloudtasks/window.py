"""Cloud Tasks mode's bounded window: PostgreSQL decides what runs next; the
queue holds at most CLOUD_TASKS_WINDOW tasks over all jobs, refilled from the table as
tasks finish.

Rows wait ``pending`` in the table (the outbox's state: written, not handed over). A refill
picks as many as the window has room for, in the fair-share order (``window_pick``,
core/dispatch/cloudtasks/window.sql; rule core.dispatch.fair), holds them briefly so two
refills never pick the same row, creates their named Cloud Tasks
(core.dispatch.cloudtasks.dispatcher: a repeat is AlreadyExists) and marks them queued.
Everything the delivery contract relies on stays:
a task is ``queued`` only once its Cloud Task exists; a refill cut short leaves its rows
pending with a hold that runs out (``WINDOW_HOLD_S``), and the next refill (the next
completion, the worker's periodic Cloud Tasks check, the sweeper) picks them again.

Refills run after each completed delivery (worker/routes/tasks.py, off the request
path), after a submit, a retry-failed, a priority or cap change, and every
LEASE_CHECK_INTERVAL_S. Pause and cancel act at once: the queue holds few tasks.
"""

from __future__ import annotations

import logging
import threading
from uuid import UUID

from sqlalchemy import Engine

from core.config import Settings
from core.db import transaction
from core.db.queries import q
from core.dispatch.base import Dispatcher, EnqueueResult, TaskRef

log = logging.getLogger(__name__)

# A refill's hold on the rows it picked, while their Cloud Tasks are created.
WINDOW_HOLD_S = 30.0
# Rounds per refill call: a round hands over at most the window's free room.
MAX_ROUNDS = 20


def refill(dispatcher: Dispatcher, *, window: int, starvation_s: float,
           engine: Engine | None = None) -> EnqueueResult:
    """Fill the window from the table: returns what was handed over."""
    total = EnqueueResult()
    for _ in range(MAX_ROUNDS):
        with transaction(engine) as conn:
            conn.execute(q("window_lock"))
            rows = conn.execute(q("window_pick"), {"window": window,
                                                   "starvation_s": starvation_s,
                                                   "hold_s": WINDOW_HOLD_S}).all()
        if not rows:
            break
        result = dispatcher.enqueue([TaskRef(r.id, r.dispatch_generation) for r in rows])
        total.add(result)
        if result.failed:
            # Free what was not handed over: the next refill tries again, not after the hold.
            with transaction(engine) as conn:
                conn.execute(q("window_release_holds"), {"ids": [r.id for r in rows]})
            break
    if total.enqueued or total.failed:
        log.info("window refilled", extra={"action": "window_refill",
                                           "enqueued": total.enqueued,
                                           "failed": total.failed, "window": window})
    return total


class Refiller:
    """Coalesces refill requests: one refill runs at a time, and a request that arrives
    while one runs makes it run once more (so a completion is never missed)."""

    def __init__(self, dispatcher: Dispatcher, *, window: int, starvation_s: float,
                 engine: Engine | None = None) -> None:
        self.dispatcher = dispatcher
        self.window = window
        self.starvation_s = starvation_s
        self.engine = engine
        self._lock = threading.Lock()
        self._running = False
        self._again = False

    def request(self) -> None:
        """Refill now in this thread, or leave it to the refill already running."""
        with self._lock:
            if self._running:
                self._again = True
                return
            self._running = True
        while True:
            self._again = False
            try:
                refill(self.dispatcher, window=self.window, starvation_s=self.starvation_s,
                       engine=self.engine)
            except Exception as exc:  # the periodic check refills later
                log.warning("window refill failed: %s", type(exc).__name__,
                            extra={"action": "window_refill_error"})
            with self._lock:
                if not self._again:
                    self._running = False
                    return


_refillers: dict[int, Refiller] = {}


def get_refiller(settings: Settings, engine: Engine | None = None) -> Refiller:
    """The process's refiller for these settings (Cloud Tasks mode)."""
    key = id(settings)
    if key not in _refillers:
        from core.dispatch import get_dispatcher

        _refillers[key] = Refiller(get_dispatcher(settings), window=settings.CLOUD_TASKS_WINDOW,
                                   starvation_s=settings.PRIORITY_STARVATION_S,
                                   engine=engine)
    return _refillers[key]


def cancel_window(dispatcher: Dispatcher, job_id: UUID, *, engine: Engine | None = None
                  ) -> tuple[list[str], int]:
    """Before a job is cancelled in Cloud Tasks mode: the names of the Cloud Tasks it holds
    in the window. ``drop_window`` deletes them once the rows are cancelled."""
    with transaction(engine) as conn:
        names = [r.cloud_task_name for r in conn.execute(q("job_queued_cloud_tasks"),
                                                         {"job_id": job_id}).all()]
    return names, len(names)


def drop_window(dispatcher: Dispatcher, names: list[str]) -> int:
    """Delete a cancelled job's Cloud Tasks: no delivery of it starts after the cancel. A
    delivery racing the delete finds its task cancelled (answered 200, no model call)."""
    delete = getattr(dispatcher, "delete", None)
    if delete is None or not names:
        return 0
    deleted = int(delete(names))
    log.info("cancelled job's Cloud Tasks deleted", extra={
        "action": "window_cancel", "deleted": deleted, "held": len(names)})
    return deleted
