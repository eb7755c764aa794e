"""A routing rule fires on ingest and sends each study exactly once.

Rule: every CT from AE ``CT_KHOA_CC`` goes to partner ``BV_TINH`` (a DCMTK
``storescp`` writing every instance it receives to a file of its own name, so a
second send of any instance would show as a second file). The CT study arrives
from ``CT_KHOA_CC`` in two associations (a modality sending in pieces) and is then
sent again whole (duplicates); an MR from the same AE and a CR from another AE
must not be routed.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from consult_harness import cli, consult_of, start, wait_for

from pacs.consult import ROUTE_JOB
from support import StoreSCP

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CT = REPO / "sample_dicom" / "ct_head"
MR = REPO / "sample_dicom" / "mr_brain"
CR = REPO / "sample_dicom" / "cr_chest"


def _uid(path: Path, keyword: str) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True)[keyword].value)


def test_a_rule_routes_each_ct_study_exactly_once(pacs_server, tmp_path, raw_store):
    with StoreSCP(tmp_path / "received", ae_title="BV_TINH", extra=["+uf"]) as scp:
        server = start(pacs_server, "PACS", aes=[{"title": "CT_KHOA_CC"}])
        cli(server, "partner", "add", "BV_TINH", "--ae-title", "BV_TINH", "--host",
            "127.0.0.1", "--port", str(scp.port))  # fmt: skip
        out = cli(server, "route", "add", "BV_TINH", "--calling-ae", "CT_KHOA_CC",
                  "--modality", "CT", "--name", "CT cấp cứu")  # fmt: skip
        assert "every CT from CT_KHOA_CC goes to BV_TINH" in out
        assert "CT cấp cứu" in cli(server, "route", "list")

        def send(files: list[Path], calling_aet: str) -> None:
            sent = raw_store(server.host, server.dicom_port, files, calling_aet=calling_aet)
            assert {r.status for r in sent} == {0}

        ct = sorted(CT.glob("*.dcm"))
        send(ct[:50], "CT_KHOA_CC")
        send(ct[50:], "CT_KHOA_CC")
        send(sorted(MR.glob("*.dcm")), "CT_KHOA_CC")
        send(sorted(CR.glob("*.dcm")), "STORESCU")

        consult = consult_of(server)
        study = _uid(ct[0], "StudyInstanceUID")
        push = wait_for(
            lambda: (
                (p := consult.pushes.store.recent(limit=5))
                and p[0].state == "done"
                and p[0].sent == 128
                and p[0]
            ),
            "the routed push of all 128 instances",
        )
        assert (push.study_uid, push.origin, push.sent, push.total) == (study, "route", 128, 128)

        # The same study again (a modality's resend): nothing new to send.
        send(ct[:10], "CT_KHOA_CC")
        queue = consult.queue
        wait_for(
            lambda: (
                not [
                    j
                    for j in queue.recent(kind=ROUTE_JOB, limit=50)
                    if j.state in ("queued", "running")
                ]
            ),
            "the routing jobs to settle",
            timeout=30,
        )
        pushes = consult.pushes.store.recent(limit=10)
        assert [(p.study_uid, p.state, p.sent) for p in pushes] == [(study, "done", 128)]

        # storescp got each CT instance exactly once, and nothing else.
        received = scp.wait_for_files(128)
        sops = [_uid(f, "SOPInstanceUID") for f in received]
        assert len(sops) == 128
        assert sorted(sops) == sorted(_uid(f, "SOPInstanceUID") for f in ct)
