"""The same SOP Instance UID twice: duplicates and the three duplicate policies.

Identical bytes again: Success, and still one instance. Different bytes under a
known SOP Instance UID: ``duplicate_policy`` decides: replace (the default; the
newer object wins, logged), keep (the archived one stays, logged) or reject
(0x0111 Duplicate SOP Instance). The pairs come from the corpus: MR_small.dcm
and MR_small_bigendian.dcm are one image in two transfer syntaxes.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from support import findscu, storescu

pytestmark = pytest.mark.integration

DUPLICATE_SOP_INSTANCE = 0x0111


@pytest.fixture(scope="module")
def servers(module_pacs_server):
    """One server per policy, started on first use."""
    started = {}

    def get(policy: str):
        if policy not in started:
            env = {} if policy == "default" else {"PACS_DUPLICATE_POLICY": policy}
            started[policy] = module_pacs_server(env=env, web=False)
        return started[policy]

    return get


@pytest.fixture(scope="module")
def pair(shared_dicom: Path, corpus_manifest) -> tuple[Path, Path]:
    """Two different files with one SOP Instance UID (the first, then a re-encoding)."""
    first = shared_dicom / "pydicom/test_files/MR_small.dcm"
    second = shared_dicom / "pydicom/test_files/MR_small_bigendian.dcm"
    rows = {row["path"]: row for row in corpus_manifest}
    assert (
        rows["pydicom/test_files/MR_small.dcm"]["sop_instance_uid"]
        == (rows["pydicom/test_files/MR_small_bigendian.dcm"]["sop_instance_uid"])
    )
    assert first.read_bytes() != second.read_bytes()
    return first, second


def _meta(path: Path):
    return pydicom.filereader.read_file_meta_info(path)


def _instances(server, study_uid: str) -> list[str]:
    result = findscu(
        server.host,
        server.dicom_port,
        {"StudyInstanceUID": study_uid, "SeriesInstanceUID": "", "SOPInstanceUID": ""},
        level="IMAGE",
        calling_aet="FINDSCU",
    )
    assert result.returncode == 0, result.output
    return [str(r.SOPInstanceUID) for r in result.responses]


def _study_count(server, study_uid: str) -> list[int]:
    result = findscu(
        server.host,
        server.dicom_port,
        {"StudyInstanceUID": study_uid, "NumberOfStudyRelatedInstances": ""},
        calling_aet="FINDSCU",
    )
    return [int(r.NumberOfStudyRelatedInstances) for r in result.responses]


def _retrieve(server, raw_get, path: Path) -> tuple[str, bytes]:
    """(transfer syntax, data set bytes) of the archived version of ``path``'s instance."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    meta = _meta(path)
    contexts = [
        (str(ds.SOPClassUID), ts)
        for ts in (
            str(meta.TransferSyntaxUID),
            "1.2.840.10008.1.2.1",
            "1.2.840.10008.1.2.2",
        )
    ]
    _, got = raw_get(
        server.host,
        server.dicom_port,
        {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": str(ds.StudyInstanceUID)},
        contexts,
    )
    return got[str(ds.SOPInstanceUID)]


def _study_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)


@pytest.mark.parametrize("policy", ["default", "keep", "reject"])
def test_the_same_file_twice_is_one_instance(
    servers, policy, pair, shared_dicom, raw_store, storescu_results
):
    server = servers(policy)
    first, _ = pair
    # Twice in one association, and once more in another.
    results = raw_store(server.host, server.dicom_port, [first, first])
    results += raw_store(server.host, server.dicom_port, [first])
    assert [r.status for r in results] == [0x0000, 0x0000, 0x0000]
    study_uid = _study_uid(first)
    assert _instances(server, study_uid) == [str(_meta(first).MediaStorageSOPInstanceUID)]
    assert _study_count(server, study_uid) == [1]

    # storescu re-encodes what it sends, but the same way each time.
    other = shared_dicom / "pydicom/test_files/CT_small.dcm"
    for _ in range(2):
        sent = storescu(
            server.host, server.dicom_port, [other], calling_aet="STORESCU", extra=["-v"]
        )
        assert storescu_results(sent.output)[str(other)] == "Success"
    assert _study_count(server, _study_uid(other)) == [1]


def test_replace_policy_keeps_the_newer_object(
    servers, pair, raw_store, raw_get, read_dataset_bytes
):
    server = servers("default")
    first, second = pair
    bookmark = server.log_size()
    results = raw_store(server.host, server.dicom_port, [first, second])
    assert [r.status for r in results] == [0x0000, 0x0000]
    ts, data = _retrieve(server, raw_get, second)
    assert (ts, data) == (str(_meta(second).TransferSyntaxUID), read_dataset_bytes(second))
    assert _study_count(server, _study_uid(first)) == [1]
    sop_uid = str(_meta(first).MediaStorageSOPInstanceUID)
    line = server.wait_for_log(rf"(?i)replac.*{sop_uid}|{sop_uid}.*replac", since=bookmark)
    assert line
    verify = server.verify()
    assert verify.returncode == 0, verify.stdout


