"""C-STORE requests received straight from the P-DATA-TF PDUs, on the DUL thread.

pynetdicom turns every received PDU into PDU and primitive objects, passes it
through its event queue and state machine, decodes each command set into a
pydicom data set, queues the message for the association thread, and runs the
handler there through its service class and event machinery: about 1.2 ms of
Python per instance, and hand-offs of the GIL between two threads.

Here the DUL thread reads a P-DATA-TF PDU and, when it carries a C-STORE
request on an accepted presentation context, writes the data set fragments
straight to the spool file (with the File Meta pynetdicom would have written),
archives it through the same function as pynetdicom's handler, and writes the
C-STORE response to the socket. Everything else — other messages, PDUs outside
the data transfer state, anything unusual in a command set — is handed to
pynetdicom exactly as it arrived (PDV by PDV), so its behaviour is unchanged.

Receiving P-DATA and sending P-DATA in Sta6 do not change the state of the
upper layer state machine (PS3.8 9.2, DT-1 and DT-2), which is what makes it
safe to bypass the machine for them. Tied to pynetdicom 3.0.4 like
:mod:`pacs.scp.tuning`, and tested byte for byte against its own spooling.

The C-STORE responses that :mod:`pacs.scp.sending` awaits (C-MOVE, C-GET,
pushes) are read by the sending thread itself (:func:`reading`,
:func:`take_store_response`): the DUL thread leaves the socket alone meanwhile,
which saves a hand-over between two threads per instance sent.

Measured on 2 cores (bench/README.md): with four modalities sending at once
about 10 % more instances per second; one association alone is bound by the
archive's own work and the disk flush, and did not change measurably.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import select
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pynetdicom
import pynetdicom.dul
import pynetdicom.events
from pydicom.dataset import Dataset
from pynetdicom.dimse_primitives import C_STORE

from pacs.scp.tuning import (
    FileMeta,
    file_meta_bytes,
)
from pacs.storage.writeback import start_writeback

log = logging.getLogger(__name__)

C_STORE_RQ = 0x0001
NO_DATA_SET = 0x0101
# PS3.4 B.2.3: a failure of the SCP's own ("Cannot understand"), as pynetdicom answers
# when its handler raises.
PROCESSING_FAILURE = 0xC211
# PS3.4 B.2.3: "Refused: Out of Resources".
OUT_OF_RESOURCES = 0xA700
# Start the disk write of a spooled data set every this many bytes.
WRITEBACK_STEP = 256 * 1024

# Element numbers (group 0000) of the C-STORE-RQ command set, PS3.7 9.3.1.1.
_AFFECTED_SOP_CLASS = 0x0002
_COMMAND_FIELD = 0x0100
_MESSAGE_ID = 0x0110
_PRIORITY = 0x0700
_DATA_SET_TYPE = 0x0800
_AFFECTED_SOP_INSTANCE = 0x1000
_MOVE_ORIGINATOR_AE = 0x1030
_MOVE_ORIGINATOR_ID = 0x1031

C_STORE_RSP = 0x8001
_GROUP_LENGTH = 0x0000
_RESPONDED_TO = 0x0120
_STATUS = 0x0900
_ERROR_COMMENT = 0x0902
# What a C-STORE response we parse ourselves may hold; anything more (an
# offending element, say) goes to pynetdicom.
_STORE_RSP_ELEMENTS = frozenset(
    {
        _GROUP_LENGTH,
        _AFFECTED_SOP_CLASS,
        _COMMAND_FIELD,
        _RESPONDED_TO,
        _DATA_SET_TYPE,
        _STATUS,
        _ERROR_COMMENT,
        _AFFECTED_SOP_INSTANCE,
    }
)

# Events pynetdicom raises per PDU or message: if anything listens to one, the
# association keeps pynetdicom's own path so the listener sees everything.
_OBSERVED = (
    pynetdicom.events.EVT_DATA_RECV,
    pynetdicom.events.EVT_PDU_RECV,
    pynetdicom.events.EVT_DIMSE_RECV,
    pynetdicom.events.EVT_DATA_SENT,
    pynetdicom.events.EVT_PDU_SENT,
    pynetdicom.events.EVT_DIMSE_SENT,
)


class ProtocolError(Exception):
    """The peer broke PS3.7/PS3.8 in a way that ends the association."""


@dataclass(frozen=True)
class StoreRequest:
    """What a C-STORE request's command set says (PS3.7 9.3.1.1)."""

    context_id: int
    message_id: int
    sop_class_uid: str
    sop_instance_uid: str
    priority: int
    move_originator_ae: str | None = None
    move_originator_id: int | None = None


