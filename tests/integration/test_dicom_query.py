"""C-FIND with DCMTK ``findscu``: matching rules, both information models, every level,
Vietnamese names in any encoding, the response character set, and the counts.

The archive holds the project's sample studies (loaded by ``pacs serve --samples``),
the Vietnamese studies of the corpus and three corpus files with non-ASCII names
(French and German in Latin-1, Chinese in UTF-8), all sent with storescu. What a
query should find is computed from the files' own headers (``catalogue``), not
copied into the test.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from pacs.charset import fold  # the archive's own folding rule (unit-tested elsewhere)
from support import findscu, storescu, vietnamese_files

pytestmark = pytest.mark.integration

CHARSET_FILES = ("chrFren.dcm", "chrGerm.dcm", "chrX1.dcm")


@dataclass(frozen=True)
class Record:
    """What one stored instance says about itself (decoded by pydicom, NFC)."""

    patient_id: str
    patient_name: str
    study_uid: str
    study_date: str
    study_time: str
    accession: str
    series_uid: str
    series_number: int | None
    modality: str
    sop_uid: str
    instance_number: int | None


def _nfc(value: object) -> str:
    return unicodedata.normalize("NFC", str(value or "")).strip()


def _record(path: Path, unicode_names: dict[str, str]) -> Record:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    patient_id = str(ds.get("PatientID", ""))
    # The Vietnamese files lie about their encoding; the manifest has the real name.
    name = unicode_names.get(patient_id) or _nfc(ds.get("PatientName"))
    return Record(
        patient_id=patient_id,
        patient_name=_nfc(name),
        study_uid=str(ds.StudyInstanceUID),
        study_date=str(ds.get("StudyDate", "")),
        study_time=str(ds.get("StudyTime", "")).split(".")[0],
        accession=str(ds.get("AccessionNumber", "")),
        series_uid=str(ds.SeriesInstanceUID),
        series_number=int(ds.SeriesNumber) if ds.get("SeriesNumber") not in (None, "") else None,
        modality=str(ds.get("Modality", "")),
        sop_uid=str(ds.SOPInstanceUID),
        instance_number=(
            int(ds.InstanceNumber) if ds.get("InstanceNumber") not in (None, "") else None
        ),
    )


@pytest.fixture(scope="module")
def sent_files(shared_dicom: Path) -> list[Path]:
    files = vietnamese_files(shared_dicom)
    files += [shared_dicom / "pydicom" / "charset_files" / name for name in CHARSET_FILES]
    return files


@pytest.fixture(scope="module")
def catalogue(sample_dicom: Path, sent_files, vietnamese_manifest) -> list[Record]:
    names = {row["patient_id"]: row["patient_name_unicode"] for row in vietnamese_manifest}
    samples = sorted(p for p in sample_dicom.rglob("*.dcm"))
    return [_record(p, names) for p in samples + sent_files]


@pytest.fixture(scope="module")
def server(module_pacs_server, sample_dicom, sent_files, storescu_results):
    server = module_pacs_server(samples=sample_dicom, web=False)
    result = storescu(
        server.host, server.dicom_port, sent_files, calling_aet="STORESCU", extra=["-v"]
    )
    statuses = storescu_results(result.output)
    assert set(statuses.values()) == {"Success"}, statuses
    return server


def find(server, keys, *, level: str, model: str = "study", charset: str | None = None):
    """findscu; returns the response identifiers (asserting the query succeeded)."""
    items = dict(keys)
    if charset is not None:
        items = {"SpecificCharacterSet": charset, **items}
    result = findscu(
        server.host,
        server.dicom_port,
        items,
        level=level,
        model=model,
        calling_aet="FINDSCU",
        extra=["-v"],
    )
    assert result.returncode == 0, result.output
    assert "Received Final Find Response (Success)" in result.output, result.output
    return result.responses


def values(responses, keyword: str) -> list[str]:
    return sorted(_nfc(r.get(keyword, "")) for r in responses)


def studies(catalogue: list[Record], predicate) -> list[str]:
    return sorted({r.study_uid for r in catalogue if predicate(r)})


# ---------------------------------------------------------------- the data is there


def test_catalogue_is_what_we_think(catalogue, vietnamese_manifest):
    """Guard the expectations below: the sample studies and the Vietnamese ones."""
    patients = {r.patient_id for r in catalogue}
    assert {row["patient_id"] for row in vietnamese_manifest} <= patients
    assert len({r.study_uid for r in catalogue}) >= 8


# ---------------------------------------------------------------- study root, STUDY level


def test_universal_matching_returns_every_study(server, catalogue):
    responses = find(server, {"StudyInstanceUID": "", "PatientName": ""}, level="STUDY")
    assert values(responses, "StudyInstanceUID") == studies(catalogue, lambda r: True)


def test_single_value_matching(server, catalogue):
    record = next(r for r in catalogue if r.modality == "MR")
    responses = find(
        server, {"PatientID": record.patient_id, "StudyInstanceUID": ""}, level="STUDY"
    )
    assert values(responses, "StudyInstanceUID") == [record.study_uid]
    responses = find(server, {"AccessionNumber": record.accession}, level="STUDY")
    assert values(responses, "StudyInstanceUID") == [record.study_uid]


@pytest.mark.parametrize(
    ("pattern", "predicate"),
    [
        ("VN01000?", lambda pid: pid.startswith("VN01000") and len(pid) == 8),
        ("2401*", lambda pid: pid.startswith("2401")),
        ("*0", lambda pid: pid.endswith("0")),
        ("VN*1", lambda pid: pid.startswith("VN") and pid.endswith("1")),
    ],
)
def test_wildcard_matching(server, catalogue, pattern, predicate):
    responses = find(server, {"PatientID": pattern, "StudyInstanceUID": ""}, level="STUDY")
    assert values(responses, "StudyInstanceUID") == studies(
        catalogue, lambda r: predicate(r.patient_id)
    )


@pytest.mark.parametrize(
    ("query", "low", "high"),
    [
        ("20240101-20241231", "20240101", "20241231"),
        ("20250101-", "20250101", "99991231"),
        ("-20240506", "00000000", "20240506"),
        ("20240621", "20240621", "20240621"),
    ],
)
def test_date_range_matching(server, catalogue, query, low, high):
    responses = find(server, {"StudyDate": query, "StudyInstanceUID": ""}, level="STUDY")
    expected = studies(catalogue, lambda r: r.study_date and low <= r.study_date <= high)
    assert expected, "the range should match something"
    assert values(responses, "StudyInstanceUID") == expected


@pytest.mark.parametrize(
    ("query", "low", "high"),
    [
        ("0800-0900", "080000", "090059"),
        ("-0800", "000000", "080059"),
        ("1000-", "100000", "235959"),
    ],
)
def test_time_range_matching(server, catalogue, query, low, high):
    responses = find(server, {"StudyTime": query, "StudyInstanceUID": ""}, level="STUDY")
    expected = studies(catalogue, lambda r: r.study_time and low <= r.study_time[:6] <= high)
    assert expected
    assert values(responses, "StudyInstanceUID") == expected


def test_uid_list_matching(server, catalogue):
    wanted = studies(catalogue, lambda r: r.modality in ("CR", "US"))
    assert len(wanted) == 2
    responses = find(
        server, {"StudyInstanceUID": "\\".join(wanted), "PatientID": ""}, level="STUDY"
    )
    assert values(responses, "StudyInstanceUID") == wanted


def test_modalities_in_study(server, catalogue):
    responses = find(server, {"ModalitiesInStudy": "MR\\US", "StudyInstanceUID": ""}, level="STUDY")
    assert values(responses, "StudyInstanceUID") == studies(
        catalogue, lambda r: r.modality in ("MR", "US")
    )


def test_study_level_counts(server, catalogue):
    responses = find(
        server,
        {
            "StudyInstanceUID": "",
            "NumberOfStudyRelatedSeries": "",
            "NumberOfStudyRelatedInstances": "",
        },
        level="STUDY",
    )
    by_study = {r.StudyInstanceUID: r for r in responses}
    for study_uid in studies(catalogue, lambda r: True):
        records = [r for r in catalogue if r.study_uid == study_uid]
        response = by_study[study_uid]
        assert int(response.NumberOfStudyRelatedInstances) == len(records), study_uid
        assert int(response.NumberOfStudyRelatedSeries) == len({r.series_uid for r in records})


# ---------------------------------------------------------------- SERIES and IMAGE levels


def test_series_level(server, catalogue):
    cr = [r for r in catalogue if r.modality == "CR"]
    responses = find(
        server,
        {
            "StudyInstanceUID": cr[0].study_uid,
            "SeriesInstanceUID": "",
            "Modality": "",
            "SeriesNumber": "",
            "NumberOfSeriesRelatedInstances": "",
        },
        level="SERIES",
    )
    assert values(responses, "SeriesInstanceUID") == sorted({r.series_uid for r in cr})
    assert values(responses, "Modality") == ["CR"] * len(responses)
    for response in responses:
        count = sum(1 for r in cr if r.series_uid == response.SeriesInstanceUID)
        assert int(response.NumberOfSeriesRelatedInstances) == count
    number = cr[0].series_number
    one = find(
        server,
        {"StudyInstanceUID": cr[0].study_uid, "SeriesNumber": str(number), "SeriesInstanceUID": ""},
        level="SERIES",
    )
    assert values(one, "SeriesInstanceUID") == sorted(
        {r.series_uid for r in cr if r.series_number == number}
    )


def test_image_level(server, catalogue):
    ct = [r for r in catalogue if r.modality == "CT" and r.patient_id.isdigit()]
    keys = {"StudyInstanceUID": ct[0].study_uid, "SeriesInstanceUID": ct[0].series_uid}
    everything = find(server, {**keys, "SOPInstanceUID": "", "InstanceNumber": ""}, level="IMAGE")
    assert values(everything, "SOPInstanceUID") == sorted(r.sop_uid for r in ct)
    by_number = find(server, {**keys, "InstanceNumber": "64", "SOPInstanceUID": ""}, level="IMAGE")
    assert values(by_number, "SOPInstanceUID") == [r.sop_uid for r in ct if r.instance_number == 64]
    listed = sorted(r.sop_uid for r in ct[:3])
    by_list = find(server, {**keys, "SOPInstanceUID": "\\".join(listed)}, level="IMAGE")
    assert values(by_list, "SOPInstanceUID") == listed


# ---------------------------------------------------------------- patient root


def test_patient_root_every_level(server, catalogue):
    cr = [r for r in catalogue if r.modality == "CR"]
    patient = cr[0].patient_id
    patients = find(
        server,
        {
            "PatientID": patient,
            "PatientName": "",
            "NumberOfPatientRelatedStudies": "",
            "NumberOfPatientRelatedSeries": "",
            "NumberOfPatientRelatedInstances": "",
        },
        level="PATIENT",
        model="patient",
    )
    assert values(patients, "PatientID") == [patient]
    mine = [r for r in catalogue if r.patient_id == patient]
    assert int(patients[0].NumberOfPatientRelatedStudies) == len({r.study_uid for r in mine})
    assert int(patients[0].NumberOfPatientRelatedSeries) == len({r.series_uid for r in mine})
    assert int(patients[0].NumberOfPatientRelatedInstances) == len(mine)

    study_level = find(
        server, {"PatientID": patient, "StudyInstanceUID": ""}, level="STUDY", model="patient"
    )
    assert values(study_level, "StudyInstanceUID") == sorted({r.study_uid for r in mine})
    series_level = find(
        server,
        {"PatientID": patient, "StudyInstanceUID": cr[0].study_uid, "SeriesInstanceUID": ""},
        level="SERIES",
        model="patient",
    )
    assert values(series_level, "SeriesInstanceUID") == sorted({r.series_uid for r in mine})
    image_level = find(
        server,
        {
            "PatientID": patient,
            "StudyInstanceUID": cr[0].study_uid,
            "SeriesInstanceUID": cr[0].series_uid,
            "SOPInstanceUID": "",
        },
        level="IMAGE",
        model="patient",
    )
    assert values(image_level, "SOPInstanceUID") == [cr[0].sop_uid]


def test_patient_level_wildcards_and_counts(server, catalogue):
    responses = find(
        server,
        {"PatientID": "VN*", "PatientName": "", "NumberOfPatientRelatedInstances": ""},
        level="PATIENT",
        model="patient",
    )
    vn = Counter(r.patient_id for r in catalogue if r.patient_id.startswith("VN"))
    assert values(responses, "PatientID") == sorted(vn)
    for response in responses:
        assert int(response.NumberOfPatientRelatedInstances) == vn[response.PatientID]


def test_patient_level_is_not_part_of_study_root(server):
    result = findscu(
        server.host,
        server.dicom_port,
        {"PatientID": ""},
        level="PATIENT",
        model="study",
        calling_aet="FINDSCU",
        extra=["-v"],
    )
    assert result.responses == []
    assert "Received Final Find Response" in result.output, result.output
    assert "Received Final Find Response (Success)" not in result.output


# ---------------------------------------------------------------- Vietnamese names


def _patients_named(server, pattern: str, charset: str | None = "ISO_IR 192", model="study"):
    level = "PATIENT" if model == "patient" else "STUDY"
    responses = find(
        server,
        {"PatientName": pattern, "PatientID": ""},
        level=level,
        model=model,
        charset=charset,
    )
    return responses


@pytest.mark.parametrize("model", ["study", "patient"])
@pytest.mark.parametrize(
    ("pattern", "charset"),
    [
        ("nguyen thi*", None),
        ("nguyen^thi*", None),
        ("NGUYỄN*", "ISO_IR 192"),
        ("*nhung", None),
        ("Nguyễn^Thị Hồng Nhung", "ISO_IR 192"),
    ],
)
def test_vietnamese_name_matching(server, catalogue, pattern, charset, model):
    responses = _patients_named(server, pattern, charset, model)
    expected = sorted({r.patient_id for r in catalogue if r.patient_name.startswith("Nguyễn^")})
    assert len(expected) == 2  # a sample patient and a corpus one share the name
    assert sorted({r.PatientID for r in responses}) == expected
    for response in responses:
        assert _nfc(response.PatientName) == "Nguyễn^Thị Hồng Nhung"


def test_every_vietnamese_name_is_found_by_its_unicode_spelling(server, vietnamese_manifest):
    """Whatever the file's encoding (UTF-8, undeclared UTF-8, UTF-8 declared as
    Latin-1, Windows-1258), the name is found as written in Unicode and comes back
    right."""
    for row in vietnamese_manifest:
        name = unicodedata.normalize("NFC", row["patient_name_unicode"])
        responses = _patients_named(server, name)
        by_id = {r.PatientID: r for r in responses}
        assert row["patient_id"] in by_id, row
        assert _nfc(by_id[row["patient_id"]].PatientName) == name, row["encoding"]
        for response in responses:
            # Others may match too, without diacritics (the sample PHAM^THI THU HA).
            assert response.SpecificCharacterSet == "ISO_IR 192"
            assert fold(_nfc(response.PatientName)) == fold(name)


def test_vietnamese_names_match_without_diacritics(server, vietnamese_manifest):
    for row in vietnamese_manifest:
        plain = fold(row["patient_name_unicode"]).upper()
        responses = _patients_named(server, plain, charset=None)
        assert row["patient_id"] in {r.PatientID for r in responses}, (plain, row)


# ---------------------------------------------------------------- response character set


def test_utf8_query_gets_utf8_answers(server):
    responses = _patients_named(server, "*", charset="ISO_IR 192")
    assert responses
    for response in responses:
        assert response.SpecificCharacterSet == "ISO_IR 192"
    names = {_nfc(r.PatientName) for r in responses}
    assert {"Nguyễn^Thị Hồng Nhung", "Trần^Văn Bảo", "Lê^Minh Đức", "Phạm^Thị Thu Hà"} <= names
    assert {"Buc^Jérôme", "Äneas^Rüdiger", "Wang^XiaoDong=王^小東"} <= names


def test_latin1_query_is_answered_in_latin1_when_it_can_carry_the_names(server):
    for pattern, expected in (("Buc*", "Buc^Jérôme"), ("*Rudiger", "Äneas^Rüdiger")):
        responses = _patients_named(server, pattern, charset="ISO_IR 100")
        assert [_nfc(r.PatientName) for r in responses] == [expected]
        assert responses[0].SpecificCharacterSet == "ISO_IR 100"


@pytest.mark.parametrize("charset", ["ISO_IR 100", None])
def test_latin1_or_default_query_with_vietnamese_match_is_answered_in_utf8(server, charset):
    """Latin-1 (or the default repertoire) cannot carry "Nguyễn": the answer must
    declare ISO_IR 192 and carry the name intact instead of mangling it."""
    responses = _patients_named(server, "NGUYEN*", charset=charset)
    assert len(responses) == 2
    for response in responses:
        assert response.SpecificCharacterSet == "ISO_IR 192"
        assert _nfc(response.PatientName) == "Nguyễn^Thị Hồng Nhung"
    chinese = _patients_named(server, "Wang*", charset=charset)
    assert [r.SpecificCharacterSet for r in chinese] == ["ISO_IR 192"]
    assert _nfc(chinese[0].PatientName) == "Wang^XiaoDong=王^小東"


def test_ascii_answers_keep_the_requested_character_set(server, catalogue):
    mr = next(r for r in catalogue if r.modality == "MR")
    responses = _patients_named(server, mr.patient_name, charset="ISO_IR 100")
    assert [r.PatientID for r in responses] == [mr.patient_id]
    assert responses[0].SpecificCharacterSet == "ISO_IR 100"
