"""Staging of paid model answers: an image is paid for once.

When the model answered but storing the image (or recording the success) failed, the
answer's bytes are kept here, keyed by task id, and the task's next attempt stores them
instead of calling the model again. Removed once the success is recorded.

Why a folder and not the database: the failures this covers include the database itself
(the image stored, the success not recorded), a PNG of 1-3 MB in a hot table's row would
bloat it, and a file costs the success path nothing (it is only looked at on attempts
after the first, and written only after a failure). The limit: on Cloud Run the folder is
the instance's own (in memory), so a retry landing on another instance pays again; the
local worker and a single instance are covered fully. Writes are write-then-rename, so a
crash never leaves half an answer to be stored.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from uuid import UUID

from core.providers.base import GeneratedImage

log = logging.getLogger(__name__)


class Staging:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _paths(self, task_id: UUID) -> tuple[Path, Path]:
        name = str(UUID(str(task_id)))  # a uuid: never a path of its own
        return self.root / f"{name}.bin", self.root / f"{name}.json"

    def keep(self, task_id: UUID, image: GeneratedImage) -> bool:
        """Stage ``image`` for the task's next attempt (in a worker thread). False (logged)
        if the folder cannot be written: the next attempt then calls the model again."""
        data_path, meta_path = self._paths(task_id)
        meta = {"content_type": image.content_type, "input_tokens": image.input_tokens,
                "output_tokens": image.output_tokens, "bytes": len(image.data)}
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            _write_atomic(data_path, image.data)
            _write_atomic(meta_path, json.dumps(meta).encode())
        except OSError as exc:
            log.warning("could not stage a paid model answer: %s", exc.strerror or exc,
                        extra={"action": "staging_error", "task_id": str(task_id)})
            return False
        return True

    def take(self, task_id: UUID) -> GeneratedImage | None:
        """The staged answer of the task, if a previous attempt left one whole."""
        data_path, meta_path = self._paths(task_id)
        try:
            meta = json.loads(meta_path.read_bytes())
            data = data_path.read_bytes()
        except (OSError, ValueError):
            return None
        if len(data) != meta.get("bytes"):
            return None
        return GeneratedImage(data=data, content_type=str(meta["content_type"]),
                              input_tokens=meta.get("input_tokens"),
                              output_tokens=meta.get("output_tokens"))

    def drop(self, task_id: UUID) -> None:
        for path in self._paths(task_id):
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
