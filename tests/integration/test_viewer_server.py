"""The web viewer's server side through Flask's test client, on a real archive.

The archive holds the sample studies plus a few generated ones: a study whose
patient name is an HTML injection attempt, a prior study of the chest patient,
and an instance whose pixel data cannot be decoded. Users of every role sign in
through the real sign-in form (CSRF token, scrypt hashes, lockout in SQLite).
"""

from __future__ import annotations

import gzip
import json
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from flask import Flask
from flask.testing import FlaskClient
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, generate_uid

from pacs.archive import Archive
from pacs.bootstrap import build_archive
from pacs.config import Settings
from pacs.importer import import_paths
from pacs.storage.matching import Level, Query
from pacs.viewer import rendering
from pacs.viewer.app import create_app
from pacs.viewer.users import Accounts

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_dicom"
PASSWORD = "mật khẩu thử 2024"
XSS_NAME = "<img src=x onerror=alert(1)>"
CT_NAME = "Nguyễn^Thị Hồng Nhung"


# ---------------------------------------------------------------- generated studies


def _renamed(source: Path, target: Path, **changes: Any) -> Path:
    """A copy of ``source`` as a new study/series/instance, with attributes changed."""
    ds = pydicom.dcmread(source)
    ds.StudyInstanceUID = changes.pop("StudyInstanceUID", generate_uid())
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    ds.save_as(target, enforce_file_format=True)
    return target


def _undecodable(source: Path, target: Path) -> Path:
    """An MR slice whose pixel data claims JPEG Baseline but holds garbage."""
    ds = pydicom.dcmread(source)
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = "BROKEN^PIXELS"
    ds.PatientID = "BROKEN1"
    ds.AccessionNumber = "BRK0001"
    ds.StudyDescription = "PIXEL TEST"
    ds.StudyDate = "20220202"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xe0 this is not a JPEG stream at all \xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.save_as(target, enforce_file_format=True)
    return target


@dataclass
class Env:
    app: Flask
    archive: Archive
    accounts: Accounts
    studies: dict[str, str]  # name → study uid

    def client(self) -> FlaskClient:
        return self.app.test_client()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("viewer")
    extra = root / "extra"
    extra.mkdir()
    mr = sorted((SAMPLES / "mr_brain").glob("*.dcm"))[0]
    _renamed(
        mr,
        extra / "xss.dcm",
        PatientName=XSS_NAME,
        PatientID="XSS1",
        AccessionNumber="XSS0001",
        StudyDate="20220101",
        StudyDescription="<script>alert(2)</script>",
    )
    _renamed(
        SAMPLES / "cr_chest" / "CR_PA.dcm",
        extra / "prior.dcm",
        StudyDate="20230105",
        StudyDescription="X-quang ngực cũ",
        AccessionNumber="CR2301050001",
    )
    _undecodable(mr, extra / "broken.dcm")
    settings = Settings(data_dir=root / "data", secret_key="test-secret")
    archive = build_archive(settings)
    summary = import_paths(archive, [SAMPLES, extra])
    assert not summary.refused, summary.refused
    accounts = Accounts(archive.index.engine)
    for username, role in (
        ("admin", "admin"),
        ("rad", "radiologist"),
        ("ref", "referring"),
        ("ref2", "referring"),
    ):
        accounts.create(username, PASSWORD, role=role, display_name=username.upper())
    rows = archive.search(Query(Level.STUDY), ["StudyInstanceUID", "PatientID", "StudyDescription"])
    studies = {}
    for row in rows:
        key = {
            "24003817": "ct",
            "24011542": "mr",
            "24019970": "us",
            "XSS1": "xss",
            "BROKEN1": "broken",
        }.get(row["PatientID"])
        if row["PatientID"] == "24015208":
            key = "prior" if row["StudyDescription"] == "X-quang ngực cũ" else "cr"
        studies[key] = row["StudyInstanceUID"]
    rendering.clear_caches()
    yield Env(create_app(settings, archive), archive, accounts, studies)
    archive.index.engine.dispose()


def csrf_of(html: str) -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', html)
    assert match, "page without a CSRF token"
    return match.group(1)


