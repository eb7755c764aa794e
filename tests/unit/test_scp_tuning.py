"""The pynetdicom adjustments in pacs/scp/tuning.py and the framing of fast sends.

They reach into pynetdicom internals, so these tests pin down what they rely on.
"""

import io
import queue
import socket
import threading
from types import SimpleNamespace

import pynetdicom
import pynetdicom.association
import pynetdicom.dimse_messages
import pynetdicom.dul
import pynetdicom.pdu
import pynetdicom.transport
import pytest
from pydicom.dataset import Dataset
from pynetdicom.dimse_messages import (
    C_ECHO_RSP,
    C_FIND_RSP,
    C_GET_RSP,
    C_MOVE_RSP,
    C_STORE_RQ,
    C_STORE_RSP,
)
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_GET, C_MOVE, C_STORE
from pynetdicom.dsutils import encode

from pacs.scp import tuning


def test_pinned_pynetdicom_version_is_the_one_tuned_for() -> None:
    assert pynetdicom.__version__ == "3.0.4"


def test_install_replaces_the_polling_sleep_and_socket_methods() -> None:
    tuning.install()
    assert tuning.is_installed()
    assert pynetdicom.dul.time.sleep is tuning.dul_sleep
    assert pynetdicom.association.time.sleep is tuning.association_sleep
    assert pynetdicom.dul.time.monotonic is not None  # everything else is the real module
    assert pynetdicom.transport.AssociationSocket.recv is tuning._recv_pdu


def _reactor_side() -> SimpleNamespace:
    return SimpleNamespace(
        dimse=SimpleNamespace(msg_queue=queue.Queue()),
        dul=SimpleNamespace(to_user_queue=queue.Queue()),
        _reactor_checkpoint=threading.Event(),
    )


def test_the_association_reactor_wakes_for_each_kind_of_work() -> None:
    assoc = _reactor_side()
    wake = threading.Event()
    tuning._wake_on_work(assoc, wake)
    assert wake.is_set()  # a first look at what came before the hooks
    wake.clear()
    assoc.dimse.msg_queue.put((1, "C-ECHO-RQ"))
    assert wake.is_set() and assoc.dimse.msg_queue.get_nowait() == (1, "C-ECHO-RQ")
    wake.clear()
    assoc.dul.to_user_queue.put_nowait("A-RELEASE")
    assert wake.is_set() and assoc.dul.to_user_queue.get_nowait() == "A-RELEASE"
    wake.clear()
    assoc._reactor_checkpoint.set()
    assoc._reactor_checkpoint.clear()  # a sender pausing the reactor
    assert wake.is_set() and not assoc._reactor_checkpoint.is_set()


def test_the_reactor_sleeps_until_woken_or_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tuning, "_REACTOR_IDLE", 30.0)
    wake = threading.Event()
    monkeypatch.setattr(tuning._state, "wake", wake, raising=False)
    threading.Timer(0.05, wake.set).start()
    tuning.association_sleep(0.001)  # returns when woken, long before 30 s
    assert not wake.is_set()  # cleared for the next turn
    wake.set()
    tuning.association_sleep(0.001)
    assert not wake.is_set()
    monkeypatch.setattr(tuning, "_REACTOR_IDLE", 0.01)
    tuning.association_sleep(0.001)  # nothing to do: back after the idle period


def _messages() -> list[object]:
    store = C_STORE()
    store.MessageID = 7
    store.Priority = 2
    store.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    store.AffectedSOPInstanceUID = "1.2.3.45"
    store.MoveOriginatorApplicationEntityTitle = "MOVER"
    store.MoveOriginatorMessageID = 3
    store._dataset_path = ("x", 0)
    store_rq = C_STORE_RQ()
    store_rq.primitive_to_message(store)

    stored = C_STORE()
    stored.MessageIDBeingRespondedTo = 7
    stored.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    stored.AffectedSOPInstanceUID = "1.2.3.45"
    stored.Status = 0xC000
    stored.ErrorComment = "truncated: element (7FE0,0010)"
    store_rsp = C_STORE_RSP()
    store_rsp.primitive_to_message(stored)

    found = C_FIND()
    found.MessageIDBeingRespondedTo = 1
    found.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.1"
    found.Status = 0xFF00
    found.Identifier = io.BytesIO(b"x")
    find_rsp = C_FIND_RSP()
    find_rsp.primitive_to_message(found)

    moved = C_MOVE()
    moved.MessageIDBeingRespondedTo = 1
    moved.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.2"
    moved.Status = 0xFF00
    moved.NumberOfRemainingSuboperations = 5
    moved.NumberOfCompletedSuboperations = 3
    moved.NumberOfFailedSuboperations = 0
    moved.NumberOfWarningSuboperations = 0
    move_rsp = C_MOVE_RSP()
    move_rsp.primitive_to_message(moved)
    return [store_rq, store_rsp, find_rsp, move_rsp]


