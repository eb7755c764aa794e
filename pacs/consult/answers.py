"""A partner's opinion as a DICOM Basic Text SR, in a new series of the same study.

The answer becomes part of the study in the requester's archive, so it travels
with the images and any viewer or RIS can read it. The document uses only what
Basic Text SR allows (PS3.3 A.35.1):

    CONTAINER "Consult note" (LOINC 11488-4)
      HAS OBS CONTEXT  PNAME  "Person Observer Name" (DCM 121008): who answered
      CONTAINS         TEXT   "Finding" (DCM 121071): the opinion
      CONTAINS         IMAGE  "Of Interest" (DCM 113000): each key image

Patient and study attributes are copied from an archived instance of the study;
Series, SOP Instance UIDs and the Content Date/Time are new.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from pacs.storage.index import InstanceRef

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
#: series number of answers, high enough not to collide with a modality's series
ANSWER_SERIES_NUMBER = 9900
_COPIED = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
)


@dataclass(frozen=True)
class Answer:
    text: str
    #: who answered, as shown ("BS. Nguyễn Văn A")
    author: str
    #: the answering hospital (Institution Name of the SR)
    institution: str
    key_images: Sequence[InstanceRef] = ()


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _content(value_type: str, relationship: str, concept: Dataset) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = DicomSequence([concept])
    return item


def build_sr(study_instance: Path, answer: Answer, *, now: datetime | None = None) -> Dataset:
    """The SR data set answering on the study that ``study_instance`` (a Part 10 file of
    it) belongs to. Raises ValueError for an empty answer."""
    text = answer.text.strip()
    if not text:
        raise ValueError("an answer needs some text")
    source = dcmread(study_instance, stop_before_pixels=True)
    now = now or datetime.now().astimezone()
    ds = Dataset()
    # UTF-8: Vietnamese names and text (PS3.3 C.12.1.1.2, ISO_IR 192).
    ds.SpecificCharacterSet = "ISO_IR 192"
    for keyword in _COPIED:
        if keyword in source:
            ds[keyword] = source[keyword]
    ds.SOPClassUID = BASIC_TEXT_SR
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.SeriesNumber = ANSWER_SERIES_NUMBER
    ds.SeriesDescription = "Ý kiến hội chẩn / Consultation opinion"
    ds.InstanceNumber = 1
    ds.Manufacturer = "pacs"
    ds.InstitutionName = answer.institution[:64]
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.InstanceCreationDate = ds.ContentDate
    ds.InstanceCreationTime = ds.ContentTime
    ds.SeriesDate = ds.ContentDate
    ds.SeriesTime = ds.ContentTime
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = DicomSequence([_code("11488-4", "LN", "Consult note")])

    observer = _content("PNAME", "HAS OBS CONTEXT", _code("121008", "DCM", "Person Observer Name"))
    observer.PersonName = answer.author[:64] or "?"
    finding = _content("TEXT", "CONTAINS", _code("121071", "DCM", "Finding"))
    finding.TextValue = text
    items = [observer, finding]
    for ref in answer.key_images:
        image = _content("IMAGE", "CONTAINS", _code("113000", "DCM", "Of Interest"))
        referenced = Dataset()
        referenced.ReferencedSOPClassUID = ref.sop_class_uid
        referenced.ReferencedSOPInstanceUID = ref.sop_uid
        image.ReferencedSOPSequence = DicomSequence([referenced])
        items.append(image)
    ds.ContentSequence = DicomSequence(items)

    if answer.key_images:
        # PS3.3 C.17.2.3: every instance the content refers to, by series.
        by_series: dict[str, list[InstanceRef]] = {}
        for ref in answer.key_images:
            by_series.setdefault(ref.series_uid, []).append(ref)
        series_items = []
        for series_uid, refs in by_series.items():
            series = Dataset()
            series.SeriesInstanceUID = series_uid
            series.ReferencedSOPSequence = DicomSequence([_ref_item(r) for r in refs])
            series_items.append(series)
        evidence = Dataset()
        evidence.StudyInstanceUID = source.StudyInstanceUID
        evidence.ReferencedSeriesSequence = DicomSequence(series_items)
        ds.CurrentRequestedProcedureEvidenceSequence = DicomSequence([evidence])

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def _ref_item(ref: InstanceRef) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ref.sop_class_uid
    item.ReferencedSOPInstanceUID = ref.sop_uid
    return item


def answer_text(path: Path) -> str:
    """The opinion (TEXT items) of an SR written by :func:`build_sr` (for display)."""
    ds = dcmread(path)
    return "\n".join(
        str(item.TextValue) for item in ds.get("ContentSequence", []) if item.ValueType == "TEXT"
    )
