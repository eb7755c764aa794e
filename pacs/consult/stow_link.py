"""Pushing to a partner over DICOMweb: STOW-RS, and a QIDO-RS count to verify.

Our own streaming ``multipart/related`` POST rather than ``dicomweb-client``:
that client parses every file with pydicom and re-encodes it (the partner would
not get the archived bytes), builds the whole request in memory, and has no place
to pace the upload or to learn, instance by instance, what was stored. Here each
part is the archived Part 10 file (or its lossless copy, see :mod:`.compression`)
read in slices, the request has an exact Content-Length, and the response's
ReferencedSOPSequence / FailedSOPSequence (PS3.18 10.5.3) confirm or refuse each
instance. Requests carry a few instances each, so a broken link loses little.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from pacs.archive import Archive
from pacs.config import Settings
from pacs.consult import compression
from pacs.consult.bandwidth import TokenBucket, throttled
from pacs.consult.httpclient import PartnerUnreachable, join, request
from pacs.consult.transport import Confirm, SendResult, TransientFailure
from pacs.storage.consult_models import Partner, PushItem
from pacs.storage.index import InstanceRef

log = logging.getLogger(__name__)

#: at most this many instances, and about this many bytes, per STOW-RS request
BATCH_INSTANCES = 16
BATCH_BYTES = 16 << 20
_READ = 256 << 10
_REFERENCED = "00081199"
_FAILED = "00081198"
_SOP_INSTANCE = "00081155"
_FAILURE_REASON = "00081197"


def _uid(item: dict[str, Any]) -> str:
    values = (item.get(_SOP_INSTANCE) or {}).get("Value") or [""]
    return str(values[0])


def _sequence(body: Any, tag: str) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        return []
    return list((body.get(tag) or {}).get("Value") or [])


def batches(
    items: Sequence[tuple[PushItem, InstanceRef]],
) -> Iterator[list[tuple[PushItem, InstanceRef]]]:
    """``items`` in requests of at most BATCH_INSTANCES and (about) BATCH_BYTES."""
    batch: list[tuple[PushItem, InstanceRef]] = []
    size = 0
    for pair in items:
        if batch and (len(batch) >= BATCH_INSTANCES or size + pair[1].size_bytes > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(pair)
        size += pair[1].size_bytes
    if batch:
        yield batch


class StowLink:
    """STOW-RS requests to one partner's DICOMweb service for a push."""

    def __init__(
        self,
        settings: Settings,
        archive: Archive,
        partner: Partner,
        token: str | None,
        *,
        compress: str = "none",
        bucket: TokenBucket | None = None,
    ) -> None:
        if not partner.has_dicomweb:
            raise TransientFailure(f"partner {partner.name} has no DICOMweb URL")
        self.settings = settings
        self.archive = archive
        self.partner = partner
        self.token = token
        self.syntax = compression.syntax_for(compress)
        self.bucket = bucket
        self.spool = archive.spool_dir

    # ------------------------------------------------------------ sending

    def send(self, batch: Sequence[tuple[PushItem, InstanceRef]], confirm: Confirm) -> None:
        for group in batches(batch):
            self._post(group, confirm)

    def _post(self, group: list[tuple[PushItem, InstanceRef]], confirm: Confirm) -> None:
        boundary = "pacs-" + secrets.token_hex(12)
        with ExitStack() as stack:
            parts: list[tuple[PushItem, Path, int, bool]] = []
            for item, ref in group:
                path, compressed = self._part_file(stack, item, ref)
                parts.append((item, path, path.stat().st_size, compressed))
            head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            tail = f"--{boundary}--\r\n".encode()
            length = sum(len(head) + size + 2 for _, _, size, _ in parts) + len(tail)

            def body() -> Iterator[bytes]:
                for _, path, _, _ in parts:
                    yield head
                    with path.open("rb") as fh:
                        while chunk := fh.read(_READ):
                            yield chunk
                    yield b"\r\n"
                yield tail

            study = group[0][1].study_uid
            try:
                answer = request(
                    join(self.partner.dicomweb_url, f"studies/{study}"),
                    method="POST",
                    token=self.token,
                    headers={
                        "Content-Type": (
                            f'multipart/related; type="application/dicom"; boundary={boundary}'
                        ),
                        "Accept": "application/dicom+json",
                    },
                    body=throttled(body(), self.bucket),
                    length=length,
                    timeout=self.settings.network_timeout_s,
                )
            except PartnerUnreachable as exc:
                raise TransientFailure(str(exc)) from exc
        if answer.status not in (200, 202, 409):
            raise TransientFailure(
                f"STOW-RS to {self.partner.name} answered {answer.status}: {answer.reason}"
            )
        body_json = answer.json()
        stored = {_uid(i) for i in _sequence(body_json, _REFERENCED)}
        failed = {
            _uid(i): ((i.get(_FAILURE_REASON) or {}).get("Value") or [0])[0]
            for i in _sequence(body_json, _FAILED)
        }
        for item, _path, size, compressed in parts:
            wire = len(head) + size + 2
            if item.sop_uid in stored:
                confirm(item, SendResult("sent", wire))
            elif item.sop_uid in failed:
                detail = f"STOW-RS failure reason {failed[item.sop_uid]}"
                confirm(item, SendResult("retry_plain" if compressed else "refused", wire, detail))
            # Not mentioned at all: not confirmed, so sent again on the next attempt.

    def _part_file(self, stack: ExitStack, item: PushItem, ref: InstanceRef) -> tuple[Path, bool]:
        """The file to send for ``ref``: its lossless copy when that applies, else as archived."""
        source = stack.enter_context(self.archive.readable_path(ref))
        if self.syntax is not None and not item.no_compress and compression.eligible(ref):
            made = stack.enter_context(
                compression.compressed_copy(source, ref, self.syntax, self.spool)
            )
            if made is not None:
                return made[0], True
        return source, False

    # ------------------------------------------------------------ verifying

    def count(self, study_uid: str, series_uids: Sequence[str]) -> int | None:
        """QIDO-RS NumberOf{Study,Series}RelatedInstances (PS3.18 10.6)."""
        try:
            if series_uids:
                total = 0
                for uid in series_uids:
                    value = self._count(
                        f"studies/{study_uid}/series",
                        {"SeriesInstanceUID": uid, "includefield": "00201209"},
                        "00201209",
                    )
                    if value is None:
                        return None
                    total += value
                return total
            return self._count(
                "studies",
                {"StudyInstanceUID": study_uid, "includefield": "00201208"},
                "00201208",
            )
        except PartnerUnreachable as exc:
            log.info("cannot verify with %s: %s", self.partner.name, exc)
            return None

    def _count(self, path: str, params: dict[str, str], tag: str) -> int | None:
        answer = request(
            join(self.partner.dicomweb_url, path) + "?" + urlencode(params),
            token=self.token,
            headers={"Accept": "application/dicom+json"},
            timeout=self.settings.network_timeout_s,
        )
        if answer.status == 204:
            return 0
        rows = answer.json() if answer.status == 200 else None
        if not isinstance(rows, list):
            return None
        total = 0
        for row in rows:
            values = (row.get(tag) or {}).get("Value") if isinstance(row, dict) else None
            if not values:
                return None
            total += int(values[0])
        return total

    def close(self) -> None:
        """Nothing stays open between requests."""
