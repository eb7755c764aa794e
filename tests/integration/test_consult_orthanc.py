"""Orthanc (the Debian package) as a partner hospital.

- pacs pushes the MR study to Orthanc over DICOM, JPEG-LS lossless on the way
  (Orthanc accepts it when proposed), verified by Orthanc's C-FIND count; Orthanc's
  REST API shows every instance, same UIDs, same pixels.
- Orthanc pulls by C-MOVE, as an enrolled partner AE with the "shared" scope: the
  CR study is invisible to it until it is shared, then arrives byte for byte.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from consult_harness import cli, consult_of, start, wait_for

from support import free_port, orthanc_peer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MR = REPO / "sample_dicom" / "mr_brain"
CR = REPO / "sample_dicom" / "cr_chest"


def _study(folder: Path) -> str:
    first = sorted(folder.glob("*.dcm"))[0]
    return str(pydicom.dcmread(first, stop_before_pixels=True).StudyInstanceUID)


def _orthanc_study(orthanc, study_uid: str) -> list[str]:
    return orthanc.rest(
        "/tools/find", "POST", {"Level": "Study", "Query": {"StudyInstanceUID": study_uid}}
    )


def test_pacs_and_orthanc_as_partners(pacs_server, tmp_path, raw_store, read_dataset_bytes):
    pacs_port = free_port()
    with orthanc_peer(
        tmp_path / "orthanc",
        aet="ORTHANC",
        modalities={"pacs": ["PACS", "127.0.0.1", pacs_port]},
    ) as orthanc:
        server = start(pacs_server, "PACS", dicom_port=pacs_port, web=False)
        cli(server, "partner", "add", "BV_ORTHANC", "--ae-title", orthanc.aet, "--host",
            orthanc.host, "--port", str(orthanc.dicom_port), "--compression", "jpegls")  # fmt: skip
        server.wait_until_accepted(orthanc.aet)
        for folder in (MR, CR):
            sent = raw_store(server.host, server.dicom_port, sorted(folder.glob("*.dcm")))
            assert {r.status for r in sent} == {0}
        mr, cr = _study(MR), _study(CR)

        # pacs pushes to Orthanc.
        assert "24 instance(s)" in cli(server, "push", mr, "BV_ORTHANC")
        pushes = consult_of(server).pushes.store
        push = wait_for(
            lambda: (p := pushes.recent(limit=1)[0]).state in ("done", "failed") and p,
            "the push to Orthanc",
        )
        assert (push.state, push.sent, push.total, push.verified_count) == ("done", 24, 24, 24)
        assert push.wire_bytes < push.bytes_sent * 0.8  # JPEG-LS on the wire
        found = _orthanc_study(orthanc, mr)
        assert len(found) == 1
        instances = orthanc.rest(f"/studies/{found[0]}/instances")
        originals = {
            str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f
            for f in MR.glob("*.dcm")
        }
        assert {i["MainDicomTags"]["SOPInstanceUID"] for i in instances} == set(originals)
        for instance in instances[:3]:
            syntax = orthanc.rest(f"/instances/{instance['ID']}/metadata/TransferSyntax")
            assert syntax == b"1.2.840.10008.1.2.4.80"
            got = pydicom.dcmread(
                pydicom.filebase.DicomBytesIO(orthanc.rest(f"/instances/{instance['ID']}/file"))
            )
            original = pydicom.dcmread(originals[str(got.SOPInstanceUID)])
            assert np.array_equal(got.pixel_array, original.pixel_array)

        # Orthanc pulls by C-MOVE: nothing of the CR until it is shared with it.
        def query(study_uid: str) -> tuple[str, list]:
            made = orthanc.rest(
                "/modalities/pacs/query",
                "POST",
                {"Level": "Study", "Query": {"StudyInstanceUID": study_uid}},
            )
            return made["ID"], orthanc.rest(f"/queries/{made['ID']}/answers")

        assert query(cr)[1] == []
        cli(server, "partner", "share", "BV_ORTHANC", cr)
        query_id, answers = wait_for(lambda: (q := query(cr))[1] and q, "the CR to be visible")
        assert len(answers) == 1
        orthanc.rest(
            f"/queries/{query_id}/retrieve",
            "POST",
            {"TargetAet": orthanc.aet, "Synchronous": True},
            timeout=120,
        )
        pulled = _orthanc_study(orthanc, cr)
        assert len(pulled) == 1
        received = {
            i["MainDicomTags"]["SOPInstanceUID"]: read_dataset_bytes(
                orthanc.rest(f"/instances/{i['ID']}/file")
            )
            for i in orthanc.rest(f"/studies/{pulled[0]}/instances")
        }
        assert received == {
            str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): read_dataset_bytes(f)
            for f in CR.glob("*.dcm")
        }
