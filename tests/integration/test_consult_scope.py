"""A partner hospital sees only what was shared with it, over DICOM and DICOMweb.

pacs holds two studies (the MR and the CR samples); partner HOSP_X is registered
with its AE (scope "shared", the default) and a token we issued. Only the MR is
shared with it. Its AE finds only the MR (C-FIND), and moves or gets nothing of
the CR (C-MOVE, C-GET: zero sub-operations, as for a study that does not exist);
its token finds only the MR (QIDO-RS) and gets 404 for the CR (WADO-RS), and cannot
claim the CR through the pacs-to-pacs calls. An ordinary AE (scope "all") still sees
both, and unsharing takes the MR away.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
import requests
from consult_harness import TOKEN, base_url, cli, start, wait_for
from dicomweb_client.api import DICOMwebClient

from support import StoreSCP, findscu, getscu, movescu

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MR = REPO / "sample_dicom" / "mr_brain"
CR = REPO / "sample_dicom" / "cr_chest"
PARTNER_AE = "HOSPX_AE"


def _study(folder: Path) -> str:
    first = sorted(folder.glob("*.dcm"))[0]
    return str(pydicom.dcmread(first, stop_before_pixels=True).StudyInstanceUID)


def _found(server, calling_aet: str) -> set[str]:
    result = findscu(
        server.host,
        server.dicom_port,
        {"StudyInstanceUID": "", "PatientName": ""},
        calling_aet=calling_aet,
    )
    assert result.returncode == 0, result.output
    return {str(r.StudyInstanceUID) for r in result.responses}


def test_a_partner_sees_only_what_was_shared_with_it(pacs_server, tmp_path, raw_store):
    with StoreSCP(tmp_path / "moved", ae_title=PARTNER_AE) as scp:
        server = start(pacs_server, "PACS")
        for folder in (MR, CR):
            sent = raw_store(server.host, server.dicom_port, sorted(folder.glob("*.dcm")))
            assert {r.status for r in sent} == {0}
        mr, cr = _study(MR), _study(CR)
        out = cli(
            server,
            "partner",
            "add",
            "HOSP_X",
            "--ae-title",
            PARTNER_AE,
            "--host",
            "127.0.0.1",
            "--port",
            str(scp.port),
            "--issue-token",
        )
        token = TOKEN.search(out).group(0)
        cli(server, "partner", "share", "HOSP_X", mr)
        server.wait_until_accepted(PARTNER_AE)

        # C-FIND: the partner finds the shared study only; an ordinary AE finds both.
        assert wait_for(lambda: _found(server, PARTNER_AE) == {mr}, "the share to apply", 10)
        assert _found(server, "FINDSCU") == {mr, cr}

        # C-MOVE to the partner itself: the CR moves nothing, the MR moves whole.
        for study, expected in ((cr, 0), (mr, 24)):
            moved = movescu(
                server.host,
                server.dicom_port,
                {"StudyInstanceUID": study},
                PARTNER_AE,
                calling_aet=PARTNER_AE,
            )
            assert moved.returncode == 0, moved.output
            assert len(scp.files()) == expected
        # C-GET: the same.
        got_cr = getscu(
            server.host,
            server.dicom_port,
            {"StudyInstanceUID": cr},
            tmp_path / "get-cr",
            calling_aet=PARTNER_AE,
        )
        assert got_cr.files == [], got_cr.output
        got_mr = getscu(
            server.host,
            server.dicom_port,
            {"StudyInstanceUID": mr},
            tmp_path / "get-mr",
            calling_aet=PARTNER_AE,
        )
        assert len(got_mr.files) == 24, got_mr.output

        # DICOMweb with the partner's token: QIDO finds the MR only, WADO gives 404 for the CR.
        client = DICOMwebClient(
            url=base_url(server) + "/dicomweb",
            # No kept-alive connections: the server's shutdown would wait for them.
            headers={"Authorization": f"Bearer {token}", "Connection": "close"},
            timeout=60,
        )
        assert {s["0020000D"]["Value"][0] for s in client.search_for_studies()} == {mr}
        assert client.search_for_studies(search_filters={"StudyInstanceUID": cr}) == []
        metadata = client.retrieve_study_metadata(mr)
        assert len(metadata) == 24
        with pytest.raises(requests.HTTPError) as refused:
            client.retrieve_study_metadata(cr)
        assert refused.value.response.status_code == 404
        sop = metadata[0]["00080018"]["Value"][0]
        series = metadata[0]["0020000E"]["Value"][0]
        instance = client.retrieve_instance(mr, series, sop)
        assert instance.SOPInstanceUID == sop

        # Naming a study of ours does not make it the partner's.
        peer = base_url(server) + "/consult/api/peer"
        bearer = {"Authorization": f"Bearer {token}", "Connection": "close"}
        for path, body in (
            ("/studies", {"study_uid": cr}),
            ("/requests", {"uid": "x1", "study_uid": cr, "message": "?", "urgency": "routine"}),
        ):
            refused = requests.post(peer + path, json=body, headers=bearer, timeout=30)
            assert refused.status_code == 403, refused.text
        assert client.search_for_studies(search_filters={"StudyInstanceUID": cr}) == []

        # Unsharing takes the study away on both sides.
        cli(server, "partner", "share", "HOSP_X", mr, "--remove")
        assert wait_for(lambda: _found(server, PARTNER_AE) == set(), "the unshare to apply", 10)
        assert client.search_for_studies() == []
