"""The C-STORE fast path (pacs.scp.receive) against pynetdicom's own receive path.

Messages are encoded by pynetdicom into P-DATA, cut into PDUs in the ways peers
cut them, and fed both to :class:`StoreReceiver` and to pynetdicom's decoder:
the spooled files must be byte-identical, what the receiver forwards must decode
to the same message, and the response on the socket must be a valid C-STORE-RSP.
"""

from __future__ import annotations

import errno
import hashlib
import io
import queue
import socket
import struct
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pydicom.filewriter
import pynetdicom.dimse
import pynetdicom.dimse_messages
import pynetdicom.dsutils
import pynetdicom.pdu
import pytest
from pydicom.dataset import Dataset
from pynetdicom import _config
from pynetdicom.dimse_messages import C_ECHO_RQ, C_FIND_RQ, C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_STORE

from pacs.scp import receive, tuning

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


class FakeDimse:
    """The association's DIMSE provider, sending through pacs's installed sender."""

    def __init__(self, assoc: FakeAssoc, max_pdu: int) -> None:
        self.assoc = assoc
        self.dul = assoc.dul
        self.maximum_pdu_size = max_pdu

    def send_msg(self, primitive: object, context_id: int) -> None:
        pynetdicom.dimse.DIMSEServiceProvider.send_msg(self, primitive, context_id)  # type: ignore[arg-type]


class FakeAssoc:
    """What the receiver uses of an association: contexts, socket, peer PDU size."""

    def __init__(self, sock: socket.socket | None = None, max_pdu: int = 16384) -> None:
        tuning.install()
        self._accepted_cx = {1: SimpleNamespace(context_id=1, transfer_syntax=[EXPLICIT_LE])}
        self.is_established = True
        self.dul = SimpleNamespace(
            socket=SimpleNamespace(socket=sock),
            state_machine=SimpleNamespace(current_state="Sta6"),
            to_provider_queue=queue.Queue(),
        )
        self.dimse = FakeDimse(self, max_pdu)
        self.requestor = SimpleNamespace(ae_title="MODALITY")

    def get_handlers(self, event: object) -> list[object]:
        return []