@dataclass(frozen=True)
class Spooled:
    """A received data set, Part 10 in the spool, with the digest of its bytes."""

    path: Path
    sha256: str
    size: int


#: Archives a spooled C-STORE for an association: a status, or a status data set.
StoreHandler = Callable[[Any, StoreRequest, Spooled], Any]


def _failure(status: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment[:64]  # LO
    return ds


def command_elements(encoded: bytes | bytearray | memoryview) -> dict[int, bytes]:
    """The elements of a command set (implicit VR little endian, group 0000).

    Raises ValueError for anything else: a truncated element, another group.
    """
    elements: dict[int, bytes] = {}
    view = memoryview(encoded)
    offset = 0
    while offset < len(view):
        if offset + 8 > len(view):
            raise ValueError("truncated command element")
        group, element, length = struct.unpack_from("<HHI", view, offset)
        offset += 8
        if group != 0 or offset + length > len(view):
            raise ValueError(f"unexpected command element ({group:04X},{element:04X})")
        elements[element] = bytes(view[offset : offset + length])
        offset += length
    return elements


def _text(raw: bytes) -> str:
    # UI values are padded with NUL, AE/SH with spaces (PS3.5 6.2).
    return raw.decode("ascii").strip("\x00 ")


def _us(raw: bytes) -> int:
    (value,) = struct.unpack("<H", raw)
    return int(value)


def store_request(context_id: int, elements: dict[int, bytes]) -> StoreRequest | None:
    """The C-STORE request these command elements make, or None when they make
    anything else (another message, no data set, a parameter missing or odd)."""
    try:
        if _us(elements[_COMMAND_FIELD]) != C_STORE_RQ:
            return None
        if _us(elements[_DATA_SET_TYPE]) == NO_DATA_SET:
            return None
        sop_class = _text(elements[_AFFECTED_SOP_CLASS])
        sop_instance = _text(elements[_AFFECTED_SOP_INSTANCE])
        if not sop_class or not sop_instance:
            return None
        originator_ae = elements.get(_MOVE_ORIGINATOR_AE)
        originator_id = elements.get(_MOVE_ORIGINATOR_ID)
        return StoreRequest(
            context_id=context_id,
            message_id=_us(elements[_MESSAGE_ID]),
            sop_class_uid=sop_class,
            sop_instance_uid=sop_instance,
            priority=_us(elements[_PRIORITY]),
            move_originator_ae=_text(originator_ae) if originator_ae else None,
            move_originator_id=_us(originator_id) if originator_id else None,
        )
    except (KeyError, ValueError, UnicodeDecodeError, struct.error):
        return None


def store_response(body: memoryview) -> tuple[int, C_STORE] | None:
    """(context ID, C-STORE response primitive) when a P-DATA-TF body is exactly one
    whole C-STORE-RSP command of the plain kind, else None."""
    try:
        items = pdv_items(body)
    except ProtocolError:
        return None
    if len(items) != 1 or items[0][1] & 0x03 != 0x03:
        return None
    context_id, _, fragment, _ = items[0]
    try:
        elements = command_elements(fragment)
        if not elements.keys() <= _STORE_RSP_ELEMENTS:
            return None
        if _us(elements[_COMMAND_FIELD]) != C_STORE_RSP:
            return None
        if _us(elements[_DATA_SET_TYPE]) != NO_DATA_SET:
            return None
        rsp = C_STORE()
        rsp.MessageIDBeingRespondedTo = _us(elements[_RESPONDED_TO])
        rsp.Status = _us(elements[_STATUS])
        for element, keyword in (
            (_AFFECTED_SOP_CLASS, "AffectedSOPClassUID"),
            (_AFFECTED_SOP_INSTANCE, "AffectedSOPInstanceUID"),
            (_ERROR_COMMENT, "ErrorComment"),
        ):
            value = _text(elements.get(element, b""))
            if value:
                setattr(rsp, keyword, value)
    except (KeyError, ValueError, UnicodeDecodeError, struct.error):
        return None
    return context_id, rsp


def pdv_items(body: memoryview) -> list[tuple[int, int, memoryview, memoryview]]:
    """(context ID, control header, fragment, whole item) of a P-DATA-TF's PDVs."""
    items = []
    offset = 0
    while offset < len(body):
        if offset + 6 > len(body):
            raise ProtocolError("truncated PDV item")
        (length,) = struct.unpack_from(">L", body, offset)
        end = offset + 4 + length
        if length < 2 or end > len(body):
            raise ProtocolError(f"PDV item of length {length} overruns its PDU")
        items.append((body[offset + 4], body[offset + 5], body[offset + 6 : end], body[offset:end]))
        offset = end
    return items


def pdata_pdu(items: list[bytes]) -> bytes:
    """A P-DATA-TF PDU holding these PDV items (each with its length field)."""
    body = b"".join(items)
    return struct.pack(">BBL", 0x04, 0x00, len(body)) + body


class StoreReceiver:
    """The C-STORE fast path of one association, fed every P-DATA-TF in Sta6.

    ``feed`` returns the PDUs pynetdicom must still see, in order. A message is
    held back only until its command set is complete: then it is either taken
    (a C-STORE request) or given to pynetdicom whole.
    """

    IDLE, COMMAND, STORE, FORWARD, OFF = "idle", "command", "store", "forward", "off"

    def __init__(self, assoc: Any, handler: StoreHandler, spool_dir: Path | None) -> None:
        self.assoc = assoc
        self.handler = handler
        self.spool_dir = spool_dir
        self.mode = self.IDLE
        self._held: list[bytes] = []
        self._command = bytearray()
        self._request: StoreRequest | None = None
        self._file: Any = None
        self._path: Path | None = None
        self._digest: Any = None
        self._size = 0
        self._flushing = 0  # bytes whose write-back was started
        self._failed: str | None = None  # why the spool could not take the data set
        self._lock = threading.Lock()

    # ------------------------------------------------------------ PDU level

    def feed(self, body: memoryview) -> list[bytes]:
        """Process one P-DATA-TF PDU (``body`` without its 6-byte header)."""
        forward: list[bytes] = []
        for context_id, control, fragment, item in pdv_items(body):
            is_command = bool(control & 0x01)
            last = bool(control & 0x02)
            if self.mode == self.STORE:
                self._store_fragment(context_id, is_command, last, fragment)
            elif self.mode == self.OFF:
                forward.append(bytes(item))
            elif self.mode == self.FORWARD:
                forward.append(bytes(item))
                if not is_command and last:
                    self.mode = self.IDLE
            elif not is_command:
                # A data set with no command before it: pynetdicom decides what
                # that means, and has everything from here on.
                self.mode = self.OFF
                forward.extend(self._release_held())
                forward.append(bytes(item))
            else:
                self.mode = self.COMMAND
                self._held.append(bytes(item))
                self._command += fragment
                if last:
                    forward.extend(self._command_complete(context_id))
        return [pdata_pdu(forward)] if forward else []

    def _release_held(self) -> list[bytes]:
        held, self._held = self._held, []
        self._command = bytearray()
        return held

    def _command_complete(self, context_id: int) -> list[bytes]:
        try:
            elements = command_elements(self._command)
        except ValueError:
            elements = {}
        request = store_request(context_id, elements)
        cx = self.assoc._accepted_cx.get(context_id) if request else None
        if request is None or cx is None or not cx.transfer_syntax:
            has_data = elements.get(_DATA_SET_TYPE) not in (None, struct.pack("<H", NO_DATA_SET))
            self.mode = self.FORWARD if has_data else self.IDLE
            return self._release_held()
        self._release_held()
        self._begin(request, str(cx.transfer_syntax[0]))
        return []

    # ------------------------------------------------------------ spooling

    def _begin(self, request: StoreRequest, transfer_syntax: str) -> None:
        with self._lock:
            self._request = request
            self._failed = None
            self._digest = hashlib.sha256()
            self._size = 0
            self._flushing = 0
            self.mode = self.STORE
        meta = FileMeta(
            (
                request.sop_class_uid,
                request.sop_instance_uid,
                transfer_syntax,
                pynetdicom.PYNETDICOM_IMPLEMENTATION_UID,
                pynetdicom.PYNETDICOM_IMPLEMENTATION_VERSION,
            )
        )
        with self._lock:
            try:
                fd, name = tempfile.mkstemp(suffix=".dcm", dir=self.spool_dir)
                self._path = Path(name)
                # Unbuffered: what was written is in the page cache, ready for write-back.
                self._file = os.fdopen(fd, "wb", buffering=0)
                self._write(b"\x00" * 128 + b"DICM" + file_meta_bytes(meta))
            except OSError as exc:
                self._fail(exc)

    def _write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            view = view[self._file.write(view) :]
        self._digest.update(data)
        self._size += len(data)
        if self._size - self._flushing >= WRITEBACK_STEP:
            # The archive fsyncs the file before acknowledging it: start the disk
            # writes now so that flush has only the tail left to wait for.
            start_writeback(self._file.fileno(), self._flushing, self._size - self._flushing)
            self._flushing = self._size

    def _fail(self, exc: OSError) -> None:
        """The spool cannot take the data set (a full disk): drop what was written and
        read the rest of it without keeping it, to answer with a failure status."""
        request = self._request
        log.warning(
            "C-STORE %s: cannot spool the data set: %s",
            request.sop_instance_uid if request else "?",
            exc,
        )
        self._failed = f"cannot spool the data set: {exc.strerror or exc}"
        file, path = self._file, self._path
        self._file = self._path = None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink()

    def _store_fragment(
        self, context_id: int, is_command: bool, last: bool, data: memoryview
    ) -> None:
        request = self._request
        if request is None:  # discarded meanwhile: the association is ending
            return
        if is_command or context_id != request.context_id:
            raise ProtocolError(
                f"C-STORE {request.sop_instance_uid}: PDV of context {context_id} "
                f"({'command' if is_command else 'data'}) inside the data set of context "
                f"{request.context_id}"
            )
        with self._lock:
            if self._request is not request:
                return
            if self._failed is None:
                try:
                    self._write(data)
                except OSError as exc:
                    self._fail(exc)
        if last:
            self._finish(request)

    def _finish(self, request: StoreRequest) -> None:
        with self._lock:
            if self._request is not request:
                return
            file, path, failed = self._file, self._path, self._failed
            self._file = self._path = self._request = None
            self.mode = self.IDLE
        if failed is not None:
            status: Any = _failure(OUT_OF_RESOURCES, failed)
        else:
            assert file is not None and path is not None
            file.close()
            spooled = Spooled(path, self._digest.hexdigest(), self._size)
            try:
                status = self.handler(self.assoc, request, spooled)
            except Exception:
                log.exception("C-STORE %s: the store handler failed", request.sop_instance_uid)
                status = PROCESSING_FAILURE
            finally:
                # Archived files were moved away; anything left is ours to remove.
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        if self.assoc.is_established:
            self._respond(request, status)

    def discard(self, why: str) -> None:
        """Drop a data set that will never be complete (abort, closed connection)."""
        with self._lock:
            file, path = self._file, self._path
            self._file = self._path = self._request = None
            self.mode = self.IDLE
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()
        if path is None:
            return
        with contextlib.suppress(OSError):
            path.unlink()
        log.info("discarded a partially received C-STORE (%s): %s", path.name, why)

    # ------------------------------------------------------------ response

    def _respond(self, request: StoreRequest, status: Any) -> None:
        rsp = C_STORE()
        rsp.MessageIDBeingRespondedTo = request.message_id
        rsp.AffectedSOPClassUID = request.sop_class_uid
        rsp.AffectedSOPInstanceUID = request.sop_instance_uid
        if isinstance(status, int):
            rsp.Status = status
        else:  # a status data set: Status and ErrorComment
            rsp.Status = int(status.Status)
            comment = status.get("ErrorComment")
            if comment:
                rsp.ErrorComment = str(comment)
        # Through the shared sender (pacs.scp.tuning): written directly to the socket in
        # Sta6, queued behind anything pynetdicom still has to send otherwise.
        self.assoc.dimse.send_msg(rsp, request.context_id)


# ---------------------------------------------------------------- the DUL hook

_ATTRIBUTE = "_pacs_store_receiver"


def enable(ae: Any, handler: StoreHandler, spool_dir: Path | None = None) -> None:
    """Receive C-STORE requests on ``ae``'s accepted associations through ``handler``."""
    ae._pacs_store_handler = (handler, spool_dir)


def receiver(assoc: Any) -> StoreReceiver | None:
    """The association's fast path, if it has one (made on first use)."""
    found = getattr(assoc, _ATTRIBUTE, None)
    if found is not None:
        return found if isinstance(found, StoreReceiver) else None
    setting = getattr(assoc.ae, "_pacs_store_handler", None)
    usable = setting is not None and assoc.is_acceptor and not _observed(assoc)
    made = StoreReceiver(assoc, *setting) if usable else False
    setattr(assoc, _ATTRIBUTE, made)
    return made or None


def _observed(assoc: Any) -> bool:
    """Whether anything listens to ``assoc``'s PDU or DIMSE events (then pynetdicom reads)."""
    return any(assoc.get_handlers(event) for event in _OBSERVED)


def discard(assoc: Any, why: str) -> None:
    """Drop the association's partially received data set, if any."""
    found = getattr(assoc, _ATTRIBUTE, None)
    if isinstance(found, StoreReceiver):
        found.discard(why)


def _queue_pdu(dul: Any, pdu_bytes: bytes | bytearray) -> None:
    """Hand a received PDU to pynetdicom's state machine as its reader would."""
    try:
        pdu, event = dul._decode_pdu(pdu_bytes)
    except Exception as exc:
        log.warning("undecodable PDU from the peer: %s", exc)
        dul.event_queue.put("Evt19")  # invalid PDU: the state machine aborts
        return
    dul.event_queue.put(event)
    dul._recv_pdu.put(pdu)


def _read_exactly(dul: Any, count: int) -> bytearray | None:
    try:
        data = dul.socket.recv(count)
    except (OSError, TimeoutError) as exc:
        log.info("connection closed while reading a PDU: %s", exc)
        return None
    return data if len(data) == count else None


def read_pdu_data(dul: Any) -> None:
    """``DULServiceProvider._read_pdu_data`` with P-DATA-TF in Sta6 taken here first.

    Emits the events pynetdicom's reader does: Evt17 when the connection closes
    mid-PDU, Evt19 for an unknown or undecodable PDU, else the PDU's own event.
    Reads nothing while a sending thread reads the socket (:func:`reading`).
    """
    lock = getattr(dul, "_pacs_reader_lock", None)
    if lock is None:
        _read_pdu(dul)
        return
    if not lock.acquire(blocking=False):
        return  # the sending thread is reading its response
    try:
        # That thread may have taken the data that made the socket look ready.
        if _readable(dul, 0):
            _read_pdu(dul)
    finally:
        lock.release()


def _readable(dul: Any, timeout: float | None) -> bool:
    sock = getattr(dul.socket, "socket", None)
    if sock is None:
        return False
    try:
        return bool(select.select([sock], [], [], timeout)[0])
    except (OSError, ValueError):
        return True  # closed meanwhile: the read reports it as pynetdicom would


@contextlib.contextmanager
def reading(assoc: Any) -> Iterator[bool]:
    """Keep the DUL thread off ``assoc``'s socket: the caller will read its C-STORE
    response itself (:func:`take_store_response`). Yields False, holding nothing,
    when pynetdicom must read as usual (a listener on PDU or DIMSE events, or a
    DUL thread not started through :mod:`pacs.scp.tuning`, which creates the lock)."""
    lock = getattr(assoc.dul, "_pacs_reader_lock", None)
    if lock is None or not _installed or _observed(assoc):
        yield False
        return
    with lock:
        yield True


#: :func:`take_store_response`: no response will come (closed, aborted, timed out)
NO_RESPONSE = object()


def take_store_response(assoc: Any, timeout: float | None) -> Any:
    """The C-STORE-RSP a sender awaits, read from the socket inside :func:`reading`.

    Returns (context ID, response primitive); :data:`NO_RESPONSE` when the
    connection closed, the peer aborted or ``timeout`` passed; None when another
    PDU came first (a response cut in fragments, say): it went to pynetdicom's
    state machine, and the response will arrive through the DIMSE queue.
    """
    dul = assoc.dul
    if not _readable(dul, timeout):
        return NO_RESPONSE  # pynetdicom logs the timeout and aborts
    pdu = _read_whole_pdu(dul)
    if isinstance(pdu, str):
        return _aborting(assoc, pdu)
    header, body = pdu
    dul._idle_timer.restart()
    if header[0] == 0x04:
        found = store_response(memoryview(body))
        if found is not None:
            return found
        _queue_pdu(dul, header + body)
        return None
    _queue_pdu(dul, header + body)
    # An A-ABORT or A-RELEASE instead of our response.
    return _aborting(assoc, None)


def _aborting(assoc: Any, event: str | None) -> object:
    """Have the state machine take ``event`` (a closed or broken connection), and give
    it a moment to, so that pynetdicom's handling of the missing response sees why."""
    if event is not None:
        assoc.dul.event_queue.put(event)
    deadline = time.monotonic() + 1.0
    while not assoc.acse.is_aborted() and time.monotonic() < deadline:
        time.sleep(0.002)
    return NO_RESPONSE


def _read_whole_pdu(dul: Any) -> tuple[bytearray, bytearray] | str:
    """(header, body) of the next PDU, or the event for what went wrong: Evt17 when
    the connection closes mid-PDU, Evt19 for an unknown PDU type."""
    header = _read_exactly(dul, 6)
    if header is None:
        return "Evt17"
    pdu_type, _, length = struct.unpack(">BBL", header)
    if pdu_type not in range(0x01, 0x08):
        log.warning("unknown PDU type 0x%02X from the peer", pdu_type)
        return "Evt19"
    body = _read_exactly(dul, length) if length else bytearray()
    if body is None:
        return "Evt17"
    return header, body


def _read_pdu(dul: Any) -> None:
    pdu = _read_whole_pdu(dul)
    if isinstance(pdu, str):
        dul.event_queue.put(pdu)
        return
    header, body = pdu
    in_transfer = header[0] == 0x04 and dul.state_machine.current_state == "Sta6"
    fast = receiver(dul.assoc) if in_transfer else None
    if fast is None:
        _queue_pdu(dul, header + body)
        return
    try:
        forward = fast.feed(memoryview(body))
    except ProtocolError as exc:
        log.warning("association from %s: %s", dul.assoc.requestor.ae_title, exc)
        fast.discard(str(exc))
        dul.event_queue.put("Evt19")  # invalid PDU: the state machine aborts
        return
    for pdu_bytes in forward:
        _queue_pdu(dul, pdu_bytes)


_installed = False


def install() -> None:
    """Route received PDUs through :func:`read_pdu_data` (once per process)."""
    global _installed
    if _installed or pynetdicom.__version__ != "3.0.4":
        return
    pynetdicom.dul.DULServiceProvider._read_pdu_data = read_pdu_data  # type: ignore[method-assign]
    _installed = True
