"""Key images and the printable result sheet (HTML with print styles, and PDF).

Key images are chosen by radiologists (and administrators) — at most four per
study, stored by Study Instance UID + SOP Instance UID + frame — and printed on
the sheet with the patient and study details and the QR code of a new share
link. The link's token reaches the sheet only in the answer that made the
link; the PDF gets a QR code only for a live link of that very study.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

import pytest
import segno  # noqa: F401 - the QR library the sheet needs (fails clearly when missing)
from PIL import Image
from test_share_links import ShareEnv, Staff, build_env, csrf_of, make_link, open_link, staff

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShareEnv]:
    built = build_env(tmp_path_factory.mktemp("sheet"))
    yield built
    built.archive.index.engine.dispose()


def key_url(env: ShareEnv, study: str = "A") -> str:
    return f"/api/studies/{env.studies[study]}/key-images"


def choose(rad: Staff, env: ShareEnv, sop: str, frame: int = 1, study: str = "A") -> object:
    return rad.post(key_url(env, study), {"sop_uid": sop, "frame": frame})


def test_key_images_at_most_four_per_study(env: ShareEnv) -> None:
    rad = staff(env)
    refs = sorted(env.refs("A"), key=lambda r: r.instance_number or 0)
    for i, ref in enumerate(refs[:4]):
        response = choose(rad, env, ref.sop_uid)
        assert response.status_code == 201, response.get_data(as_text=True)
        assert len(response.json["key_images"]) == i + 1
    assert choose(rad, env, refs[0].sop_uid).status_code == 200  # already chosen: no change
    fifth = choose(rad, env, refs[4].sop_uid)
    assert fifth.status_code == 409
    listed = rad.client.get(key_url(env)).json
    assert [k["sop_uid"] for k in listed["key_images"]] == [r.sop_uid for r in refs[:4]]
    assert listed["max"] == 4 and listed["key_images"][0]["chosen_by"] == "rad"
    removed = rad.delete(f"{key_url(env)}?sop_uid={refs[3].sop_uid}&frame=1")
    assert len(removed.json["key_images"]) == 3
    assert choose(rad, env, refs[4].sop_uid).status_code == 201


def test_key_images_of_a_multiframe_instance_name_the_frame(env: ShareEnv) -> None:
    rad = staff(env)
    ref = env.refs("US")[0]
    assert choose(rad, env, ref.sop_uid, frame=12, study="US").status_code == 201
    assert choose(rad, env, ref.sop_uid, frame=20, study="US").status_code == 201
    frames = [k["frame"] for k in rad.client.get(key_url(env, "US")).json["key_images"]]
    assert frames == [12, 20]


def test_key_images_must_be_of_the_study_and_chosen_by_staff(env: ShareEnv) -> None:
    rad = staff(env)
    b_ref = env.refs("B")[0]
    assert choose(rad, env, b_ref.sop_uid).status_code == 404
    assert rad.post(key_url(env), {"sop_uid": "x", "frame": 1}).status_code == 400
    assert choose(rad, env, env.refs("A")[0].sop_uid, frame=0).status_code == 400
    referring = staff(env, "ref")
    assert choose(referring, env, env.refs("A")[0].sop_uid).status_code in (403, 404)
    assert choose(staff(env, "admin"), env, env.refs("B")[0].sop_uid, study="B").status_code == 201


def test_the_sheet_page_shows_the_study_and_key_images(env: ShareEnv) -> None:
    rad = staff(env)
    ref = env.refs("B")[10]
    choose(rad, env, ref.sop_uid, study="B")
    page = rad.client.get(f"/studies/{env.studies['B']}/sheet")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Nguyễn Thị Hồng Nhung" in html and "24003817" in html
    assert "BS. Lê Quang Vinh" in html  # the referring physician, in reading order
    assert f"/api/instances/{ref.sop_uid}/frames/1/rendered" in html
    assert 'id="sheet-link-form"' in html and "<svg" not in html  # no link yet: no QR
    assert "@media print" in rad.client.get("/static/css/pacs.css").get_data(as_text=True)


def test_making_the_link_puts_its_qr_code_on_the_sheet(env: ShareEnv) -> None:
    rad = staff(env)
    response = rad.client.post(
        f"/studies/{env.studies['B']}/sheet",
        data={"csrf_token": rad.csrf, "days": "30", "download": "1", "pin": "2468"},
    )
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    url = re.search(r'id="sheet-url">([^<]+)<', html).group(1)
    token = url.rsplit("/s/", 1)[1]
    assert '<div class="sheet-qr" id="sheet-qr"><svg' in html
    assert "PIN: ____" in html or "Mã PIN: ____" in html
    assert "2468" not in html
    assert response.headers["Cache-Control"] == "no-store"
    # The link works, with its PIN.
    from test_share_links import Link

    link = Link(0, url, token, {})
    visitor = open_link(env, link, pin="2468")
    assert visitor.get(f"/api/studies/{env.studies['B']}").status_code == 200
    # And the PDF carries it.
    pdf = rad.client.post(
        f"/studies/{env.studies['B']}/sheet.pdf", data={"csrf_token": rad.csrf, "token": token}
    )
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    assert pdf.data.startswith(b"%PDF-") and b"%%EOF" in pdf.data[-64:]
    bare = rad.client.post(f"/studies/{env.studies['B']}/sheet.pdf", data={"csrf_token": rad.csrf})
    assert bare.status_code == 200 and len(bare.data) < len(pdf.data)  # no QR code
    rows = env.archive.audit.query(action="study.result_sheet", limit=2)
    assert rows[0].details == {"format": "pdf", "link": None}
    assert rows[1].details["format"] == "pdf" and rows[1].details["link"]


def test_the_pdf_renders_as_an_a4_page_with_images(env: ShareEnv) -> None:
    from reportlab.lib.pagesizes import A4

    rad = staff(env)
    pdf = rad.client.post(
        f"/studies/{env.studies['B']}/sheet.pdf", data={"csrf_token": rad.csrf}
    ).data
    box = re.search(rb"/MediaBox \[\s*0 0 ([0-9.]+) ([0-9.]+)\s*\]", pdf)
    assert box and (round(float(box.group(1))), round(float(box.group(2)))) == (
        round(A4[0]),
        round(A4[1]),
    )
    assert b"/Subtype /Image" in pdf  # the key image
    assert b"FontFile2" in pdf or b"/Helvetica" in pdf  # an embedded Unicode font, or the fallback


def test_a_token_of_another_study_gives_no_qr_code(env: ShareEnv) -> None:
    rad = staff(env)
    other = make_link(env, "A", who=rad)
    pdf = rad.client.post(
        f"/studies/{env.studies['B']}/sheet.pdf",
        data={"csrf_token": rad.csrf, "token": other.token},
    )
    assert pdf.status_code == 200
    assert env.archive.audit.query(action="study.result_sheet", limit=1)[0].details["link"] is None


def test_a_bad_link_request_shows_the_sheet_with_the_reason(env: ShareEnv) -> None:
    rad = staff(env)
    response = rad.client.post(
        f"/studies/{env.studies['B']}/sheet", data={"csrf_token": rad.csrf, "pin": "12"}
    )
    assert response.status_code == 400
    assert 'id="sheet-error"' in response.get_data(as_text=True)


def test_only_staff_print_sheets(env: ShareEnv) -> None:
    referring = staff(env, "ref")
    b = env.studies["B"]
    assert referring.client.get(f"/studies/{b}/sheet").status_code == 403
    csrf = csrf_of(referring.client.get("/account").get_data(as_text=True))
    assert (
        referring.client.post(f"/studies/{b}/sheet.pdf", data={"csrf_token": csrf}).status_code
        == 403
    )


def test_sheet_images_render(env: ShareEnv) -> None:
    rad = staff(env)
    ref = env.refs("B")[10]
    image = rad.client.get(f"/api/instances/{ref.sop_uid}/frames/1/rendered?w=900&h=900")
    assert Image.open(io.BytesIO(image.data)).size == (512, 512)