def login(client: FlaskClient, username: str, password: str = PASSWORD) -> str:
    """Sign in through the form; returns the session's CSRF token."""
    token = csrf_of(client.get("/login").get_data(as_text=True))
    response = client.post(
        "/login", data={"username": username, "password": password, "csrf_token": token}
    )
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    return csrf_of(client.get("/account").get_data(as_text=True))


@pytest.fixture
def rad(env: Env) -> tuple[FlaskClient, str]:
    client = env.client()
    return client, login(client, "rad")


def first_instance(env: Env, study: str) -> Any:
    return env.archive.instances(study_uid=env.studies[study])[0]


# ---------------------------------------------------------------- nothing without a session


def _data_urls(env: Env) -> list[str]:
    ct = env.studies["ct"]
    ref = first_instance(env, "ct")
    return [
        "/api/studies",
        f"/api/studies/{ct}",
        f"/api/studies/{ct}/assignments",
        f"/api/series/{ref.series_uid}",
        f"/api/series/{ref.series_uid}/thumbnail",
        f"/api/instances/{ref.sop_uid}/tags",
        f"/api/instances/{ref.sop_uid}/thumbnail",
        f"/api/instances/{ref.sop_uid}/frames/1/rendered",
        f"/api/instances/{ref.sop_uid}/frames/1/overlay",
        f"/api/frames?f={ref.sop_uid}/1",
        "/api/session",
        "/api/users",
    ]


def test_json_endpoints_refuse_without_a_session(env: Env) -> None:
    client = env.client()
    for url in _data_urls(env):
        response = client.get(url)
        assert response.status_code == 401, url
        assert response.is_json and response.json["error"] == "Unauthenticated", url
        assert b"Nguy" not in response.data


def test_pages_redirect_to_the_sign_in_page(env: Env) -> None:
    client = env.client()
    for url in ("/worklist", f"/viewer/{env.studies['ct']}", "/admin/users", "/account"):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response.headers["Location"].startswith("/login?next="), url
    assert client.get("/").status_code == 302


def test_a_forged_or_foreign_session_cookie_is_refused(env: Env) -> None:
    client = env.client()
    login(client, "rad")
    cookie = client.get_cookie("pacs_session")
    assert cookie is not None and cookie.http_only
    tampered = env.client()
    tampered.set_cookie("pacs_session", cookie.value[:-3] + "abc")
    assert tampered.get("/api/studies").status_code == 401


# ---------------------------------------------------------------- sign-in


def test_wrong_password_is_refused_with_the_form_again(env: Env) -> None:
    client = env.client()
    token = csrf_of(client.get("/login").get_data(as_text=True))
    response = client.post(
        "/login", data={"username": "rad", "password": "not the password", "csrf_token": token}
    )
    assert response.status_code == 401
    assert 'id="login-error"' in response.get_data(as_text=True)
    assert client.get("/api/studies").status_code == 401


def test_sign_in_goes_back_to_the_page_asked_for_and_only_to_this_site(env: Env) -> None:
    client = env.client()
    token = csrf_of(client.get("/login").get_data(as_text=True))
    form = {"username": "rad", "password": PASSWORD, "csrf_token": token}
    assert (
        client.post("/login", data={**form, "next": "/worklist?name=x"}).headers["Location"]
        == "/worklist?name=x"
    )
    other = env.client()
    token = csrf_of(other.get("/login").get_data(as_text=True))
    response = other.post("/login", data={**form, "csrf_token": token, "next": "//evil.example/x"})
    assert response.headers["Location"] == "/"


def test_lockout_after_repeated_wrong_passwords(env: Env) -> None:
    env.accounts.create("victim", PASSWORD, role="radiologist")
    client = env.client()
    token = csrf_of(client.get("/login").get_data(as_text=True))
    for _ in range(5):
        bad = client.post(
            "/login", data={"username": "victim", "password": "guess guess", "csrf_token": token}
        )
        assert bad.status_code == 401
    locked = client.post(
        "/login", data={"username": "victim", "password": PASSWORD, "csrf_token": token}
    )
    assert locked.status_code == 429
    assert client.get("/api/studies").status_code == 401
    env.accounts.set_disabled("victim", False)  # an administrator lifts it
    ok = client.post(
        "/login", data={"username": "victim", "password": PASSWORD, "csrf_token": token}
    )
    assert ok.status_code == 302


