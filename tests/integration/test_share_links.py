"""Share links through Flask's test client on a real archive: the flow, its security, its scope.

Study A (MR brain, 24 images) is shared; study B (CT head) must stay out of
reach of A's link on every endpoint — the viewer's JSON and pixels, downloads,
key images and DICOMweb — and answer exactly as a study that does not exist.
A generated two-series study ("rich": private tags, an overlay, burned-in
annotation, references between its instances) serves the series-limited and
de-identified links (see test_share_deidentified.py, which reuses this
module's environment). Tokens and PINs must appear in no log line and nowhere
in the database file.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pydicom
import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from pydicom.uid import generate_uid
from sqlalchemy import update

from pacs.archive import Archive
from pacs.bootstrap import build_archive
from pacs.config import Settings
from pacs.importer import import_paths
from pacs.storage.matching import Level, Query
from pacs.storage.sharing_models import ShareLinkRow
from pacs.viewer import rendering
from pacs.viewer.app import create_app
from pacs.viewer.users import Accounts

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_dicom"
PASSWORD = "mật khẩu thử 2024"
PIN = "59183746"
RICH_NAME = "Võ^Thị Sáu"
RICH_ID = "RICH0001"


# ---------------------------------------------------------------- the environment


def _rich_study(folder: Path) -> dict[str, str]:
    """Two MR slices as a new two-series study full of identifying data."""
    folder.mkdir()
    study = generate_uid()
    series = [generate_uid(), generate_uid()]
    sops = [generate_uid(), generate_uid()]
    sources = sorted((SAMPLES / "mr_brain").glob("*.dcm"))[:2]
    for i, source in enumerate(sources):
        ds = pydicom.dcmread(source)
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series[i]
        ds.SeriesNumber = i + 1
        ds.SOPInstanceUID = sops[i]
        ds.file_meta.MediaStorageSOPInstanceUID = sops[i]
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName = RICH_NAME
        ds.PatientID = RICH_ID
        ds.PatientBirthDate = "19450519"
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240901"
        ds.AccessionNumber = "RICHACC01"
        ds.StudyDescription = "MRI sọ não có tiêm"
        ds.InstitutionName = "Bệnh viện Đa khoa tỉnh Quảng Nam"
        ds.ReferringPhysicianName = "Huỳnh^Văn Nam^^BS."
        ds.OtherPatientIDs = "OTHER-RICH-9"
        ds.add_new(0x00291010, "LO", "ACME PRIVATE")
        ds.add_new(0x00291001, "LO", "private copy of RICH0001")
        seq = pydicom.Dataset()
        seq.ReferencedSOPClassUID = ds.SOPClassUID
        seq.ReferencedSOPInstanceUID = sops[1 - i]
        ds.ReferencedImageSequence = pydicom.Sequence([seq])
        if i == 0:
            rows, cols = int(ds.Rows), int(ds.Columns)
            ds.add_new(0x60000010, "US", rows)
            ds.add_new(0x60000011, "US", cols)
            ds.add_new(0x60000040, "CS", "G")
            ds.add_new(0x60000050, "SS", [1, 1])
            ds.add_new(0x60000100, "US", 1)
            ds.add_new(0x60000102, "US", 0)
            ds.add_new(0x60000022, "LO", "overlay RICH0001")
            bits = bytearray((rows * cols + 7) // 8)
            bits[: cols // 8] = b"\xff" * (cols // 8)  # one line across the top
            ds.add_new(0x60003000, "OW", bytes(bits) + b"\0" * (len(bits) % 2))
            ds.BurnedInAnnotation = "YES"
        ds.save_as(folder / f"rich{i}.dcm", enforce_file_format=True)
    return {
        "study": study,
        "series1": series[0],
        "series2": series[1],
        "sop1": sops[0],
        "sop2": sops[1],
    }


@dataclass
class ShareEnv:
    app: Flask
    archive: Archive
    settings: Settings
    accounts: Accounts
    studies: dict[str, str]
    rich: dict[str, str]
    db_path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def client(self, address: str = "127.0.0.1") -> FlaskClient:
        client = self.app.test_client()
        client.environ_base["REMOTE_ADDR"] = address
        return client

    def refs(self, study: str) -> list[Any]:
        return self.archive.instances(study_uid=self.studies[study])

    def set_link(self, link_id: int, **values: Any) -> None:
        with self.archive.index.engine.begin() as conn:
            conn.execute(update(ShareLinkRow).where(ShareLinkRow.id == link_id).values(values))


def build_env(root: Path) -> ShareEnv:
    """An archive with A (MR), B (CT), the US cine and the rich study; users of every role."""
    rich = _rich_study(root / "rich")
    settings = Settings(data_dir=root / "data", secret_key="share-test-secret")
    archive = build_archive(settings)
    summary = import_paths(
        archive, [SAMPLES / "mr_brain", SAMPLES / "ct_head", SAMPLES / "us_cine", root / "rich"]
    )
    assert not summary.refused, summary.refused
    accounts = Accounts(archive.index.engine)
    for username, role in (
        ("admin", "admin"),
        ("rad", "radiologist"),
        ("rad2", "radiologist"),
        ("ref", "referring"),
        ("ref2", "referring"),
    ):
        accounts.create(username, PASSWORD, role=role, display_name=username.upper())
    rows = archive.search(Query(Level.STUDY), ["StudyInstanceUID", "PatientID"])
    names = {"24011542": "A", "24003817": "B", "24019970": "US", RICH_ID: "rich"}
    studies = {names[r["PatientID"]]: r["StudyInstanceUID"] for r in rows}
    rendering.clear_caches()
    return ShareEnv(
        create_app(settings, archive),
        archive,
        settings,
        accounts,
        studies,
        rich,
        settings.data_dir / "index.sqlite",
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShareEnv]:
    built = build_env(tmp_path_factory.mktemp("share"))
    yield built
    built.archive.index.engine.dispose()


# ---------------------------------------------------------------- helpers


def csrf_of(html: str) -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', html)
    assert match, "page without a CSRF token"
    return match.group(1)


def login(client: FlaskClient, username: str) -> str:
    """Sign in through the form; the session's CSRF token."""
    token = csrf_of(client.get("/login").get_data(as_text=True))
    response = client.post(
        "/login", data={"username": username, "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    return csrf_of(client.get("/account").get_data(as_text=True))


@dataclass
class Staff:
    client: FlaskClient
    csrf: str

    def post(self, url: str, body: Any = None) -> Any:
        return self.client.post(url, json=body or {}, headers={"X-CSRF-Token": self.csrf})

    def delete(self, url: str) -> Any:
        return self.client.delete(url, headers={"X-CSRF-Token": self.csrf})


def staff(env: ShareEnv, username: str = "rad") -> Staff:
    client = env.client()
    return Staff(client, login(client, username))


@dataclass
class Link:
    id: int
    url: str
    token: str
    body: dict[str, Any]

    @property
    def path(self) -> str:
        return "/s/" + self.token


def make_link(env: ShareEnv, study: str = "A", who: Staff | None = None, **options: Any) -> Link:
    who = who or staff(env)
    response = who.post(f"/api/studies/{env.studies[study]}/shares", options)
    assert response.status_code == 201, response.get_data(as_text=True)
    url = response.json["url"]
    token = url.rsplit("/s/", 1)[1]
    return Link(response.json["link"]["id"], url, token, response.json)


def open_link(
    env: ShareEnv, link: Link, pin: str | None = None, address: str = "10.1.2.3"
) -> FlaskClient:
    """A fresh browser that opened the link (and typed the PIN); asserts it got in."""
    visitor = env.client(address)
    first = visitor.get(link.path)
    assert first.status_code == 303, first.get_data(as_text=True)[:300]
    if pin is not None:
        assert first.headers["Location"] == "/shared/pin"
        form = visitor.get("/shared/pin")
        answer = visitor.post(
            "/shared/pin", data={"pin": pin, "csrf_token": csrf_of(form.get_data(as_text=True))}
        )
        assert answer.status_code == 303, answer.get_data(as_text=True)[:300]
    landing = visitor.get("/shared")
    assert landing.status_code == 303 and landing.headers["Location"].startswith("/viewer/")
    return visitor


def study_urls(env: ShareEnv, study: str) -> list[str]:
    """Every endpoint that serves data of ``study`` (viewer JSON, pixels, downloads, DICOMweb)."""
    uid = env.studies[study]
    ref = env.refs(study)[0]
    return [
        f"/viewer/{uid}",
        f"/api/studies/{uid}",
        f"/api/series/{ref.series_uid}",
        f"/api/series/{ref.series_uid}/thumbnail",
        f"/api/instances/{ref.sop_uid}/tags",
        f"/api/instances/{ref.sop_uid}/thumbnail",
        f"/api/instances/{ref.sop_uid}/frames/1/rendered",
        f"/api/instances/{ref.sop_uid}/frames/1/overlay",
        f"/api/studies/{uid}/download.zip",
        f"/api/instances/{ref.sop_uid}/download?format=dicom",
        f"/api/instances/{ref.sop_uid}/download?format=jpeg",
        f"/api/studies/{uid}/key-images",
        f"/api/studies/{uid}/shares",
        f"/dicomweb/studies/{uid}",
        f"/dicomweb/studies/{uid}/metadata",
        f"/dicomweb/studies/{uid}/series",
        f"/dicomweb/studies/{uid}/series/{ref.series_uid}/instances",
        f"/dicomweb/studies/{uid}/series/{ref.series_uid}/instances/{ref.sop_uid}",
        f"/dicomweb/studies/{uid}/series/{ref.series_uid}/instances/{ref.sop_uid}/metadata",
        f"/dicomweb/studies/{uid}/series/{ref.series_uid}/instances/{ref.sop_uid}/frames/1",
        f"/dicomweb/studies/{uid}/series/{ref.series_uid}/instances/{ref.sop_uid}/rendered",
        f"/dicomweb/studies/{uid}/series/{ref.series_uid}/instances/{ref.sop_uid}/thumbnail",
        f"/dicomweb/studies/{uid}/thumbnail",
        f"/dicomweb/studies/{uid}/series/{ref.series_uid}/metadata",
        f"/dicomweb/wado?requestType=WADO&studyUID={uid}&seriesUID={ref.series_uid}"
        f"&objectUID={ref.sop_uid}&contentType=application/dicom",
    ]


# ---------------------------------------------------------------- nothing without a session/token


def test_every_data_endpoint_refuses_without_a_session_or_token(env: ShareEnv) -> None:
    nobody = env.client()
    for url in study_urls(env, "A"):
        response = nobody.get(url)
        if url.startswith("/viewer/"):
            assert response.status_code == 302 and "/login" in response.headers["Location"]
        else:
            assert response.status_code == 401, url
        assert b"24011542" not in response.data, url
    for page in (
        "/shares",
        "/admin/audit",
        "/admin/audit.csv",
        f"/studies/{env.studies['A']}/sheet",
    ):
        response = nobody.get(page)
        assert response.status_code == 302 and "/login" in response.headers["Location"], page
    assert nobody.post(f"/studies/{env.studies['A']}/sheet.pdf").status_code == 302
    assert nobody.get("/shared").status_code == 401
    unknown = nobody.get("/s/" + "x" * 43)
    assert unknown.status_code == 404
    assert b"24011542" not in unknown.data


def test_a_made_up_or_damaged_token_opens_nothing(env: ShareEnv) -> None:
    link = make_link(env)
    visitor = env.client()
    for token in (
        link.token[:-1] + ("A" if link.token[-1] != "A" else "B"),
        link.token[:20],
        "not-a-token",
    ):
        response = visitor.get("/s/" + token)
        assert response.status_code == 404, token
        assert 'data-reason="unknown"' in response.get_data(as_text=True)
    assert visitor.get(f"/api/studies/{env.studies['A']}").status_code == 401


# ---------------------------------------------------------------- opening a link


def test_the_token_is_exchanged_for_a_session_and_leaves_the_address(env: ShareEnv) -> None:
    link = make_link(env)
    assert len(link.token) >= 43  # 32 random bytes (256 bits) in URL-safe base64
    visitor = env.client()
    first = visitor.get(link.path)
    assert first.status_code == 303
    assert first.headers["Location"] == "/shared"
    assert first.headers["Referrer-Policy"] == "no-referrer"
    assert "no-store" in first.headers["Cache-Control"]
    assert link.token not in first.get_data(as_text=True)
    cookie = visitor.get_cookie("pacs_session")
    assert cookie is not None and cookie.http_only and link.token not in cookie.value
    landing = visitor.get("/shared")
    assert landing.headers["Location"] == f"/viewer/{env.studies['A']}"
    viewer = visitor.get(landing.headers["Location"])
    assert viewer.status_code == 200
    assert viewer.headers["Referrer-Policy"] == "no-referrer"
    html = viewer.get_data(as_text=True)
    assert link.token not in html
    assert 'id="share-brand"' in html and "worklist" not in html.split("v-toolbar", 1)[1][:400]
    assert 'data-action="share"' not in html and 'data-action="key-image"' not in html


def test_only_a_hash_of_the_token_is_stored(env: ShareEnv) -> None:
    link = make_link(env, pin=PIN)
    with env.archive.index.engine.connect() as conn:
        row = (
            conn.execute(ShareLinkRow.__table__.select().where(ShareLinkRow.id == link.id))
            .mappings()
            .one()
        )
    assert row["token_hash"] == hashlib.sha256(link.token.encode()).hexdigest()
    assert link.token not in str(dict(row)) and PIN not in str(dict(row))
    assert row["pin_hash"].startswith("scrypt:")
    # Nowhere in the database files (index, write-ahead log) either.
    for path in env.db_path.parent.glob("index.sqlite*"):
        data = path.read_bytes()
        assert link.token.encode() not in data, path.name
        assert PIN.encode() not in data, path.name


def test_the_share_viewer_is_read_only_and_scoped(env: ShareEnv) -> None:
    link = make_link(env, download=True)
    visitor = open_link(env, link)
    a = env.studies["A"]
    detail = visitor.get(f"/api/studies/{a}")
    assert detail.status_code == 200
    assert detail.json["priors"] == [] and "assignments" not in detail.json
    assert visitor.get("/api/studies").status_code == 403  # no worklist
    assert visitor.get("/worklist").status_code == 302
    csrf = csrf_of(visitor.get(f"/viewer/{a}").get_data(as_text=True))
    headers = {"X-CSRF-Token": csrf}
    assert visitor.post(f"/api/studies/{a}/shares", json={}, headers=headers).status_code == 401
    assert (
        visitor.post(
            f"/api/studies/{a}/assignments", json={"username": "ref"}, headers=headers
        ).status_code
        == 403
    )
    assert visitor.post(f"/api/studies/{a}/opened", json={}, headers=headers).status_code == 401
    ref = env.refs("A")[0]
    assert (
        visitor.post(
            f"/api/studies/{a}/key-images", json={"sop_uid": ref.sop_uid}, headers=headers
        ).status_code
        == 401
    )
    assert visitor.get(f"/studies/{a}/sheet").status_code == 302
    assert visitor.get("/admin/audit").status_code == 302
    assert visitor.get("/shares").status_code == 302


def test_a_link_to_study_a_never_reaches_study_b(env: ShareEnv) -> None:
    link = make_link(env, download=True)
    visitor = open_link(env, link)
    for url in study_urls(env, "A"):
        if "/shares" in url or "/key-images" in url:
            continue  # the sharer's endpoints: not for a link
        expected = 404 if url.endswith("/overlay") else 200  # the MR has no overlay
        assert visitor.get(url).status_code == expected, url
    for url in study_urls(env, "B"):
        response = visitor.get(url)
        assert response.status_code in (404, 401), (url, response.status_code)
        assert b"24003817" not in response.data and b"Nguy" not in response.data, url
    # A batch of raw frames naming B's instance gets a "not found" record, no pixels.
    b_ref = env.refs("B")[0]
    batch = visitor.get(f"/api/frames?f={b_ref.sop_uid}/1")
    assert batch.status_code == 200 and b'"status":404' in batch.data and len(batch.data) < 300
    # Searches see A only.
    assert [s["0020000D"]["Value"][0] for s in visitor.get("/dicomweb/studies").json] == [
        env.studies["A"]
    ]
    found = visitor.get(f"/dicomweb/studies?StudyInstanceUID={env.studies['B']}")
    assert found.status_code in (200, 204) and not (found.data and found.json)
    instances = visitor.get("/dicomweb/instances?PatientID=24003817")
    assert instances.status_code in (200, 204) and not (instances.data and instances.json)


def test_a_series_limited_link_shows_only_its_series(env: ShareEnv) -> None:
    rich = env.rich
    link = make_link(env, "rich", series=[rich["series1"]], download=True)
    visitor = open_link(env, link)
    detail = visitor.get(f"/api/studies/{rich['study']}").json
    assert [s["series_uid"] for s in detail["series"]] == [rich["series1"]]
    assert visitor.get(f"/api/series/{rich['series2']}").status_code == 404
    assert visitor.get(f"/api/instances/{rich['sop2']}/frames/1/rendered").status_code == 404
    assert (
        visitor.get(
            f"/dicomweb/studies/{rich['study']}/series/{rich['series2']}/metadata"
        ).status_code
        == 404
    )
    archive = zipfile.ZipFile(
        io.BytesIO(visitor.get(f"/api/studies/{rich['study']}/download.zip").data)
    )
    dicoms = [n for n in archive.namelist() if n.endswith(".dcm")]
    assert len(dicoms) == 1
    assert pydicom.dcmread(io.BytesIO(archive.read(dicoms[0]))).SOPInstanceUID == rich["sop1"]


def test_a_chosen_series_must_belong_to_the_study(env: ShareEnv) -> None:
    rad = staff(env)
    b_series = env.refs("B")[0].series_uid
    response = rad.post(f"/api/studies/{env.studies['A']}/shares", {"series": [b_series]})
    assert response.status_code == 404
    assert (
        rad.post(f"/api/studies/{env.studies['A']}/shares", {"series": ["not a uid"]}).status_code
        == 400
    )


# ---------------------------------------------------------------- PIN


def test_a_pin_is_asked_and_wrong_ones_lock_the_link_for_a_while(env: ShareEnv) -> None:
    link = make_link(env, pin=PIN)
    visitor = env.client("10.9.9.9")
    assert visitor.get(link.path).headers["Location"] == "/shared/pin"
    # Without the PIN there is no session yet.
    assert visitor.get(f"/api/studies/{env.studies['A']}").status_code == 401
    assert visitor.get("/shared").headers["Location"] == "/shared/pin"
    csrf = csrf_of(visitor.get("/shared/pin").get_data(as_text=True))
    for left in (4, 3, 2, 1):
        wrong = visitor.post("/shared/pin", data={"pin": "0000", "csrf_token": csrf})
        assert wrong.status_code == 401
        assert 'id="pin-error"' in wrong.get_data(as_text=True)
        assert str(left) in wrong.get_data(as_text=True)
    locked = visitor.post("/shared/pin", data={"pin": "1111", "csrf_token": csrf})
    assert locked.status_code == 429 and 'data-reason="locked"' in locked.get_data(as_text=True)
    # Locked for everybody, in the database: the right PIN, another browser, another worker.
    assert visitor.post("/shared/pin", data={"pin": PIN, "csrf_token": csrf}).status_code == 429
    assert env.client().get(link.path).status_code == 429
    other_worker = create_app(env.settings, env.archive).test_client()
    assert other_worker.get(link.path).status_code == 429
    # Once the lock has passed, the right PIN opens it.
    env.set_link(link.id, pin_locked_until=datetime.now(UTC) - timedelta(seconds=1))
    open_link(env, link, pin=PIN)


def test_a_pin_must_be_digits(env: ShareEnv) -> None:
    rad = staff(env)
    for pin in ("12", "abcd", "1234567890123"):
        response = rad.post(f"/api/studies/{env.studies['A']}/shares", {"pin": pin})
        assert response.status_code == 400, pin
    assert rad.post(f"/api/studies/{env.studies['A']}/shares", {"days": 400}).status_code == 400


# ---------------------------------------------------------------- expiry and revocation


def test_expired_links_are_refused_with_a_clear_page(env: ShareEnv) -> None:
    link = make_link(env)
    visitor = open_link(env, link)
    env.set_link(link.id, expires_at=datetime.now(UTC) - timedelta(minutes=1))
    assert visitor.get(f"/api/studies/{env.studies['A']}").status_code == 401
    ended = visitor.get("/shared")
    assert ended.status_code == 410 and 'data-reason="expired"' in ended.get_data(as_text=True)
    assert visitor.get(f"/viewer/{env.studies['A']}").headers["Location"] == "/shared"
    english = env.client()
    english.set_cookie("pacs_lang", "en")
    page = english.get(link.path)
    assert page.status_code == 410 and "This link has expired." in page.get_data(as_text=True)
    vietnamese = env.client().get(link.path, headers={"Accept-Language": "vi"})
    assert "Liên kết đã hết hạn." in vietnamese.get_data(as_text=True)


def test_revoking_ends_open_sessions_at_once(env: ShareEnv) -> None:
    rad = staff(env)
    link = make_link(env, who=rad)
    visitor = open_link(env, link)
    assert visitor.get(f"/api/studies/{env.studies['A']}").status_code == 200
    revoked = rad.post(f"/api/shares/{link.id}/revoke")
    assert revoked.status_code == 200 and revoked.json["link"]["status"] == "revoked"
    assert visitor.get(f"/api/studies/{env.studies['A']}").status_code == 401
    again = env.client().get(link.path)
    assert again.status_code == 410 and 'data-reason="revoked"' in again.get_data(as_text=True)
    listed = rad.client.get(f"/api/studies/{env.studies['A']}/shares").json["links"]
    assert next(x for x in listed if x["id"] == link.id)["revoked_by"] == "rad"


def test_the_links_page_revokes_too(env: ShareEnv) -> None:
    rad = staff(env)
    link = make_link(env, who=rad, label="BS. Hùng")
    page = rad.client.get("/shares").get_data(as_text=True)
    assert "BS. Hùng" in page and f'data-link="{link.id}"' in page
    done = rad.client.post(f"/shares/{link.id}/revoke", data={"csrf_token": rad.csrf})
    assert done.status_code == 302
    assert env.client().get(link.path).status_code == 410
    # Another radiologist's page lists their own links only; the administrator sees all.
    assert f'data-link="{link.id}"' not in staff(env, "rad2").client.get("/shares").get_data(
        as_text=True
    )
    assert f'data-link="{link.id}"' in staff(env, "admin").client.get("/shares").get_data(
        as_text=True
    )


# ---------------------------------------------------------------- what the sharer sees


def test_the_sharer_sees_how_often_when_and_from_where(env: ShareEnv) -> None:
    rad = staff(env)
    link = make_link(env, who=rad, label="Phòng khám Tam Kỳ")
    open_link(env, link, address="10.0.0.7")
    open_link(env, link, address="10.0.0.8")
    listed = rad.client.get(f"/api/studies/{env.studies['A']}/shares").json
    entry = next(x for x in listed["links"] if x["id"] == link.id)
    assert entry["status"] == "active" and entry["open_count"] == 2
    assert entry["last_opened_from"] == "10.0.0.8"
    assert entry["first_opened_at"] and entry["last_opened_at"]
    assert [o["address"] for o in entry["opens"]] == ["10.0.0.8", "10.0.0.7"]
    assert entry["label"] == "Phòng khám Tam Kỳ" and entry["created_by"] == "rad"
    assert listed["default_days"] == 7
    # The default expiry is 7 days.
    expires = datetime.fromisoformat(entry["expires_at"])
    assert timedelta(days=6, hours=23) < expires - datetime.now(UTC) <= timedelta(days=7)


def test_the_creation_answer_carries_the_address_and_qr_code_once(env: ShareEnv) -> None:
    rad = staff(env)
    link = make_link(env, who=rad)
    assert link.url.startswith("http://localhost/s/")
    assert link.body["qr_svg"].startswith("<svg") and "<path" in link.body["qr_svg"]
    listed = rad.client.get(f"/api/studies/{env.studies['A']}/shares").get_data(as_text=True)
    assert link.token not in listed


def test_the_burned_in_warning_names_risky_series(env: ShareEnv) -> None:
    rad = staff(env)
    rich = rad.client.get(f"/api/studies/{env.studies['rich']}/shares").json["burned_in"]
    assert [s["risk"] for s in rich] == ["yes"]
    us = rad.client.get(f"/api/studies/{env.studies['US']}/shares").json["burned_in"]
    assert us == [] or all(s["risk"] in ("yes", "possible") for s in us)
    assert rad.client.get(f"/api/studies/{env.studies['B']}/shares").json["burned_in"] == []


# ---------------------------------------------------------------- downloads


def test_the_zip_holds_the_archived_files_and_a_jpeg_per_image(env: ShareEnv) -> None:
    link = make_link(env, "US", download=True)
    visitor = open_link(env, link)
    response = visitor.get(f"/api/studies/{env.studies['US']}/download.zip")
    assert response.status_code == 200 and response.mimetype == "application/zip"
    assert "attachment" in response.headers["Content-Disposition"]
    archive = zipfile.ZipFile(io.BytesIO(response.data))
    names = archive.namelist()
    ref = env.refs("US")[0]
    dicoms = [n for n in names if n.startswith("DICOM/")]
    jpegs = [n for n in names if n.startswith("JPEG/")]
    assert len(dicoms) == 1 and len(jpegs) == ref.frames == 30
    with env.archive.open(ref) as stored:
        assert archive.read(dicoms[0]) == stored.read()
    for name in jpegs[:3]:
        image = Image.open(io.BytesIO(archive.read(name)))
        assert image.format == "JPEG" and image.size == (ref.columns, ref.rows)
    readme = archive.read("README.txt").decode()
    assert "DICOM/" in readme and "JPEG/" in readme


def test_a_link_without_download_refuses_every_download(env: ShareEnv) -> None:
    link = make_link(env)
    visitor = open_link(env, link)
    a, ref = env.studies["A"], env.refs("A")[0]
    assert visitor.get(f"/api/studies/{a}/download.zip").status_code == 403
    assert visitor.get(f"/api/instances/{ref.sop_uid}/download?format=jpeg").status_code == 403
    assert visitor.get(f"/dicomweb/studies/{a}").status_code == 403
    # Looking is allowed.
    assert visitor.get(f"/api/instances/{ref.sop_uid}/frames/1/rendered").status_code == 200
    page = visitor.get(f"/viewer/{a}").get_data(as_text=True)
    assert 'data-action="download"' not in page


def test_staff_download_single_images(env: ShareEnv) -> None:
    rad = staff(env)
    ref = env.refs("A")[0]
    dicom = rad.client.get(f"/api/instances/{ref.sop_uid}/download?format=dicom")
    assert dicom.status_code == 200 and dicom.mimetype == "application/dicom"
    with env.archive.open(ref) as stored:
        assert dicom.data == stored.read()
    jpeg = rad.client.get(f"/api/instances/{ref.sop_uid}/download?format=jpeg&frame=1")
    assert Image.open(io.BytesIO(jpeg.data)).format == "JPEG"
    assert rad.client.get(f"/api/instances/{ref.sop_uid}/download?format=png").status_code == 400


# ---------------------------------------------------------------- roles


def test_only_radiologists_and_administrators_share(env: ShareEnv) -> None:
    a = env.studies["A"]
    ref_doctor = staff(env, "ref")
    assert ref_doctor.post(f"/api/studies/{a}/shares", {}).status_code == 403
    assert ref_doctor.client.get(f"/api/studies/{a}/shares").status_code == 403
    assert ref_doctor.client.get("/shares").status_code == 403
    assert ref_doctor.client.get(f"/studies/{a}/sheet").status_code == 403
    assert staff(env, "admin").post(f"/api/studies/{a}/shares", {}).status_code == 201
    link = make_link(env)
    assert ref_doctor.post(f"/api/shares/{link.id}/revoke").status_code == 403


def test_sharing_with_an_account_is_time_limited(env: ShareEnv) -> None:
    rad = staff(env)
    ref2 = staff(env, "ref2")
    b = env.studies["B"]
    assert ref2.client.get(f"/api/studies/{b}").status_code == 404
    shared = rad.post(f"/api/studies/{b}/shares", {"username": "ref2", "days": 1})
    assert shared.status_code == 201
    assert [a["username"] for a in shared.json["accounts"]] == ["ref2"]
    assert ref2.client.get(f"/api/studies/{b}").status_code == 200
    assert ref2.client.get("/api/studies").json["total"] == 1
    # Only referring doctors' accounts.
    assert rad.post(f"/api/studies/{b}/shares", {"username": "rad2"}).status_code == 400
    # Expired: gone.
    from pacs.storage.accounts import StudyAssignmentRow

    with env.archive.index.engine.begin() as conn:
        conn.execute(
            update(StudyAssignmentRow)
            .where(StudyAssignmentRow.study_uid == b, StudyAssignmentRow.kind == "shared")
            .values(expires_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    assert ref2.client.get(f"/api/studies/{b}").status_code == 404
    # Sharing again renews; removing ends it.
    assert rad.post(f"/api/studies/{b}/shares", {"username": "ref2", "days": 2}).status_code == 200
    assert ref2.client.get(f"/api/studies/{b}").status_code == 200
    assert rad.delete(f"/api/studies/{b}/shares/accounts/ref2").json["accounts"] == []
    assert ref2.client.get(f"/api/studies/{b}").status_code == 404


# ---------------------------------------------------------------- secrets stay secret


def test_tokens_and_pins_are_never_logged(env: ShareEnv, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    rad = staff(env)
    link = make_link(env, who=rad, pin=PIN)
    visitor = env.client()
    visitor.get(link.path)
    csrf = csrf_of(visitor.get("/shared/pin").get_data(as_text=True))
    visitor.post("/shared/pin", data={"pin": "1357", "csrf_token": csrf})
    visitor.post("/shared/pin", data={"pin": PIN, "csrf_token": csrf})
    env.client().get(link.path[:-2] + "zz")  # an unknown token
    rad.post(f"/api/shares/{link.id}/revoke")
    env.client().get(link.path)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "share link" in text  # the flow was logged…
    assert link.token not in text and link.token[:12] not in text  # …without the token
    assert PIN not in text and "1357" not in text
    for row in env.archive.audit.query(action="share.*", limit=None):
        blob = repr(row)
        assert link.token not in blob and PIN not in blob and "1357" not in blob


def test_opening_a_link_signs_a_user_out_in_that_browser(env: ShareEnv) -> None:
    rad = staff(env)
    link = make_link(env, who=rad)
    rad.client.get(link.path)
    # Now a share session: the worklist is gone, the study is there.
    assert rad.client.get("/api/studies").status_code == 403
    assert rad.client.get(f"/api/studies/{env.studies['A']}").status_code == 200
    assert rad.client.get(f"/api/studies/{env.studies['B']}").status_code == 404


# ---------------------------------------------------------------- PostgreSQL


def test_links_pins_and_key_images_on_postgresql(fresh_postgres_url: str, tmp_path: Path) -> None:
    """The same store on PostgreSQL: the migration, RETURNING, the row lock of PIN counting."""
    from pacs.storage.sharing_models import MAX_KEY_IMAGES, TooManyKeyImages
    from pacs.viewer.share_links import SharePolicy, Sharing

    settings = Settings(data_dir=tmp_path / "data", database_url=fresh_postgres_url)
    archive = build_archive(settings)
    try:
        import_paths(archive, [SAMPLES / "cr_chest"])
        study = archive.search(Query(Level.STUDY), ["StudyInstanceUID"])[0]["StudyInstanceUID"]
        sharing = Sharing(archive.index.engine, SharePolicy(pin_max_failures=3))
        link, token = sharing.create(study, by_user_id=None, by_name="rad", pin=PIN)
        assert sharing.find(token) == link and sharing.store.study_pk(study) is not None
        for _ in range(2):
            assert not sharing.check_pin(link, "0000").ok
        locked = sharing.check_pin(link, "0000")
        assert locked.locked_until is not None
        assert sharing.store.get(link.id).status() == "locked"  # type: ignore[union-attr]
        sharing.store.record_open(link.id, "10.0.0.1", "test")
        assert sharing.store.get(link.id).open_count == 1  # type: ignore[union-attr]
        assert sharing.revoke(link.id, "rad") and not sharing.revoke(link.id, "rad")
        refs = archive.instances(study_uid=study)
        for frame in range(1, MAX_KEY_IMAGES + 1):
            assert sharing.store.add_key_image(study, refs[0].sop_uid, frame, by="rad")
        with pytest.raises(TooManyKeyImages):
            sharing.store.add_key_image(study, refs[1].sop_uid, 1, by="rad")
        assert len(sharing.store.key_images(study)) == MAX_KEY_IMAGES
    finally:
        archive.index.engine.dispose()
