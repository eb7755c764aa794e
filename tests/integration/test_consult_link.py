"""A partner without pacs answers through a consultation link (a share link).

The radiologist asks with no partner (or one without pacs): the request gets a
share link to the study, its address (``/c/<token>``) shown once. Whoever opens it
gets the share session, scoped to the one study: the viewer shows that study and
nothing else, the request page shows the message, and the answer is stored here
as a Basic Text SR in the study. The token is never in the database or a log, an
unknown token opens nothing, and revoking the share link ends the session.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
import requests
from consult_harness import Web, base_url, consult_of, start, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MR = REPO / "sample_dicom" / "mr_brain"
CR = REPO / "sample_dicom" / "cr_chest"


def _study(folder: Path) -> str:
    first = sorted(folder.glob("*.dcm"))[0]
    return str(pydicom.dcmread(first, stop_before_pixels=True).StudyInstanceUID)


def test_a_partner_without_pacs_answers_through_a_link(pacs_server, raw_store):
    server = start(pacs_server, "PACS")
    for folder in (MR, CR):
        sent = raw_store(server.host, server.dicom_port, sorted(folder.glob("*.dcm")))
        assert {r.status for r in sent} == {0}
    mr, cr = _study(MR), _study(CR)
    rad = Web(server)
    asked = rad.post(
        "/consult/api/requests",
        {
            "study_uid": mr,
            "partner_id": None,
            "message": "Đọc giúp MRI sọ não",
            "urgency": "routine",
        },
        status=201,
    )
    assert asked["status"] == "sent" and asked["by_link"]
    link = asked["link"]
    token = link.rsplit("/", 1)[-1]

    visitor = requests.Session()
    visitor.headers["Connection"] = "close"
    assert visitor.get(base_url(server) + "/c/not-a-token", timeout=30).status_code == 404
    opened = visitor.get(link, timeout=30, allow_redirects=False)
    assert opened.status_code == 303
    assert opened.headers["Location"].endswith("/consult/link")
    assert opened.headers["Referrer-Policy"] == "no-referrer"
    page = visitor.get(base_url(server) + "/consult/link", timeout=30)
    assert page.status_code == 200
    csrf = page.text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    shown = visitor.get(base_url(server) + "/consult/link/api", timeout=30).json()
    assert shown["message"] == "Đọc giúp MRI sọ não"
    assert shown["status"] == "viewed"
    assert sum(len(s["instances"]) for s in shown["images"]["series"]) == 24
    # The viewer shows the linked study, and only that one.
    assert visitor.get(base_url(server) + f"/viewer/{mr}", timeout=30).status_code == 200
    assert visitor.get(base_url(server) + f"/api/studies/{mr}", timeout=30).status_code == 200
    assert visitor.get(base_url(server) + f"/api/studies/{cr}", timeout=30).status_code == 404
    assert visitor.get(base_url(server) + "/consult/api/requests", timeout=30).status_code == 403

    key = shown["images"]["series"][0]["instances"][0]["sop_uid"]
    answered = visitor.post(
        base_url(server) + "/consult/link/api/answer",
        json={"text": "Bình thường.", "author": "BS. Trần Minh", "key_images": [key]},
        headers={"X-CSRF-Token": csrf},
        timeout=30,
    )
    assert answered.status_code == 200, answered.text
    final = wait_for(
        lambda: (
            (r := rad.get(f"/consult/api/requests/{asked['id']}"))["status"] == "answered" and r
        ),
        "the answer",
    )
    assert (final["answer_text"], final["answered_by"]) == ("Bình thường.", "BS. Trần Minh")
    sr = consult_of(server).archive.instance(final["answer_sr_uid"])
    assert sr.study_uid == mr
    # It is an ordinary share link: listed, and revoking it ends the visitor's session.
    links = rad.get(f"/api/studies/{mr}/shares")
    assert [link["id"] for link in links["links"]] == [final["share_link_id"]]
    rad.post(f"/api/shares/{final['share_link_id']}/revoke", {})
    assert visitor.get(base_url(server) + "/consult/link/api", timeout=30).status_code in (401, 403)
    assert visitor.get(link, timeout=30).status_code == 404
    assert token not in server.log_text()
    engine = consult_of(server).archive.index.engine
    with engine.connect() as conn:
        dump = "\n".join(str(line) for line in conn.connection.iterdump())
    assert token not in dump