@pytest.mark.parametrize(
    "message", _messages(), ids=["store-rq", "store-rsp", "find-rsp", "move-rsp"]
)
def test_fast_command_encoding_is_byte_identical_to_pydicom(message: object) -> None:
    command_set = message.command_set  # type: ignore[attr-defined]
    assert tuning.encode_command_set(command_set) == encode(command_set, True, True)


def test_fast_command_encoding_defers_what_it_does_not_know() -> None:
    ds = Dataset()
    ds.PatientName = "not a command"
    assert tuning.encode_command_set(ds) is None


def test_recv_reads_exactly_the_requested_bytes_and_stops_at_close() -> None:
    tuning.install()
    left, right = socket.socketpair()
    fake = type("FakeAssocSocket", (), {})()
    fake.socket = right
    payload = bytes(range(256)) * 9000  # more than one receive step
    writer = threading.Thread(target=lambda: (left.sendall(payload), left.close()))
    writer.start()
    first = tuning._recv_pdu(fake, 1000)
    rest = tuning._recv_pdu(fake, len(payload))  # asks for more than remains
    writer.join()
    right.close()
    assert bytes(first) == payload[:1000]
    assert bytes(rest) == payload[1000:]


@pytest.mark.parametrize(
    ("length", "max_pdu"),
    [(0, 16384), (1, 16384), (16378, 16384), (16379, 16384), (100_000, 16384), (500, 0)],
)
def test_fragments_cover_the_data_set_exactly_once(length: int, max_pdu: int) -> None:
    chunks = list(tuning.pdv_chunks(length, max_pdu))
    assert sum(size for _, size, _ in chunks) == length
    assert [last for _, _, last in chunks] == [False] * (len(chunks) - 1) + [True]
    if max_pdu:
        assert all(size + 6 <= max_pdu for _, size, _ in chunks)
    offsets = [offset for offset, _, _ in chunks]
    assert offsets == sorted(offsets)


def test_pdu_header_is_a_p_data_tf_with_one_pdv() -> None:
    header = tuning.pdu_header(context_id=3, control=0x02, size=10)
    assert header[0] == 0x04
    assert int.from_bytes(header[2:6], "big") == 10 + 6  # PDV item length field + item
    assert int.from_bytes(header[6:10], "big") == 10 + 2  # context id + control header + data
    assert header[10] == 3
    assert header[11] == 0x02


def test_send_buffers_handles_partial_sends() -> None:
    class Trickle:
        def __init__(self) -> None:
            self.data = bytearray()

        def sendmsg(self, buffers: list[bytes]) -> int:
            # Like a socket with little room: gathers across buffers, 3 bytes a call.
            taken = b"".join(bytes(b) for b in buffers)[:3]
            self.data += taken
            return len(taken)

    sink = Trickle()
    tuning.send_buffers(sink, [b"hello", memoryview(b" DICOM"), b"", b" world"])
    assert bytes(sink.data) == b"hello DICOM world"


@pytest.mark.parametrize(
    ("sop_class", "sop_instance", "syntax"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.826.0.1.3680043.8.498.123", "1.2.840.10008.1.2.1"),
        ("1.2.840.10008.5.1.4.1.1.7", "1.2.3.45", "1.2.840.10008.1.2.4.50"),
        ("1.2.840.10008.5.1.4.1.1.88.11", "9.87", "1.2.840.10008.1.2"),
    ],
)
def test_file_meta_bytes_match_pydicoms_writer(
    sop_class: str, sop_instance: str, syntax: str
) -> None:
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import UID
    from pynetdicom.dsutils import create_file_meta

    expected = io.BytesIO()
    write_file_meta_info(
        expected,
        create_file_meta(
            sop_class_uid=UID(sop_class),
            sop_instance_uid=UID(sop_instance),
            transfer_syntax=UID(syntax),
        ),
    )
    meta = tuning.FileMeta(
        (
            sop_class,
            sop_instance,
            syntax,
            pynetdicom.PYNETDICOM_IMPLEMENTATION_UID,
            pynetdicom.PYNETDICOM_IMPLEMENTATION_VERSION,
        )
    )
    assert tuning.file_meta_bytes(meta) == expected.getvalue()


