"""WADO-RS metadata, precomputed per series so that opening a study reads no files.

The index bumps ``series.updated_at`` and ``series.num_instances`` on every store
and delete; a metadata row built from other values is stale. Two ways keep rows
fresh:

- :class:`MetadataBuilder` (run periodically by each worker process) claims
  stale series that have been quiet for a few seconds (a modality still sending
  would otherwise trigger a rebuild per instance) and rebuilds them;
- a request for a stale or missing series builds it on the spot, then stores it.

A rebuild reads only the instances that are new or changed since the last build
(matched by SOP Instance UID and SHA-256); the others are reused from the old
row. Each instance header is read once (pixel data deferred, never loaded),
decoded with the character-set repair of :mod:`pacs.charset`, and turned into
DICOM JSON whose BulkDataURIs start with :data:`BASE_PLACEHOLDER` (the public
base URL is only known per request). The frame layout of each instance is kept
alongside (:mod:`pacs.viewer.dicomweb.frames`).
"""

from __future__ import annotations

import gzip
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from pacs.archive import Archive
from pacs.dicomfile import read_instance
from pacs.errors import InvalidInstance, NotFound, PacsError
from pacs.storage.dicomweb_models import (
    SeriesMetadata,
    SeriesMetadataStore,
    SeriesState,
    utcnow,
)
from pacs.storage.index import InstanceRef
from pacs.viewer.dicomweb.dicomjson import Json, dataset_to_json, row_to_json
from pacs.viewer.dicomweb.frames import FrameLayout, compute_layout

log = logging.getLogger(__name__)

#: Stands for ``https://host/dicomweb`` in stored BulkDataURIs; replaced when served.
BASE_PLACEHOLDER = "@@PACS_DICOMWEB_BASE@@"
AVAILABLE_TS_TAG = "00083002"
SOP_INSTANCE_TAG = "00080018"


def bulk_uri(study_uid: str, series_uid: str, sop_uid: str, element_path: str) -> str:
    return (
        f"{BASE_PLACEHOLDER}/studies/{study_uid}/series/{series_uid}"
        f"/instances/{sop_uid}/bulkdata/{element_path}"
    )


def _gzip(data: bytes) -> bytes:
    # Level 6: built once, served many times; mtime 0 keeps equal inputs equal.
    return gzip.compress(data, compresslevel=6, mtime=0)


def _fallback_item(ref: InstanceRef) -> Json:
    """What the index knows of an instance whose file cannot be read."""
    return row_to_json(
        {
            "SOPClassUID": ref.sop_class_uid,
            "SOPInstanceUID": ref.sop_uid,
            "StudyInstanceUID": ref.study_uid,
            "SeriesInstanceUID": ref.series_uid,
            "InstanceNumber": ref.instance_number,
            "Rows": ref.rows,
            "Columns": ref.columns,
            "NumberOfFrames": ref.frames,
            "AvailableTransferSyntaxUID": ref.transfer_syntax_uid,
        }
    )


@dataclass(frozen=True)
class InstanceBuild:
    json_text: str
    sha256: str
    layout: FrameLayout | None


def build_instance(archive: Archive, ref: InstanceRef) -> InstanceBuild:
    """DICOM JSON and frame layout of one instance, reading its header once.

    An unreadable object yields what the index knows (logged), never an error:
    one bad file must not hide the rest of its series.
    """
    try:
        with archive.readable_path(ref) as path:
            parsed = read_instance(Path(path))
            item = dataset_to_json(
                parsed.dataset,
                bulk=lambda p: bulk_uri(ref.study_uid, ref.series_uid, ref.sop_uid, p),
            )
            layout = compute_layout(parsed.dataset, Path(path), ref.transfer_syntax_uid)
    except (InvalidInstance, NotFound, OSError) as exc:
        reason = getattr(exc, "reason", str(exc))
        log.error("metadata of instance %s: cannot read its object: %s", ref.sop_uid, reason)
        item, layout = _fallback_item(ref), None
    item[AVAILABLE_TS_TAG] = {"vr": "UI", "Value": [ref.transfer_syntax_uid]}
    item = dict(sorted(item.items()))
    text = json.dumps(item, ensure_ascii=False, separators=(",", ":"))
    return InstanceBuild(text, ref.sha256, layout)


