"""Importing files, folders and zip archives into the archive (``pacs import``)."""

from __future__ import annotations

import logging
import shutil
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pacs.archive import Archive, Source, StoreStatus
from pacs.dicomfile import has_part10_prefix, wrap_in_part10
from pacs.errors import InvalidInstance, PacsError

log = logging.getLogger(__name__)

# Files that are surely not DICOM instances; skipped silently, not "refused".
_NOT_DICOM_SUFFIXES = {".md", ".txt", ".csv", ".py", ".json", ".html", ".pdf", ".zip~"}


@dataclass
class ImportSummary:
    stored: int = 0
    duplicates: int = 0
    replaced: int = 0
    kept_existing: int = 0
    skipped: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return (
            self.stored
            + self.duplicates
            + self.replaced
            + self.kept_existing
            + self.skipped
            + len(self.refused)
        )

    def refused_by_reason(self) -> Counter[str]:
        return Counter(reason for _, reason in self.refused)


@dataclass(frozen=True)
class Candidate:
    """One file to import: its display name and how to get it onto local disk."""

    name: str
    path: Path | None = None
    zip_path: Path | None = None
    member: str | None = None


def _walk(path: Path) -> Iterator[Candidate]:
    if path.is_dir():
        for child in sorted(path.rglob("*")):
            if child.is_file():
                yield from _walk(child)
        return
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    yield Candidate(f"{path}!{info.filename}", zip_path=path, member=info.filename)
        return
    yield Candidate(str(path), path=path)


def candidates(paths: Iterable[Path]) -> list[Candidate]:
    """Every file the given paths name, zip members included (in a stable order)."""
    out: list[Candidate] = []
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        out.extend(_walk(path))
    return out


@contextmanager
def _local(candidate: Candidate, archive: Archive) -> Iterator[Path]:
    if candidate.path is not None:
        yield candidate.path
        return
    assert candidate.zip_path is not None and candidate.member is not None
    with archive.spooled() as spool, zipfile.ZipFile(candidate.zip_path) as zf:
        with zf.open(candidate.member) as src, spool.open("wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        yield spool


def import_paths(
    archive: Archive,
    paths: Iterable[Path],
    *,
    progress: Callable[[Candidate], None] | None = None,
    items: list[Candidate] | None = None,
) -> ImportSummary:
    """Store every DICOM file under ``paths``; the files themselves are not modified."""
    summary = ImportSummary()
    source = Source("import")
    for candidate in items if items is not None else candidates(paths):
        if Path(candidate.name).suffix.lower() in _NOT_DICOM_SUFFIXES:
            summary.skipped += 1
        else:
            _import_one(archive, candidate, source, summary)
        if progress:
            progress(candidate)
    return summary


def _import_one(
    archive: Archive, candidate: Candidate, source: Source, summary: ImportSummary
) -> None:
    try:
        with _local(candidate, archive) as path:
            wrapped = None
            if not has_part10_prefix(path):
                wrapped = wrap_in_part10(path, archive.spool_dir)
            try:
                result = archive.store_file(
                    wrapped or path, source=source, consume=wrapped is not None
                )
            finally:
                if wrapped is not None:
                    wrapped.unlink(missing_ok=True)
    except InvalidInstance as exc:
        summary.refused.append((candidate.name, exc.reason))
        return
    except PacsError as exc:
        log.error("import of %s failed: %s", candidate.name, exc.reason)
        summary.refused.append((candidate.name, exc.reason))
        return
    except OSError as exc:
        summary.refused.append((candidate.name, f"cannot read: {exc}"))
        return
    if result.status is StoreStatus.STORED:
        summary.stored += 1
    elif result.status is StoreStatus.DUPLICATE:
        summary.duplicates += 1
    elif result.status is StoreStatus.REPLACED:
        summary.replaced += 1
    else:
        summary.kept_existing += 1
