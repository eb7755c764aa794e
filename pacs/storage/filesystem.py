"""Object store on a local filesystem: one file per object under a root directory."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from pacs.errors import StorageUnavailable
from pacs.storage.objects import INSTANCE_SUFFIX, ObjectInfo, ObjectNotFound, check_key


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FilesystemObjectStore:
    """Objects as files under ``root``; writes go through ``root/.tmp`` and a rename.

    A rename within one filesystem is atomic, so a reader sees the old object or
    the new one, never half of either. Files and the directories that name them
    are fsynced before ``put_*`` returns.
    """

    name = "filesystem"

    #: Directories this process saw or made, so a store into a known series does not
    #: look its directory up again. Cleared when full: only a hint, never the truth.
    KNOWN_DIRS = 4096

    def __init__(self, root: Path) -> None:
        # Absolute: walking up a relative path would end at "", which is never a
        # directory, and the known directories are compared as strings.
        self.root = Path(os.path.abspath(root))
        self.tmp = self.root / ".tmp"
        self._root = str(self.root)
        self._known_dirs: set[str] = set()
        try:
            self.tmp.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailable(f"cannot create object store at {root}: {exc}") from exc

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _target(self, key: str) -> str:
        """The object's file name as a string, for the write path (no Path objects)."""
        return os.path.join(self._root, check_key(key))

    def _make_parents(self, directory: str) -> None:
        """Create ``directory`` and its missing parents, fsyncing each new entry's parent."""
        missing = []
        while not os.path.isdir(directory):
            missing.append(directory)
            directory = os.path.dirname(directory)
        for new in reversed(missing):
            try:
                os.mkdir(new)
            except FileExistsError:
                continue
            _fsync_dir(os.path.dirname(new))

    def _install(self, staged: str | Path, final: str) -> None:
        directory = os.path.dirname(final)
        if directory not in self._known_dirs:
            self._make_parents(directory)
        try:
            os.replace(staged, final)
        except FileNotFoundError:
            # A deletion removed the directory since (it empties and removes series
            # directories, possibly in another worker): make it again, once.
            self._known_dirs.discard(directory)
            self._make_parents(directory)
            os.replace(staged, final)
        _fsync_dir(directory)
        if len(self._known_dirs) >= self.KNOWN_DIRS:
            self._known_dirs.clear()
        self._known_dirs.add(directory)

    def put_file(self, key: str, path: Path, *, consume: bool, synced: bool = False) -> None:
        final = self._target(key)
        try:
            if consume:
                if not synced:
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                try:
                    self._install(path, final)
                    return
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
            self._copy_in(path, final)
        except OSError as exc:
            raise StorageUnavailable(f"cannot write object {key}: {exc}") from exc

    def _copy_in(self, source: Path, final: str) -> None:
        fd, staged_name = tempfile.mkstemp(dir=self.tmp, suffix=".part")
        staged = Path(staged_name)
        try:
            with os.fdopen(fd, "wb") as out, source.open("rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            self._install(staged, final)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise

    def put_bytes(self, key: str, data: bytes) -> None:
        final = self._target(key)
        fd, staged_name = tempfile.mkstemp(dir=self.tmp, suffix=".part")
        staged = Path(staged_name)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            self._install(staged, final)
        except OSError as exc:
            staged.unlink(missing_ok=True)
            raise StorageUnavailable(f"cannot write object {key}: {exc}") from exc

    def open(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"object {key} is missing") from exc
        except OSError as exc:
            raise StorageUnavailable(f"cannot read object {key}: {exc}") from exc

    def read_range(self, key: str, start: int, length: int) -> bytes:
        with self.open(key) as fh:
            fh.seek(start)
            return fh.read(length)

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageUnavailable(f"cannot delete object {key}: {exc}") from exc
        # Leave empty series/study directories behind only if others still use them.
        for directory in (path.parent, path.parent.parent):
            try:
                directory.rmdir()
            except OSError:
                break
            self._known_dirs.discard(str(directory))

    def iter_objects(self) -> Iterator[ObjectInfo]:
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for filename in filenames:
                if not filename.endswith(INSTANCE_SUFFIX):
                    continue
                path = Path(dirpath) / filename
                key = path.relative_to(self.root).as_posix()
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                yield ObjectInfo(key, stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC))

    def free_bytes(self) -> int | None:
        return shutil.disk_usage(self.root).free

    def check(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise StorageUnavailable(f"object store {self.root} is not writable")
