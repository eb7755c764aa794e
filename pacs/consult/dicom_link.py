"""Pushing to a partner over DICOM: C-STORE as SCU, and a C-FIND count to verify.

The association proposes :func:`pacs.scp.sending.storage_contexts` (each archived
transfer syntax on its own context, plus an uncompressed fallback) and, when the
push compresses, a context per SOP class for the lossless syntax. Instances go
out as :class:`~pacs.scp.sending.StoredInstance` objects: the archived bytes
straight from the file when the partner accepted their syntax; a compressed copy
when the partner accepted the compressed syntax (see :mod:`.compression`).

The socket is wrapped to count what goes on the wire and, with a cap, to pace it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from pacs.archive import Archive
from pacs.config import Settings
from pacs.consult import compression
from pacs.consult.bandwidth import ThrottledSocket, TokenBucket
from pacs.consult.transport import Confirm, SendResult, TransientFailure
from pacs.scp import sending, tuning
from pacs.scp.sending import MAX_CONTEXTS, StoredInstance, accepted_syntaxes, storage_contexts
from pacs.storage.consult_models import Partner, PushItem
from pacs.storage.index import InstanceRef

log = logging.getLogger(__name__)

#: instances compressed ahead of the one being sent (encoding overlaps sending)
COMPRESS_AHEAD = 2
Compressed = tuple[Path, InstanceRef] | None
# PS3.4 B.2.3 / PS3.7 C: statuses that mean "not now" rather than "not this instance".
_BUSY = range(0xA700, 0xA800)
_NOT_AUTHORIZED = 0x0124


def push_contexts(refs: Sequence[InstanceRef], syntax: UID | None) -> list[PresentationContext]:
    """What to propose for sending ``refs``: the archive's contexts, plus the compressed
    syntax for each SOP class that has instances worth compressing (room permitting)."""
    contexts = storage_contexts(refs)
    if syntax is None:
        return contexts
    classes = sorted({r.sop_class_uid for r in refs if compression.eligible(r)})
    extra = [build_context(c, [syntax]) for c in classes]
    return contexts + extra[: max(0, MAX_CONTEXTS - len(contexts))]


def _discard(future: Future[Compressed]) -> None:
    """Remove the copy a compression made for an instance that will not be sent now."""
    try:
        made = future.result()
    except Exception:  # it failed: nothing was left behind
        return
    if made is not None:
        made[0].unlink(missing_ok=True)


def _status(rsp: Dataset | None) -> int | None:
    if rsp is None or "Status" not in rsp:
        return None
    return int(rsp.Status)


class DicomLink:
    """One association to a partner's Storage SCP for a push."""

    def __init__(
        self,
        settings: Settings,
        archive: Archive,
        partner: Partner,
        *,
        compress: str = "none",
        bucket: TokenBucket | None = None,
    ) -> None:
        if not partner.has_dicom:
            raise TransientFailure(f"partner {partner.name} has no DICOM address")
        tuning.install()
        sending.install()
        self.settings = settings
        self.archive = archive
        self.partner = partner
        self.syntax = compression.syntax_for(compress)
        self.bucket = bucket
        self.spool = archive.spool_dir
        self.ae = self._ae()
        self.assoc: Association | None = None
        self.socket: ThrottledSocket | None = None
        self._proposed: set[tuple[str, str]] = set()

    def _ae(self) -> AE:
        ae = AE(ae_title=self.settings.ae_title)
        ae.acse_timeout = 30
        ae.dimse_timeout = self.settings.dimse_timeout_s
        ae.network_timeout = self.settings.network_timeout_s
        ae.maximum_pdu_size = self.settings.max_pdu_size
        return ae

    def _associate(self, contexts: list[PresentationContext]) -> Association:
        assoc = self.ae.associate(
            self.partner.host,
            self.partner.port,
            contexts=contexts,
            ae_title=self.partner.ae_title,
            max_pdu=self.settings.max_pdu_size,
        )
        if not assoc.is_established:
            what = "rejected" if assoc.is_rejected else "could not be established"
            raise TransientFailure(
                f"association with {self.partner.ae_title}@{self.partner.host}:"
                f"{self.partner.port} {what}"
            )
        return assoc

    def _open(self, refs: Sequence[InstanceRef]) -> Association:
        assoc = self._associate(push_contexts(refs, self.syntax))
        raw = assoc.dul.socket.socket if assoc.dul.socket is not None else None
        if raw is None:
            raise TransientFailure("the association closed at once")
        # Count (and pace) every byte we send on it, commands and PDU headers included.
        self.socket = ThrottledSocket(raw, self.bucket)
        assoc.dul.socket.socket = self.socket  # type: ignore[union-attr,assignment]
        self._proposed = {(r.sop_class_uid, r.transfer_syntax_uid) for r in refs}
        return assoc

    # ------------------------------------------------------------ sending

    def send(self, batch: Sequence[tuple[PushItem, InstanceRef]], confirm: Confirm) -> None:
        if not batch:
            return
        refs = [ref for _, ref in batch]
        if self.assoc is None or not self.assoc.is_established:
            self.assoc = self._open(refs)
        elif not {(r.sop_class_uid, r.transfer_syntax_uid) for r in refs} <= self._proposed:
            self.close()
            self.assoc = self._open(refs)
        assoc = self.assoc
        # Compress the next instances while this one is on the wire.
        # One thread: encoding overlaps sending, never another encoding (see compression).
        with ThreadPoolExecutor(1, thread_name_prefix="push-compress") as pool:
            ahead: list[Future[Compressed] | None] = []

            def prepare(upto: int) -> None:
                while len(ahead) <= min(upto, len(batch) - 1):
                    item, ref = batch[len(ahead)]
                    wanted = self._should_compress(assoc, item, ref)
                    ahead.append(pool.submit(self._compressed, ref) if wanted else None)

            try:
                for index, (item, ref) in enumerate(batch):
                    prepare(index + COMPRESS_AHEAD)
                    future = ahead[index]
                    made = future.result() if future is not None else None
                    try:
                        confirm(item, self._send_one(assoc, item, ref, made, future is not None))
                    finally:
                        if made is not None:
                            made[0].unlink(missing_ok=True)
            finally:
                for future in ahead:
                    if future is not None and not future.cancel():
                        _discard(future)

    def _should_compress(self, assoc: Association, item: PushItem, ref: InstanceRef) -> bool:
        return (
            self.syntax is not None
            and not item.no_compress
            and compression.eligible(ref)
            and self.syntax in accepted_syntaxes(assoc, ref.sop_class_uid)
        )

    def _compressed(self, ref: InstanceRef) -> Compressed:
        assert self.syntax is not None
        with self.archive.readable_path(ref) as source:
            return compression.compress_file(source, ref, self.syntax, self.spool)

    def _send_one(
        self,
        assoc: Association,
        item: PushItem,
        ref: InstanceRef,
        made: Compressed,
        wanted: bool,
    ) -> SendResult:
        """C-STORE one instance: its compressed copy (``made``) or as archived."""
        assert self.socket is not None
        before = self.socket.sent
        try:
            if made is not None:
                path, cref = made
                rsp = self._store(assoc, StoredInstance(cref, lambda: nullcontext(path)))
            else:
                rsp = self._store(assoc, StoredInstance(ref, self._archived(ref)))
        except ValueError as exc:
            # No presentation context the partner accepted fits this instance.
            return SendResult("refused", 0, str(exc)[:255])
        wire = self.socket.sent - before
        status = _status(rsp)
        if status is None:
            raise TransientFailure(
                f"no C-STORE response from {self.partner.ae_title} for {ref.sop_uid} "
                "(association lost)"
            )
        if status == 0 or status >> 12 == 0xB:
            return SendResult("sent", wire)
        detail = f"C-STORE status 0x{status:04X} {rsp.get('ErrorComment', '') or ''!s}".strip()
        if status in _BUSY or status == _NOT_AUTHORIZED:
            raise TransientFailure(f"{self.partner.ae_title} answered {detail}")
        if made is not None:
            return SendResult("retry_plain", wire, detail)
        return SendResult("refused", wire, detail)

    def _archived(self, ref: InstanceRef) -> Any:
        return lambda: self.archive.readable_path(ref)

    def _store(self, assoc: Association, instance: StoredInstance) -> Dataset | None:
        try:
            return assoc.send_c_store(instance)
        except (OSError, RuntimeError, AttributeError) as exc:
            # The socket broke (the partner went away) in the middle of the data set.
            raise TransientFailure(f"C-STORE to {self.partner.ae_title} broke: {exc}") from exc

    # ------------------------------------------------------------ verifying

    def count(self, study_uid: str, series_uids: Sequence[str]) -> int | None:
        """C-FIND the partner's NumberOf{Study,Series}RelatedInstances (PS3.4 C.3.4)."""
        # Release the storage association first: a single-association SCP (DCMTK's
        # storescp) would not answer a second one while it is open.
        self.close()
        try:
            assoc = self._associate([build_context(StudyRootQueryRetrieveInformationModelFind)])
        except TransientFailure as exc:
            log.info("cannot verify with %s: %s", self.partner.name, exc)
            return None
        try:
            if not assoc.accepted_contexts:
                return None
            queries = []
            if series_uids:
                for uid in series_uids:
                    ds = Dataset()
                    ds.QueryRetrieveLevel = "SERIES"
                    ds.StudyInstanceUID = study_uid
                    ds.SeriesInstanceUID = uid
                    ds.NumberOfSeriesRelatedInstances = ""
                    queries.append((ds, "NumberOfSeriesRelatedInstances"))
            else:
                ds = Dataset()
                ds.QueryRetrieveLevel = "STUDY"
                ds.StudyInstanceUID = study_uid
                ds.NumberOfStudyRelatedInstances = ""
                queries.append((ds, "NumberOfStudyRelatedInstances"))
            total = 0
            for query, keyword in queries:
                for status, identifier in assoc.send_c_find(
                    query, StudyRootQueryRetrieveInformationModelFind
                ):
                    code = _status(status)
                    if code in (0xFF00, 0xFF01):
                        value = identifier.get(keyword) if identifier is not None else None
                        if value in (None, ""):
                            return None
                        total += int(value)
                    elif code != 0:
                        return None  # no answer, or a refusal: cannot tell
            return total
        finally:
            if assoc.is_established:
                assoc.release()

    def close(self) -> None:
        if self.assoc is not None and self.assoc.is_established:
            try:
                self.assoc.release()
            except Exception:  # the partner may be gone already
                self.assoc.abort()
        self.assoc = None