@dataclass(frozen=True)
class BuiltSeries:
    """A series' metadata, ready to serve (JSON array text with the base placeholder)."""

    state: SeriesState
    json_bytes: bytes
    layouts: dict[str, tuple[str, FrameLayout | None]]


def _previous(row: SeriesMetadata | None) -> dict[str, InstanceBuild]:
    """Reusable instance entries of an older build, by SOP Instance UID."""
    if row is None or row.data is None or row.frames is None:
        return {}
    try:
        items = json.loads(gzip.decompress(row.data))
        frames = json.loads(gzip.decompress(row.frames))
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable metadata row of series %d: %s", row.series_pk, exc)
        return {}
    out = {}
    for item in items:
        try:
            sop = item[SOP_INSTANCE_TAG]["Value"][0]
            entry = frames[sop]
        except (KeyError, IndexError, TypeError):
            continue
        layout = FrameLayout.from_json(entry["layout"]) if entry.get("layout") else None
        out[sop] = InstanceBuild(
            json.dumps(item, ensure_ascii=False, separators=(",", ":")), entry["sha"], layout
        )
    return out


def build_series(
    archive: Archive,
    state: SeriesState,
    previous: SeriesMetadata | None = None,
    pause: Callable[[], object] | None = None,
) -> tuple[BuiltSeries, bytes, bytes]:
    """Build the metadata of one series; returns it and the two gzip'd columns to store.

    ``pause`` is called before each instance read (background builds yield there).
    """
    refs = archive.instances(series_uids=[state.series_uid])
    reuse = _previous(previous)
    builds: list[tuple[str, InstanceBuild]] = []
    read = 0
    for ref in refs:
        old = reuse.get(ref.sop_uid)
        if old is not None and old.sha256 == ref.sha256:
            builds.append((ref.sop_uid, old))
            continue
        if pause is not None:
            pause()
        builds.append((ref.sop_uid, build_instance(archive, ref)))
        read += 1
    json_bytes = ("[" + ",".join(b.json_text for _, b in builds) + "]").encode("utf-8")
    frames = {
        sop: {"sha": b.sha256, "layout": b.layout.to_json() if b.layout else None}
        for sop, b in builds
    }
    log.debug(
        "series %s metadata: %d instances, %d read, %d reused",
        state.series_uid,
        len(builds),
        read,
        len(builds) - read,
    )
    built = BuiltSeries(state, json_bytes, {sop: (b.sha256, b.layout) for sop, b in builds})
    frames_bytes = json.dumps(frames, separators=(",", ":")).encode()
    return built, _gzip(json_bytes), _gzip(frames_bytes)


def layouts_from_row(row: SeriesMetadata) -> dict[str, tuple[str, FrameLayout | None]]:
    """SOP Instance UID → (sha256, layout) from a stored row."""
    if row.frames is None:
        return {}
    try:
        frames = json.loads(gzip.decompress(row.frames))
    except (OSError, ValueError):
        return {}
    return {
        sop: (entry["sha"], FrameLayout.from_json(entry["layout"]) if entry["layout"] else None)
        for sop, entry in frames.items()
    }