def test_disabling_a_user_ends_their_session_at_once(env: Env) -> None:
    env.accounts.create("leaving", PASSWORD, role="radiologist")
    client = env.client()
    login(client, "leaving")
    assert client.get("/api/studies").status_code == 200
    env.accounts.set_disabled("leaving", True)
    assert client.get("/api/studies").status_code == 401
    assert client.get("/worklist").status_code == 302


def test_changing_the_password_signs_out_every_session(env: Env) -> None:
    env.accounts.create("phone", PASSWORD, role="radiologist")
    desk, phone = env.client(), env.client()
    token = login(desk, "phone")
    login(phone, "phone")
    response = desk.post(
        "/account/password",
        data={
            "csrf_token": token,
            "current_password": PASSWORD,
            "new_password": "brand new password",
            "confirm_password": "brand new password",
        },
    )
    assert response.status_code == 200
    assert desk.get("/api/studies").status_code == 401
    assert phone.get("/api/studies").status_code == 401
    login(phone, "phone", "brand new password")
    assert phone.get("/api/studies").status_code == 200


def test_a_session_has_a_maximum_age(env: Env, rad: tuple[FlaskClient, str]) -> None:
    from datetime import timedelta

    client, _ = rad
    assert client.get("/api/studies").status_code == 200
    saved = env.app.config["PACS_SESSION_MAX_AGE"]
    env.app.config["PACS_SESSION_MAX_AGE"] = timedelta(seconds=-1)
    try:
        assert client.get("/api/studies").status_code == 401
    finally:
        env.app.config["PACS_SESSION_MAX_AGE"] = saved
    assert client.get("/api/studies").status_code == 401  # the cookie was cleared


def test_sign_out(env: Env, rad: tuple[FlaskClient, str]) -> None:
    client, token = rad
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/api/studies").status_code == 401


# ---------------------------------------------------------------- CSRF


def test_state_changes_need_the_csrf_token(env: Env, rad: tuple[FlaskClient, str]) -> None:
    client, token = rad
    url = f"/api/studies/{env.studies['ct']}/opened"
    assert client.post(url).status_code == 403
    assert client.post(url, headers={"X-CSRF-Token": "wrong"}).status_code == 403
    assert client.post(url, headers={"X-CSRF-Token": token}).status_code == 200
    # Forms carry it as a field.
    assert client.post("/logout").status_code == 403
    assert client.post("/language", data={"lang": "en"}).status_code == 403


def test_the_sign_in_form_itself_needs_the_token(env: Env) -> None:
    client = env.client()
    client.get("/login")
    response = client.post("/login", data={"username": "rad", "password": PASSWORD})
    assert response.status_code == 403
    assert client.get("/api/studies").status_code == 401


def test_bearer_requests_are_exempt_and_never_use_the_session(
    env: Env, rad: tuple[FlaskClient, str]
) -> None:
    client, _ = rad
    url = f"/api/studies/{env.studies['ct']}/opened"
    # No CSRF check, and the session cookie that came along is not used either.
    response = client.post(url, headers={"Authorization": "Bearer not-a-token"})
    assert response.status_code == 401
    assert client.get("/api/studies", headers={"Authorization": "Bearer x"}).status_code == 401


# ---------------------------------------------------------------- roles


