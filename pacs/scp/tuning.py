"""Latency tuning of pynetdicom's polling loops, and TCP_NODELAY on every socket.

pynetdicom 3.0.4 runs two polling loops per association: the DUL reactor sleeps
``_run_loop_delay`` (1 ms) whenever it finds nothing to do, and the association
reactor sleeps 1 ms per turn. Every C-STORE crosses both loops twice, so each
instance waits up to ~4 ms for nothing: measured on this machine, a bare
pynetdicom Storage SCP took 175–240 instances/s from DCMTK ``storescu``, and
365–370 with 0.1 ms sleeps.

Polling faster all the time would burn CPU while an association idles, so the
sleep adapts per thread: a loop that did work since its last sleep (it came
back later than a pure poll would) sleeps ``FAST`` seconds, and a thread idle
for ``IDLE_AFTER`` seconds goes back to pynetdicom's own delay.

This replaces the ``time`` module seen by ``pynetdicom.dul`` and
``pynetdicom.association`` with a proxy whose ``sleep`` adapts; everything else
is the real ``time``. In the data transfer state (Sta6) the DUL thread does not
poll at all: it waits on its socket (:func:`dul_sleep`), which with four
modalities sending at once gave about 9 % more instances per second.

Second, ``AssociationSocket.recv`` reads a PDU in 4 KiB ``recv`` calls appended
to a growing bytearray; :func:`_recv_pdu` reads straight into one buffer with
``recv_into`` (one or two system calls per PDU). Together with a larger maximum
PDU (settings.max_pdu_size) this took the bare SCP from ~290 to ~380
instances/s here.

Third, the messages pacs sends most (C-STORE responses and requests, C-FIND
matches, C-MOVE/C-GET progress) are encoded from their primitive by
:func:`command_bytes` instead of through a DIMSE message object and a pydicom
command data set, and C-FIND identifiers that can encode themselves
(:class:`PreEncoded`) skip pydicom's writer: per C-FIND match 0.55 → 0.2 ms.
Those bytes are then written to the socket by the sending thread itself
(:func:`send_direct`) rather than queued for the DUL thread's next poll: 506
C-FIND matches through ``findscu`` 115 → 77 ms.

All of this is tied to pynetdicom's internals, hence the pinned version in
pyproject.toml and the byte-for-byte tests in tests/unit/test_scp_tuning.py.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import logging
import select
import socket
import struct
import threading
import time as _time
import types
from collections.abc import Callable, Iterator
from typing import Any

import pynetdicom
import pynetdicom.association
import pynetdicom.dimse
import pynetdicom.dimse_messages
import pynetdicom.dimse_primitives
import pynetdicom.dul
import pynetdicom.events
import pynetdicom.pdu_primitives
import pynetdicom.service_class
import pynetdicom.transport
from pydicom.datadict import dictionary_VR, tag_for_keyword

from pacs.scp import progress

log = logging.getLogger(__name__)

FAST = 0.00005
IDLE_AFTER = 0.05
# A turn of either loop that found nothing to do takes well under this.
_BUSY_TURN = 0.0002

_state = threading.local()


def adaptive_sleep(seconds: float) -> None:
    """``time.sleep`` for pynetdicom's loops: short while busy, theirs when idle."""
    if seconds > 0.001:
        _time.sleep(seconds)
        return
    now = _time.perf_counter()
    last_return = getattr(_state, "last_return", 0.0)
    last_busy = getattr(_state, "last_busy", 0.0)
    if now - last_return > _BUSY_TURN:
        last_busy = now
        _state.last_busy = now
    _time.sleep(FAST if now - last_busy < IDLE_AFTER else seconds)
    _state.last_return = _time.perf_counter()


# In the data transfer state a DUL thread waits this long for the peer at most.
_DUL_WAIT = 0.001
# While a sending thread reads the socket, the DUL thread looks back this often.
_SENDER_WAIT = 0.005