def _data_set(size: int) -> bytes:
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.PatientName = "Nguyen^Van A"
    ds.BitsAllocated = 8
    ds.PixelData = bytes(range(256)) * (size // 256)
    return pynetdicom.dsutils.encode(ds, False, True)  # explicit VR little endian


def _store_message(data_set: bytes, message_id: int = 7) -> C_STORE_RQ:
    primitive = C_STORE()
    primitive.MessageID = message_id
    primitive.Priority = 2
    primitive.AffectedSOPClassUID = CT
    primitive.AffectedSOPInstanceUID = "1.2.3.4.5"
    primitive.DataSet = io.BytesIO(data_set)
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    return message


def _echo_message() -> C_ECHO_RQ:
    primitive = C_ECHO()
    primitive.MessageID = 9
    primitive.AffectedSOPClassUID = "1.2.840.10008.1.1"
    message = C_ECHO_RQ()
    message.primitive_to_message(primitive)
    return message


def _find_message() -> C_FIND_RQ:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.PatientName = "NGUYEN*"
    primitive = C_FIND()
    primitive.MessageID = 11
    primitive.Priority = 2
    primitive.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.1"
    primitive.Identifier = io.BytesIO(pynetdicom.dsutils.encode(identifier, True, True))
    message = C_FIND_RQ()
    message.primitive_to_message(primitive)
    return message


def _items(message: DIMSEMessage, max_pdu: int) -> list[bytes]:
    """The message's PDV items (length, context, control header, fragment)."""
    items = []
    for pdata in message.encode_msg(1, max_pdu):
        for context_id, data in pdata.presentation_data_value_list:
            items.append(struct.pack(">LB", len(data) + 1, context_id) + data)
    return items


def _pdus(items: list[bytes], per_pdu: int) -> list[bytes]:
    """PDU bodies holding ``per_pdu`` items each (peers may put several in one)."""
    return [b"".join(items[i : i + per_pdu]) for i in range(0, len(items), per_pdu)]


def _pynetdicom_decodes(pdus: list[bytes], assoc: Any) -> DIMSEMessage:
    """The message pynetdicom decodes from these PDU bodies, spooling like our SCP."""
    message = DIMSEMessage()
    done = False
    for body in pdus:
        pdu = pynetdicom.pdu.P_DATA_TF()
        pdu.decode(struct.pack(">BBL", 4, 0, len(body)) + body)
        assert not done, "pynetdicom finished the message before its last PDU"
        done = message.decode_msg(pdu.to_primitive(), assoc)
    assert done
    return message


class Recorder:
    """A store handler that keeps a copy of what it was given."""

    def __init__(self, status: Any = 0x0000) -> None:
        self.status = status
        self.calls: list[tuple[receive.StoreRequest, bytes, receive.Spooled]] = []

    def __call__(self, assoc: Any, request: receive.StoreRequest, spooled: receive.Spooled) -> Any:
        self.calls.append((request, spooled.path.read_bytes(), spooled))
        if isinstance(self.status, Exception):
            raise self.status
        return self.status


def _response(sock: socket.socket) -> DIMSEMessage:
    """The DIMSE message the receiver wrote to the other end of ``sock``."""
    sock.settimeout(5)
    message = DIMSEMessage()
    while True:
        header = sock.recv(6, socket.MSG_WAITALL)
        pdu_type, _, length = struct.unpack(">BBL", header)
        assert pdu_type == 0x04
        body = sock.recv(length, socket.MSG_WAITALL)
        pdu = pynetdicom.pdu.P_DATA_TF()
        pdu.decode(header + body)
        if message.decode_msg(pdu.to_primitive()):
            return message


@pytest.fixture
def untuned_spooling(monkeypatch: pytest.MonkeyPatch) -> None:
    """pynetdicom's own chunked spooling, with pydicom's own File Meta writer."""
    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", True)
    monkeypatch.setattr(
        pynetdicom.dimse_messages, "create_file_meta", pynetdicom.dsutils.create_file_meta
    )
    monkeypatch.setattr(
        pynetdicom.dimse_messages,
        "write_file_meta_info",
        pydicom.filewriter.write_file_meta_info,
    )


@pytest.mark.parametrize(
    ("size", "max_pdu", "per_pdu"),
    [(2_000, 16384, 1), (300_000, 16384, 1), (300_000, 16384, 3), (300_000, 0, 1), (40, 64, 5)],
    ids=["small", "fragmented", "several-per-pdu", "unlimited-pdu", "tiny-fragments"],
)
def test_spooled_file_is_byte_identical_to_pynetdicoms(
    untuned_spooling: None, tmp_path: Path, size: int, max_pdu: int, per_pdu: int
) -> None:
    data_set = _data_set(size)
    pdus = _pdus(_items(_store_message(data_set), max_pdu), per_pdu)
    left, right = socket.socketpair()
    assoc = FakeAssoc(right)
    handler = Recorder()
    receiver = receive.StoreReceiver(assoc, handler, tmp_path)
    forwarded = [pdu for body in pdus for pdu in receiver.feed(memoryview(body))]

    assert forwarded == []
    ((request, spooled_bytes, spooled),) = handler.calls
    theirs = _pynetdicom_decodes(pdus, assoc)
    assert spooled_bytes == theirs._data_set_path.read_bytes()
    assert spooled_bytes.endswith(data_set)
    assert spooled.sha256 == hashlib.sha256(spooled_bytes).hexdigest()
    assert spooled.size == len(spooled_bytes)
    assert request == receive.StoreRequest(1, 7, CT, "1.2.3.4.5", 2)
    assert not spooled.path.exists(), "the receiver removes what the handler left"
    assert list(tmp_path.iterdir()) == []
    rsp = _response(left)
    assert rsp.command_set.CommandField == 0x8001
    assert rsp.command_set.MessageIDBeingRespondedTo == 7
    assert rsp.command_set.Status == 0x0000
    assert rsp.command_set.AffectedSOPInstanceUID == "1.2.3.4.5"
    theirs._data_set_path.unlink()


@pytest.mark.parametrize("message", [_echo_message(), _find_message()], ids=["echo", "find"])
def test_other_messages_reach_pynetdicom_unchanged(tmp_path: Path, message: DIMSEMessage) -> None:
    items = _items(message, 16384)
    receiver = receive.StoreReceiver(FakeAssoc(), Recorder(), tmp_path)
    forwarded = [pdu for body in _pdus(items, 1) for pdu in receiver.feed(memoryview(body))]
    assert b"".join(pdu[6:] for pdu in forwarded) == b"".join(items)
    decoded = _pynetdicom_decodes([pdu[6:] for pdu in forwarded], FakeAssoc())
    assert decoded.command_set == message.command_set
    assert receiver.mode == receiver.IDLE


def test_a_store_after_a_forwarded_message_in_the_same_pdu(tmp_path: Path) -> None:
    """A PDU that ends one message and starts the next is split between the paths."""
    left, right = socket.socketpair()
    handler = Recorder()
    receiver = receive.StoreReceiver(FakeAssoc(right), handler, tmp_path)
    find = _items(_find_message(), 16384)
    store = _items(_store_message(_data_set(1000)), 16384)
    forwarded = receiver.feed(memoryview(b"".join(find + store)))
    assert [pdu[6:] for pdu in forwarded] == [b"".join(find)]
    assert len(handler.calls) == 1
    assert _response(left).command_set.Status == 0x0000


@pytest.mark.parametrize(
    ("status", "expected", "comment"),
    [
        (0xA700, 0xA700, None),
        (Dataset(), 0xC000, "bad file"),
        (RuntimeError("boom"), 0xC211, None),
    ],
    ids=["status", "status-data-set", "handler-raises"],
)
def test_refusals_are_answered_with_their_status(
    tmp_path: Path, status: Any, expected: int, comment: str | None
) -> None:
    if isinstance(status, Dataset):
        status.Status = expected
        status.ErrorComment = comment
    left, right = socket.socketpair()
    receiver = receive.StoreReceiver(FakeAssoc(right), Recorder(status), tmp_path)
    for body in _pdus(_items(_store_message(_data_set(5000)), 4096), 1):
        receiver.feed(memoryview(body))
    rsp = _response(left).command_set
    assert rsp.Status == expected
    assert rsp.get("ErrorComment") == comment
    assert list(tmp_path.iterdir()) == []


def test_a_command_inside_a_data_set_is_a_protocol_error(tmp_path: Path) -> None:
    handler = Recorder()
    receiver = receive.StoreReceiver(FakeAssoc(), handler, tmp_path)
    store = _items(_store_message(_data_set(50_000)), 4096)
    receiver.feed(memoryview(b"".join(store[:3])))
    assert len(list(tmp_path.iterdir())) == 1
    with pytest.raises(receive.ProtocolError):
        receiver.feed(memoryview(_items(_echo_message(), 4096)[0]))
    receiver.discard("protocol error")
    assert list(tmp_path.iterdir()) == [] and handler.calls == []


def test_an_aborted_transfer_leaves_nothing_behind(tmp_path: Path) -> None:
    handler = Recorder()
    receiver = receive.StoreReceiver(FakeAssoc(), handler, tmp_path)
    store = _items(_store_message(_data_set(50_000)), 4096)
    receiver.feed(memoryview(b"".join(store[:-1])))
    receiver.discard("aborted")
    receiver.discard("twice is harmless")
    assert list(tmp_path.iterdir()) == [] and handler.calls == []


def test_unknown_context_and_odd_commands_are_left_to_pynetdicom(tmp_path: Path) -> None:
    assoc = FakeAssoc()
    assoc._accepted_cx = {}
    receiver = receive.StoreReceiver(assoc, Recorder(), tmp_path)
    items = _items(_store_message(_data_set(1000)), 16384)
    forwarded = receiver.feed(memoryview(b"".join(items)))
    assert [pdu[6:] for pdu in forwarded] == [b"".join(items)]
    assert list(tmp_path.iterdir()) == []


def test_malformed_pdv_items_are_protocol_errors() -> None:
    with pytest.raises(receive.ProtocolError):
        receive.pdv_items(memoryview(struct.pack(">LBB", 100, 1, 3) + b"short"))
    with pytest.raises(receive.ProtocolError):
        receive.pdv_items(memoryview(b"\x00\x00"))


def test_command_elements_refuse_other_groups() -> None:
    with pytest.raises(ValueError):
        receive.command_elements(struct.pack("<HHI", 0x0008, 0x0018, 2) + b"1\x00")
    assert receive.store_request(1, {}) is None


def _store_response_items(status: int, comment: str | None = None, **extra: Any) -> bytes:
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = 7
    primitive.AffectedSOPClassUID = CT
    primitive.AffectedSOPInstanceUID = "1.2.3.4.5"
    primitive.Status = status
    if comment:
        primitive.ErrorComment = comment
    for keyword, value in extra.items():
        setattr(primitive, keyword, value)
    message = pynetdicom.dimse_messages.C_STORE_RSP()
    message.primitive_to_message(primitive)
    return b"".join(_items(message, 16384))


@pytest.mark.parametrize(
    ("status", "comment"), [(0x0000, None), (0xB000, None), (0xA700, "disk full")]
)
def test_store_responses_parse_as_pynetdicom_decodes_them(status: int, comment: str | None) -> None:
    body = _store_response_items(status, comment)
    found = receive.store_response(memoryview(body))
    assert found is not None
    context_id, ours = found
    theirs = _pynetdicom_decodes([body], FakeAssoc()).message_to_primitive()
    assert context_id == 1
    for keyword in (
        "MessageIDBeingRespondedTo",
        "AffectedSOPClassUID",
        "AffectedSOPInstanceUID",
        "Status",
        "ErrorComment",
    ):
        assert getattr(ours, keyword) == getattr(theirs, keyword), keyword
    assert ours.is_valid_response


def test_unusual_store_responses_are_left_to_pynetdicom() -> None:
    with_offending = _store_response_items(0xC000, OffendingElement=[0x00100010])
    assert receive.store_response(memoryview(with_offending)) is None
    a_request = b"".join(_items(_store_message(_data_set(100)), 16384)[:1])
    assert receive.store_response(memoryview(a_request)) is None
    assert receive.store_response(memoryview(b"\x00\x00\x00\x10")) is None


def test_disk_writes_start_while_the_data_set_arrives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pacs.storage import writeback

    assert writeback.available()  # Linux: the final fsync only waits for the tail
    started: list[tuple[int, int]] = []
    real = receive.start_writeback

    def record(fd: int, offset: int, length: int) -> None:
        started.append((offset, length))
        real(fd, offset, length)

    monkeypatch.setattr(receive, "start_writeback", record)
    _left, right = socket.socketpair()  # the peer's end: the response goes there
    handler = Recorder()
    receiver = receive.StoreReceiver(FakeAssoc(right), handler, tmp_path)
    for body in _pdus(_items(_store_message(_data_set(700_000)), 16384), 1):
        receiver.feed(memoryview(body))
    ((_, spooled_bytes, _),) = handler.calls
    assert len(started) == len(spooled_bytes) // receive.WRITEBACK_STEP
    assert [offset for offset, _ in started] == [
        sum(length for _, length in started[:i]) for i in range(len(started))
    ]


class _DiskFillsUp(receive.StoreReceiver):
    """A spool that takes ``room`` writes, then reports a full disk."""

    room = 3

    def _write(self, data: bytes | memoryview) -> None:
        if self.room == 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= 1
        super()._write(data)


@pytest.mark.parametrize("room", [0, 3], ids=["at-once", "mid-transfer"])
def test_a_full_spool_is_answered_out_of_resources(tmp_path: Path, room: int) -> None:
    left, right = socket.socketpair()
    handler = Recorder()
    receiver = _DiskFillsUp(FakeAssoc(right), handler, tmp_path)
    receiver.room = room
    for body in _pdus(_items(_store_message(_data_set(200_000)), 16384), 1):
        assert receiver.feed(memoryview(body)) == []
    rsp = _response(left).command_set
    assert rsp.Status == 0xA700
    assert "No space left on device" in rsp.ErrorComment
    assert handler.calls == [] and list(tmp_path.iterdir()) == []
    # The association goes on: the next instance is received normally.
    receiver.room = 1000
    for body in _pdus(_items(_store_message(_data_set(2000), message_id=8), 16384), 1):
        receiver.feed(memoryview(body))
    assert _response(left).command_set.Status == 0x0000 and len(handler.calls) == 1


def test_a_missing_spool_folder_is_answered_out_of_resources(tmp_path: Path) -> None:
    left, right = socket.socketpair()
    receiver = receive.StoreReceiver(FakeAssoc(right), Recorder(), tmp_path / "gone")
    for body in _pdus(_items(_store_message(_data_set(2000)), 16384), 1):
        receiver.feed(memoryview(body))
    assert _response(left).command_set.Status == 0xA700


# ---------------------------------------------------------------- responses read by the sender


class _Timer:
    def __init__(self) -> None:
        self.restarts = 0

    def restart(self) -> None:
        self.restarts += 1


def _sending_assoc(sock: socket.socket) -> Any:
    """The requestor side of a C-STORE sub-association, as the sender sees it."""
    assoc = FakeAssoc(sock)
    dul = assoc.dul
    dul.assoc = assoc
    dul.event_queue = queue.Queue()
    dul._recv_pdu = queue.Queue()
    dul._idle_timer = _Timer()
    dul._decode_pdu = lambda data: pynetdicom.dul.DULServiceProvider._decode_pdu(dul, data)
    dul.socket.recv = lambda count: tuning._recv_pdu(dul.socket, count)
    dul._pacs_reader_lock = threading.Lock()  # as tuning's DUL reactor creates it
    assoc.acse = SimpleNamespace(is_aborted=lambda: not dul.event_queue.empty())
    return assoc


def _pdata(items: bytes) -> bytes:
    return struct.pack(">BBL", 0x04, 0, len(items)) + items


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(receive, "_installed", True)


def test_the_sender_reads_its_response_and_the_dul_thread_stays_off_the_socket(
    installed: None,
) -> None:
    ours, peer = socket.socketpair()
    assoc = _sending_assoc(ours)
    with receive.reading(assoc) as direct:
        assert direct
        peer.sendall(_pdata(_store_response_items(0xB000)))
        # The DUL thread's reader, woken by the data, must leave it to us.
        receive.read_pdu_data(assoc.dul)
        assert assoc.dul.event_queue.empty()
        found = receive.take_store_response(assoc, 5)
    context_id, rsp = found
    assert (context_id, rsp.Status, rsp.MessageIDBeingRespondedTo) == (1, 0xB000, 7)
    assert assoc.dul._idle_timer.restarts == 1
    # Once we are done, the DUL thread reads as before, and never blocks on an
    # empty socket because we took what made it look readable.
    receive.read_pdu_data(assoc.dul)
    assert assoc.dul.event_queue.empty()


def test_a_response_cut_in_fragments_goes_through_pynetdicom(installed: None) -> None:
    ours, peer = socket.socketpair()
    assoc = _sending_assoc(ours)
    items = _store_response_items(0x0000)
    ((_, _, fragment, _),) = receive.pdv_items(memoryview(items))
    half = len(fragment) // 2
    first = struct.pack(">LBB", half + 2, 1, 0x01) + bytes(fragment[:half])
    peer.sendall(_pdata(first))
    with receive.reading(assoc):
        assert receive.take_store_response(assoc, 5) is None
    assert assoc.dul.event_queue.get_nowait() == "Evt10"
    assert isinstance(assoc.dul._recv_pdu.get_nowait(), pynetdicom.pdu.P_DATA_TF)


@pytest.mark.parametrize("what", ["closed", "abort", "garbage", "silence"])
def test_no_response_when_the_peer_closes_aborts_or_stays_silent(
    installed: None, what: str
) -> None:
    ours, peer = socket.socketpair()
    assoc = _sending_assoc(ours)
    if what == "closed":
        peer.sendall(b"\x04\x00\x00\x00")  # half a header, then gone
        peer.close()
    elif what == "abort":
        abort = pynetdicom.pdu.A_ABORT_RQ()
        abort.source, abort.reason_diagnostic = 0x02, 0x00
        peer.sendall(abort.encode())
    elif what == "garbage":
        peer.sendall(b"\x42\x00\x00\x00\x00\x00")
    with receive.reading(assoc):
        found = receive.take_store_response(assoc, 0.2)
    assert found is receive.NO_RESPONSE
    expected = {"closed": "Evt17", "abort": "Evt16", "garbage": "Evt19", "silence": None}[what]
    if expected is None:
        assert assoc.dul.event_queue.empty()
    else:
        assert assoc.dul.event_queue.get_nowait() == expected


def test_observed_associations_keep_pynetdicoms_reader(installed: None) -> None:
    ours, _peer = socket.socketpair()
    assoc = _sending_assoc(ours)
    assoc.get_handlers = lambda event: [print] if event is receive._OBSERVED[0] else []
    with receive.reading(assoc) as direct:
        assert not direct
        assert not assoc.dul._pacs_reader_lock.locked()
