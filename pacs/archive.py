"""The archive service: the one place that combines the object store and the index.

DICOM handlers, HTTP views and the CLI are adapters over this class. Its promise:
:meth:`Archive.store_file` returns only once the object is durable in the store
and the index has committed it; anything else raises one of :mod:`pacs.errors`
and leaves nothing behind.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

from pacs import metrics
from pacs.audit import AuditLog
from pacs.config import Settings
from pacs.dicomfile import InstanceHeader, read_instance
from pacs.errors import (
    DuplicateInstance,
    InvalidInstance,
    NotFound,
    PacsError,
    ShuttingDown,
    StorageFull,
    StorageUnavailable,
)
from pacs.storage.index import Existing, InstanceRef, RecordOutcome, RemoteNode, SqlIndex, utcnow
from pacs.storage.matching import Query
from pacs.storage.objects import ObjectNotFound, ObjectStore, instance_key

log = logging.getLogger(__name__)


class StoreStatus(enum.Enum):
    STORED = "stored"
    #: the same bytes were already archived
    DUPLICATE = "duplicate"
    #: different bytes under a known SOP Instance UID replaced the old object
    REPLACED = "replaced"
    #: different bytes under a known SOP Instance UID were dropped (policy "keep")
    KEPT_EXISTING = "kept-existing"


@dataclass(frozen=True)
class Source:
    """Who handed us an object, for the index, the logs and the audit trail."""

    kind: str  # "dicom", "web", "import", "recovery"
    ae_title: str = ""
    address: str = ""
    user: str = ""

    def describe(self) -> str:
        who = self.ae_title or self.user or self.kind
        return f"{who}@{self.address}" if self.address else who


@dataclass(frozen=True)
class StoreResult:
    status: StoreStatus
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    size_bytes: int
    warnings: tuple[str, ...] = ()
    patient_id: str = ""
    patient_name: str = ""


@dataclass(frozen=True)
class StoredEvent:
    """Sent to listeners after an instance is committed (new or replacing)."""

    header: InstanceHeader
    ref: InstanceRef
    source: Source
    created_study: bool
    created_series: bool


@dataclass
class VerifyReport:
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    corrupted: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupted or self.orphans)


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def sha256_stream(stream: BinaryIO) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _completed(value: tuple[str, int]) -> Future[tuple[str, int]]:
    done: Future[tuple[str, int]] = Future()
    done.set_result(value)
    return done


class Archive:
    """Store, find, open, list and delete DICOM instances."""

    def __init__(
        self,
        settings: Settings,
        objects: ObjectStore,
        index: SqlIndex,
        *,
        node: str | None = None,
        spool_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.objects = objects
        self.index = index
        #: the audit trail, on the same database (pacs/audit.py)
        self.audit = AuditLog(index.engine)
        #: this writer's name in store intents ("host:pid"; recovery goes by it)
        self.node = node or f"{socket.gethostname()}:0"
        self.spool_dir = spool_dir or settings.data_dir / "tmp"
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._listeners: list[Callable[[StoredEvent], None]] = []
        self._accepting = True
        self._free_checked_at = 0.0
        self._free_ok = True
        self._used_bytes = 0
        self._lock = threading.Lock()
        #: stores in progress in this process, and the thread and time of the last
        #: one to start (see _store_file)
        self._storing = 0
        self._last_store: tuple[int, float] = (0, 0.0)
        self._local = objects.local_path(instance_key("1", "1", "1")) is not None
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="store-io")

    # ------------------------------------------------------------ lifecycle

    def add_listener(self, listener: Callable[[StoredEvent], None]) -> None:
        """Call ``listener`` after every committed store (in the storing thread)."""
        self._listeners.append(listener)

    def stop_accepting(self) -> None:
        """Refuse new stores from now on (in-flight ones complete)."""
        self._accepting = False

    @property
    def accepting(self) -> bool:
        return self._accepting

    def check(self) -> None:
        """Raise StorageUnavailable unless both the index and the store answer."""
        self.index.check()
        self.objects.check()

    @contextmanager
    def spooled(self, suffix: str = ".dcm") -> Iterator[Path]:
        """A temporary file next to the store, removed afterwards unless consumed."""
        fd, name = tempfile.mkstemp(dir=self.spool_dir, suffix=suffix)
        os.close(fd)
        path = Path(name)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    # ------------------------------------------------------------ storing

    def _check_space(self, incoming: int) -> None:
        """Refuse (StorageFull) before anything is written when the volume is below
        ``min_free_bytes`` or ``incoming`` more bytes would pass ``max_storage_bytes``.

        Both are read at most every 2 s; in between, this process adds what it
        stored itself, so only other processes' stores of the last 2 s can push
        the quota over (by that much at most).
        """
        now = time.monotonic()
        quota = self.settings.max_storage_bytes
        with self._lock:
            if now - self._free_checked_at > 2.0:
                free = self.objects.free_bytes()
                self._free_ok = free is None or free >= self.settings.min_free_bytes
                self._used_bytes = self.index.used_bytes() if quota > 0 else 0
                self._free_checked_at = now
                if not self._free_ok:
                    log.error(
                        "storage nearly full: %s bytes free, floor is %s; refusing new objects",
                        free,
                        self.settings.min_free_bytes,
                    )
            over_quota = quota > 0 and self._used_bytes + incoming > quota
            if self._free_ok and not over_quota:
                self._used_bytes += incoming
                return
        if over_quota:
            log.error(
                "storage quota reached: %d bytes archived + %d > max_storage_bytes %d; "
                "refusing new objects",
                self._used_bytes,
                incoming,
                quota,
            )
            raise StorageFull("storage quota reached: refusing new objects until space is freed")
        raise StorageFull("storage is full: refusing new objects until space is freed")

    def store_file(
        self,
        path: Path,
        *,
        source: Source,
        consume: bool = False,
        digest: tuple[str, int] | None = None,
    ) -> StoreResult:
        """Archive the Part 10 file at ``path``, byte for byte.

        With ``consume`` the file is ours to move into the store (a received
        temporary file); otherwise it is copied. ``digest`` is the file's
        (SHA-256, size) when the caller computed it while writing the file.
        Raises InvalidInstance, DuplicateInstance, StorageFull, ShuttingDown or
        StorageUnavailable.
        """
        started = time.perf_counter()
        me = threading.get_ident()
        with self._lock:
            self._storing += 1
            last_thread, last_start = self._last_store
            # Alone: no other store now, and none from another sender just before.
            alone = self._storing == 1 and (last_thread == me or started - last_start > 0.05)
            self._last_store = (me, started)
        try:
            result = self._store_file(path, source, consume, digest, alone)
        except (InvalidInstance, DuplicateInstance):
            metrics.stored(source.kind, "refused", time.perf_counter() - started, 0)
            raise
        except PacsError:
            metrics.stored(source.kind, "failed", time.perf_counter() - started, 0)
            metrics.error("store")
            raise
        finally:
            with self._lock:
                self._storing -= 1
        metrics.stored(
            source.kind, result.status.value, time.perf_counter() - started, result.size_bytes
        )
        return result

    def _store_file(
        self,
        path: Path,
        source: Source,
        consume: bool,
        known: tuple[str, int] | None,
        alone: bool,
    ) -> StoreResult:
        if not self._accepting:
            raise ShuttingDown("the archive is shutting down; retry later")
        # The disk flush and the checksum release the GIL: a store alone in this
        # process starts them on the I/O pool and parses and looks up meanwhile (the
        # flush is the slowest step of a store). When other senders keep the process
        # busy, their work fills that wait, and handing the flush to a pool thread
        # (two wake-ups and GIL hand-overs per instance) cost more than it saved:
        # four modalities into two workers switched context 34 000 times per 1026
        # instances with the flush on the pool, 20 000 with it in put_file (below).
        flush_early = consume and self._local and alone
        synced = self._pool.submit(fsync_path, path) if flush_early else None
        digest = self._pool.submit(sha256_file, path) if known is None else _completed(known)
        intent_id: int | None = None
        try:
            try:
                parsed = read_instance(path)
            except InvalidInstance as exc:
                log.warning("refused object from %s: %s", source.describe(), exc.reason)
                raise
            header = parsed.header
            for note in header.warnings:
                log.info(
                    "instance %s from %s: %s", header.sop_instance_uid, source.describe(), note
                )
            existing = self.index.existing(header.sop_instance_uid)
            sha256, size = digest.result()
            already = self._known_instance(header, existing, sha256, size, source)
            if already is not None:
                return already
            self._check_space(size)
            key = instance_key(
                header.study_instance_uid, header.series_instance_uid, header.sop_instance_uid
            )
            # Recorded while the flush still runs: the object only enters the store after it.
            intent_id = self.index.add_intent(key, sha256, self.node)
        finally:
            # Never leave a flush running on a file the caller may delete.
            if synced is not None:
                try:
                    synced.result()
                except BaseException:
                    if intent_id is not None:
                        self.index.drop_intent(intent_id)
                    raise
        outcome = self._put_and_record(
            path, header, key, sha256, size, source, consume, existing, intent_id, flush_early
        )
        replaced = outcome.replaced
        if replaced is not None:
            log.warning(
                "replaced SOP Instance %s (sha256 %s… → %s…) with the newer object from %s",
                header.sop_instance_uid,
                replaced.sha256[:12],
                sha256[:12],
                source.describe(),
            )
            if replaced.object_key != key:
                self._delete_object_quietly(replaced.object_key)
        ref = InstanceRef(
            sop_uid=header.sop_instance_uid,
            series_uid=header.series_instance_uid,
            study_uid=header.study_instance_uid,
            sop_class_uid=header.sop_class_uid,
            transfer_syntax_uid=header.transfer_syntax_uid,
            object_key=key,
            size_bytes=size,
            sha256=sha256,
            dataset_offset=header.dataset_offset,
            instance_number=header.instance_number,
            rows=header.rows,
            columns=header.columns,
            frames=header.frames,
            bits_allocated=header.bits_allocated,
        )
        event = StoredEvent(header, ref, source, outcome.created_study, outcome.created_series)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a listener must never turn a stored object into a failure
                log.exception("store listener %r failed", listener)
        status = StoreStatus.REPLACED if replaced is not None else StoreStatus.STORED
        return self._result(status, header, size)

    def _put_and_record(
        self,
        path: Path,
        header: InstanceHeader,
        key: str,
        sha256: str,
        size: int,
        source: Source,
        consume: bool,
        existing: Existing | None,
        intent_id: int,
        synced: bool,
    ) -> RecordOutcome:
        try:
            self.objects.put_file(key, path, consume=consume, synced=synced)
        except BaseException:
            self.index.drop_intent(intent_id)
            raise
        try:
            return self.index.record_instance(
                header,
                object_key=key,
                size_bytes=size,
                sha256=sha256,
                source_ae=source.ae_title[:16],
                intent_id=intent_id,
                existing=existing,
            )
        except BaseException:
            # Roll back unless this put overwrote an older version of the same
            # instance: then the intent stays and recovery indexes the new bytes.
            now = self.index.existing(header.sop_instance_uid)
            if now is None or now.object_key != key:
                self._delete_object_quietly(key)
                self.index.drop_intent(intent_id)
            raise

    def _known_instance(
        self,
        header: InstanceHeader,
        existing: Existing | None,
        sha256: str,
        size: int,
        source: Source,
    ) -> StoreResult | None:
        """The answer when the SOP Instance is archived already and nothing is to be
        stored (a duplicate, or duplicate_policy keep); raises for policy reject."""
        if existing is None:
            return None
        if existing.sha256 == sha256:
            log.debug("duplicate %s from %s", header.sop_instance_uid, source.describe())
            return self._result(StoreStatus.DUPLICATE, header, size)
        policy = self.settings.duplicate_policy
        if policy == "keep":
            log.warning(
                "different object under known SOP Instance %s from %s: kept the archived "
                "one (duplicate_policy=keep)",
                header.sop_instance_uid,
                source.describe(),
            )
            return self._result(StoreStatus.KEPT_EXISTING, header, size)
        if policy == "reject":
            log.warning(
                "refused different object under known SOP Instance %s from %s "
                "(duplicate_policy=reject)",
                header.sop_instance_uid,
                source.describe(),
            )
            raise DuplicateInstance(
                f"SOP Instance {header.sop_instance_uid} is archived with different content"
            )
        return None

    @staticmethod
    def _result(status: StoreStatus, h: InstanceHeader, size: int) -> StoreResult:
        return StoreResult(
            status,
            h.sop_instance_uid,
            h.study_instance_uid,
            h.series_instance_uid,
            h.sop_class_uid,
            size,
            h.warnings,
            h.patient_id,
            h.patient_name,
        )

    def _delete_object_quietly(self, key: str) -> None:
        try:
            self.objects.delete(key)
        except StorageUnavailable as exc:
            log.error("could not remove object %s (now an orphan for `pacs verify`): %s", key, exc)

    # ------------------------------------------------------------ recovery

    def recover(
        self,
        *,
        node: str | None = None,
        node_prefix: str | None = None,
        older_than_s: float = 0.0,
    ) -> int:
        """Reconcile objects whose writer died between the put and the index commit.

        Handles the intents of the writer named ``node`` (one dead worker: "host:1234"
        must not also take "host:12345"), or of writers whose names start with
        ``node_prefix`` (every worker of a node that restarts), or of everyone; and
        only those older than ``older_than_s``. Returns how many were fixed.
        """
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        fixed = 0
        for intent in self.index.stale_intents(cutoff, node):
            if node_prefix is not None and not intent.node.startswith(node_prefix):
                continue
            self._reconcile(intent.object_key)
            self.index.drop_intent(intent.id)
            fixed += 1
        if fixed:
            log.warning("recovered %d interrupted store(s)", fixed)
        return fixed

    def _reconcile(self, key: str) -> None:
        local = self.objects.local_path(key)
        try:
            if local is not None:
                if not local.exists():
                    return
                actual, _ = sha256_file(local)
            else:
                with self.objects.open(key) as stream:
                    actual, _ = sha256_stream(stream)
        except ObjectNotFound:
            return
        indexed = {r.object_key: r.sha256 for r in self._refs_for_key(key)}
        if indexed.get(key) == actual:
            return
        with self._local_copy(key) as path:
            try:
                parsed = read_instance(path)
            except InvalidInstance as exc:
                log.error("removing unreadable interrupted object %s: %s", key, exc.reason)
                self._delete_object_quietly(key)
                return
            sha256, size = sha256_file(path)
            self.index.record_instance(
                parsed.header,
                object_key=key,
                size_bytes=size,
                sha256=sha256,
                source_ae="",
                intent_id=None,
            )
            log.warning("indexed interrupted object %s", key)

    def _refs_for_key(self, key: str) -> list[InstanceRef]:
        sop_uid = key.rsplit("/", 1)[-1].removesuffix(".dcm")
        return self.index.instances(sop_uids=[sop_uid])

    @contextmanager
    def _local_copy(self, key: str) -> Iterator[Path]:
        local = self.objects.local_path(key)
        if local is not None:
            yield local
            return
        with self.spooled() as path, self.objects.open(key) as stream, path.open("wb") as out:
            shutil.copyfileobj(stream, out, 1 << 20)
            out.close()
            yield path

    # ------------------------------------------------------------ finding

    def search(self, query: Query, keywords: Sequence[str]) -> list[dict[str, Any]]:
        return self.index.search(query, keywords)

    def count(self, query: Query) -> int:
        return self.index.count(query)

    def instances(self, **selectors: Any) -> list[InstanceRef]:
        """Instances selected by UIDs (see :meth:`SqlIndex.instances`)."""
        return self.index.instances(**selectors)

    def has_study(self, study_uid: str) -> bool:
        return self.index.has_study(study_uid)

    def instance(self, sop_uid: str) -> InstanceRef:
        ref = self.index.get_instance(sop_uid)
        if ref is None:
            raise NotFound(f"no instance {sop_uid}")
        return ref

    def open(self, ref: InstanceRef) -> BinaryIO:
        """The stored Part 10 bytes of an instance (the caller closes the stream)."""
        return self.objects.open(ref.object_key)

    def local_path(self, ref: InstanceRef) -> Path | None:
        return self.objects.local_path(ref.object_key)

    def read_range(self, ref: InstanceRef, start: int, length: int) -> bytes:
        """Bytes ``start`` to ``start + length`` of the stored Part 10 file."""
        return self.objects.read_range(ref.object_key, start, length)

    @contextmanager
    def readable_path(self, ref: InstanceRef) -> Iterator[Path]:
        """A local file holding the instance, fetched to the spool if the store is remote."""
        with self._local_copy(ref.object_key) as path:
            yield path

    def totals(self) -> dict[str, int]:
        return self.index.totals()

    # ------------------------------------------------------------ deleting

    def delete(self, refs: Sequence[InstanceRef]) -> int:
        """Remove instances from the index, then their objects."""
        count = self.index.delete_instances(refs)
        for ref in refs:
            self._delete_object_quietly(ref.object_key)
        return count

    # ------------------------------------------------------------ maintenance

    def reindex(self, progress: Callable[[int], None] | None = None) -> dict[str, int]:
        """Rebuild the index from the object store alone.

        Objects are indexed oldest first: study and patient attributes come from
        the first instance received (or the latest replacement), so replaying the
        arrival order reproduces the index that ingest built.
        """
        self.index.wipe()
        counts = {"indexed": 0, "invalid": 0}
        objects = sorted(self.objects.iter_objects(), key=lambda o: (o.modified, o.key))
        for info in objects:
            with self._local_copy(info.key) as path:
                try:
                    parsed = read_instance(path)
                    expected = instance_key(
                        parsed.header.study_instance_uid,
                        parsed.header.series_instance_uid,
                        parsed.header.sop_instance_uid,
                    )
                    if expected != info.key:
                        raise InvalidInstance(f"object is stored under {info.key}, not {expected}")
                except InvalidInstance as exc:
                    log.error("reindex: skipping %s: %s", info.key, exc.reason)
                    counts["invalid"] += 1
                    continue
                sha256, size = sha256_file(path)
                self.index.record_instance(
                    parsed.header,
                    object_key=info.key,
                    size_bytes=size,
                    sha256=sha256,
                    source_ae="",
                    intent_id=None,
                )
            counts["indexed"] += 1
            if progress:
                progress(counts["indexed"])
        return counts

    def verify(self, *, checksums: bool = True) -> VerifyReport:
        """Check that every indexed object exists (with its checksum) and list orphans."""
        report = VerifyReport()
        indexed: dict[str, tuple[str, int]] = {}
        for key, sha256, size in self.index.iter_object_keys():
            indexed[key] = (sha256, size)
        present: set[str] = set()
        for info in self.objects.iter_objects():
            present.add(info.key)
            if info.key not in indexed:
                report.orphans.append(info.key)
        for key, (sha256, size) in indexed.items():
            report.checked += 1
            if key not in present:
                report.missing.append(key)
                continue
            if checksums:
                with self.objects.open(key) as stream:
                    actual, actual_size = sha256_stream(stream)
                if actual != sha256 or actual_size != size:
                    report.corrupted.append(key)
        return report

    # ------------------------------------------------------------ remote nodes

    def nodes(self) -> list[RemoteNode]:
        return self.index.list_nodes()

    def save_node(self, node: RemoteNode) -> bool:
        return self.index.upsert_node(node)

    def remove_node(self, ae_title: str) -> None:
        self.index.remove_node(ae_title)

    def seen_node(self, ae_title: str) -> None:
        self.index.touch_node(ae_title)