def dul_sleep(seconds: float) -> None:
    """The DUL reactor's sleep: in Sta6, wait for the peer's next PDU instead.

    Polling every 50 µs while a study arrives cost a GIL hand-over per turn, which
    the other associations of the worker paid for. Waiting on the socket returns
    as soon as data arrives; primitives queued for sending (rare: pacs writes its
    own messages directly) go out within ``_DUL_WAIT``.
    """
    dul = getattr(_state, "dul", None)
    reader = getattr(dul, "_pacs_reader_lock", None)
    if reader is not None and reader.locked():
        # A sending thread reads the socket for its responses (pacs.scp.receive.reading),
        # one sub-operation after another. Waking as it lets go of the lock took the
        # GIL from it at its busiest moment, between a response and its next request,
        # only to find the lock taken again: look back a little later instead.
        _time.sleep(_SENDER_WAIT)
        return
    sock = getattr(getattr(dul, "socket", None), "socket", None)
    if (
        sock is not None
        and seconds <= 0.001
        and dul.state_machine.current_state == "Sta6"
        and dul.to_provider_queue.empty()
    ):
        # A socket closed meanwhile raises: the reactor finds out on its next turn.
        with contextlib.suppress(OSError, ValueError):
            select.select([sock], [], [], _DUL_WAIT)
        return
    adaptive_sleep(seconds)


# An association reactor with nothing to do wakes this often at most, to check
# pynetdicom's network timeout, its DUL thread's health and its kill flag.
_REACTOR_IDLE = 0.05
# pynetdicom's reactor sleeps exactly this long at the top of each turn.
_REACTOR_TURN = 0.001


def association_sleep(seconds: float) -> None:
    """The association reactor's sleep: wait for something to do instead of polling.

    pynetdicom's association thread polls every millisecond (our adaptive sleep made
    that 50 µs while busy). Here C-STOREs never reach it, and the GIL waits of the
    other threads made its idle turns look busy: four modalities sending to one
    worker woke the four reactors 50 000 times per 1000 instances, each time taking
    the GIL from a thread with real work. It now sleeps until a message, an
    A-RELEASE/A-ABORT or a pause request is queued for it (:func:`_wake_on_work`),
    or ``_REACTOR_IDLE`` passes.
    """
    wake = getattr(_state, "wake", None)
    if wake is None or seconds != _REACTOR_TURN:
        adaptive_sleep(seconds)
        return
    wake.wait(_REACTOR_IDLE)
    wake.clear()


def _wake_on_work(assoc: Any, wake: threading.Event) -> None:
    """Set ``wake`` whenever something is queued for ``assoc``'s reactor."""

    def waking(put: Callable[..., None]) -> Callable[..., None]:
        def put_and_wake(*args: Any, **kwargs: Any) -> None:
            put(*args, **kwargs)
            wake.set()

        return put_and_wake

    # Instance attributes: only this association's queues change.
    assoc.dimse.msg_queue.put = waking(assoc.dimse.msg_queue.put)
    assoc.dul.to_user_queue.put = waking(assoc.dul.to_user_queue.put)
    checkpoint = assoc._reactor_checkpoint
    pause = checkpoint.clear

    def pause_and_wake() -> None:
        # Whoever pauses the reactor then waits for it to reach its checkpoint.
        pause()
        wake.set()

    checkpoint.clear = pause_and_wake
    wake.set()  # whatever arrived before the hooks is looked at on the first turn


class _TimeProxy(types.ModuleType):
    def __init__(self, sleep: Any = adaptive_sleep) -> None:
        super().__init__("time")
        self.sleep = sleep

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)


# Never trust a peer's PDU length for one allocation: grow in steps instead.
_RECV_STEP = 1 << 20


def _recv_pdu(self: pynetdicom.transport.AssociationSocket, nr_bytes: int) -> bytearray:
    """``AssociationSocket.recv`` with the same contract, in as few calls as possible."""
    sock = self.socket
    assert sock is not None
    buffer = bytearray(min(nr_bytes, _RECV_STEP))
    got = 0
    while got < nr_bytes:
        if got == len(buffer):
            buffer.extend(bytes(min(nr_bytes - got, _RECV_STEP)))
        with memoryview(buffer) as view:
            count = sock.recv_into(view[got:], len(buffer) - got)
        if not count:
            # The peer closed the connection: hand back what arrived, as pynetdicom does.
            del buffer[got:]
            return buffer
        got += count
    return buffer


def send_lock(assoc_socket: Any) -> threading.Lock:
    """The lock that keeps whole DIMSE messages from interleaving on one socket.

    pynetdicom's DUL thread sends through ``AssociationSocket.send`` (patched to
    take this lock); :mod:`pacs.scp.sending` holds it while it writes a whole
    C-STORE request itself.
    """
    lock = getattr(assoc_socket, "_pacs_send_lock", None)
    if lock is None:
        with _LOCKS_GUARD:
            lock = getattr(assoc_socket, "_pacs_send_lock", None)
            if lock is None:
                lock = threading.Lock()
                assoc_socket._pacs_send_lock = lock
    return lock


