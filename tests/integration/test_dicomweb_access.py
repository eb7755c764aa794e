"""Who may reach what through DICOMweb, and how refusals look.

The app runs in waitress on a loopback port in this process (so the test can
set small STOW-RS limits through settings), holding two sample studies: A (the
CT head) and B (the MR brain). Callers: nobody, a wrong token, a token for
everything, a partner token scoped to study A (read, and read+write), and an
admin user (stood in for by a test resolver until the session module is ready).

A scoped token gets 404 for study B on every endpoint — the same answer as for
a study that does not exist, so it learns nothing about B.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from click.testing import CliRunner
from flask import request as flask_request
from PIL import Image
from pydicom.uid import generate_uid
from waitress.server import create_server

from pacs.archive import Archive, Source
from pacs.bootstrap import build_archive
from pacs.cli_tokens import token as token_cli
from pacs.config import Settings
from pacs.storage.dicomweb_models import TokenStore
from pacs.viewer.access import Principal, add_resolver
from pacs.viewer.app import create_app
from pacs.viewer.dicomweb.tokens import create_token
from support import LOCALHOST

pytestmark = [pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
STUDY_A = REPO / "sample_dicom" / "ct_head"
STUDY_B = REPO / "sample_dicom" / "mr_brain"
MAX_REQUEST = 3_000_000
MAX_PART = 1_000_000
ADMIN_HEADER = "X-Test-Admin"


@dataclass
class Ids:
    study: str
    series: str
    sop: str


@dataclass
class Site:
    base: str
    archive: Archive
    data_dir: Path
    a: Ids
    b: Ids
    tokens: dict[str, str]

    def get(self, path: str, token: str | None = None, **headers: str) -> requests.Response:
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return requests.get(self.base + path, headers=headers, timeout=30)

    def post(
        self, path: str, body: bytes, content_type: str, token: str | None = None
    ) -> requests.Response:
        headers = {"Content-Type": content_type}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return requests.post(self.base + path, data=body, headers=headers, timeout=60)

    def alive(self) -> None:
        """The server still answers normally after whatever the test did."""
        response = self.get("/dicomweb/studies", self.tokens["all"])
        assert response.status_code == 200
        found = {s["0020000D"]["Value"][0] for s in response.json()}
        assert {self.a.study, self.b.study} <= found


def _ids(archive: Archive, folder: Path) -> Ids:
    ds = pydicom.dcmread(sorted(folder.glob("*.dcm"))[0], stop_before_pixels=True)
    return Ids(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))


def _test_admin() -> Principal | None:
    """Stands in for a signed-in admin (the session module's resolver) in these tests."""
    if flask_request.headers.get(ADMIN_HEADER) == "1":
        return Principal(kind="user", name="test-admin", role="admin")
    return None


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data = tmp_path_factory.mktemp("dicomweb-access")
    settings = Settings(
        data_dir=data,
        dicomweb_max_request_bytes=MAX_REQUEST,
        dicomweb_max_part_bytes=MAX_PART,
    )
    archive = build_archive(settings)
    for path in sorted(STUDY_A.glob("*.dcm"))[:6] + sorted(STUDY_B.glob("*.dcm"))[:4]:
        archive.store_file(path, source=Source("import"))
    a, b = _ids(archive, STUDY_A), _ids(archive, STUDY_B)
    store = TokenStore(archive.index.engine)
    tokens = {
        "all": create_token(store, "all", all_studies=True).secret,
        "a": create_token(store, "partner-a", study_uids=[a.study]).secret,
        "a_write": create_token(store, "partner-a-w", study_uids=[a.study], can_write=True).secret,
        "writer": create_token(store, "writer", all_studies=True, can_write=True).secret,
    }
    app = create_app(settings, archive)
    add_resolver(app, _test_admin)
    server = create_server(app, host=LOCALHOST, port=0, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield Site(f"http://{LOCALHOST}:{server.effective_port}", archive, data, a, b, tokens)
    finally:
        server.close()
        thread.join(10)
        archive.index.engine.dispose()


def endpoints(ids: Ids) -> list[str]:
    """Every GET endpoint that names a study (QIDO nested, WADO-RS, WADO-URI)."""
    s, se, i = ids.study, ids.series, ids.sop
    inst = f"/dicomweb/studies/{s}/series/{se}/instances/{i}"
    wado = f"?requestType=WADO&studyUID={s}&seriesUID={se}&objectUID={i}"
    return [
        f"/dicomweb/studies/{s}/series",
        f"/dicomweb/studies/{s}/instances",
        f"/dicomweb/studies/{s}/series/{se}/instances",
        f"/dicomweb/studies/{s}",
        f"/dicomweb/studies/{s}/series/{se}",
        inst,
        f"/dicomweb/studies/{s}/metadata",
        f"/dicomweb/studies/{s}/series/{se}/metadata",
        f"{inst}/metadata",
        f"{inst}/frames/1",
        f"{inst}/rendered",
        f"{inst}/frames/1/rendered",
        f"{inst}/thumbnail",
        f"{inst}/frames/1/thumbnail",
        f"/dicomweb/studies/{s}/thumbnail",
        f"/dicomweb/studies/{s}/series/{se}/thumbnail",
        f"{inst}/bulkdata/7FE00010",
        f"/dicomweb/wado{wado}&contentType=application/dicom",
        f"/dicomweb/wado{wado}&contentType=image/jpeg",
        f"/wado{wado}",
    ]


SEARCHES = ["/dicomweb/studies", "/dicomweb/series", "/dicomweb/instances"]


# ---------------------------------------------------------------- authentication


def test_nobody_gets_401_everywhere(site: Site) -> None:
    for path in SEARCHES + endpoints(site.a):
        response = site.get(path)
        assert response.status_code == 401, path
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    response = site.post("/dicomweb/studies", b"", 'multipart/related; type="application/dicom"')
    assert response.status_code == 401
    site.alive()


def test_wrong_revoked_and_malformed_tokens_get_401(site: Site) -> None:
    for bad in ("pacs_" + "x" * 43, site.tokens["all"][:-1], "", "Basic abc"):
        response = requests.get(
            site.base + "/dicomweb/studies", headers={"Authorization": f"Bearer {bad}"}, timeout=10
        )
        assert response.status_code == 401, bad
    site.alive()


def test_token_works_only_on_dicomweb_paths(site: Site) -> None:
    response = site.get("/healthz", site.tokens["all"])
    assert response.status_code == 200  # public anyway
    response = requests.get(
        site.base + "/api/worklist",
        headers={"Authorization": f"Bearer {site.tokens['all']}"},
        timeout=10,
    )
    assert response.status_code in (401, 404)


# ---------------------------------------------------------------- scope


def test_scoped_token_sees_only_its_study(site: Site) -> None:
    token = site.tokens["a"]
    studies = site.get("/dicomweb/studies", token).json()
    assert [s["0020000D"]["Value"][0] for s in studies] == [site.a.study]
    for level in ("series", "instances"):
        rows = site.get(f"/dicomweb/{level}", token).json()
        assert rows and {r["0020000D"]["Value"][0] for r in rows} == {site.a.study}
    asked_for_b = site.get(f"/dicomweb/studies?StudyInstanceUID={site.b.study}", token)
    assert asked_for_b.status_code == 200 and asked_for_b.json() == []
    by_name = site.get("/dicomweb/studies?PatientName=LE*", token)
    assert by_name.json() == []


def test_scoped_token_gets_404_for_other_study_on_every_endpoint(site: Site) -> None:
    token = site.tokens["a"]
    for path in endpoints(site.b):
        response = site.get(path, token, Accept="*/*")
        assert response.status_code == 404, path
        assert site.b.study not in response.text.replace(path, "")
    # The same endpoints for its own study work.
    for path in endpoints(site.a):
        response = site.get(path, token, Accept="*/*")
        assert response.status_code == 200, (path, response.text[:200])
    # Mixing: study A in the URL with B's series or instance is B, hence 404.
    mixed = Ids(site.a.study, site.b.series, site.b.sop)
    for path in endpoints(mixed):
        if site.b.series in path:
            assert site.get(path, token, Accept="*/*").status_code == 404, path
    site.alive()


def test_unknown_study_is_404_like_a_forbidden_one(site: Site) -> None:
    ghost = Ids(generate_uid(), generate_uid(), generate_uid())
    for path in endpoints(ghost):
        assert site.get(path, site.tokens["all"], Accept="*/*").status_code == 404, path


def test_bad_uids_and_parameters_are_400(site: Site) -> None:
    token = site.tokens["all"]
    for path in (
        "/dicomweb/studies/not-a-uid/metadata",
        "/dicomweb/studies?NotAnAttribute=1",
        "/dicomweb/studies?limit=-1",
        "/dicomweb/studies?StudyDate=yesterday",
        "/dicomweb/studies?includefield=Nonsense",
        "/dicomweb/studies?fuzzymatching=maybe",
        f"/dicomweb/studies/{site.a.study}/series/{site.a.series}/instances/{site.a.sop}/frames/0",
        f"/dicomweb/studies/{site.a.study}/series/{site.a.series}/instances/{site.a.sop}"
        "/rendered?window=40",
        "/wado?requestType=WADO",
    ):
        assert site.get(path, token).status_code == 400, path
    site.alive()


def test_qido_warnings_and_media_types(site: Site) -> None:
    token = site.tokens["all"]
    ignored = site.get("/dicomweb/studies?OperatorsName=SMITH", token)
    assert ignored.status_code == 200 and len(ignored.json()) >= 2
    assert "OperatorsName" in ignored.headers["Warning"]
    plain = site.get("/dicomweb/studies", token, Accept="application/json")
    assert plain.headers["Content-Type"] == "application/json"
    by_tag = site.get(f"/dicomweb/studies?0020000D={site.a.study}&includefield=all", token)
    (study,) = by_tag.json()
    assert study["00080061"]["Value"] == ["CT"]
    assert study["00201208"]["Value"] == [len(site.archive.instances(study_uid=site.a.study))]


def test_not_acceptable_is_406(site: Site) -> None:
    token = site.tokens["all"]
    inst = f"/dicomweb/studies/{site.a.study}/series/{site.a.series}/instances/{site.a.sop}"
    assert site.get("/dicomweb/studies", token, Accept="application/dicom+xml").status_code == 406
    response = site.get(
        inst, token, Accept='multipart/related; type="application/dicom"; transfer-syntax=1.2.3'
    )
    assert response.status_code == 406
    response = site.get(f"{inst}/frames/1", token, Accept='multipart/related; type="image/jp2"')
    assert response.status_code == 406  # stored as JPEG-LS; we do not re-encode frames
    assert site.get(f"{inst}/rendered", token, Accept="image/gif").status_code == 406


# ---------------------------------------------------------------- STOW-RS


def _part10(template: Path, study: str | None = None) -> bytes:
    ds = pydicom.dcmread(template)
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _multipart(parts: list[bytes], boundary: str = "pacs-test-boundary") -> tuple[bytes, str]:
    body = b"".join(
        b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
        for p in parts
    )
    body += b"--" + boundary.encode() + b"--\r\n"
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def _failures(response: requests.Response) -> list[int]:
    return [
        item["00081197"]["Value"][0]
        for item in response.json().get("00081198", {}).get("Value", [])
    ]


def test_stow_needs_write_permission(site: Site) -> None:
    body, ctype = _multipart([_part10(STUDY_B / "MR_01.dcm")])
    assert site.post("/dicomweb/studies", body, ctype, site.tokens["all"]).status_code == 403
    assert site.post("/dicomweb/studies", body, ctype, site.tokens["a"]).status_code == 403
    site.alive()


def test_scoped_writer_stores_only_into_its_study(site: Site) -> None:
    token = site.tokens["a_write"]
    own, ctype = _multipart([_part10(STUDY_B / "MR_02.dcm", study=site.a.study)])
    response = site.post("/dicomweb/studies", own, ctype, token)
    assert response.status_code == 200, response.text
    before = len(site.archive.instances(study_uid=site.b.study))
    other, ctype = _multipart([_part10(STUDY_B / "MR_02.dcm", study=site.b.study)])
    response = site.post("/dicomweb/studies", other, ctype, token)
    assert response.status_code == 409
    assert _failures(response) == [0x0124]
    assert len(site.archive.instances(study_uid=site.b.study)) == before
    site.alive()


def test_stow_statuses_and_failure_reasons(site: Site) -> None:
    token = site.tokens["writer"]
    good = _part10(STUDY_B / "MR_03.dcm")
    body, ctype = _multipart([good, b"this is not DICOM"])
    response = site.post("/dicomweb/studies", body, ctype, token)
    assert response.status_code == 202
    assert _failures(response) == [0xC000]
    assert len(response.json()["00081199"]["Value"]) == 1
    body, ctype = _multipart([b"nope", b"still not DICOM"])
    response = site.post("/dicomweb/studies", body, ctype, token)
    assert response.status_code == 409
    assert _failures(response) == [0xC000, 0xC000]
    # /studies/{study}: an instance of another study fails with 0xA900.
    target = generate_uid()
    body, ctype = _multipart(
        [_part10(STUDY_B / "MR_04.dcm", study=target), _part10(STUDY_B / "MR_04.dcm")]
    )
    response = site.post(f"/dicomweb/studies/{target}", body, ctype, token)
    assert response.status_code == 202
    assert _failures(response) == [0xA900]
    site.alive()


def test_stow_refusals_415_400_413(site: Site) -> None:
    token = site.tokens["writer"]
    small = _part10(STUDY_B / "MR_05.dcm")
    # 415: not multipart, or parts of another type
    assert site.post("/dicomweb/studies", small, "application/dicom", token).status_code == 415
    body, _ = _multipart([small])
    response = site.post(
        "/dicomweb/studies",
        body,
        'multipart/related; type="application/dicom+json"; boundary=x',
        token,
    )
    assert response.status_code == 415
    # 400: no boundary, no delimiter, truncated
    assert (
        site.post(
            "/dicomweb/studies", body, 'multipart/related; type="application/dicom"', token
        ).status_code
        == 400
    )
    ctype = 'multipart/related; type="application/dicom"; boundary=zzz'
    assert (
        site.post("/dicomweb/studies", b"garbage without delimiters", ctype, token).status_code
        == 400
    )
    truncated, ctype = _multipart([small])
    response = site.post("/dicomweb/studies", truncated[: len(truncated) // 2], ctype, token)
    assert response.status_code == 400
    site.alive()
    # 413: the whole body, and one part
    big, ctype = _multipart([small, b"\0" * (MAX_REQUEST + 10)])
    assert site.post("/dicomweb/studies", big, ctype, token).status_code == 413
    one_big, ctype = _multipart([b"\0" * (MAX_PART + 10)])
    assert site.post("/dicomweb/studies", one_big, ctype, token).status_code == 413
    site.alive()
    # Nothing of the refused bodies was stored, and the spool is clean.
    assert not list((site.data_dir / "tmp").glob("*.dcm"))


# ---------------------------------------------------------------- token management


def _cli(site: Site, *args: str) -> Any:
    """``pacs token ARGS`` on the site's data (``--data-dir`` after the sub-command)."""
    depth = 2 if args[0] == "cors" else 1
    argv = [*args[:depth], "--data-dir", str(site.data_dir), *args[depth:]]
    return CliRunner().invoke(token_cli, argv, catch_exceptions=False)


def test_cli_tokens_add_list_revoke(site: Site) -> None:
    added = _cli(site, "add", "hue-central", "--study", site.b.study, "--expires", "30")
    assert added.exit_code == 0, added.output
    secret = added.output.strip().splitlines()[-1]
    assert secret.startswith("pacs_") and len(secret) > 40
    studies = site.get("/dicomweb/studies", secret).json()
    assert [s["0020000D"]["Value"][0] for s in studies] == [site.b.study]

    listed = _cli(site, "list")
    assert "hue-central" in listed.output and secret not in listed.output
    assert secret[:13] in listed.output  # the recognisable prefix, not the secret

    duplicate = _cli(site, "add", "hue-central", "--all")
    assert duplicate.exit_code != 0
    assert _cli(site, "add", "both", "--all", "--study", site.a.study).exit_code != 0
    assert _cli(site, "add", "neither").exit_code != 0
    assert _cli(site, "add", "bad-uid", "--study", "1.2.abc").exit_code != 0

    revoked = _cli(site, "revoke", "hue-central")
    assert revoked.exit_code == 0, revoked.output
    assert site.get("/dicomweb/studies", secret).status_code == 401
    # Only hashes are stored.
    with site.archive.index.engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT token_hash, token_prefix FROM api_tokens").all()
    assert all(secret not in row[0] and len(row[0]) == 64 for row in stored)


def test_cli_cors_origins(site: Site) -> None:
    assert _cli(site, "cors", "add", "https://Viewer.Example.org/").exit_code == 0
    listed = _cli(site, "cors", "list")
    assert "https://viewer.example.org" in listed.output
    assert _cli(site, "cors", "add", "not an origin").exit_code != 0
    assert _cli(site, "cors", "remove", "https://viewer.example.org").exit_code == 0


def test_admin_endpoints(site: Site) -> None:
    admin = {ADMIN_HEADER: "1"}
    url = site.base + "/dicomweb/_tokens"
    made = requests.post(
        url, json={"name": "ohif", "all": True, "expires_days": 1}, headers=admin, timeout=10
    )
    assert made.status_code == 201, made.text
    secret, token_id = made.json()["token"], made.json()["id"]
    assert site.get("/dicomweb/studies", secret).status_code == 200
    listed = requests.get(url, headers=admin, timeout=10).json()["tokens"]
    assert any(t["name"] == "ohif" for t in listed)
    assert all("token" not in t for t in listed)
    # Partners (tokens) are never admins; nobody else may either.
    assert site.get("/dicomweb/_tokens", secret).status_code == 403
    assert requests.get(url, timeout=10).status_code == 401
    bad = requests.post(url, json={"name": "x", "studies": ["nope"]}, headers=admin, timeout=10)
    assert bad.status_code == 400
    assert requests.delete(f"{url}/{token_id}", headers=admin, timeout=10).status_code == 204
    assert site.get("/dicomweb/studies", secret).status_code == 401
    cors = requests.put(
        site.base + "/dicomweb/_cors",
        json={"origins": ["http://localhost:3000"]},
        headers=admin,
        timeout=10,
    )
    assert cors.json() == {"origins": ["http://localhost:3000"]}
    preflight = requests.options(
        site.base + "/dicomweb/studies",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
        timeout=10,
    )
    assert preflight.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    requests.put(site.base + "/dicomweb/_cors", json={"origins": []}, headers=admin, timeout=10)


# ---------------------------------------------------------------- WADO-URI and rendering


def test_wado_uri_and_rendered_parameters(site: Site) -> None:
    token = site.tokens["all"]
    a = site.a
    query = f"requestType=WADO&studyUID={a.study}&seriesUID={a.series}&objectUID={a.sop}"
    dicom = site.get(f"/wado?{query}&contentType=application/dicom", token)
    assert dicom.status_code == 200
    assert dicom.headers["Content-Type"] == "application/dicom"
    assert dicom.content == (STUDY_A / "CT_001.dcm").read_bytes()
    native = site.get(
        f"/dicomweb/wado?{query}&contentType=application/dicom&transferSyntax=1.2.840.10008.1.2.1",
        token,
    )
    converted = pydicom.dcmread(io.BytesIO(native.content))
    assert converted.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    small = site.get(f"/wado?{query}&contentType=image/png&rows=64&columns=64", token)
    assert small.headers["Content-Type"] == "image/png"
    assert max(Image.open(io.BytesIO(small.content)).size) <= 64
    inst = f"/dicomweb/studies/{a.study}/series/{a.series}/instances/{a.sop}"
    default = site.get(f"{inst}/rendered", token, Accept="image/jpeg").content
    windowed = site.get(f"{inst}/rendered?window=300,1500,linear", token, Accept="image/jpeg")
    assert windowed.status_code == 200 and windowed.content != default
    etag = windowed.headers["ETag"]
    again = site.get(f"{inst}/rendered?window=300,1500,linear", token, **{"If-None-Match": etag})
    assert again.status_code == 304


def test_multipart_reader_handles_boundaries_split_across_reads(tmp_path: Path) -> None:
    """The STOW-RS reader, fed a few bytes at a time: delimiters straddle every read."""
    from contextlib import ExitStack

    from pacs.viewer.dicomweb import multipart

    parts = [b"first\r\n--not-the-boundary", b"", b"\r\n--pacs-test-boundar", b"x" * 3000]
    body, _ = _multipart(parts)
    # With a preamble and the CRLF-led first delimiter dicomweb-client writes.
    variants = [body, b"preamble\r\n" + body, b"\r\n" + body]
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    counter = iter(range(10_000))

    def spool() -> Any:
        from contextlib import contextmanager

        @contextmanager
        def make() -> Iterator[Path]:
            path = spool_dir / f"{next(counter)}.part"
            try:
                yield path
            finally:
                path.unlink(missing_ok=True)

        return make()

    for data in variants:
        for chunk in (1, 2, 7, 38, 64, 4096):
            with ExitStack() as stack:
                got = multipart.read_parts(
                    io.BytesIO(data), "pacs-test-boundary", spool=spool, stack=stack, chunk=chunk
                )
                assert [p.path.read_bytes() for p in got] == parts, chunk
                assert all(p.content_type == "application/dicom" for p in got)
    assert not list(spool_dir.iterdir())


# ---------------------------------------------------------------- storage unavailable (last)


def test_stow_when_storage_refuses_is_503(site: Site) -> None:
    """Last in this module: the archive stops accepting for good."""
    site.archive.stop_accepting()
    body, ctype = _multipart([_part10(STUDY_B / "MR_06.dcm")])
    response = site.post("/dicomweb/studies", body, ctype, site.tokens["writer"])
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert _failures(response) == [0xA700]
    assert site.get("/dicomweb/studies", site.tokens["all"]).status_code == 200
