"""C-FIND response identifiers encode to exactly the bytes pydicom writes for them."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pynetdicom.dsutils import encode

from pacs.scp import tuning
from pacs.scp.identifiers import ResponseIdentifier, build_response, to_query

STUDY_ROW = {
    "PatientName": "Nguyễn^Thị Hồng Nhung",
    "PatientID": "BN001",
    "PatientBirthDate": "19800101",
    "StudyDate": "20240102",
    "StudyTime": "080000",
    "AccessionNumber": "",
    "ModalitiesInStudy": "CT\\SR",
    "StudyDescription": "CT ngực",
    "NumberOfStudyRelatedSeries": 3,
    "NumberOfStudyRelatedInstances": 251,
    "StudyInstanceUID": "1.2.840.10008.9.1",
}


def _request(charset: str | None, **extra: Any) -> Dataset:
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.QueryRetrieveLevel = "STUDY"
    for keyword in STUDY_ROW:
        setattr(ds, keyword, "")
    ds.ReferringPhysicianName = ""  # asked for, not kept: returned empty
    ds.InstanceAvailability = ""
    ds.add(DataElement(0x00091010, "LO", ""))  # a private key: returned empty
    ds.ProcedureCodeSequence = []
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    return ds


def _response(row: dict[str, Any], charset: str | None) -> ResponseIdentifier:
    query, requested = to_query(_request(charset), "study")
    return build_response(row, query, requested, request_charset=charset or "", retrieve_ae="PACS")


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "explicit"])
@pytest.mark.parametrize(
    ("charset", "row"),
    [
        ("ISO_IR 192", STUDY_ROW),
        (None, STUDY_ROW),  # asked in ASCII: answered in UTF-8, declared
        ("ISO_IR 100", {**STUDY_ROW, "PatientName": "Müller^Jürgen", "StudyDescription": "Thorax"}),
        ("", {**STUDY_ROW, "PatientName": "DOE^JOHN", "StudyDescription": "CHEST PA"}),
        ("ISO_IR 192", {**STUDY_ROW, "PatientName": "", "StudyDate": None}),
    ],
    ids=["utf8", "none", "latin1", "ascii", "empty-values"],
)
def test_fast_encoding_matches_pydicom(
    charset: str | None, row: dict[str, Any], implicit: bool
) -> None:
    response = _response(row, charset)
    fast = response.encode_for(implicit, True)
    assert fast is not None
    assert fast == encode(response.dataset(), implicit, True)


def test_the_dataset_carries_the_values_a_client_reads() -> None:
    ds = _response(STUDY_ROW, "ISO_IR 192").dataset()
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == "Nguyễn^Thị Hồng Nhung"
    assert list(ds.ModalitiesInStudy) == ["CT", "SR"]
    assert ds.NumberOfStudyRelatedInstances == 251
    assert ds.InstanceAvailability == "ONLINE"
    assert ds.RetrieveAETitle == "PACS"
    assert not ds.ReferringPhysicianName
    assert ds[0x00091010].value in (None, "")


def test_what_the_fast_path_cannot_encode_goes_through_pydicom() -> None:
    # ISO 2022 switches character sets inside a value; big endian is retired.
    japanese = {**STUDY_ROW, "PatientName": "山田^太郎", "StudyDescription": "CT"}
    response = _response(japanese, "\\ISO 2022 IR 87")
    assert response.encode_for(True, True) is None
    assert _response(STUDY_ROW, "ISO_IR 192").encode_for(False, False) is None
    tuning.install()
    import pynetdicom.service_class

    encoded = pynetdicom.service_class.encode(response, True, True, False)
    assert encoded == encode(response.dataset(), True, True)
    assert b"\x1b$B" in encoded  # the escape into JIS X 0208, written by pydicom