def _command_value(vr: str, value: Any) -> bytes | None:
    if vr == "UL":
        return struct.pack("<I", value)
    if vr == "US":
        return struct.pack("<H", value)
    if vr in ("UI", "AE", "LO", "SH", "CS", "ST", "LT"):
        raw = str(value).encode("ascii", "replace")
        if len(raw) % 2:
            raw += b"\x00" if vr == "UI" else b" "
        return raw
    return None


def encode_command_set(ds: Any) -> bytes | None:
    """A DIMSE command set as implicit VR little endian (PS3.7 6.3.1), or None.

    Command sets are flat group-0000 data sets of a handful of simple VRs; this
    encodes them about 8× faster than a general pydicom write. Anything else
    (other groups, sequences, multi-values) returns None for pydicom to handle.
    """
    parts = []
    for elem in ds:
        tag = elem.tag
        if tag >> 16 or elem.VM > 1:
            return None
        value = elem.value
        payload = b"" if value is None or value == "" else _command_value(elem.VR, value)
        if payload is None:
            return None
        parts.append(struct.pack("<HHI", 0, tag & 0xFFFF, len(payload)))
        parts.append(payload)
    return b"".join(parts)


# DIMSE messages whose command sets :func:`command_bytes` writes: (request, response).
_FAST_MESSAGES = {
    pynetdicom.dimse_primitives.C_ECHO: ("C-ECHO-RQ", "C-ECHO-RSP"),
    pynetdicom.dimse_primitives.C_STORE: ("C-STORE-RQ", "C-STORE-RSP"),
    pynetdicom.dimse_primitives.C_FIND: ("C-FIND-RQ", "C-FIND-RSP"),
    pynetdicom.dimse_primitives.C_MOVE: ("C-MOVE-RQ", "C-MOVE-RSP"),
    pynetdicom.dimse_primitives.C_GET: ("C-GET-RQ", "C-GET-RSP"),
}
_COMMAND_FIELDS = {
    name: field for field, (name, _cls) in pynetdicom.dimse_messages._MESSAGE_TYPES.items()
}


@functools.cache
def _command_layout(message: str) -> tuple[tuple[int, str, str], ...]:
    """(element, VR, keyword) of a DIMSE message's command set, in tag order."""
    rows = []
    for keyword in pynetdicom.dimse_messages._COMMAND_SET_KEYWORDS[message]:
        tag = tag_for_keyword(keyword)
        assert tag is not None
        rows.append((tag & 0xFFFF, dictionary_VR(keyword), keyword))
    return tuple(sorted(rows))


def _strict_value(vr: str, value: Any) -> bytes | None:
    if vr in ("US", "UL"):
        if not isinstance(value, int) or not 0 <= value < (1 << (16 if vr == "US" else 32)):
            return None
    elif not isinstance(value, str) or not value.isascii():
        return None  # lists (AT), non-ASCII comments: pydicom's encoding rules
    return _command_value(vr, value)


def command_bytes(primitive: Any, message: str, data_set: bool) -> bytes | None:
    """The command set pynetdicom's ``primitive_to_message`` + ``encode`` would write
    for ``primitive`` as ``message`` (e.g. ``"C-STORE-RSP"``), or None when it
    holds something only pydicom encodes the same way.

    Parameters a primitive leaves unset are left out; command elements it has no
    parameter for are written empty — both as pynetdicom does.
    """
    parts = []
    for element, vr, keyword in _command_layout(message):
        if keyword == "CommandGroupLength":
            continue
        if keyword == "CommandField":
            payload = _strict_value(vr, _COMMAND_FIELDS[message])
        elif keyword == "CommandDataSetType":
            payload = _strict_value(vr, 0x0001 if data_set else 0x0101)
        elif not hasattr(primitive, keyword):
            payload = b""
        else:
            value = getattr(primitive, keyword)
            if value is None:
                continue
            payload = _strict_value(vr, value)
        if payload is None:
            return None
        parts.append(struct.pack("<HHI", 0, element, len(payload)) + payload)
    body = b"".join(parts)
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


