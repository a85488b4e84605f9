"""Local folder storage: images under LOCAL_STORAGE_DIR, served by the worker."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from core.errors import StorageError

LOCAL_URL_PREFIX = "/images/"


class LocalStorage:
    name = "local"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()

    def path_for(self, key: str) -> Path:
        """The file for ``key``, refusing anything that would leave the root."""
        if not key or key.startswith("/") or "\\" in key or "\x00" in key:
            raise StorageError(f"invalid object key {key!r}")
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise StorageError(f"invalid object key {key!r}")
        return path

    def save(self, key: str, data: bytes, content_type: str) -> None:
        path = self.path_for(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write beside the target, then rename: a reader never sees half an image.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise StorageError(f"could not write {key}: {exc.strerror or exc}") from exc

    def read(self, key: str) -> bytes:
        try:
            return self.path_for(key).read_bytes()
        except OSError as exc:
            raise StorageError(f"could not read {key}: {exc.strerror or exc}") from exc

    def url(self, key: str) -> str:
        self.path_for(key)
        return LOCAL_URL_PREFIX + key
