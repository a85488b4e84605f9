"""The storage interface and the object naming rule."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID


@dataclass(frozen=True)
class ObjectKeys:
    image: str
    thumbnail: str


def object_keys(job_id: UUID, task_id: UUID) -> ObjectKeys:
    """Object paths come from ids only, never from prompt text: no traversal, no clashes,
    and a redelivered task writes the same keys (overwrite, never a duplicate)."""
    job, task = UUID(str(job_id)), UUID(str(task_id))  # re-parse: refuses anything else
    return ObjectKeys(image=f"{job}/{task}.png", thumbnail=f"{job}/thumbs/{task}.webp")


class Storage(Protocol):
    name: str

    def save(self, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` under ``key`` atomically, overwriting; raise StorageError."""
        ...

    def read(self, key: str) -> bytes:
        """The bytes under ``key``; raise StorageError if missing or unreachable."""
        ...

    def url(self, key: str) -> str:
        """A URL a browser can load the object from (public, signed or a worker route)."""
        ...

    def delete(self, keys: Sequence[str]) -> None:
        """Remove these objects; a key already gone is not an error; raise StorageError."""
        ...
