"""A replay of what OHIF v3 asks a DICOMweb server when it lists studies and opens one,
from a browser on another origin, against a real ``pacs serve`` with the sample studies.

The requests copy OHIF's (its DicomWebDataSource with ``supportsFuzzyMatching``,
``enableStudyLazyLoad`` and bearer-token auth; cornerstone's WADO-RS image
loader for frames): the headers, the query strings, the CORS preflights a
browser sends first. Multipart answers are parsed the way cornerstone parses
them (first blank line, boundary from the first line, the part's Content-Type
for its transfer syntax).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from pacs.archive import Archive
from pacs.bootstrap import build_archive
from pacs.config import Settings
from pacs.storage.dicomweb_models import CorsStore, TokenStore
from pacs.storage.matching import Level, Query
from pacs.viewer.dicomweb.tokens import create_token

pytestmark = [pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_dicom"
OHIF_ORIGIN = "http://localhost:3000"
OTHER_ORIGIN = "http://evil.example"
STUDY_LIST = (
    "/dicomweb/studies?limit=101&offset=0&fuzzymatching=true&includefield=00081030%2C00080060"
)
FRAME_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"
DICOM_JSON = "application/dicom+json"
# Compressed frames start with their codestream's marker.
MAGIC = {
    "1.2.840.10008.1.2.4.80": b"\xff\xd8",
    "1.2.840.10008.1.2.4.90": b"\xff\x4f",
    "1.2.840.10008.1.2.4.50": b"\xff\xd8",
}


@dataclass
class Ohif:
    base: str
    token: str
    archive: Archive
    session: requests.Session

    def preflight(self, path: str, headers: str = "authorization") -> requests.Response:
        return self.session.options(
            self.base + path,
            headers={
                "Origin": OHIF_ORIGIN,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": headers,
            },
            timeout=30,
        )

    def get(self, path: str, accept: str, origin: str = OHIF_ORIGIN) -> requests.Response:
        """A GET as the browser sends it after a successful preflight."""
        response = self.preflight(path, "accept,authorization")
        assert response.status_code in (200, 204), path
        assert response.headers.get("Access-Control-Allow-Origin") == OHIF_ORIGIN, path
        allowed = response.headers["Access-Control-Allow-Headers"].lower()
        assert "authorization" in allowed and "accept" in allowed
        return self.session.get(
            self.base + path,
            headers={
                "Origin": origin,
                "Accept": accept,
                "Authorization": f"Bearer {self.token}",
            },
            timeout=60,
        )


@pytest.fixture(scope="module")
def ohif(module_pacs_server: Any) -> Iterator[Ohif]:
    pacs = module_pacs_server(workers=2, start=False, samples=SAMPLES)
    archive = build_archive(Settings(data_dir=pacs.data_dir))
    token = create_token(TokenStore(archive.index.engine), "ohif", all_studies=True).secret
    CorsStore(archive.index.engine).add(OHIF_ORIGIN)
    pacs.start()
    with requests.Session() as session:
        yield Ohif(f"http://{pacs.host}:{pacs.http_port}", token, archive, session)
    archive.index.engine.dispose()


def _cors_ok(response: requests.Response) -> None:
    assert response.headers.get("Access-Control-Allow-Origin") == OHIF_ORIGIN
    assert "Origin" in response.headers.get("Vary", "")


def _value(item: dict[str, Any], tag: str) -> Any:
    return item[tag]["Value"][0]


def cornerstone_parse(response: requests.Response) -> tuple[str, bytes]:
    """What cornerstone's WADO-RS loader does with a frame response: (part type, pixels)."""
    body = response.content
    header_end = body.index(b"\r\n\r\n")
    lines = body[:header_end].decode("latin-1").split("\r\n")
    boundary = next(line for line in lines if line.startswith("--"))
    part_type = next(
        line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("content-type:")
    )
    offset = header_end + 4
    end = body.index(boundary.encode(), offset)
    return part_type, body[offset : end - 2]


def test_study_list(ohif: Ohif) -> None:
    response = ohif.get(STUDY_LIST, DICOM_JSON)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith(DICOM_JSON)
    _cors_ok(response)
    assert "Warning" in response.headers["Access-Control-Expose-Headers"]
    studies = response.json()
    assert len(studies) == ohif.archive.count(Query(Level.STUDY))
    for study in studies:
        for tag in ("0020000D", "00100010", "00080061", "00201206", "00201208", "00081030"):
            assert tag in study, tag
    # OHIF's filter box and paging
    found = ohif.get(STUDY_LIST + "&PatientName=tran%20minh", DICOM_JSON).json()
    assert [_value(s, "00100010")["Alphabetic"] for s in found] == ["Trần^Văn Minh"]
    page1 = ohif.get("/dicomweb/studies?limit=2&offset=0", DICOM_JSON).json()
    page2 = ohif.get("/dicomweb/studies?limit=2&offset=2", DICOM_JSON).json()
    uids = [_value(s, "0020000D") for s in page1 + page2]
    assert uids == [_value(s, "0020000D") for s in studies[:4]]