class SeriesMetadataService:
    """Fresh metadata of a series or a study: from the stored row, or built now."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.store = SeriesMetadataStore(archive.index.engine)
        self._locks: dict[int, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def _lock(self, series_pk: int) -> threading.Lock:
        with self._locks_guard:
            if len(self._locks) > 1000:
                self._locks = {k: v for k, v in self._locks.items() if v.locked()}
            return self._locks.setdefault(series_pk, threading.Lock())

    def states(
        self, *, study_uid: str | None = None, series_uid: str | None = None
    ) -> list[SeriesState]:
        return self.store.series_state(study_uid=study_uid, series_uid=series_uid)

    def json_for(self, states: Sequence[SeriesState]) -> list[bytes]:
        """Per series, the metadata JSON array (bytes, base placeholder not yet replaced)."""
        rows = self.store.get_many([s.pk for s in states])
        out = []
        for state in states:
            row = rows.get(state.pk)
            if row is not None and row.fresh_for(state):
                assert row.data is not None
                out.append(gzip.decompress(row.data))
            else:
                out.append(self.build_now(state, row).json_bytes)
        return out

    def build_now(self, state: SeriesState, row: SeriesMetadata | None = None) -> BuiltSeries:
        """Build (reusing what ``row`` has) and store; one builder per series per process."""
        with self._lock(state.pk):
            # Another thread may have built it while we waited.
            current = self.store.get(state.pk)
            if current is not None and current.fresh_for(state) and current.data is not None:
                return BuiltSeries(state, gzip.decompress(current.data), layouts_from_row(current))
            started = time.monotonic()
            built, data, frames = build_series(self.archive, state, current or row)
            elapsed = int((time.monotonic() - started) * 1000)
            self.store.save(state, data=data, frames=frames, build_ms=elapsed)
            log.info(
                "built metadata of series %s on demand (%d instances, %d ms)",
                state.series_uid,
                state.num_instances,
                elapsed,
            )
            return built

    def layouts(self, series_uid: str) -> dict[str, tuple[str, FrameLayout | None]]:
        """Frame layouts of a series from its stored row (possibly stale: callers check
        each instance's sha256)."""
        states = self.store.series_state(series_uid=series_uid)
        if not states:
            return {}
        row = self.store.get(states[0].pk)
        return layouts_from_row(row) if row is not None else {}


class MetadataBuilder:
    """Rebuilds stale series metadata in the background, sharing the work between nodes.

    ``run_once`` is meant to be called every few seconds by each worker process;
    a claim in the database makes sure two processes never build the same
    series at once (a claim older than ``claim_ttl_s`` is considered abandoned).
    """

    def __init__(
        self,
        archive: Archive,
        *,
        quiet_s: float | None = None,
        batch: int = 4,
        claim_ttl_s: float = 600.0,
        node: str | None = None,
        pause: Callable[[], object] | None = None,
    ) -> None:
        self.archive = archive
        #: called before each instance read (``pacs serve`` yields to foreground work)
        self.pause = pause
        self.service = SeriesMetadataService(archive)
        self.store = self.service.store
        if quiet_s is None:
            quiet_s = archive.settings.dicomweb_metadata_quiet_s
        self.quiet = timedelta(seconds=quiet_s)
        self.batch = batch
        self.claim_ttl = timedelta(seconds=claim_ttl_s)
        self.node = node or archive.node

    def run_once(self) -> int:
        """Rebuild up to ``batch`` stale, quiet, unclaimed series; returns how many.

        Never raises for a series that fails to build: the failure is stored
        with the row (and not retried until the series changes) and logged.
        """
        now = utcnow()
        try:
            candidates = self.store.stale_series(
                quiet_before=now - self.quiet,
                claim_expired_before=now - self.claim_ttl,
                limit=self.batch,
            )
        except PacsError as exc:
            log.warning("metadata builder: cannot look for stale series: %s", exc.reason)
            return 0
        built = 0
        for state in candidates:
            if not self.store.claim(state.pk, self.node, claim_expired_before=now - self.claim_ttl):
                continue
            started = time.monotonic()
            try:
                previous = self.store.get(state.pk)
                _, data, frames = build_series(self.archive, state, previous, self.pause)
            except Exception as exc:  # keep the loop alive; the row records why
                reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
                log.exception("metadata of series %s failed: %s", state.series_uid, reason)
                self.store.save(
                    state,
                    data=None,
                    frames=None,
                    build_ms=int((time.monotonic() - started) * 1000),
                    error=reason,
                )
                continue
            self.store.save(
                state,
                data=data,
                frames=frames,
                build_ms=int((time.monotonic() - started) * 1000),
            )
            built += 1
        return built

    def run_until_idle(self, max_rounds: int = 1000) -> int:
        """Build until nothing is stale (tests, ``pacs`` maintenance commands)."""
        total = 0
        for _ in range(max_rounds):
            done = self.run_once()
            total += done
            if done == 0:
                break
        return total


def replace_base(data: bytes, base_url: str) -> bytes:
    return data.replace(BASE_PLACEHOLDER.encode(), base_url.encode())


def instance_item(series_json: bytes, sop_uid: str) -> Any:
    """The metadata object of one instance, parsed from its series' JSON array."""
    for item in json.loads(series_json):
        try:
            if item[SOP_INSTANCE_TAG]["Value"][0] == sop_uid:
                return item
        except (KeyError, IndexError, TypeError):
            continue
    return None