def pdv_chunks(length: int, max_pdu: int) -> Iterator[tuple[int, int, bool]]:
    """(offset, size, last) of the data set fragments for a peer's maximum PDU."""
    # PS3.8 9.3.5: a P-DATA-TF holds PDV items of 4 (length) + 1 (context) +
    # 1 (control header) bytes plus the fragment; one item per PDU here.
    step = length if max_pdu == 0 else max(1, max_pdu - 6)
    offset = 0
    while True:
        size = min(step, length - offset)
        yield offset, size, offset + size >= length
        offset += size
        if offset >= length:
            return


# At most this many buffers per sendmsg (Linux's IOV_MAX is 1024).
_IOV_MAX = 1024


def send_buffers(sock: Any, buffers: list[bytes | memoryview]) -> None:
    """Send all ``buffers`` in order with as few system calls as possible."""
    index = 0
    while index < len(buffers):
        if not len(buffers[index]):
            index += 1
            continue
        sent = sock.sendmsg(buffers[index : index + _IOV_MAX])
        while sent:
            size = len(buffers[index])
            if sent >= size:
                sent -= size
                index += 1
            else:
                buffers[index] = memoryview(buffers[index])[sent:]
                sent = 0


def pdu_header(context_id: int, control: int, size: int) -> bytes:
    """The header of a P-DATA-TF holding one PDV item of ``size`` fragment bytes."""
    return struct.pack(">BBLLBB", 0x04, 0x00, size + 6, size + 2, context_id, control)


def message_buffers(
    command: bytes, data_set: bytes | memoryview, context_id: int, max_pdu: int
) -> list[bytes | memoryview]:
    """A DIMSE message as the bytes of its P-DATA-TF PDUs, one PDV each (PS3.8 E.2):
    what pynetdicom's DUL writes for :func:`message_pdata`'s primitives."""
    buffers: list[bytes | memoryview] = []
    for payload, more, last in ((command, 0x01, 0x03), (data_set, 0x00, 0x02)):
        for offset, size, final in pdv_chunks(len(payload), max_pdu) if payload else ():
            buffers.append(pdu_header(context_id, last if final else more, size))
            buffers.append(payload[offset : offset + size])
    return buffers


# Sending a message ourselves would hide it from listeners of these events.
_SEND_EVENTS = (
    pynetdicom.events.EVT_DIMSE_SENT,
    pynetdicom.events.EVT_PDU_SENT,
    pynetdicom.events.EVT_DATA_SENT,
)


def send_direct(dimse: Any, command: bytes, data_set: bytes, context_id: int) -> bool:
    """Write a DIMSE message to the association's socket from the calling thread.

    pynetdicom queues each P-DATA primitive for its DUL thread, which wakes on its
    next poll, runs the state machine and encodes a PDU object: per C-FIND match
    that hand-over cost more than the match itself. Sending P-DATA in Sta6 does
    not change the state (PS3.8 9.2, DT-1), so the bytes may go out directly,
    whole under the socket's send lock. Returns False, having sent nothing, when
    the association is not in Sta6, the DUL still has primitives queued (they
    must go first), or something listens to sent-data events.
    """
    dul = dimse.dul
    assoc_socket = dul.socket
    sock = getattr(assoc_socket, "socket", None)
    if sock is None or dul.state_machine.current_state != "Sta6":
        return False
    if getattr(dimse, "_pacs_queued", False):
        # A message went through the DUL's queue before: its thread may have taken it
        # from the queue and not written it yet, so everything after it queues too.
        return False
    if not dul.to_provider_queue.empty():
        return False
    if any(dimse.assoc.get_handlers(event) for event in _SEND_EVENTS):
        return False
    buffers = message_buffers(command, data_set, context_id, dimse.maximum_pdu_size)
    try:
        with send_lock(assoc_socket):
            send_buffers(sock, buffers)
    except OSError as exc:
        # The peer is gone; the DUL notices on its next read and ends the association.
        log.info("could not send a DIMSE message: %s", exc)
    return True


def message_pdata(command: bytes, data_set: bytes, context_id: int, max_pdu: int) -> list[Any]:
    """A DIMSE message as the P-DATA primitives pynetdicom's DUL sends (PS3.8 E.2)."""
    primitives = []
    for payload, more, last in ((command, b"\x01", b"\x03"), (data_set, b"\x00", b"\x02")):
        if not payload:  # no data set: no fragment (a command set is never empty)
            continue
        for offset, size, final in pdv_chunks(len(payload), max_pdu):
            pdata = pynetdicom.pdu_primitives.P_DATA()
            pdata.presentation_data_value_list.append(
                (context_id, (last if final else more) + payload[offset : offset + size])
            )
            primitives.append(pdata)
    return primitives


