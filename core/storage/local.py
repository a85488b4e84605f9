"""Local folder storage: images under LOCAL_STORAGE_DIR, served by the worker."""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from core.errors import StorageError

LOCAL_URL_PREFIX = "/images/"
TMP_PREFIX = ".tmp-"
_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


class LocalStorage:
    name = "local"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self._inside = str(self.root).rstrip(os.sep) + os.sep  # what every path starts with
        # Folders this process made or found: one mkdir per job folder, not per write.
        self._dirs: set[str] = set()
        # Temporary names: pid (for remove_orphaned_temp_files), a per-instance random
        # part and a counter. tempfile.mkstemp drew six random letters and resolved the
        # folder on every write (a quarter of a tiny image's storage CPU, py-spy).
        self._tmp_tag = secrets.token_hex(4)
        self._tmp_seq = itertools.count()

    def path_for(self, key: str) -> Path:
        """The file for ``key``, refusing anything that would leave the root."""
        return Path(self._resolved(key))

    def _resolved(self, key: str) -> str:
        # Symlinks resolved (one pointing out of the root is refused), as Path.resolve
        # does; on strings, without pathlib's parsing and its parents walk, which were
        # half of a tiny image's write (py-spy on the overhead benchmark).
        if not key or key.startswith("/") or "\\" in key or "\x00" in key:
            raise StorageError(f"invalid object key {key!r}")
        path = os.path.realpath(os.path.join(self._inside, key))
        if not path.startswith(self._inside):
            raise StorageError(f"invalid object key {key!r}")
        return path

    def save(self, key: str, data: bytes, content_type: str) -> None:
        path = self._resolved(key)
        folder = os.path.dirname(path)
        try:
            if folder not in self._dirs:
                os.makedirs(folder, exist_ok=True)
                self._dirs.add(folder)
            # Write beside the target, then rename: a reader never sees half an image.
            # The writer's pid is in the name so a crashed writer's leftovers can be told
            # from a live writer's (remove_orphaned_temp_files).
            fd, tmp = self._temp_file(folder, os.path.splitext(path)[1])
            try:
                try:
                    _write_all(fd, data)
                finally:
                    os.close(fd)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            raise StorageError(f"could not write {key}: {exc.strerror or exc}") from exc

    def _temp_file(self, folder: str, suffix: str) -> tuple[int, str]:
        """An exclusive new temporary file in ``folder`` (O_EXCL: never someone else's)."""
        prefix = f"{folder}/{TMP_PREFIX}{os.getpid()}-{self._tmp_tag}"
        while True:
            # next() on a count is atomic under the GIL: threads never share a name.
            tmp = f"{prefix}-{next(self._tmp_seq)}{suffix}"
            try:
                return os.open(tmp, _TMP_FLAGS, 0o600), tmp
            except FileExistsError:  # a leftover of an earlier process with this pid
                continue
            except FileNotFoundError:  # the folder was removed meanwhile (retention)
                self._dirs.discard(folder)
                os.makedirs(folder, exist_ok=True)
                self._dirs.add(folder)

    def delete(self, keys: Sequence[str]) -> None:
        try:
            for key in keys:
                self.path_for(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"could not delete: {exc.strerror or exc}") from exc

    def remove_orphaned_temp_files(self) -> int:
        """Delete temporary files whose writer process is gone (SIGKILL between write and
        rename). Called when a worker starts; a live writer's files are left alone."""
        removed = 0
        if not self.root.is_dir():
            return 0
        for tmp in self.root.rglob(TMP_PREFIX + "*"):
            pid = _writer_pid(tmp.name)
            if pid is not None and not _alive(pid):
                tmp.unlink(missing_ok=True)
                removed += 1
        return removed

    def read(self, key: str) -> bytes:
        try:
            return self.path_for(key).read_bytes()
        except OSError as exc:
            raise StorageError(f"could not read {key}: {exc.strerror or exc}") from exc

    def url(self, key: str) -> str:
        self.path_for(key)
        return LOCAL_URL_PREFIX + key


def _write_all(fd: int, data: bytes) -> None:
    """The whole of ``data`` to ``fd`` (a write may stop short: a full disk, a file-size
    limit, then the next one raises)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _writer_pid(name: str) -> int | None:
    head = name[len(TMP_PREFIX):].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