def test_open_every_study(ohif: Ohif) -> None:
    studies = ohif.get(STUDY_LIST, DICOM_JSON).json()
    for study in studies:
        study_uid = _value(study, "0020000D")
        series_response = ohif.get(f"/dicomweb/studies/{study_uid}/series", DICOM_JSON)
        assert series_response.status_code == 200
        _cors_ok(series_response)
        all_series = series_response.json()
        assert len(all_series) == _value(study, "00201206")
        for series in all_series:
            series_uid = _value(series, "0020000E")
            path = f"/dicomweb/studies/{study_uid}/series/{series_uid}"
            metadata = ohif.get(f"{path}/metadata", DICOM_JSON)
            assert metadata.status_code == 200
            _cors_ok(metadata)
            instances = metadata.json()
            assert len(instances) == _value(series, "00201209")
            first, middle = instances[0], instances[len(instances) // 2]
            for item in (first, middle):
                _check_frame(ohif, path, item)
            thumb = ohif.get(f"{path}/thumbnail", "image/jpeg")
            assert thumb.status_code == 200
            assert thumb.headers["Content-Type"] == "image/jpeg"
            _cors_ok(thumb)
            assert Image.open(io.BytesIO(thumb.content)).format == "JPEG"
            sop = _value(middle, "00080018")
            rendered = ohif.get(
                f"{path}/instances/{sop}/rendered?viewport=256,256&quality=80", "image/jpeg"
            )
            assert rendered.status_code == 200
            image = Image.open(io.BytesIO(rendered.content))
            assert max(image.size) <= 256


def _check_frame(ohif: Ohif, series_path: str, item: dict[str, Any]) -> None:
    sop = _value(item, "00080018")
    stored_ts = _value(item, "00083002")
    response = ohif.get(f"{series_path}/instances/{sop}/frames/1", FRAME_ACCEPT)
    assert response.status_code == 200, response.text[:200]
    _cors_ok(response)
    outer = response.headers["Content-Type"]
    assert outer.startswith("multipart/related") and "boundary=" in outer
    boundary = outer.split("boundary=", 1)[1].strip('"')
    assert response.content.startswith(f"--{boundary}\r\n".encode())
    assert response.content.endswith(f"\r\n--{boundary}--\r\n".encode())
    part_type, pixels = cornerstone_parse(response)
    ts = part_type.split("transfer-syntax=", 1)[1].strip()
    if stored_ts in MAGIC:
        assert ts == stored_ts
        assert pixels.startswith(MAGIC[stored_ts])
    else:
        rows, columns = _value(item, "00280010"), _value(item, "00280011")
        bits, samples = _value(item, "00280100"), _value(item, "00280002")
        assert len(pixels) == rows * columns * samples * bits // 8


def test_cors_refuses_other_origins(ohif: Ohif) -> None:
    preflight = ohif.session.options(
        ohif.base + "/dicomweb/studies",
        headers={"Origin": OTHER_ORIGIN, "Access-Control-Request-Method": "GET"},
        timeout=30,
    )
    assert "Access-Control-Allow-Origin" not in preflight.headers
    response = ohif.session.get(
        ohif.base + "/dicomweb/studies",
        headers={"Origin": OTHER_ORIGIN, "Authorization": f"Bearer {ohif.token}"},
        timeout=30,
    )
    assert response.status_code == 200  # the browser, not the server, withholds it
    assert "Access-Control-Allow-Origin" not in response.headers
    # Errors carry CORS headers too, so the viewer can read why.
    unauthorised = ohif.session.get(
        ohif.base + "/dicomweb/studies", headers={"Origin": OHIF_ORIGIN}, timeout=30
    )
    assert unauthorised.status_code == 401
    _cors_ok(unauthorised)


def test_stow_preflight(ohif: Ohif) -> None:
    response = ohif.session.options(
        ohif.base + "/dicomweb/studies",
        headers={
            "Origin": OHIF_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
        timeout=30,
    )
    assert response.status_code == 204
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert "content-type" in response.headers["Access-Control-Allow-Headers"].lower()