def test_referring_doctors_see_only_their_studies(env: Env) -> None:
    admin = env.client()
    admin_token = login(admin, "admin")
    ct, mr = env.studies["ct"], env.studies["mr"]
    assigned = admin.post(
        f"/api/studies/{ct}/assignments",
        json={"username": "ref"},
        headers={"X-CSRF-Token": admin_token},
    )
    assert assigned.status_code == 201
    assert [a["username"] for a in assigned.json["assignments"]] == ["ref"]

    doctor = env.client()
    login(doctor, "ref")
    listing = doctor.get("/api/studies").json
    assert [s["study_uid"] for s in listing["items"]] == [ct]
    assert doctor.get(f"/api/studies/{ct}").status_code == 200
    # Everything about another study is "not found", never "forbidden".
    mr_ref = first_instance(env, "mr")
    for url in (
        f"/api/studies/{mr}",
        f"/api/series/{mr_ref.series_uid}",
        f"/api/instances/{mr_ref.sop_uid}/tags",
        f"/api/instances/{mr_ref.sop_uid}/frames/1/rendered",
    ):
        assert doctor.get(url).status_code == 404, url
    assert doctor.get(f"/viewer/{mr}").status_code == 404
    batch = doctor.get(f"/api/frames?f={mr_ref.sop_uid}/1")
    assert batch.status_code == 200
    assert parse_batch(batch.data)[0][0]["status"] == 404
    # Nor can they assign, list users or manage accounts.
    other = env.client()
    token = login(other, "ref2")
    assert other.get("/api/studies").json["total"] == 0
    assert (
        other.post(
            f"/api/studies/{ct}/assignments",
            json={"username": "ref2"},
            headers={"X-CSRF-Token": token},
        ).status_code
        == 403
    )
    assert other.get("/api/users").status_code == 403
    assert other.get("/admin/users").status_code == 403

    removed = admin.delete(
        f"/api/studies/{ct}/assignments/ref", headers={"X-CSRF-Token": admin_token}
    )
    assert removed.json["assignments"] == []
    assert doctor.get("/api/studies").json["total"] == 0


def test_only_referring_doctors_receive_assignments(env: Env) -> None:
    client = env.client()
    token = login(client, "rad")
    response = client.post(
        f"/api/studies/{env.studies['ct']}/assignments",
        json={"username": "admin"},
        headers={"X-CSRF-Token": token},
    )
    assert response.status_code == 400
    missing = client.post(
        f"/api/studies/{env.studies['ct']}/assignments",
        json={"username": "nobody"},
        headers={"X-CSRF-Token": token},
    )
    assert missing.status_code == 404


def test_the_users_page_is_for_administrators(env: Env) -> None:
    rad = env.client()
    login(rad, "rad")
    assert rad.get("/admin/users").status_code == 403
    admin = env.client()
    token = login(admin, "admin")
    page = admin.get("/admin/users")
    assert page.status_code == 200 and "ref2" in page.get_data(as_text=True)
    created = admin.post(
        "/admin/users",
        data={
            "csrf_token": token,
            "username": "bs.moi",
            "display_name": "Bác sĩ Mới",
            "role": "referring",
            "password": "",
        },
    )
    assert created.status_code == 200
    text = created.get_data(as_text=True)
    generated = re.search(r'<code class="secret" id="new-password">([^<]+)</code>', text)
    assert generated, text[:2000]
    password = generated.group(1)
    doctor = env.client()
    login(doctor, "bs.moi", password)
    disabled = admin.post("/admin/users/bs.moi/disable", data={"csrf_token": token})
    assert disabled.status_code == 302
    assert doctor.get("/api/studies").status_code == 401
    no_token = admin.post("/admin/users/bs.moi/enable", data={})
    assert no_token.status_code == 403


# ---------------------------------------------------------------- patient data as text


def test_an_html_patient_name_is_data_not_markup(env: Env, rad: tuple[FlaskClient, str]) -> None:
    client, _ = rad
    found = client.get("/api/studies?patient_id=XSS1").json["items"]
    assert [s["patient_name"] for s in found] == [XSS_NAME]
    assert found[0]["description"] == "<script>alert(2)</script>"
    page = client.get(f"/viewer/{env.studies['xss']}").get_data(as_text=True)
    assert "<img src=x" not in page and "<script>alert" not in page
    csp = client.get("/worklist").headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1]
    tags = client.get(f"/api/instances/{first_instance(env, 'xss').sop_uid}/tags")
    assert tags.headers["Content-Type"].startswith("application/json")
    assert tags.headers["X-Content-Type-Options"] == "nosniff"
    names = [e["value"] for e in tags.json["dataset"] if e["keyword"] == "PatientName"]
    assert names == [XSS_NAME]


# ---------------------------------------------------------------- worklist


