"""The dispatcher interface."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol
from uuid import UUID


@dataclass(frozen=True)
class TaskRef:
    id: UUID
    generation: int = 0


@dataclass
class EnqueueResult:
    enqueued: int = 0
    already_enqueued: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, other: EnqueueResult) -> None:
        """Count ``other`` (one round of a refill or sweep) into this total; the first
        few errors of each round are kept."""
        self.enqueued += other.enqueued
        self.already_enqueued += other.already_enqueued
        self.failed += other.failed
        self.errors.extend(other.errors[:5])


class Dispatcher(Protocol):
    name: str

    def enqueue(self, tasks: Sequence[TaskRef]) -> EnqueueResult:
        """Hand tasks (already committed as pending) to the queue, then mark them queued.

        Must be safe to call twice for the same (task, generation): the second call is a
        no-op. Tasks it could not hand over stay pending for the sweeper.
        """
        ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def is_paused(self) -> bool: ...


class TaskLookup(Protocol):
    """Optional: a queue that can say whether it still holds a task (Cloud Tasks). The
    local queue has no need: its table is the queue and its loop re-delivers expired leases.
    """

    def task_name(self, task: TaskRef) -> str:
        """The queue's name for this hand-over of the task."""
        ...

    def holds(self, task_name: str) -> bool | None:
        """True: the queue still has it; False: it is gone; None: cannot tell."""
        ...

    def queue_running(self) -> bool | None:
        """True when the queue exists and delivers; False when paused; None: cannot tell."""
        ...
