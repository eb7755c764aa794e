"""Two hospitals, each running pacs, consult each other end to end.

The district hospital (PACS_A) asks the central one (PACS_B) for an opinion on an
MR study: the study goes over DICOM with JPEG-LS lossless on the way, the request
follows pacs-to-pacs, the central radiologist opens it (``viewed`` travels back)
and answers with text and a key image; the answer comes back through STOW-RS as
a Basic Text SR in the same study, and the request reads ``answered`` on both sides.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from consult_harness import Web, cli, consult_of, link, start, wait_for

from support import storescu

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MR = REPO / "sample_dicom" / "mr_brain"


def _objects(server, study_uid: str) -> dict[str, Path]:
    """SOP Instance UID → archived file of the study on ``server`` (read from its index)."""
    archive = consult_of(server).archive
    return {ref.sop_uid: archive.local_path(ref) for ref in archive.instances(study_uid=study_uid)}


def test_two_hospitals_consult_end_to_end(pacs_server, tmp_path):
    a = start(pacs_server, "PACS_A")
    b = start(pacs_server, "PACS_B")
    # A sends B studies over DICOM, losslessly compressed; B answers A over DICOMweb.
    tokens = link(
        a, b, tmp_path, a_options=("--compression", "jpegls"), b_options=("--transport", "dicomweb")
    )
    files = sorted(MR.glob("*.dcm"))
    result = storescu(a.host, a.dicom_port, files, calling_aet="STORESCU", called_aet="PACS_A")
    assert result.returncode == 0, result.output
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    originals = {pydicom.dcmread(f).SOPInstanceUID: f for f in files}

    rad_a, rad_b = Web(a), Web(b)
    partner_b = rad_a.get("/consult/api/partners")["items"][0]
    asked = rad_a.post(
        "/consult/api/requests",
        {
            "study_uid": study_uid,
            "partner_id": partner_b["id"],
            "message": "Xin ý kiến: tổn thương thùy trán trái?",
            "urgency": "urgent",
        },
        status=201,
    )
    assert asked["status"] == "requested"

    # The study arrives, then the request: B lists it, A reads "sent".
    incoming = wait_for(
        lambda: rad_b.get("/consult/api/requests?direction=incoming")["items"],
        "the request on the central side",
    )
    assert len(incoming) == 1
    assert incoming[0]["uid"] == asked["uid"]
    assert incoming[0]["status"] == "sent"
    assert incoming[0]["urgency"] == "urgent"
    assert incoming[0]["message"] == "Xin ý kiến: tổn thương thùy trán trái?"
    assert incoming[0]["requested_by"] == "BS rad PACS_A"
    outgoing = rad_a.get(f"/consult/api/requests/{asked['id']}")
    assert outgoing["status"] == "sent"
    push = outgoing["push"]
    assert (push["state"], push["sent"], push["total"], push["verified_count"]) == (
        "done",
        24,
        24,
        24,
    )
    # JPEG-LS lossless on the wire: fewer bytes, the same pixels, the same UIDs...
    assert push["wire_bytes"] < push["bytes_sent"] * 0.8
    received = _objects(b, study_uid)
    assert set(received) == set(originals)
    for sop_uid, path in received.items():
        got = pydicom.dcmread(path)
        assert got.file_meta.TransferSyntaxUID == pydicom.uid.JPEGLSLossless
        assert np.array_equal(got.pixel_array, pydicom.dcmread(originals[sop_uid]).pixel_array)
    # ...and the archive's own copy untouched.
    for path in _objects(a, study_uid).values():
        assert (
            pydicom.dcmread(path).file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        )
    assert a.verify().returncode == 0

    # Opening the request is reading it: A learns it was viewed.
    page = rad_b.session.get(rad_b.base + f"/consult/requests/{incoming[0]['id']}", timeout=30)
    assert page.status_code == 200
    wait_for(
        lambda: rad_a.get(f"/consult/api/requests/{asked['id']}")["status"] == "viewed",
        "'viewed' on the district side",
    )

    images = rad_b.get(f"/consult/api/requests/{incoming[0]['id']}/images")
    key = images["series"][0]["instances"][2]["sop_uid"]
    opinion = "Không thấy tổn thương khu trú. / No focal lesion."
    answered = rad_b.post(
        f"/consult/api/requests/{incoming[0]['id']}/answer", {"text": opinion, "key_images": [key]}
    )
    assert answered["status"] == "answered"

    final = wait_for(
        lambda: (
            (r := rad_a.get(f"/consult/api/requests/{asked['id']}"))["status"] == "answered" and r
        ),
        "'answered' on the district side",
    )
    assert final["answer_text"] == opinion
    assert final["answered_by"] == "BS rad PACS_B"
    assert final["key_images"] == [key]
    # The answer is part of the study in A's archive: a Basic Text SR in a new series.
    sr_uid = final["answer_sr_uid"]
    archive_a = consult_of(a).archive
    sr_ref = archive_a.instance(sr_uid)
    assert sr_ref.study_uid == study_uid
    assert sr_ref.sop_class_uid == "1.2.840.10008.5.1.4.1.1.88.11"
    assert sr_ref.series_uid not in {r.series_uid for r in archive_a.instances(sop_uids=[key])}
    sr = pydicom.dcmread(archive_a.local_path(sr_ref))
    texts = [i.TextValue for i in sr.ContentSequence if i.ValueType == "TEXT"]
    images_ = [
        i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for i in sr.ContentSequence
        if i.ValueType == "IMAGE"
    ]
    assert (texts, images_, sr.Modality) == ([opinion], [key], "SR")
    assert str(sr.PatientName) == str(pydicom.dcmread(files[0]).PatientName)

    # Statuses on both sides, and the study list's badge.
    assert rad_b.get(f"/consult/api/requests/{incoming[0]['id']}")["status"] == "answered"
    badges = rad_a.get(f"/consult/api/studies/status?uids={study_uid}")["studies"]
    assert badges[study_uid] == [
        {"direction": "outgoing", "status": "answered", "urgency": "urgent"}
    ]
    answer_push = consult_of(b).pushes.store.recent(limit=1)[0]
    assert (answer_push.origin, answer_push.transport, answer_push.state) == (
        "answer",
        "dicomweb",
        "done",
    )
    assert answer_push.verified_count == 1

    # The CLI shows the same pushes, with progress.
    status = cli(a, "push", "status")
    assert "done" in status and "24/24" in status
    log = a.log_text() + b.log_text()
    assert not [t for t in tokens if t in log], "a token reached a log"