def _items(client: FlaskClient, query: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/studies?{query}")
    assert response.status_code == 200, response.json
    return response.json["items"]


def test_worklist_search(env: Env, rad: tuple[FlaskClient, str]) -> None:
    client, _ = rad
    names = lambda q: [s["patient_name"] for s in _items(client, q)]  # noqa: E731
    assert names("name=nguyen thi") == [CT_NAME]
    assert names("name=NHUNG hong") == [CT_NAME]
    assert names("name=tran van minh") == ["Trần^Văn Minh", "Trần^Văn Minh"]
    assert names("patient_id=2400381") == [CT_NAME]
    assert names("accession=MR24") == ["LE^VAN HUNG"]
    assert names("modality=US") == ["PHAM^THI THU HA"]
    assert names("description=so nao") == ["LE^VAN HUNG", CT_NAME]
    assert names("referring=vinh") == [CT_NAME]
    assert names("date_from=2024-06-21&date_to=2024-06-21") == ["Trần^Văn Minh"]
    assert set(names("date_from=2024-05-01&date_to=2024-07-31")) == {
        "LE^VAN HUNG",
        "Trần^Văn Minh",
        "PHAM^THI THU HA",
    }
    ct = _items(client, "name=nguyen")[0]
    assert (ct["num_series"], ct["num_instances"], ct["modalities"]) == (1, 128, ["CT"])


def test_worklist_sorting_and_paging(env: Env, rad: tuple[FlaskClient, str]) -> None:
    client, _ = rad
    by_date = [s["study_date"] for s in _items(client, "sort=date&dir=asc")]
    assert by_date == sorted(by_date)
    by_images = [s["num_instances"] for s in _items(client, "sort=images&dir=desc")]
    assert by_images == sorted(by_images, reverse=True)
    first = client.get("/api/studies?page_size=2&page=1").json
    second = client.get("/api/studies?page_size=2&page=2").json
    assert first["total"] == second["total"] >= 6 and first["pages"] >= 3
    assert not {s["study_uid"] for s in first["items"]} & {s["study_uid"] for s in second["items"]}
    assert client.get("/api/studies?sort=password").status_code == 400
    assert client.get("/api/studies?date_from=yesterday").status_code == 400


def test_opened_status_is_per_user(env: Env) -> None:
    one, two = env.client(), env.client()
    login(one, "admin")
    login(two, "rad")
    uid = env.studies["us"]

    def opened(client: FlaskClient) -> bool:
        return (
            next(s for s in _items(client, "modality=US") if s["study_uid"] == uid)["opened_at"]
            is not None
        )

    before = opened(two)
    assert one.get(f"/viewer/{uid}").status_code == 200
    assert opened(one)
    assert opened(two) == before


# ---------------------------------------------------------------- study, series, pixels


def test_study_detail_lists_series_and_priors(env: Env, rad: tuple[FlaskClient, str]) -> None:
    client, _ = rad
    data = client.get(f"/api/studies/{env.studies['cr']}").json
    assert data["study"]["patient_name"] == "Trần^Văn Minh"
    assert [s["number"] for s in data["series"]] == [1, 2]
    assert all(s["has_pixels"] and s["num_instances"] == 1 for s in data["series"])
    assert [p["study_uid"] for p in data["priors"]] == [env.studies["prior"]]
    assert data["priors"][0]["description"] == "X-quang ngực cũ"
    assert client.get("/api/studies/1.2.3.4.5").status_code == 404
    assert client.get("/api/studies/not-a-uid").status_code == 404


def test_series_geometry_comes_in_stack_order(env: Env, rad: tuple[FlaskClient, str]) -> None:
    client, _ = rad
    ref = first_instance(env, "ct")
    data = client.get(f"/api/series/{ref.series_uid}").json
    assert data["sorted_by"] == "position"
    instances = data["instances"]
    assert len(instances) == 128
    z = [i["ipp"][2] for i in instances]
    assert z == sorted(z) and z[0] == pytest.approx(-63.75)
    first = instances[0]
    assert first["pixel_spacing"] == pytest.approx([0.45, 0.45])
    assert first["iop"] == [1, 0, 0, 0, 1, 0]
    assert first["windows"][0][:2] == [40, 80]
    assert (first["slope"], first["intercept"], first["rescale_type"]) == (1, -1024, "HU")
    us = client.get(f"/api/series/{first_instance(env, 'us').series_uid}").json["instances"][0]
    assert us["frames"] == 30 and us["frame_time"] == pytest.approx(33.333, abs=0.01)
    assert us["us_regions"][0]["spacing"] == pytest.approx([0.35, 0.35])


def parse_batch(data: bytes) -> list[tuple[dict[str, Any], bytes]]:
    """The raw-frames format (see pacs/viewer/frames.py)."""
    records = []
    offset = 0
    while offset + 4 <= len(data):
        (length,) = struct.unpack_from("<I", data, offset)
        header = json.loads(data[offset + 4 : offset + 4 + length])
        offset += 4 + length
        offset += -offset % 8
        body = data[offset : offset + header["length"]]
        offset += header["length"]
        offset += -offset % 8
        records.append((header, body))
    return records


def test_raw_frames_arrive_in_batches(env: Env, rad: tuple[FlaskClient, str]) -> None:
    client, _ = rad
    refs = env.archive.instances(study_uid=env.studies["ct"])[:3]
    spec = ",".join(f"{r.sop_uid}/1" for r in refs)
    plain = client.get(f"/api/frames?f={spec}")
    assert plain.status_code == 200 and plain.headers["X-Pacs-Frames"] == "3"
    records = parse_batch(plain.data)
    assert [h["sop_uid"] for h, _ in records] == [r.sop_uid for r in refs]
    for (header, body), ref in zip(records, refs, strict=True):
        expected = rendering.raw_frame(env.archive, ref, 0)
        assert header["dtype"] == expected.dtype == "uint16"
        assert (header["rows"], header["columns"]) == (512, 512)
        assert body == expected.data
        assert header["slope"] == 1 and header["intercept"] == -1024
        hu = np.frombuffer(body, "<u2").astype(float) - 1024
        assert hu.min() == pytest.approx(-1000, abs=30)  # air
    zipped = client.get(f"/api/frames?f={spec}&z=1")
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped.data) == plain.data
    assert client.get("/api/frames?f=../../etc/passwd").status_code == 400
    assert client.get("/api/frames?f=" + ",".join([f"{refs[0].sop_uid}/1"] * 65)).status_code == 400


