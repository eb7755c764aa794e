"""What pacs/scp/sending.py and pacs/scp/progress.py write on the wire for sub-operations."""

from __future__ import annotations

from pathlib import Path

import pytest
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_FIND, C_GET, C_MOVE, C_STORE
from pynetdicom.dsutils import encode

from pacs.scp import progress, sending
from pacs.storage.index import InstanceRef

CT = "1.2.840.10008.5.1.4.1.1.2"


def _ref(sop_uid: str) -> InstanceRef:
    return InstanceRef(
        sop_uid=sop_uid,
        series_uid="1.2.3.2",
        study_uid="1.2.3.1",
        sop_class_uid=CT,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        object_key="k",
        size_bytes=10,
        sha256="0" * 64,
        dataset_offset=132,
        instance_number=1,
        rows=None,
        columns=None,
        frames=None,
        bits_allocated=None,
    )


def _pynetdicom_encodes(ref: InstanceRef, msg_id: int, aet: str | None, mid: int | None) -> bytes:
    req = C_STORE()
    req.MessageID = msg_id
    req.Priority = 2
    req.AffectedSOPClassUID = ref.sop_class_uid
    req.AffectedSOPInstanceUID = ref.sop_uid
    req.MoveOriginatorApplicationEntityTitle = aet
    req.MoveOriginatorMessageID = mid
    req._dataset_path = (Path("x"), 0)
    message = C_STORE_RQ()
    message.primitive_to_message(req)
    encoded = encode(message.command_set, True, True)
    assert encoded is not None
    return encoded


@pytest.mark.parametrize(
    ("sop_uid", "msg_id", "aet", "originator_id"),
    [
        ("1.2.3.45", 1, None, None),  # a push or C-GET: no originator
        ("1.2.3.456", 65535, "MOVESCU", 7),  # odd UID length, padded with NUL
        ("1.2.826.0.1.3680043.8.498.1234567890123456789012345678901234", 9, "A", 1),
        ("1.2.3.4", 2, "  ", 3),  # an originator of spaces
    ],
)
def test_store_requests_are_the_bytes_pynetdicom_would_encode(
    sop_uid: str, msg_id: int, aet: str | None, originator_id: int | None
) -> None:
    ref = _ref(sop_uid)
    ours = sending._store_command(Path("x"), ref, msg_id, 2, aet, originator_id)
    assert ours == _pynetdicom_encodes(ref, msg_id, aet, originator_id)


def _response(cls: type, status: int, request: int = 1) -> object:
    primitive = cls()
    primitive.MessageIDBeingRespondedTo = request
    primitive.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.2"
    primitive.Status = status
    return primitive


class _Assoc:
    pass


@pytest.mark.parametrize("cls", [C_MOVE, C_GET])
def test_pending_retrieve_responses_go_out_a_few_per_second(cls: type) -> None:
    assoc = _Assoc()
    step = progress.PROGRESS_INTERVAL
    sent = [
        progress.due(assoc, _response(cls, 0xFF00), now=t)
        for t in (0.0, 0.1, step * 0.9, step * 1.01, step * 1.5, step * 2.2)
    ]
    assert sent == [True, False, False, True, False, True]
    # The final response always goes, and the next request reports at once.
    assert progress.due(assoc, _response(cls, 0x0000), now=step * 2.3)
    assert progress.due(assoc, _response(cls, 0xFF00, request=2), now=step * 2.4)
    assert progress.due(assoc, _response(cls, 0xFF00), now=step * 2.4)


def test_matches_requests_and_other_responses_are_never_held_back() -> None:
    assoc = _Assoc()
    for t in (0.0, 0.01, 0.02):
        assert progress.due(assoc, _response(C_FIND, 0xFF00), now=t)
        assert progress.due(assoc, _response(C_STORE, 0x0000), now=t)
    request = C_MOVE()
    request.MessageID = 1
    assert progress.due(assoc, request, now=0.0)
    assert progress.due(assoc, request, now=0.01)