def test_keep_policy_keeps_the_archived_object(
    servers, pair, raw_store, raw_get, read_dataset_bytes
):
    server = servers("keep")
    first, second = pair
    bookmark = server.log_size()
    results = raw_store(server.host, server.dicom_port, [first, second])
    assert results[0].status == 0x0000
    # Accepted (the sender has nothing to retry), but the archive keeps its version.
    assert results[1].status == 0x0000 or 0xB000 <= results[1].status <= 0xBFFF
    ts, data = _retrieve(server, raw_get, first)
    assert (ts, data) == (str(_meta(first).TransferSyntaxUID), read_dataset_bytes(first))
    sop_uid = str(_meta(first).MediaStorageSOPInstanceUID)
    assert server.wait_for_log(rf"(?i){sop_uid}.*keep|keep.*{sop_uid}", since=bookmark)
    verify = server.verify()
    assert verify.returncode == 0, verify.stdout


def test_reject_policy_refuses_with_0111(servers, pair, raw_store, raw_get, read_dataset_bytes):
    server = servers("reject")
    first, second = pair
    bookmark = server.log_size()
    results = raw_store(server.host, server.dicom_port, [first, second])
    assert [r.status for r in results] == [0x0000, DUPLICATE_SOP_INSTANCE]
    assert results[1].error_comment
    ts, data = _retrieve(server, raw_get, first)
    assert (ts, data) == (str(_meta(first).TransferSyntaxUID), read_dataset_bytes(first))
    sop_uid = str(_meta(first).MediaStorageSOPInstanceUID)
    assert server.wait_for_log(rf"(?i)(refus|reject).*{sop_uid}", since=bookmark)
    assert _study_count(server, _study_uid(first)) == [1]


def test_replacing_with_an_instance_of_another_study_leaves_no_trace_of_the_old_one(
    servers, pair, raw_store, tmp_path
):
    """The newer object names another study: the old object and its (now empty)
    study must not linger in the index or the store."""
    server = servers("default")
    first, _ = pair
    ds = pydicom.dcmread(first)
    ds.StudyInstanceUID = ds.StudyInstanceUID + ".9"
    ds.SeriesInstanceUID = ds.SeriesInstanceUID + ".9"
    moved = tmp_path / "moved.dcm"
    ds.save_as(moved)
    results = raw_store(server.host, server.dicom_port, [first, moved])
    assert [r.status for r in results] == [0x0000, 0x0000]
    assert _instances(server, str(ds.StudyInstanceUID)) == [str(ds.SOPInstanceUID)]
    assert _instances(server, _study_uid(first)) == []
    assert _study_count(server, _study_uid(first)) in ([], [0])
    verify = server.verify()
    assert verify.returncode == 0, verify.stdout


def test_a_corrected_resend_replaces_what_c_find_answers(
    servers, shared_dicom, raw_store, tmp_path
):
    """A modality re-sends a whole study after correcting the patient's name: the
    newer objects replace the old ones, so C-FIND must answer with the corrected name."""
    server = servers("default")
    source = shared_dicom / "pydicom/test_files/CT_small.dcm"
    first, corrected = [], []
    for number in (1, 2):
        ds = pydicom.dcmread(source)
        ds.StudyInstanceUID = ds.StudyInstanceUID + ".7"
        ds.SeriesInstanceUID = ds.SeriesInstanceUID + ".7"
        ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.7{number}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = number
        ds.PatientID = "CORRECTED1"
        ds.PatientName = "NGUYEN^VAN A"
        ds.save_as(tmp_path / f"first{number}.dcm")
        first.append(tmp_path / f"first{number}.dcm")
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName = "NGUYỄN^VĂN AN"
        ds.save_as(tmp_path / f"corrected{number}.dcm")
        corrected.append(tmp_path / f"corrected{number}.dcm")
    results = raw_store(server.host, server.dicom_port, first)
    results += raw_store(server.host, server.dicom_port, corrected)
    assert [r.status for r in results] == [0x0000] * 4
    for level, model in (("STUDY", "study"), ("PATIENT", "patient")):
        found = findscu(
            server.host,
            server.dicom_port,
            {"SpecificCharacterSet": "ISO_IR 192", "PatientID": "CORRECTED1", "PatientName": ""},
            level=level,
            model=model,
            calling_aet="FINDSCU",
        )
        assert [str(r.PatientName) for r in found.responses] == ["NGUYỄN^VĂN AN"], level