def test_colour_and_multiframe_raw_frames(env: Env, rad: tuple[FlaskClient, str]) -> None:
    client, _ = rad
    us = first_instance(env, "us")
    header, body = parse_batch(client.get(f"/api/frames?f={us.sop_uid}/30").data)[0]
    assert (header["samples_per_pixel"], header["photometric"], header["dtype"]) == (
        3,
        "RGB",
        "uint8",
    )
    assert len(body) == 480 * 640 * 3
    rgb = np.frombuffer(body, np.uint8).reshape(480, 640, 3).astype(int)
    # The ECG trace is green, not pink (YBR was converted).
    green = (rgb[:, :, 1] > 150) & (rgb[:, :, 0] < 100) & (rgb[:, :, 2] < 100)
    assert green.sum() > 100
    cr = first_instance(env, "cr")
    header, _ = parse_batch(client.get(f"/api/frames?f={cr.sop_uid}/1").data)[0]
    assert header["photometric"] == "MONOCHROME1"


def test_an_undecodable_frame_is_an_error_record_not_a_broken_batch(
    env: Env, rad: tuple[FlaskClient, str]
) -> None:
    client, _ = rad
    broken = first_instance(env, "broken")
    good = first_instance(env, "mr")
    records = parse_batch(client.get(f"/api/frames?f={broken.sop_uid}/1,{good.sop_uid}/1").data)
    assert records[0][0]["status"] == 422 and records[0][0]["error"]
    assert records[0][1] == b""
    assert records[1][0]["dtype"] in ("uint16", "int16") and records[1][1]
    rendered = client.get(f"/api/instances/{broken.sop_uid}/frames/1/rendered")
    assert rendered.status_code == 422 and rendered.json["error"] == "FrameDecodeError"


