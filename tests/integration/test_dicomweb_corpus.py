"""DICOMweb against a real ``pacs serve`` holding the whole shared corpus, driven by the
``dicomweb-client`` package with a partner token.

What the archive accepted (and which file's bytes it kept for each SOP Instance
UID: files sharing one replace each other, the last stored wins) is recorded as
the corpus is loaded; every expectation below derives from that record, the
manifests and the archive's own answers — none is copied into the test.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid

from pacs.archive import Archive, Source, StoreStatus
from pacs.bootstrap import build_archive
from pacs.charset import fold
from pacs.config import Settings
from pacs.errors import PacsError
from pacs.storage.dicomweb_models import TokenStore
from pacs.storage.matching import Level, Query
from pacs.viewer.dicomweb.tokens import create_token
from support import LOCALHOST, findscu, vietnamese_files

pytestmark = [pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_dicom"
OCTET_ANY = (("application/octet-stream", "*"),)
FIND_AE = "FINDSCU"  # enrolled by the integration conftest


@dataclass
class CorpusServer:
    base: str
    dicom_port: int
    token: str
    archive: Archive
    #: SOP Instance UID → the file whose bytes the archive keeps
    kept: dict[str, Path]
    refused: dict[Path, str] = field(default_factory=dict)

    def client(self) -> DICOMwebClient:
        return DICOMwebClient(
            url=f"{self.base}/dicomweb",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=60,
        )


def _load(archive: Archive, files: list[Path]) -> tuple[dict[str, Path], dict[Path, str]]:
    kept: dict[str, Path] = {}
    refused: dict[Path, str] = {}
    for path in files:
        try:
            result = archive.store_file(path, source=Source("import"))
        except PacsError as exc:
            refused[path] = exc.reason
            continue
        if result.status in (StoreStatus.STORED, StoreStatus.REPLACED):
            kept[result.sop_instance_uid] = path
        else:
            kept.setdefault(result.sop_instance_uid, path)
    return kept, refused


@pytest.fixture(scope="module")
def server(
    module_pacs_server: Any,
    shared_dicom: Path,
    corpus_manifest: list[dict[str, str]],
) -> Iterator[CorpusServer]:
    pacs = module_pacs_server(workers=1, start=False)
    archive = build_archive(Settings(data_dir=pacs.data_dir))
    files = [shared_dicom / row["path"] for row in corpus_manifest]
    files += vietnamese_files(shared_dicom) + sorted(SAMPLES.rglob("*.dcm"))
    kept, refused = _load(archive, files)
    token = create_token(
        TokenStore(archive.index.engine), "corpus-tests", all_studies=True, can_write=True
    ).secret
    pacs.start()
    try:
        yield CorpusServer(
            f"http://{pacs.host}:{pacs.http_port}", pacs.dicom_port, token, archive, kept, refused
        )
    finally:
        archive.index.engine.dispose()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _uid(item: dict[str, Any], tag: str) -> str:
    return item[tag]["Value"][0]


# ---------------------------------------------------------------- QIDO


SEARCHES = [
    (Level.STUDY, {}, False),
    (Level.STUDY, {"PatientName": "nguyen*"}, False),
    (Level.STUDY, {"PatientName": "NGUYEN^THI*"}, False),
    (Level.STUDY, {"ModalitiesInStudy": "CT"}, False),
    (Level.STUDY, {"ModalitiesInStudy": "MR\\US"}, False),
    (Level.STUDY, {"StudyDate": "20000101-"}, False),
    (Level.STUDY, {"PatientID": "VN01000*"}, False),
    (Level.STUDY, {"PatientName": "tran van"}, True),
    (Level.SERIES, {"Modality": "MR"}, False),
    (Level.SERIES, {}, False),
    (Level.IMAGE, {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.2"}, False),
    (Level.IMAGE, {}, False),
]


@pytest.mark.parametrize(("level", "criteria", "fuzzy"), SEARCHES)
def test_search_counts_match_archive(
    server: CorpusServer, level: Level, criteria: dict[str, str], fuzzy: bool
) -> None:
    client = server.client()
    search = {
        Level.STUDY: client.search_for_studies,
        Level.SERIES: client.search_for_series,
        Level.IMAGE: client.search_for_instances,
    }[level]
    results = search(search_filters=criteria, fuzzymatching=fuzzy or None, limit=1000)
    expected = server.archive.count(Query(level, criteria, fuzzy=fuzzy))
    assert len(results) == expected
    assert expected > 0


def test_search_by_tag_and_uid_list(server: CorpusServer) -> None:
    client = server.client()
    studies = client.search_for_studies(limit=1000)
    uids = [_uid(s, "0020000D") for s in studies[:3]]
    by_list = client.search_for_studies(search_filters={"0020000D": ",".join(uids)})
    assert sorted(_uid(s, "0020000D") for s in by_list) == sorted(uids)
    first = studies[0]
    assert first["00081190"]["Value"][0] == f"{server.base}/dicomweb/studies/{uids[0]}"
    assert first["00080056"]["Value"] == ["ONLINE"]
    assert first["00080005"]["Value"] == ["ISO_IR 192"]


def test_limit_offset_pages(server: CorpusServer) -> None:
    client = server.client()
    everything = [_uid(s, "0020000D") for s in client.search_for_studies(limit=1000)]
    paged: list[str] = []
    for offset in range(0, len(everything), 7):
        paged += [_uid(s, "0020000D") for s in client.search_for_studies(limit=7, offset=offset)]
    assert paged == everything


def test_vietnamese_names_found_fuzzy_and_returned_as_unicode(
    server: CorpusServer, vietnamese_manifest: list[dict[str, str]]
) -> None:
    client = server.client()
    found = client.search_for_studies(
        search_filters={"PatientName": "nguyen thi"}, fuzzymatching=True, fields=["00081030"]
    )
    names = {s["00100010"]["Value"][0]["Alphabetic"] for s in found}
    # The rule, independently: every word of the query starts a word of the name.
    archived = server.archive.search(Query(Level.STUDY), ["PatientName"])
    expected = {
        row["PatientName"]
        for row in archived
        if all(
            any(w.startswith(q) for w in fold(row["PatientName"]).split())
            for q in ("nguyen", "thi")
        )
    }
    assert names == expected
    for row in vietnamese_manifest:
        hits = client.search_for_studies(
            search_filters={"PatientID": row["patient_id"]}, fields=["StudyDescription"]
        )
        assert len(hits) == 1
        assert hits[0]["00100010"]["Value"][0]["Alphabetic"] == row["patient_name_unicode"]
        assert hits[0]["00081030"]["Value"][0] == row["study_description_unicode"]
    nhung = next(
        r for r in vietnamese_manifest if fold(r["patient_name_unicode"]).startswith("nguyen thi")
    )
    assert nhung["patient_name_unicode"] in names


# ---------------------------------------------------------------- WADO-RS instances


def test_every_accepted_instance_retrieved_byte_identical(server: CorpusServer) -> None:
    client = server.client()
    received: dict[str, str] = {}
    for study in client.search_for_studies(limit=1000):
        url = f"{server.base}/dicomweb/studies/{_uid(study, '0020000D')}"
        response = client._http_get(
            url, headers={"Accept": 'multipart/related; type="application/dicom"'}, stream=True
        )
        assert response.headers["Content-Type"].startswith("multipart/related")
        for part in client._decode_multipart_message(response, stream=True):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(io.BytesIO(part), stop_before_pixels=True, force=True)
            received[str(ds.SOPInstanceUID)] = _sha(part)
    expected = {sop: _sha(path.read_bytes()) for sop, path in server.kept.items()}
    assert received == expected
    assert len(received) == server.archive.totals()["instances"]


def test_retrieve_instance_transcoded_to_explicit_little_endian(server: CorpusServer) -> None:
    client = server.client()
    compressed = next(
        r
        for r in server.archive.instances()
        if r.transfer_syntax_uid == "1.2.840.10008.1.2.4.80" and r.frames == 1
    )
    ds = client.retrieve_instance(
        compressed.study_uid,
        compressed.series_uid,
        compressed.sop_uid,
        media_types=(("application/dicom", "1.2.840.10008.1.2.1"),),
    )
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    original = pydicom.dcmread(server.kept[compressed.sop_uid])
    assert np.array_equal(ds.pixel_array, original.pixel_array)


# ---------------------------------------------------------------- metadata


REQUIRED = ("00080016", "00080018", "0020000D", "0020000E", "00083002")
IMAGE_REQUIRED = ("00280010", "00280011", "00280100")
PIXEL_TAGS = ("7FE00008", "7FE00009", "7FE00010")


def _bulk_uris(item: Any) -> Iterator[str]:
    if isinstance(item, dict):
        if "BulkDataURI" in item:
            yield item["BulkDataURI"]
        for value in item.values():
            yield from _bulk_uris(value)
    elif isinstance(item, list):
        for value in item:
            yield from _bulk_uris(value)


def test_metadata_complete_and_bulkdata_resolves(server: CorpusServer) -> None:
    client = server.client()
    uris: list[str] = []
    for study in client.search_for_studies(limit=1000):
        study_uid = _uid(study, "0020000D")
        items = client.retrieve_study_metadata(study_uid)
        refs = {r.sop_uid: r for r in server.archive.instances(study_uid=study_uid)}
        assert {_uid(i, "00080018") for i in items} == set(refs)
        for item in items:
            ref = refs[_uid(item, "00080018")]
            for tag in REQUIRED:
                assert item[tag].get("Value"), (ref.sop_uid, tag)
            assert _uid(item, "00083002") == ref.transfer_syntax_uid
            if ref.frames:
                for tag in IMAGE_REQUIRED:
                    assert tag in item, (ref.sop_uid, tag)
                pixels = [item[t] for t in PIXEL_TAGS if t in item]
                assert pixels and "BulkDataURI" in pixels[0], ref.sop_uid
            # Every item parses as a data set.
            pydicom.Dataset.from_json(item, bulk_data_uri_handler=lambda *_: b"")
            uris += list(_bulk_uris(item))
    assert uris
    for uri in uris:
        parts = client.retrieve_bulkdata(uri, media_types=OCTET_ANY)
        assert parts and all(isinstance(p, bytes | bytearray) for p in parts), uri
        assert sum(len(p) for p in parts) > 0, uri


def test_series_metadata_matches_instance_metadata(server: CorpusServer) -> None:
    client = server.client()
    ref = next(r for r in server.archive.instances() if r.frames)
    series = client.retrieve_series_metadata(ref.study_uid, ref.series_uid)
    instance = client.retrieve_instance_metadata(ref.study_uid, ref.series_uid, ref.sop_uid)
    assert instance in series


# ---------------------------------------------------------------- frames


def _frame_count(ds: pydicom.Dataset) -> int:
    try:
        return int(ds.get("NumberOfFrames", 1) or 1)
    except ValueError:  # badVR.dcm: "1A"
        return 1


def _pixel_candidates(ds: pydicom.Dataset) -> list[np.ndarray]:
    """Frame 1 as pydicom decodes it: with the colour conversion and without, and (for
    native little endian) the stored bytes themselves, e.g. YBR_FULL_422 subsampled."""
    out = []
    native = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")
    if ds.file_meta.TransferSyntaxUID in native and "PixelData" in ds:
        size = len(ds.PixelData) // _frame_count(ds)
        out.append(np.frombuffer(ds.PixelData[:size], dtype=np.uint8))
    for options in ({}, {"as_rgb": False}):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds.pixel_array_options(**options)
                array = ds.pixel_array
        except Exception:
            continue
        out.append(array[0] if _frame_count(ds) > 1 else array)
    return out


def test_frames_decode_to_pydicom_pixel_array(
    server: CorpusServer, shared_dicom: Path, corpus_manifest: list[dict[str, str]]
) -> None:
    client = server.client()
    failing = {
        shared_dicom / row["path"]
        for row in corpus_manifest
        if row["pixel_decode"].startswith("FAILS")
    }
    checked = 0
    for ref in server.archive.instances():
        if not ref.frames:
            continue
        path = server.kept[ref.sop_uid]
        ds = pydicom.dcmread(path)
        if int(ds.get("BitsAllocated", 8)) == 1:
            continue  # packed bits: no pydicom array to compare byte for byte
        url = (
            f"{server.base}/dicomweb/studies/{ref.study_uid}/series/{ref.series_uid}"
            f"/instances/{ref.sop_uid}/frames/1"
        )
        response = client._session.get(
            url, headers={"Accept": 'multipart/related; type="application/octet-stream"'}
        )
        candidates = _pixel_candidates(ds)
        if path in failing:
            # No decoder reads it: no reference to compare with; refusing is fine.
            assert response.status_code in (200, 422), path
            continue
        if response.status_code == 422:
            assert not candidates, path
            continue
        assert response.status_code == 200, (path, response.text[:200])
        (data,) = list(client._decode_multipart_message(response, stream=False))
        assert any(
            data == np.ascontiguousarray(c).astype(c.dtype.newbyteorder("<")).tobytes()
            for c in candidates
        ), path
        checked += 1
    assert checked > 100


def test_frames_as_stored_and_several_at_once(server: CorpusServer) -> None:
    client = server.client()
    multi = next(
        r
        for r in server.archive.instances()
        if (r.frames or 0) > 2 and r.transfer_syntax_uid == "1.2.840.10008.1.2.4.50"
    )
    frames = client.retrieve_instance_frames(
        multi.study_uid,
        multi.series_uid,
        multi.sop_uid,
        frame_numbers=[1, 2, 3],
        media_types=(("image/jpeg", "1.2.840.10008.1.2.4.50"),),
    )
    assert len(frames) == 3
    assert all(f[:2] == b"\xff\xd8" for f in frames)  # JPEG SOI markers
    ds = pydicom.dcmread(server.kept[multi.sop_uid])
    stored = list(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames))
    assert frames == stored[:3]


# ---------------------------------------------------------------- STOW-RS


def test_stow_round_trip_found_by_qido_and_cfind(server: CorpusServer, shared_dicom: Path) -> None:
    client = server.client()
    ds = pydicom.dcmread(shared_dicom / "pydicom/test_files/CT_small.dcm")
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Đặng^Thị Mai"
    ds.PatientID = "STOW-001"
    answer = client.store_instances([ds])
    assert "FailedSOPSequence" not in answer
    assert [i.ReferencedSOPInstanceUID for i in answer.ReferencedSOPSequence] == [ds.SOPInstanceUID]

    found = client.search_for_studies(
        search_filters={"PatientName": "dang mai"}, fuzzymatching=True
    )
    assert [_uid(s, "0020000D") for s in found] == [ds.StudyInstanceUID]
    assert found[0]["00100010"]["Value"][0]["Alphabetic"] == "Đặng^Thị Mai"

    result = findscu(
        LOCALHOST,
        server.dicom_port,
        {"StudyInstanceUID": ds.StudyInstanceUID, "PatientName": "", "PatientID": ""},
        calling_aet=FIND_AE,
    )
    assert result.returncode == 0, result.output
    assert [str(r.StudyInstanceUID) for r in result.responses] == [ds.StudyInstanceUID]
    assert str(result.responses[0].PatientName) == "Đặng^Thị Mai"

    sent = io.BytesIO()
    pydicom.dcmwrite(sent, ds)
    back = client._http_get(
        f"{server.base}/dicomweb/studies/{ds.StudyInstanceUID}",
        headers={"Accept": 'multipart/related; type="application/dicom"'},
    )
    (part,) = list(client._decode_multipart_message(back, stream=False))
    assert part == sent.getvalue()
