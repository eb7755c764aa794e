"""Sending archived instances over C-STORE sub-operations (C-MOVE, C-GET) and pushes.

pynetdicom's Q/R SCP wants the handler to yield ``Dataset`` objects and then
re-encodes them, which costs a full parse per instance and does not promise the
archived bytes. :class:`StoredInstance` is a ``Dataset`` that only *names* an
archived file; :func:`install` makes ``Association.send_c_store`` send such an
object straight from its file (the data set bytes exactly as stored) when the
peer accepted its transfer syntax, and otherwise decompresses it to a syntax the
peer accepted.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import _config
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.utils import set_ae

from pacs import metrics
from pacs.scp import receive
from pacs.scp.tuning import (
    command_bytes,
    message_buffers,
    pdu_header,
    pdv_chunks,
    send_buffers,
    send_lock,
)
from pacs.storage.index import InstanceRef

log = logging.getLogger(__name__)

UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
NATIVE = frozenset(
    {
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
    }
)
# pynetdicom (and DICOM, PS3.8 9.3.2.2) allows at most 128 presentation contexts.
MAX_CONTEXTS = 128


class StoredInstance(Dataset):
    """A stand-in ``Dataset`` for an archived instance, sent from its file."""

    def __init__(
        self, ref: InstanceRef, local_file: Callable[[], AbstractContextManager[Path]]
    ) -> None:
        super().__init__()
        self.SOPClassUID = ref.sop_class_uid
        self.SOPInstanceUID = ref.sop_uid
        self._pacs_ref = ref
        self._pacs_local_file = local_file

    @property
    def ref(self) -> InstanceRef:
        return self._pacs_ref

    def local_file(self) -> AbstractContextManager[Path]:
        return self._pacs_local_file()


def accepted_syntaxes(assoc: Association, sop_class: str) -> list[UID]:
    """Transfer syntaxes we may use to send ``sop_class`` on ``assoc`` as the SCU."""
    out = []
    for cx in assoc.accepted_contexts:
        if cx.abstract_syntax == sop_class and cx.as_scu:
            out.append(UID(cx.transfer_syntax[0]))
    return out


# pydicom's decoders in the order that decodes the most of the real corpus;
# one failing on a quirk of a file (J2K_pixelrep_mismatch.dcm with pylibjpeg)
# is not the end: the next may manage.
_DECODERS = ("pylibjpeg", "pydicom", "gdcm", "pyjpegls", "pillow")


def _decompress(ds: Dataset) -> None:
    """Decompress in place, keeping the SOP Instance UID (it is the same instance)."""
    failures = []
    for plugin in _DECODERS:
        try:
            ds.decompress(decoding_plugin=plugin, generate_instance_uid=False)
            return
        except Exception as exc:  # each plugin fails in its own way
            failures.append(f"{plugin}: {exc}")
    raise ValueError("cannot decompress for the destination: " + "; ".join(failures))


def _decompressed(path: Path, allowed: Sequence[UID]) -> Dataset:
    ds = dcmread(path)
    ts = ds.file_meta.TransferSyntaxUID
    if ts.is_compressed:
        _decompress(ds)
    if ds.file_meta.TransferSyntaxUID not in allowed:
        # pynetdicom converts between the uncompressed syntaxes itself.
        target = next((t for t in allowed if t in UNCOMPRESSED), None)
        if target is None:
            raise ValueError(f"the peer accepts none of our syntaxes for {ds.SOPClassUID}")
        ds.file_meta.TransferSyntaxUID = target
    return ds


def _context_id(assoc: Association, sop_class: str, syntax: str) -> int:
    for cx in assoc.accepted_contexts:
        if cx.abstract_syntax == sop_class and cx.transfer_syntax[0] == syntax and cx.as_scu:
            return int(cx.context_id)  # type: ignore[arg-type]
    raise ValueError(f"no accepted context for {sop_class} in {syntax}")


# Bytes of the data set read and sent per gathered write.
_WINDOW = 4 << 20


def _guard_responses(assoc: Association) -> None:
    """Keep the association's reactor from taking our C-STORE response.

    pynetdicom parks the reactor with a flag it may read stale (the reactor is
    between waking and clearing it): the reactor then polls the message queue,
    takes the response we wait for and drops it, and the store times out. That
    happened here under load. Instead, while we await a response, the reactor's
    non-blocking polls see an empty queue; our blocking read gets the message.
    """
    dimse = assoc.dimse
    if getattr(dimse, "_pacs_guarded", False):
        return
    original = dimse.get_msg

    def get_msg(block: bool = False) -> Any:
        if not block and getattr(assoc, "_pacs_awaiting", False):
            return None, None
        return original(block)

    dimse.get_msg = get_msg  # type: ignore[method-assign]
    dimse._pacs_guarded = True


def _fast_send(
    assoc: Association,
    path: Path,
    ref: InstanceRef,
    *,
    msg_id: int = 1,
    priority: int = 2,
    originator_aet: str | None = None,
    originator_id: int | None = None,
) -> Dataset:
    """C-STORE ``path`` as stored: the data set goes from the file to the socket.

    pynetdicom encodes every fragment through its DUL thread; here the command
    and the data set PDUs are written directly (a gathered write per 4 MB read),
    while holding the socket's send lock so no other message can interleave.
    This thread then reads the response itself while the DUL thread stays off
    the socket (:func:`pacs.scp.receive.reading`), unless an observer of
    pynetdicom's events wants it to go through pynetdicom.
    """
    context_id = _context_id(assoc, ref.sop_class_uid, ref.transfer_syntax_uid)
    command = _store_command(path, ref, msg_id, priority, originator_aet, originator_id)
    assoc_socket = assoc.dul.socket
    sock = assoc_socket.socket if assoc_socket is not None else None
    if sock is None:
        raise ConnectionError("the association is closed")
    max_pdu = assoc.dimse.maximum_pdu_size
    _guard_responses(assoc)
    assoc._pacs_awaiting = True
    try:
        with receive.reading(assoc) as direct:
            _send_request(assoc_socket, sock, path, ref, command, context_id, max_pdu)
            found = receive.take_store_response(assoc, assoc.dimse_timeout) if direct else None
        if found is None:
            _context, rsp = assoc.dimse.get_msg(block=True)
        elif found is receive.NO_RESPONSE:
            rsp = None
        else:
            _context, rsp = found
    finally:
        assoc._pacs_awaiting = False
    if rsp is None:
        assoc._handle_no_response()
        return Dataset()
    return assoc._check_received_status(rsp)


@dataclass(frozen=True)
class _StoreRequest:
    """The parameters of a C-STORE-RQ, as :func:`command_bytes` reads them from a
    ``C_STORE`` primitive. The primitive validates every UID it is given, which cost
    more than encoding the command; these UIDs come from the index, which validated
    them on the way in."""

    MessageID: int
    Priority: int
    AffectedSOPClassUID: str
    AffectedSOPInstanceUID: str
    MoveOriginatorApplicationEntityTitle: str | None
    MoveOriginatorMessageID: int | None


@functools.lru_cache(maxsize=64)
def _originator(ae_title: str | None) -> str | None:
    """The Move Originator AE Title as the C_STORE primitive keeps it (validated)."""
    return set_ae(ae_title, "Move Originator AE Title")


def _store_command(
    path: Path,
    ref: InstanceRef,
    msg_id: int,
    priority: int,
    originator_aet: str | None,
    originator_id: int | None,
) -> bytes:
    try:
        originator = _originator(originator_aet)
    except ValueError:
        originator = None  # as the primitive does: logged by set_ae, then left out
    request = _StoreRequest(
        msg_id, priority, ref.sop_class_uid, ref.sop_uid, originator, originator_id
    )
    command = command_bytes(request, "C-STORE-RQ", True)
    if command is not None:
        return command
    # An originator AE title pydicom must encode (non-ASCII, say): its way.
    req = C_STORE()
    req.MessageID = msg_id
    req.Priority = priority
    req.AffectedSOPClassUID = ref.sop_class_uid
    req.AffectedSOPInstanceUID = ref.sop_uid
    req.MoveOriginatorApplicationEntityTitle = originator_aet
    req.MoveOriginatorMessageID = originator_id
    req._dataset_path = (path, ref.dataset_offset)
    message = C_STORE_RQ()
    message.primitive_to_message(req)
    encoded = encode(message.command_set, True, True)
    assert encoded is not None
    return encoded


def _send_request(
    assoc_socket: Any,
    sock: Any,
    path: Path,
    ref: InstanceRef,
    command: bytes,
    context_id: int,
    max_pdu: int,
) -> None:
    """Write the C-STORE-RQ command and the data set of ``path`` as P-DATA-TF PDUs."""
    with path.open("rb") as fh, send_lock(assoc_socket):
        length = os.fstat(fh.fileno()).st_size - ref.dataset_offset
        send_buffers(sock, message_buffers(command, b"", context_id, max_pdu))
        fh.seek(ref.dataset_offset)
        step = length if max_pdu == 0 else max(1, max_pdu - 6)
        # Whole fragments per window, so PDU boundaries never split a read.
        window = max(step, (_WINDOW // step) * step)
        done = 0
        while done < length:
            data = memoryview(fh.read(min(window, length - done)))
            if not data:
                raise ConnectionError(f"{path} is shorter than its index entry says")
            buffers = []
            for offset, size, _last in pdv_chunks(len(data), max_pdu):
                last = done + offset + size >= length
                buffers.append(pdu_header(context_id, 0x02 if last else 0x00, size))
                buffers.append(data[offset : offset + size])
            send_buffers(sock, buffers)
            done += len(data)


def send_stored(
    original: Callable[..., Dataset], assoc: Association, instance: StoredInstance, **kwargs: Any
) -> Dataset:
    ref = instance.ref
    allowed = accepted_syntaxes(assoc, ref.sop_class_uid)
    if not allowed:
        raise ValueError(f"no accepted presentation context for SOP Class {ref.sop_class_uid}")
    with instance.local_file() as path:
        if ref.transfer_syntax_uid in allowed:
            # Sent as archived, straight from the file.
            return _fast_send(assoc, path, ref, **kwargs)
        log.info(
            "transcoding %s from %s for %s (peer accepted %s)",
            ref.sop_uid,
            ref.transfer_syntax_uid,
            assoc.acceptor.ae_title if assoc.is_requestor else assoc.requestor.ae_title,
            ", ".join(allowed),
        )
        return original(assoc, _decompressed(path, allowed), **kwargs)


_installed = False


def install() -> None:
    """Teach ``Association.send_c_store`` to send :class:`StoredInstance` objects."""
    global _installed
    if _installed:
        return
    # Sending a path streams its data set; we only ever pass paths from send_stored.
    _config.STORE_SEND_CHUNKED_DATASET = True
    original = Association.send_c_store

    @functools.wraps(original)
    def send_c_store(self: Association, dataset: Any, *args: Any, **kwargs: Any) -> Dataset:
        if isinstance(dataset, StoredInstance):
            names = ("msg_id", "priority", "originator_aet", "originator_id")
            kwargs = dict(zip(names, args, strict=False)) | kwargs
            try:
                status = send_stored(original, self, dataset, **kwargs)
            except Exception:
                metrics.suboperation("failure")
                raise
            code = int(getattr(status, "Status", 0xC000))
            outcome = "success" if code == 0 else "warning" if code >> 12 == 0xB else "failure"
            metrics.suboperation(outcome)
            return status
        return original(self, dataset, *args, **kwargs)

    Association.send_c_store = send_c_store  # type: ignore[method-assign]
    _installed = True


def storage_contexts(refs: Iterable[InstanceRef]) -> list[PresentationContext]:
    """Contexts to propose for sending ``refs``: each stored syntax on its own context,
    plus an uncompressed fallback per SOP class (so the peer may pick either).

    A context offers one syntax chosen by the peer; the stored syntax gets a
    context of its own so that a peer accepting it receives the bytes as archived.
    """
    stored: dict[str, set[str]] = {}
    for ref in refs:
        stored.setdefault(ref.sop_class_uid, set()).add(ref.transfer_syntax_uid)
    contexts = []
    for sop_class, syntaxes in sorted(stored.items()):
        for ts in sorted(syntaxes):
            contexts.append(build_context(sop_class, [ts]))
        contexts.append(build_context(sop_class, list(UNCOMPRESSED)))
    if len(contexts) > MAX_CONTEXTS:
        # Too many combinations: keep the uncompressed fallbacks, which carry anything.
        contexts = [cx for cx in contexts if len(cx.transfer_syntax) > 1][:MAX_CONTEXTS]
    return contexts