def test_rendered_images_and_thumbnails(env: Env, rad: tuple[FlaskClient, str]) -> None:
    from io import BytesIO

    from PIL import Image

    client, _ = rad
    ref = first_instance(env, "ct")
    url = f"/api/instances/{ref.sop_uid}/frames/1/rendered?wc=40&ww=80&w=256&h=256&format=png"
    response = client.get(url)
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert Image.open(BytesIO(response.data)).size == (256, 256)
    etag = response.headers["ETag"]
    assert client.get(url, headers={"If-None-Match": etag}).status_code == 304
    bone = client.get(url.replace("wc=40&ww=80", "wc=500&ww=2000"))
    assert bone.data != response.data
    assert client.get(url.replace("format=png", "format=gif")).status_code == 400
    assert client.get(url.replace("frames/1", "frames/2")).status_code == 404
    thumb = client.get(f"/api/series/{ref.series_uid}/thumbnail")
    assert thumb.mimetype == "image/jpeg"
    assert max(Image.open(BytesIO(thumb.data)).size) == 128
    assert client.get(f"/api/instances/{ref.sop_uid}/frames/1/overlay").status_code == 404


# ---------------------------------------------------------------- languages and names


def test_the_language_follows_the_browser_then_the_choice(env: Env) -> None:
    client = env.client()
    english = client.get("/login", headers={"Accept-Language": "en-US,en;q=0.9"})
    assert '<html lang="en">' in english.get_data(as_text=True)
    vietnamese = client.get("/login", headers={"Accept-Language": "vi-VN,vi;q=0.9"})
    assert "Đăng nhập" in vietnamese.get_data(as_text=True)
    unknown = client.get("/login", headers={"Accept-Language": "fr"})
    assert '<html lang="vi">' in unknown.get_data(as_text=True)
    token = login(client, "rad")
    chosen = client.post("/language", data={"lang": "en", "csrf_token": token, "next": "/worklist"})
    assert chosen.status_code == 302 and chosen.headers["Location"] == "/worklist"
    page = client.get("/worklist", headers={"Accept-Language": "vi"}).get_data(as_text=True)
    assert '<html lang="en">' in page and "Patient name" in page
    boot = json.loads(
        re.search(r'id="pacs-boot" type="application/json">(.*?)</script>', page).group(1)
    )
    assert boot["lang"] == "en" and boot["strings"]["wl.patient_name"] == "Patient name"
    # Remembered on the account too: a new browser of the same user gets it.
    fresh = env.client()
    login(fresh, "rad")
    fresh.delete_cookie("pacs_lang")
    assert '<html lang="en">' in fresh.get("/worklist", headers={"Accept-Language": "vi"}).get_data(
        as_text=True
    )


def test_every_vietnamese_name_reads_correctly(
    env: Env, shared_dicom: Path, vietnamese_manifest: list[dict[str, str]]
) -> None:
    summary = import_paths(env.archive, [shared_dicom / "vietnamese"])
    assert not summary.refused
    client = env.client()
    login(client, "rad")
    for row in vietnamese_manifest:
        items = _items(client, f"patient_id={row['patient_id']}")
        assert [s["patient_name"] for s in items] == [row["patient_name_unicode"]], row["encoding"]
        assert items[0]["description"] == row["study_description_unicode"], row["encoding"]
        ref = env.archive.instances(study_uid=row["study_uid"])[0]
        tags = client.get(f"/api/instances/{ref.sop_uid}/tags").json["dataset"]
        by_keyword = {e["keyword"]: e["value"] for e in tags}
        assert by_keyword["PatientName"] == row["patient_name_unicode"], row["encoding"]
        assert by_keyword["StudyDescription"] == row["study_description_unicode"]
        # Found without diacritics, whatever the file's encoding.
        family = row["patient_name_unicode"].split("^")[0]
        from pacs.charset import fold

        ids = [s["patient_id"] for s in _items(client, f"name={fold(family)}")]
        assert row["patient_id"] in ids


def test_security_headers_on_pages(env: Env, rad: tuple[FlaskClient, str]) -> None:
    client, _ = rad
    response = client.get("/worklist")
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"
    script = client.get("/static/js/common.js")
    assert script.status_code == 200 and script.headers["Cache-Control"] == "no-cache"
    assert (
        client.get(
            "/static/js/common.js", headers={"If-None-Match": script.headers["ETag"]}
        ).status_code
        == 304
    )
    assert client.get("/static/../pacs/viewer/auth.py").status_code == 404
