"""Rendered images kept on disk, shared by every worker process of a node.

The in-memory output cache is per process: with one worker per core, a
thumbnail or a phone JPEG rendered by one worker was rendered again by the next
worker a browser's connection happened to reach, and again after every restart.
This directory holds each encoded image once for all of them.

Files live under ``<root>/<study UID>/<digest>`` where the digest covers the
instance's content hash and the whole render request, so a re-sent object with
new bytes never meets an old image. Writes are atomic (a temporary file, then
a rename) and never flushed: it is a cache, and a file lost in a crash is
rendered again. Every worker sweeps it each minute (:data:`SWEEP_EVERY_S`):
the folders of studies no longer in the archive go, so deleted patients'
images do not linger, then the oldest files beyond the byte budget.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pacs.storage.objects import is_valid_uid

if TYPE_CHECKING:
    from pacs.archive import Archive
    from pacs.config import Settings

log = logging.getLogger(__name__)

#: Bumped whenever rendering changes its output, so old files stop matching.
RENDER_VERSION = "1"
#: How often each worker sweeps (pacs.jobs): a deleted study's images go within it.
SWEEP_EVERY_S = 60.0


def for_settings(settings: Settings, archive: Archive) -> RenderedFiles | None:
    """The node's store of rendered images, or None when ``render_cache_mb`` is 0."""
    if settings.render_cache_mb <= 0:
        return None
    return RenderedFiles(
        settings.data_dir / "cache" / "rendered",
        settings.render_cache_mb << 20,
        archive.has_study,
    )


class RenderedFiles:
    """A byte-budgeted directory of encoded images, keyed per study."""

    def __init__(
        self,
        root: Path,
        budget_bytes: int,
        study_exists: Callable[[str], bool] | None = None,
    ) -> None:
        self.root = root
        self.budget_bytes = budget_bytes
        self.study_exists = study_exists
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, study_uid: str, key: object) -> Path | None:
        # Study UIDs were checked at ingest; anything else never becomes a path.
        if not is_valid_uid(study_uid):
            return None
        digest = hashlib.sha256(f"{RENDER_VERSION}|{key!r}".encode()).hexdigest()
        return self.root / study_uid / digest

    def get(self, study_uid: str, key: object) -> bytes | None:
        path = self._path(study_uid, key)
        if path is None:
            return None
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except OSError:
            return None

    def put(self, study_uid: str, key: object, data: bytes) -> None:
        path = self._path(study_uid, key)
        if path is None:
            return
        try:
            path.parent.mkdir(exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:  # a full or read-only disk only costs a render
            log.debug("rendered image not kept on disk: %s", exc)

    def forget_study(self, study_uid: str) -> None:
        if self._path(study_uid, "") is not None:
            shutil.rmtree(self.root / study_uid, ignore_errors=True)

    def sweep(self) -> int:
        """Remove the folders of studies no longer archived, then the oldest files
        beyond the budget. Returns the bytes kept."""
        files: list[tuple[float, int, str]] = []
        for study in os.scandir(self.root):
            if not study.is_dir():
                continue
            if self.study_exists is not None and not self.study_exists(study.name):
                shutil.rmtree(study.path, ignore_errors=True)
                continue
            with contextlib.suppress(OSError):
                for entry in os.scandir(study.path):
                    with contextlib.suppress(OSError):
                        info = entry.stat()
                        files.append((info.st_mtime, info.st_size, entry.path))
        total = sum(size for _, size, _ in files)
        if total > self.budget_bytes:
            files.sort()
            for _, size, path in files:
                with contextlib.suppress(OSError):
                    os.unlink(path)
                total -= size
                if total <= self.budget_bytes * 0.9:
                    break
        return total
