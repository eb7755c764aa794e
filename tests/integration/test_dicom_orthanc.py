"""A real Orthanc (Debian package) as a partner PACS.

- Orthanc sends a study to pacs (REST ``POST /modalities/pacs/store``: C-STORE).
- Orthanc queries pacs and retrieves a study to itself (REST
  ``POST /modalities/pacs/query`` then ``/queries/{id}/retrieve``: C-FIND, then
  C-MOVE with Orthanc as the destination).

Both ways the data sets must arrive byte-identical to the original files. The
studies are the Vietnamese ones of the corpus (written by pydicom, so the DCMTK
inside Orthanc puts them on the wire unchanged).
"""

from __future__ import annotations

import pydicom
import pytest

from support import findscu, free_port, orthanc_peer, storescu, vietnamese_files

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pacs_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory, pacs_port):
    with orthanc_peer(
        tmp_path_factory.mktemp("orthanc"),
        aet="ORTHANC",
        modalities={"pacs": ["PACS", "127.0.0.1", pacs_port]},
    ) as peer:
        yield peer


@pytest.fixture(scope="module")
def server(module_pacs_server, orthanc, pacs_port):
    return module_pacs_server(
        dicom_port=pacs_port,
        aes=[{"title": orthanc.aet, "port": orthanc.dicom_port}],
        web=False,
    )


def _study_files(shared_dicom, patient_id: str):
    files = vietnamese_files(shared_dicom, patient_id)
    assert len(files) == 3
    return files


def _pacs_instances(server, study_uid: str, raw_get, files) -> dict[str, bytes]:
    """SOP Instance UID → data set bytes, as pacs gives them back over C-GET."""
    metas = [pydicom.filereader.read_file_meta_info(f) for f in files]
    statuses, got = raw_get(
        server.host,
        server.dicom_port,
        {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study_uid},
        [(str(m.MediaStorageSOPClassUID), str(m.TransferSyntaxUID)) for m in metas],
    )
    assert statuses[-1] == 0x0000
    return {uid: data for uid, (_, data) in got.items()}


def _uids(path):
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)


def test_orthanc_sends_a_study_to_pacs(server, orthanc, shared_dicom, raw_get, read_dataset_bytes):
    files = _study_files(shared_dicom, "VN010000")
    uploaded = [orthanc.upload(f) for f in files]
    study_id = uploaded[0]["ParentStudy"]
    job = orthanc.rest(
        "/modalities/pacs/store", "POST", {"Resources": [study_id], "Synchronous": True}
    )
    assert job.get("FailedInstancesCount", 0) == 0, job

    study_uid = _uids(files[0])[0]
    found = findscu(
        server.host,
        server.dicom_port,
        {"StudyInstanceUID": study_uid, "NumberOfStudyRelatedInstances": ""},
        calling_aet="FINDSCU",
    )
    assert [int(r.NumberOfStudyRelatedInstances) for r in found.responses] == [3]
    got = _pacs_instances(server, study_uid, raw_get, files)
    assert {uid: got.get(uid) for uid in (_uids(f)[1] for f in files)} == {
        _uids(f)[1]: read_dataset_bytes(f) for f in files
    }
    # Orthanc's own copy is the original file (it stores what it was given).
    assert orthanc.rest(f"/instances/{uploaded[0]['ID']}/file") == files[0].read_bytes()


def test_orthanc_queries_and_retrieves_a_study_from_pacs(
    server, orthanc, shared_dicom, read_dataset_bytes
):
    files = _study_files(shared_dicom, "VN010003")  # Windows-1258 declared as Latin-1
    result = storescu(server.host, server.dicom_port, files, calling_aet="STORESCU")
    assert result.returncode == 0, result.output
    study_uid = _uids(files[0])[0]

    query = orthanc.rest(
        "/modalities/pacs/query",
        "POST",
        {"Level": "Study", "Query": {"StudyInstanceUID": study_uid, "PatientID": ""}},
    )
    answers = orthanc.rest(f"/queries/{query['ID']}/answers?expand&simplify")
    assert [a["StudyInstanceUID"] for a in answers] == [study_uid]
    assert answers[0]["PatientID"] == "VN010003"

    orthanc.rest(
        f"/queries/{query['ID']}/retrieve",
        "POST",
        {"TargetAet": orthanc.aet, "Synchronous": True},
        timeout=120,
    )
    studies = orthanc.rest(
        "/tools/find", "POST", {"Level": "Study", "Query": {"StudyInstanceUID": study_uid}}
    )
    assert len(studies) == 1, studies
    instances = orthanc.rest(f"/studies/{studies[0]}/instances")
    assert len(instances) == 3
    received = {}
    for instance in instances:
        data = orthanc.rest(f"/instances/{instance['ID']}/file")
        received[instance["MainDicomTags"]["SOPInstanceUID"]] = read_dataset_bytes(data)
    assert received == {_uids(f)[1]: read_dataset_bytes(f) for f in files}