_MESSAGES = {
    "C-STORE-RQ": C_STORE_RQ,
    "C-STORE-RSP": C_STORE_RSP,
    "C-FIND-RSP": C_FIND_RSP,
    "C-MOVE-RSP": C_MOVE_RSP,
    "C-GET-RSP": C_GET_RSP,
    "C-ECHO-RSP": C_ECHO_RSP,
}


def _primitive(cls: type, **parameters: object) -> object:
    primitive = cls()
    for name, value in parameters.items():
        setattr(primitive, name, value)
    return primitive


def _primitives() -> dict[str, tuple[object, str]]:
    """Primitives as the SCP and SCU send them, with the message each becomes."""
    ct = {"AffectedSOPClassUID": "1.2.840.10008.5.1.4.1.1.2"}
    find = {"AffectedSOPClassUID": "1.2.840.10008.5.1.4.1.2.2.1"}
    data_set = b"\x08\x00\x18\x00\x04\x00\x00\x001.2\x00"
    return {
        "store-rq": (
            _primitive(C_STORE, MessageID=9, Priority=2, **ct,
                       AffectedSOPInstanceUID="1.2.3.4.5", DataSet=io.BytesIO(data_set)),
            "C-STORE-RQ",
        ),
        "store-rq-moved": (
            _primitive(C_STORE, MessageID=10, Priority=2, **ct,
                       AffectedSOPInstanceUID="1.2.3.4.6",
                       MoveOriginatorApplicationEntityTitle="MOVER", MoveOriginatorMessageID=3,
                       DataSet=io.BytesIO(b"")),
            "C-STORE-RQ",
        ),
        "store-rsp": (
            _primitive(C_STORE, MessageIDBeingRespondedTo=9, **ct,
                       AffectedSOPInstanceUID="1.2.3.4.5", Status=0x0000),
            "C-STORE-RSP",
        ),
        "store-rsp-comment": (
            _primitive(C_STORE, MessageIDBeingRespondedTo=9, **ct,
                       AffectedSOPInstanceUID="1.2.3.4.5", Status=0xA700,
                       ErrorComment="storage full"),
            "C-STORE-RSP",
        ),
        "find-pending": (
            _primitive(C_FIND, MessageIDBeingRespondedTo=1, **find, Status=0xFF00,
                       Identifier=io.BytesIO(b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY ")),
            "C-FIND-RSP",
        ),
        "find-success": (
            _primitive(C_FIND, MessageIDBeingRespondedTo=1, **find, Status=0x0000),
            "C-FIND-RSP",
        ),
        "move-pending": (
            _primitive(C_MOVE, MessageIDBeingRespondedTo=2,
                       AffectedSOPClassUID="1.2.840.10008.5.1.4.1.2.2.2", Status=0xFF00,
                       NumberOfRemainingSuboperations=249, NumberOfCompletedSuboperations=1,
                       NumberOfFailedSuboperations=0, NumberOfWarningSuboperations=0),
            "C-MOVE-RSP",
        ),
        "get-warning": (
            _primitive(C_GET, MessageIDBeingRespondedTo=2,
                       AffectedSOPClassUID="1.2.840.10008.5.1.4.1.2.2.3", Status=0xB000,
                       NumberOfCompletedSuboperations=5, NumberOfFailedSuboperations=1,
                       NumberOfWarningSuboperations=0,
                       Identifier=io.BytesIO(b"\x08\x00\x58\x11\x00\x00\x00\x00")),
            "C-GET-RSP",
        ),
        "echo-rsp": (
            _primitive(C_ECHO, MessageIDBeingRespondedTo=4,
                       AffectedSOPClassUID="1.2.840.10008.1.1", Status=0x0000),
            "C-ECHO-RSP",
        ),
    }  # fmt: skip


@pytest.mark.parametrize("max_pdu", [0, 16384, 40], ids=["unlimited", "16k", "fragmented"])
@pytest.mark.parametrize("name", list(_primitives()))
def test_messages_sent_directly_are_the_pdus_pynetdicom_would_send(name: str, max_pdu: int) -> None:
    primitive, message_name = _primitives()[name]
    message = _MESSAGES[message_name]()
    message.primitive_to_message(primitive)
    theirs = [p.presentation_data_value_list for p in message.encode_msg(3, max_pdu)]
    data_set = getattr(primitive, "DataSet", None) or getattr(primitive, "Identifier", None)
    command = tuning.command_bytes(primitive, message_name, data_set is not None)
    assert command is not None
    encoded = data_set.getvalue() if data_set is not None else b""
    ours = [
        p.presentation_data_value_list for p in tuning.message_pdata(command, encoded, 3, max_pdu)
    ]
    assert ours == theirs


def test_what_the_direct_encoder_cannot_write_is_left_to_pynetdicom() -> None:
    refused = _primitive(
        C_STORE,
        MessageIDBeingRespondedTo=9,
        AffectedSOPClassUID="1.2.840.10008.5.1.4.1.1.2",
        Status=0xC000,
        ErrorComment="tệp hỏng",  # not ASCII: pydicom's charset rules apply
    )
    assert tuning.command_bytes(refused, "C-STORE-RSP", False) is None


@pytest.mark.parametrize("max_pdu", [0, 16384, 40], ids=["unlimited", "16k", "fragmented"])
@pytest.mark.parametrize("name", list(_primitives()))
def test_message_bytes_are_the_pdus_pynetdicoms_dul_would_write(name: str, max_pdu: int) -> None:
    primitive, message_name = _primitives()[name]
    data_set = getattr(primitive, "DataSet", None) or getattr(primitive, "Identifier", None)
    command = tuning.command_bytes(primitive, message_name, data_set is not None)
    assert command is not None
    encoded = data_set.getvalue() if data_set is not None else b""
    theirs = b"".join(_encoded_pdu(p) for p in tuning.message_pdata(command, encoded, 3, max_pdu))
    ours = b"".join(bytes(b) for b in tuning.message_buffers(command, encoded, 3, max_pdu))
    assert ours == theirs


def _encoded_pdu(pdata: object) -> bytes:
    pdu = pynetdicom.pdu.P_DATA_TF()
    pdu.from_primitive(pdata)
    return pdu.encode()


class _FakeDul:
    def __init__(self, sock: socket.socket | None, state: str = "Sta6") -> None:
        self.socket = type("AssocSocket", (), {})()
        self.socket.socket = sock
        self.state_machine = type("Machine", (), {"current_state": state})()
        self.to_provider_queue: queue.Queue[object] = queue.Queue()


class _FakeDimse:
    def __init__(self, dul: _FakeDul, handlers: list[object] | None = None) -> None:
        self.dul = dul
        self.maximum_pdu_size = 16384
        self.assoc = type("Assoc", (), {"get_handlers": lambda self, event: handlers or []})()


def test_send_direct_writes_the_message_in_sta6_only() -> None:
    left, right = socket.socketpair()
    left.settimeout(5)
    command, identifier = b"\x00" * 20, b"\x08\x00\x52\x00" * 10
    expected = b"".join(bytes(b) for b in tuning.message_buffers(command, identifier, 1, 16384))

    assert tuning.send_direct(_FakeDimse(_FakeDul(right)), command, identifier, 1)
    assert left.recv(len(expected), socket.MSG_WAITALL) == expected

    releasing = _FakeDul(right, state="Sta8")
    assert not tuning.send_direct(_FakeDimse(releasing), command, identifier, 1)
    queued = _FakeDul(right)
    queued.to_provider_queue.put("an earlier message")
    assert not tuning.send_direct(_FakeDimse(queued), command, identifier, 1)
    observed = _FakeDimse(_FakeDul(right), handlers=["a listener"])
    assert not tuning.send_direct(observed, command, identifier, 1)
    after_a_queued_message = _FakeDimse(_FakeDul(right))
    after_a_queued_message._pacs_queued = True  # type: ignore[attr-defined]
    assert not tuning.send_direct(after_a_queued_message, command, identifier, 1)
    left.setblocking(False)
    with pytest.raises(BlockingIOError):  # none of the refusals wrote anything
        left.recv(1)


def test_a_dul_in_sta6_waits_for_the_peer_instead_of_polling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _left, right = socket.socketpair()
    waits: list[tuple[list[object], float]] = []
    polls: list[float] = []
    monkeypatch.setattr(
        tuning.select, "select", lambda r, w, x, timeout: waits.append((r, timeout)) or ([], [], [])
    )
    monkeypatch.setattr(tuning, "adaptive_sleep", polls.append)
    dul = _FakeDul(right)
    monkeypatch.setattr(tuning._state, "dul", dul, raising=False)

    tuning.dul_sleep(0.001)
    assert waits == [([right], tuning._DUL_WAIT)] and polls == []

    dul.to_provider_queue.put("something to send")  # it must not wait behind the peer
    tuning.dul_sleep(0.001)
    releasing = _FakeDul(right, state="Sta8")
    monkeypatch.setattr(tuning._state, "dul", releasing)
    tuning.dul_sleep(0.001)
    tuning.dul_sleep(0.2)  # pynetdicom's own longer sleeps stay sleeps
    assert len(waits) == 1 and polls == [0.001, 0.001, 0.2]
