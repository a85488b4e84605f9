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
