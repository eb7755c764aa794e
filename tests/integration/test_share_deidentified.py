"""De-identified share links: what they serve leaks no identifying attribute.

The rich study (two series; a Vietnamese name, IDs, dates, an institution and
a referring physician; private attributes; an overlay carrying text; burned-in
annotation; references between its instances) is shared de-identified. The
files in its ZIP are checked with pydicom against the PS3.15 Basic Profile,
and the viewer's JSON, tag browser, frames and pages for any original value.
The archive itself must be unchanged.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from typing import Any

import pydicom
import pytest
from test_share_links import RICH_ID, RICH_NAME, ShareEnv, build_env, make_link, open_link

from pacs.deidentify import ACTIONS

pytestmark = pytest.mark.integration

#: every identifying value of the rich study, as text
ORIGINALS = [
    RICH_ID,
    "Võ",
    "Sáu",
    "19450519",
    "20240901",
    "RICHACC01",
    "MRI sọ não",
    "Quảng Nam",
    "Huỳnh",
    "OTHER-RICH-9",
    "private copy",
    "overlay RICH0001",
    "24011542",  # the MR sample's patient ID the slices came from
]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShareEnv]:
    built = build_env(tmp_path_factory.mktemp("deid"))
    yield built
    built.archive.index.engine.dispose()


@pytest.fixture(scope="module")
def visitor(env: ShareEnv) -> Any:
    link = make_link(env, "rich", deidentify=True, download=True)
    client = open_link(env, link)
    env.extra["viewer_path"] = client.get("/shared").headers["Location"]
    return client


def originals(env: ShareEnv) -> list[str]:
    return [*ORIGINALS, *(v for k, v in env.rich.items())]


def assert_clean(text: str, env: ShareEnv, where: str) -> None:
    for value in originals(env):
        assert value not in text, f"{value!r} leaked in {where}"


def shown_uid(env: ShareEnv) -> str:
    return env.extra["viewer_path"].rsplit("/", 1)[1]


def test_the_viewer_address_carries_a_pseudonym(env: ShareEnv, visitor: Any) -> None:
    uid = shown_uid(env)
    assert uid.startswith("2.25.") and uid != env.rich["study"]
    page = visitor.get(f"/viewer/{uid}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'id="deid-badge"' in html
    assert_clean(html, env, "the viewer page")
    # The real UID opens nothing for this caller.
    assert visitor.get(f"/viewer/{env.rich['study']}").status_code == 404
    assert visitor.get(f"/api/studies/{env.rich['study']}").status_code == 404


def test_study_and_series_json_is_deidentified(env: ShareEnv, visitor: Any) -> None:
    detail = visitor.get(f"/api/studies/{shown_uid(env)}").json
    assert_clean(json.dumps(detail, ensure_ascii=False), env, "study JSON")
    study = detail["study"]
    assert study["patient_name"] == "ANONYMOUS"
    assert study["patient_id"].startswith("ANON")
    assert study["birth_date"] == study["accession"] == study["institution"] == ""
    assert study["referring"] == study["description"] == ""
    assert study["study_date"] and study["study_date"] != "20240901"
    assert study["deidentified"] is True
    for series in detail["series"]:
        assert series["series_uid"].startswith("2.25.")
        assert series["first_sop_uid"].startswith("2.25.")
        meta = visitor.get(f"/api/series/{series['series_uid']}")
        assert meta.status_code == 200
        assert_clean(meta.get_data(as_text=True), env, "series JSON")
        for instance in meta.json["instances"]:
            assert instance["sop_uid"].startswith("2.25.")


def _first_sop(env: ShareEnv, visitor: Any) -> tuple[str, str]:
    series = visitor.get(f"/api/studies/{shown_uid(env)}").json["series"][0]
    return series["series_uid"], series["first_sop_uid"]


def test_tags_frames_and_overlays(env: ShareEnv, visitor: Any) -> None:
    series_uid, sop = _first_sop(env, visitor)
    tags = visitor.get(f"/api/instances/{sop}/tags")
    assert tags.status_code == 200 and tags.json["deidentified"] is True
    assert_clean(tags.get_data(as_text=True), env, "the tag browser")
    keywords = {e["keyword"] for e in tags.json["dataset"]}
    assert "PatientIdentityRemoved" in keywords and "OtherPatientIDs" not in keywords
    assert not any("private" in e["name"] for e in tags.json["dataset"])
    # Pixels: by pseudonym only; overlays never (they may carry text).
    assert visitor.get(f"/api/instances/{sop}/frames/1/rendered").status_code == 200
    assert visitor.get(f"/api/series/{series_uid}/thumbnail").status_code == 200
    assert visitor.get(f"/api/instances/{sop}/frames/1/overlay").status_code == 404
    assert visitor.get(f"/api/instances/{env.rich['sop1']}/frames/1/rendered").status_code == 404
    batch = visitor.get(f"/api/frames?f={sop}/1,{env.rich['sop1']}/1")
    assert batch.status_code == 200
    assert env.rich["sop1"].encode() in batch.data  # echoed back as asked, with "not found"
    header_end = batch.data.index(b"}") + 1
    assert sop.encode() in batch.data[:header_end]
    assert b'"status":404' in batch.data


def test_dicomweb_is_not_served_to_a_deidentified_link(env: ShareEnv, visitor: Any) -> None:
    for url in (
        "/dicomweb/studies",
        f"/dicomweb/studies/{env.rich['study']}/metadata",
        f"/dicomweb/studies/{shown_uid(env)}/metadata",
    ):
        response = visitor.get(url)
        assert response.status_code == 403, url
        assert_clean(response.get_data(as_text=True), env, url)


def test_the_zip_files_pass_the_basic_profile(env: ShareEnv, visitor: Any) -> None:
    response = visitor.get(f"/api/studies/{shown_uid(env)}/download.zip")
    assert response.status_code == 200
    assert RICH_ID not in response.headers["Content-Disposition"]
    archive = zipfile.ZipFile(io.BytesIO(response.data))
    readme = archive.read("README.txt").decode()
    assert_clean(readme, env, "README")
    assert "burned-in" in readme
    files = [n for n in archive.namelist() if n.endswith(".dcm")]
    assert len(files) == 2
    datasets = [pydicom.dcmread(io.BytesIO(archive.read(n))) for n in files]
    for name in files:
        raw = archive.read(name)
        for value in originals(env):
            assert value.encode() not in raw, f"{value!r} in {name}"
    new_sops = {ds.SOPInstanceUID for ds in datasets}
    for ds in datasets:
        # Names, IDs: emptied or replaced.
        assert ds.PatientName == "ANONYMOUS"
        assert ds.PatientID.startswith("ANON") and ds.PatientID != RICH_ID
        assert not ds.get("PatientBirthDate") and not ds.get("AccessionNumber")
        assert not ds.get("ReferringPhysicianName")
        for keyword in ("OtherPatientIDs", "InstitutionName", "StudyDescription"):
            assert keyword not in ds, keyword
        # Dates shifted, the same way in every file.
        assert ds.StudyDate and ds.StudyDate != "20240901"
        # UIDs replaced, consistently across the files.
        assert ds.StudyInstanceUID.startswith("2.25.")
        assert ds.SOPInstanceUID not in (env.rich["sop1"], env.rich["sop2"])
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID in new_sops - {
            ds.SOPInstanceUID
        }
        # No private attribute, no overlay.
        assert not any(e.tag.is_private for e in ds.iterall())
        assert not any(0x6000 <= e.tag.group <= 0x60FF for e in ds.iterall())
        assert ds.PatientIdentityRemoved == "YES"
        assert {c.CodeValue for c in ds.DeidentificationMethodCodeSequence} >= {"113100"}
        # Every attribute the profile removes is gone.
        for elem in ds.iterall():
            assert ACTIONS.get(int(elem.tag)) != "X", elem.keyword
        ds.pixel_array  # noqa: B018 - the pixels still decode
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1
    assert {ds.StudyInstanceUID for ds in datasets} == {shown_uid(env)}
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 2
    flagged = [ds for ds in datasets if ds.get("BurnedInAnnotation") == "YES"]
    assert len(flagged) == 1  # the slice the source flagged
    # The UIDs in the files are the ones the viewer uses.
    viewer_sops = {
        i["sop_uid"]
        for s in visitor.get(f"/api/studies/{shown_uid(env)}").json["series"]
        for i in visitor.get(f"/api/series/{s['series_uid']}").json["instances"]
    }
    assert viewer_sops == new_sops


def test_single_image_downloads_are_deidentified(env: ShareEnv, visitor: Any) -> None:
    _, sop = _first_sop(env, visitor)
    response = visitor.get(f"/api/instances/{sop}/download?format=dicom")
    assert response.status_code == 200
    ds = pydicom.dcmread(io.BytesIO(response.data))
    assert ds.SOPInstanceUID == sop and ds.PatientName == "ANONYMOUS"
    for value in originals(env):
        assert value.encode() not in response.data


def test_the_archive_keeps_the_original(env: ShareEnv, visitor: Any) -> None:
    visitor.get(f"/api/studies/{shown_uid(env)}/download.zip")
    ref = env.archive.instance(env.rich["sop1"])
    with env.archive.open(ref) as stored:
        data = stored.read()
    assert hashlib.sha256(data).hexdigest() == ref.sha256
    ds = pydicom.dcmread(io.BytesIO(data))
    assert str(ds.PatientName) == RICH_NAME and ds.PatientID == RICH_ID


def test_the_audit_trail_names_the_real_patient(env: ShareEnv, visitor: Any) -> None:
    visitor.get(f"/api/studies/{shown_uid(env)}/download.zip")
    row = env.archive.audit.query(action="study.download", limit=1)[0]
    assert row.actor_kind == "share"
    assert row.patient_id == RICH_ID and row.study_uid == env.rich["study"]
    assert row.details["deidentified"] is True