class FileMeta(tuple):  # type: ignore[type-arg]
    """The File Meta values pynetdicom asks for when it spools a received data set."""

    __slots__ = ()


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":  # a 4-byte length after two reserved bytes (PS3.5 7.1.2)
        return struct.pack("<HH2sHI", 0x0002, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def _padded(value: str, pad: bytes) -> bytes:
    raw = value.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


def file_meta_bytes(meta: FileMeta) -> bytes:
    """File Meta Information (PS3.10 7.1) as explicit VR little endian, group length first.

    The same bytes pydicom's ``write_file_meta_info`` produces for these values,
    without building and validating a data set for every received instance.
    """
    sop_class, sop_instance, syntax, implementation, version = meta
    body = b"".join(
        (
            _meta_element(0x0001, b"OB", b"\x00\x01"),
            _meta_element(0x0002, b"UI", _padded(sop_class, b"\x00")),
            _meta_element(0x0003, b"UI", _padded(sop_instance, b"\x00")),
            _meta_element(0x0010, b"UI", _padded(syntax, b"\x00")),
            _meta_element(0x0012, b"UI", _padded(implementation, b"\x00")),
            _meta_element(0x0013, b"SH", _padded(version, b" ")),
        )
    )
    return _meta_element(0x0000, b"UL", struct.pack("<I", len(body))) + body


class PreEncoded(abc.ABC):
    """A data set that can encode itself faster than pydicom (a C-FIND response).

    pynetdicom's C-FIND SCP encodes each yielded identifier with
    ``dsutils.encode``; :func:`install` lets these through with their own bytes
    and turns them into a pydicom data set only when they cannot (None).
    """

    __slots__ = ()

    @abc.abstractmethod
    def encode_for(self, implicit_vr: bool, little_endian: bool) -> bytes | None:
        """The encoded data set, or None when only pydicom can encode it this way."""

    @abc.abstractmethod
    def dataset(self) -> Any:
        """The same data set as a pydicom ``Dataset``."""

    def __iter__(self) -> Any:
        # pynetdicom iterates identifiers only to log them (LOG_RESPONSE_IDENTIFIERS).
        return iter(self.dataset())


_LOCKS_GUARD = threading.Lock()
_installed = False


def install() -> None:
    """Apply the tuning once per process (idempotent)."""
    global _installed
    if _installed:
        return
    if pynetdicom.__version__ != "3.0.4":
        # The loops above are what 3.0.4 does; another version may not need this.
        return
    pynetdicom.dul.time = _TimeProxy(dul_sleep)  # type: ignore[attr-defined]
    pynetdicom.association.time = _TimeProxy(association_sleep)  # type: ignore[attr-defined]
    assoc_reactor = pynetdicom.association.Association._run_reactor

    def _run_assoc_reactor(self: Any) -> None:
        wake = threading.Event()
        _wake_on_work(self, wake)
        _state.wake = wake
        try:
            assoc_reactor(self)
        finally:
            _state.wake = None

    pynetdicom.association.Association._run_reactor = _run_assoc_reactor  # type: ignore[method-assign]
    dul_reactor = pynetdicom.dul.DULServiceProvider.run_reactor

    def _run_dul_reactor(self: Any) -> None:
        _state.dul = self
        # Taken by whichever thread reads this socket (pacs.scp.receive.reading):
        # it exists before the first read, so no read ever runs without it.
        self._pacs_reader_lock = threading.Lock()
        dul_reactor(self)

    pynetdicom.dul.DULServiceProvider.run_reactor = _run_dul_reactor  # type: ignore[method-assign]
    pynetdicom.transport.AssociationSocket.recv = _recv_pdu  # type: ignore[method-assign]
    send = pynetdicom.transport.AssociationSocket.send

    def _send(self: Any, bytestream: bytes) -> None:
        with send_lock(self):
            send(self, bytestream)

    pynetdicom.transport.AssociationSocket.send = _send  # type: ignore[method-assign]
    create = pynetdicom.transport.AssociationSocket._create_socket

    def _create_socket(self: Any, address: Any) -> socket.socket:
        # Sockets pynetdicom opens itself (C-MOVE sub-associations, pushes):
        # without this every C-STORE we send stalls on a delayed ACK.
        sock = create(self, address)
        set_nodelay(sock)
        return sock

    pynetdicom.transport.AssociationSocket._create_socket = _create_socket  # type: ignore[method-assign]
    general_encode = pynetdicom.dimse_messages.encode

    def _encode(ds: Any, is_implicit_vr: bool, is_little_endian: bool, *args: Any) -> Any:
        if is_implicit_vr and is_little_endian and not args:
            fast = encode_command_set(ds)
            if fast is not None:
                return fast
        return general_encode(ds, is_implicit_vr, is_little_endian, *args)

    pynetdicom.dimse_messages.encode = _encode  # type: ignore[assignment]
    identifier_encode = pynetdicom.service_class.encode

    def _encode_identifier(
        ds: Any, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False
    ) -> bytes | None:
        if isinstance(ds, PreEncoded):
            fast = None if deflated else ds.encode_for(is_implicit_vr, is_little_endian)
            if fast is not None:
                return fast
            ds = ds.dataset()
        return identifier_encode(ds, is_implicit_vr, is_little_endian, deflated)

    pynetdicom.service_class.encode = _encode_identifier  # type: ignore[assignment]
    send_msg = pynetdicom.dimse.DIMSEServiceProvider.send_msg

    def _send_msg(self: Any, primitive: Any, context_id: int) -> None:
        # Every C-STORE response, C-FIND match and C-MOVE progress report went
        # through a DIMSE message object and a pydicom command data set, which
        # cost more than everything else the message needed: their bytes are
        # written directly and handed to the DUL as pynetdicom would.
        if not progress.due(self.assoc, primitive):
            return
        names = _FAST_MESSAGES.get(type(primitive))
        if (
            names is not None
            and getattr(primitive, "_dataset_path", None) is None
            and not self.assoc.get_handlers(pynetdicom.events.EVT_DIMSE_SENT)
        ):
            response = primitive.MessageIDBeingRespondedTo is not None
            message = names[1] if response else names[0]
            keyword = pynetdicom.dimse_messages._DATASET_KEYWORDS.get(message.replace("-", "_"))
            data_set = getattr(primitive, keyword) if keyword else None
            command = command_bytes(primitive, message, data_set is not None)
            if command is not None:
                encoded = data_set.getvalue() if data_set is not None else b""
                if send_direct(self, command, encoded, context_id):
                    return
                self._pacs_queued = True
                for pdata in message_pdata(command, encoded, context_id, self.maximum_pdu_size):
                    self.dul.send_pdu(pdata)
                return
        self._pacs_queued = True
        send_msg(self, primitive, context_id)

    pynetdicom.dimse.DIMSEServiceProvider.send_msg = _send_msg  # type: ignore[method-assign]

    # Spooling a received C-STORE: pynetdicom builds a FileMetaDataset and writes it
    # with pydicom's validating writer for every instance; the values are always
    # the same five, so write their bytes directly.
    general_write_meta = pynetdicom.dimse_messages.write_file_meta_info

    def _create_file_meta(
        *,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax: str,
        implementation_uid: str = pynetdicom.PYNETDICOM_IMPLEMENTATION_UID,
        implementation_version: str = pynetdicom.PYNETDICOM_IMPLEMENTATION_VERSION,
    ) -> FileMeta:
        return FileMeta(
            (
                str(sop_class_uid),
                str(sop_instance_uid),
                str(transfer_syntax),
                str(implementation_uid),
                str(implementation_version),
            )
        )

    def _write_file_meta_info(fp: Any, meta: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(meta, FileMeta):
            fp.write(file_meta_bytes(meta))
            return
        general_write_meta(fp, meta, *args, **kwargs)

    pynetdicom.dimse_messages.create_file_meta = _create_file_meta  # type: ignore[assignment]
    pynetdicom.dimse_messages.write_file_meta_info = _write_file_meta_info  # type: ignore[assignment]
    _installed = True


def is_installed() -> bool:
    return _installed


def set_nodelay(sock: socket.socket) -> None:
    """Disable Nagle's algorithm: DICOM's request/response pattern otherwise stalls
    ~40 ms on delayed ACKs for every message on loopback."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
