"""De-identification: PS3.15 Annex E Basic Application Confidentiality Profile.

Applied to *copies* of what a de-identified share link serves (files in a ZIP,
the tag browser, the study and series details behind the viewer's corner
text), never to the archive. Flask-free, so the DICOM side can use it too.

Options of the profile we apply (PS3.15 Table E.1-1, columns beyond "Basic"):

* **Retain Longitudinal Temporal Information with Modified Dates** — dates are
  shifted by a per-link number of days (intervals between studies survive),
  the birth date is removed, times of day are kept;
* everything else as the Basic Profile says: identifying attributes removed
  (X), emptied (Z) or replaced by dummies (D), instance UIDs replaced (U) by
  ``2.25.<n>`` UIDs derived from the originals with a keyed hash — the same
  original always gets the same replacement under one key, so references
  between the files of a link stay consistent — private attributes, overlays
  and curves removed.

Pixel data is not touched: text burned into the pixels cannot be removed here.
It is *flagged* instead: Burned In Annotation (0028,0301) says YES when the
source says so or when the kind of image usually carries such text (see
:func:`burned_in`), and :class:`DeidReport` tells the caller so it can warn.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag

#: replaced patient name (Z/D: a dummy keeps the attribute valid for Type 1 uses)
ANONYMOUS_NAME = "ANONYMOUS"
#: dummy for other D attributes
DUMMY_TEXT = "ANONYMIZED"
DEIDENTIFICATION_METHOD = "pacs: PS3.15 Basic Profile; Retain Longitudinal Modified Dates"
# PS3.16 CID 7050 De-identification Method
METHOD_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
)
#: modalities whose images commonly carry burned-in patient text (PS3.3 C.7.6.1.1.7)
BURNED_IN_MODALITIES = frozenset({"US", "OT", "SC", "XC", "ES", "GM", "SM", "DOC", "IO", "PX"})
#: Secondary Capture and the multi-frame secondary captures: screenshots, scanned documents
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
_DICOM_ROOT = "1.2.840.10008."

# PS3.15 Table E.1-1, Basic Profile column: "(gggg,eeee) action keyword". Actions:
# X remove, Z empty, D dummy, U replace UID, and the standard's combinations
# (X/Z, X/D, Z/D, X/Z/D, X/Z/U*) — see _act for what each means here.
_TABLE = """
0000,1000 U AffectedSOPInstanceUID
0000,1001 U RequestedSOPInstanceUID
0002,0003 U MediaStorageSOPInstanceUID
0004,1511 U ReferencedSOPInstanceUIDInFile
0008,0012 X/D InstanceCreationDate
0008,0013 X/Z/D InstanceCreationTime
0008,0014 U InstanceCreatorUID
0008,0015 X InstanceCoercionDateTime
0008,0020 Z StudyDate
0008,0021 X/D SeriesDate
0008,0022 X/Z AcquisitionDate
0008,0023 Z/D ContentDate
0008,0024 X OverlayDate
0008,0025 X CurveDate
0008,002A X/Z/D AcquisitionDateTime
0008,0030 Z StudyTime
0008,0031 X/D SeriesTime
0008,0032 X/Z AcquisitionTime
0008,0033 Z/D ContentTime
0008,0034 X OverlayTime
0008,0035 X CurveTime
0008,0050 Z AccessionNumber
0008,0058 U FailedSOPInstanceUIDList
0008,0080 X/Z/D InstitutionName
0008,0081 X InstitutionAddress
0008,0082 X/Z/D InstitutionCodeSequence
0008,0090 Z ReferringPhysicianName
0008,0092 X ReferringPhysicianAddress
0008,0094 X ReferringPhysicianTelephoneNumbers
0008,0096 X ReferringPhysicianIdentificationSequence
0008,009C Z ConsultingPhysicianName
0008,009D X ConsultingPhysicianIdentificationSequence
0008,0201 X TimezoneOffsetFromUTC
0008,010D U ContextGroupExtensionCreatorUID
0008,1010 X/Z/D StationName
0008,1030 X StudyDescription
0008,103E X SeriesDescription
0008,1040 X InstitutionalDepartmentName
0008,1041 X InstitutionalDepartmentTypeCodeSequence
0008,1048 X PhysiciansOfRecord
0008,1049 X PhysiciansOfRecordIdentificationSequence
0008,1050 X PerformingPhysicianName
0008,1052 X PerformingPhysicianIdentificationSequence
0008,1060 X NameOfPhysiciansReadingStudy
0008,1062 X PhysiciansReadingStudyIdentificationSequence
0008,1070 X/Z/D OperatorsName
0008,1072 X/D OperatorIdentificationSequence
0008,1080 X AdmittingDiagnosesDescription
0008,1084 X AdmittingDiagnosesCodeSequence
0008,1110 X/Z ReferencedStudySequence
0008,1111 X/Z/D ReferencedPerformedProcedureStepSequence
0008,1120 X ReferencedPatientSequence
0008,1140 X/Z/U* ReferencedImageSequence
0008,1155 U ReferencedSOPInstanceUID
0008,1195 U TransactionUID
0008,2111 X DerivationDescription
0008,2112 X/Z/U* SourceImageSequence
0008,3010 U IrradiationEventUID
0008,4000 X IdentifyingComments
0008,9123 U CreatorVersionUID
0010,0010 Z PatientName
0010,0020 Z PatientID
0010,0021 X IssuerOfPatientID
0010,0022 X TypeOfPatientID
0010,0024 X IssuerOfPatientIDQualifiersSequence
0010,0030 Z PatientBirthDate
0010,0032 X PatientBirthTime
0010,0033 X PatientBirthDateInAlternativeCalendar
0010,0034 X PatientDeathDateInAlternativeCalendar
0010,0035 X PatientAlternativeCalendar
0010,0040 Z PatientSex
0010,0050 X PatientInsurancePlanCodeSequence
0010,0101 X PatientPrimaryLanguageCodeSequence
0010,0102 X PatientPrimaryLanguageModifierCodeSequence
0010,1000 X OtherPatientIDs
0010,1001 X OtherPatientNames
0010,1002 X OtherPatientIDsSequence
0010,1005 X PatientBirthName
0010,1010 X PatientAge
0010,1020 X PatientSize
0010,1030 X PatientWeight
0010,1040 X PatientAddress
0010,1050 X InsurancePlanIdentification
0010,1060 X PatientMotherBirthName
0010,1080 X MilitaryRank
0010,1081 X BranchOfService
0010,1090 X MedicalRecordLocator
0010,1100 X ReferencedPatientPhotoSequence
0010,2000 X MedicalAlerts
0010,2110 X Allergies
0010,2150 X CountryOfResidence
0010,2152 X RegionOfResidence
0010,2154 X PatientTelephoneNumbers
0010,2155 X PatientTelecomInformation
0010,2160 X EthnicGroup
0010,2180 X Occupation
0010,21A0 X SmokingStatus
0010,21B0 X AdditionalPatientHistory
0010,21C0 X PregnancyStatus
0010,21D0 X LastMenstrualDate
0010,21F0 X PatientReligiousPreference
0010,2203 X/Z PatientSexNeutered
0010,2297 X ResponsiblePerson
0010,2299 X ResponsibleOrganization
0010,4000 X PatientComments
0018,0010 Z/D ContrastBolusAgent
0018,1000 X/Z/D DeviceSerialNumber
0018,1002 U DeviceUID
0018,1004 X PlateID
0018,1005 X GeneratorID
0018,1007 X CassetteID
0018,1008 X GantryID
0018,1009 X UniqueDeviceIdentifier
0018,100A X UDISequence
0018,1030 X/D ProtocolName
0018,1400 X/D AcquisitionDeviceProcessingDescription
0018,4000 X AcquisitionComments
0018,700A X/D DetectorID
0018,9424 X AcquisitionProtocolDescription
0018,A003 X ContributionDescription
0020,000D U StudyInstanceUID
0020,000E U SeriesInstanceUID
0020,0010 Z StudyID
0020,0052 U FrameOfReferenceUID
0020,0200 U SynchronizationFrameOfReferenceUID
0020,3401 X ModifyingDeviceID
0020,3404 X ModifyingDeviceManufacturer
0020,3406 X ModifiedImageDescription
0020,4000 X ImageComments
0020,9158 X FrameComments
0020,9161 U ConcatenationUID
0020,9164 U DimensionOrganizationUID
0028,1199 U PaletteColorLookupTableUID
0028,1214 U LargePaletteColorLookupTableUID
0028,4000 X ImagePresentationComments
0032,0012 X StudyIDIssuer
0032,1020 X ScheduledStudyLocation
0032,1021 X ScheduledStudyLocationAETitle
0032,1030 X ReasonForStudy
0032,1032 X RequestingPhysician
0032,1033 X RequestingService
0032,1060 X/Z RequestedProcedureDescription
0032,1070 X RequestedContrastAgent
0032,4000 X StudyComments
0038,0004 X ReferencedPatientAliasSequence
0038,0010 X AdmissionID
0038,0011 X IssuerOfAdmissionID
0038,001E X ScheduledPatientInstitutionResidence
0038,0020 X AdmittingDate
0038,0021 X AdmittingTime
0038,0040 X DischargeDiagnosisDescription
0038,0050 X SpecialNeeds
0038,0060 X ServiceEpisodeID
0038,0061 X IssuerOfServiceEpisodeID
0038,0062 X ServiceEpisodeDescription
0038,0300 X CurrentPatientLocation
0038,0400 X PatientInstitutionResidence
0038,0500 X PatientState
0038,4000 X VisitComments
0040,0001 X ScheduledStationAETitle
0040,0002 X ScheduledProcedureStepStartDate
0040,0003 X ScheduledProcedureStepStartTime
0040,0004 X ScheduledProcedureStepEndDate
0040,0005 X ScheduledProcedureStepEndTime
0040,0006 X ScheduledPerformingPhysicianName
0040,0007 X ScheduledProcedureStepDescription
0040,0009 X ScheduledProcedureStepID
0040,000B X ScheduledPerformingPhysicianIdentificationSequence
0040,0010 X ScheduledStationName
0040,0011 X ScheduledProcedureStepLocation
0040,0012 X PreMedication
0040,0241 X PerformedStationAETitle
0040,0242 X PerformedStationName
0040,0243 X PerformedLocation
0040,0244 X PerformedProcedureStepStartDate
0040,0245 X PerformedProcedureStepStartTime
0040,0250 X PerformedProcedureStepEndDate
0040,0251 X PerformedProcedureStepEndTime
0040,0253 X PerformedProcedureStepID
0040,0254 X PerformedProcedureStepDescription
0040,0275 X RequestAttributesSequence
0040,0280 X CommentsOnThePerformedProcedureStep
0040,0555 X AcquisitionContextSequence
0040,1001 X RequestedProcedureID
0040,1004 X PatientTransportArrangements
0040,1005 X RequestedProcedureLocation
0040,1010 X NamesOfIntendedRecipientsOfResults
0040,1011 X IntendedRecipientsOfResultsIdentificationSequence
0040,1101 D PersonIdentificationCodeSequence
0040,1102 X PersonAddress
0040,1103 X PersonTelephoneNumbers
0040,1400 X RequestedProcedureComments
0040,2001 X ReasonForTheImagingServiceRequest
0040,2004 X IssueDateOfImagingServiceRequest
0040,2005 X IssueTimeOfImagingServiceRequest
0040,2008 X OrderEnteredBy
0040,2009 X OrderEntererLocation
0040,2010 X OrderCallbackPhoneNumber
0040,2016 Z PlacerOrderNumberImagingServiceRequest
0040,2017 Z FillerOrderNumberImagingServiceRequest
0040,2400 X ImagingServiceRequestComments
0040,3001 X ConfidentialityConstraintOnPatientDataDescription
0040,4023 U ReferencedGeneralPurposeScheduledProcedureStepTransactionUID
0040,4025 X ScheduledStationNameCodeSequence
0040,4027 X ScheduledStationGeographicLocationCodeSequence
0040,4030 X PerformedStationGeographicLocationCodeSequence
0040,4034 X ScheduledHumanPerformersSequence
0040,4035 X ActualHumanPerformersSequence
0040,4036 X HumanPerformerOrganization
0040,4037 X HumanPerformerName
0040,A027 X VerifyingOrganization
0040,A073 D VerifyingObserverSequence
0040,A075 D VerifyingObserverName
0040,A078 X AuthorObserverSequence
0040,A07A X ParticipantSequence
0040,A07C X CustodialOrganizationSequence
0040,A088 Z VerifyingObserverIdentificationCodeSequence
0040,A123 D PersonName
0040,A124 U UID
0040,A730 X ContentSequence
0040,DB0C U TemplateExtensionOrganizationUID
0040,DB0D U TemplateExtensionCreatorUID
0070,0001 D GraphicAnnotationSequence
0070,0084 Z ContentCreatorName
0070,0086 X ContentCreatorIdentificationCodeSequence
0070,031A U FiducialUID
0088,0140 U StorageMediaFileSetUID
0088,0200 X IconImageSequence
0088,0904 X TopicTitle
0088,0906 X TopicSubject
0088,0910 X TopicAuthor
0088,0912 X TopicKeywords
0400,0100 X DigitalSignatureUID
0400,0402 X ReferencedDigitalSignatureSequence
0400,0403 X ReferencedSOPInstanceMACSequence
0400,0404 X MAC
0400,0550 X ModifiedAttributesSequence
0400,0561 X OriginalAttributesSequence
2030,0020 X TextString
3006,0024 U ReferencedFrameOfReferenceUID
3006,00C2 U RelatedFrameOfReferenceUID
300A,0013 U DoseReferenceUID
300E,0008 X/Z ReviewerName
4000,0010 X Arbitrary
4000,4000 X TextComments
4008,0042 X ResultsIDIssuer
4008,0102 X InterpretationRecorder
4008,010A X InterpretationTranscriber
4008,010B X InterpretationText
4008,010C X InterpretationAuthor
4008,0111 X InterpretationApproverSequence
4008,0114 X PhysicianApprovingInterpretation
4008,0115 X InterpretationDiagnosisDescription
4008,0118 X ResultsDistributionListSequence
4008,0119 X DistributionName
4008,011A X DistributionAddress
4008,0202 X InterpretationIDIssuer
4008,0300 X Impressions
4008,4000 X ResultsComments
FFFA,FFFA X DigitalSignaturesSequence
FFFC,FFFC X DataSetTrailingPadding
"""


def _parse_table(text: str) -> tuple[dict[int, str], dict[str, str]]:
    by_tag: dict[int, str] = {}
    by_keyword: dict[str, str] = {}
    for line in text.strip().splitlines():
        tag, action, keyword = line.split()
        group, element = tag.split(",")
        by_tag[int(group + element, 16)] = action
        by_keyword[keyword] = action
    return by_tag, by_keyword


#: tag → action, and keyword → action (for index rows), from PS3.15 Table E.1-1
ACTIONS, KEYWORD_ACTIONS = _parse_table(_TABLE)

#: Stricter than the table for sequences whose "dummy" (D) would keep free text or
#: codes inside: presentation-state text objects, and codes that identify a person.
_STRICTER = {
    0x00700001: "X",  # GraphicAnnotationSequence (TextObjectSequence text)
    0x00401101: "Z",  # PersonIdentificationCodeSequence (the code is the person's ID)
}

#: UIDs that name kinds of things, not instances: never replaced
_KEEP_UIDS = frozenset(
    {
        "SOPClassUID",
        "MediaStorageSOPClassUID",
        "ReferencedSOPClassUID",
        "ReferencedSOPClassUIDInFile",
        "TransferSyntaxUID",
        "ReferencedTransferSyntaxUIDInFile",
        "ImplementationClassUID",
        "SOPClassesInStudy",
        "CodingSchemeUID",
        "ContextUID",
        "MappingResourceUID",
        "PrivateInformationCreatorUID",
        "RelatedGeneralSOPClassUID",
        "OriginalSpecializedSOPClassUID",
    }
)


# ---------------------------------------------------------------- pseudonyms


@dataclass(frozen=True)
class Pseudonymizer:
    """Consistent replacements under one key (one share link): same input, same output.

    ``key`` is secret random bytes: without it the replacements cannot be linked
    back to the originals (a keyed hash, not a plain one, because UIDs and
    patient IDs are guessable).
    """

    key: bytes

    def _digest(self, purpose: str, value: str) -> bytes:
        return hmac.new(self.key, f"{purpose}\0{value}".encode(), hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        """A ``2.25.<128-bit number>`` UID (PS3.5 B.2) standing for ``original``."""
        original = original.strip().rstrip("\0")
        if not original:
            return ""
        return "2.25." + str(int.from_bytes(self._digest("uid", original)[:16], "big"))

    def patient_id(self, original: str) -> str:
        """A pseudonymous patient ID (``ANON`` + 10 hex digits); empty stays empty."""
        original = original.strip()
        if not original:
            return ""
        return "ANON" + self._digest("pid", original)[:5].hex().upper()

    @property
    def day_shift(self) -> int:
        """Days every date moves back: 1 to 10 years, fixed for this key."""
        return 366 + int.from_bytes(self._digest("days", "")[:4], "big") % 3287

    def shift_date(self, value: str) -> str:
        """A DA value moved back by :attr:`day_shift`; "" when it is not a full date."""
        value = value.strip()
        try:
            day = dt.date(int(value[0:4]), int(value[4:6]), int(value[6:8]))
        except (ValueError, IndexError):
            return ""
        if len(value) != 8 or not value.isdigit():
            return ""
        try:
            return (day - dt.timedelta(days=self.day_shift)).strftime("%Y%m%d")
        except OverflowError:
            return ""

    def shift_datetime(self, value: str) -> str:
        """A DT value with its date part moved back (time and offset kept); "" when shorter."""
        value = value.strip()
        if len(value) < 8:
            return ""
        date = self.shift_date(value[:8])
        return date + value[8:] if date else ""


# ---------------------------------------------------------------- datasets


@dataclass
class DeidReport:
    """What de-identifying one dataset did (no identifying values in it)."""

    removed: int = 0
    emptied: int = 0
    replaced_uids: int = 0
    shifted_dates: int = 0
    private_removed: int = 0
    #: "yes" (the source says so), "possible" (kind of image that usually has it), "no"
    burned_in: str = "no"
    notes: list[str] = field(default_factory=list)


def burned_in(ds: Dataset) -> str:
    """Whether the pixels may show identifying text: "yes", "possible" or "no".

    "yes" when Burned In Annotation says YES; "no" when it says NO; otherwise
    "possible" for ultrasound, secondary captures, photographs and documents
    (PS3.3 C.7.6.1.1.7: such images usually carry the patient's name in the
    pixels), and "no" for the rest.
    """
    flag = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if flag == "YES":
        return "yes"
    if flag == "NO":
        return "no"
    modality = str(ds.get("Modality", "") or "").strip().upper()
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if modality in BURNED_IN_MODALITIES or sop_class.startswith(SECONDARY_CAPTURE_PREFIX):
        return "possible"
    return "no"


def _is_repeating_removed(tag: int) -> bool:
    group = tag >> 16
    # Curves (50xx) and overlays (60xx), even groups only: PS3.15 E.1-1 X for both.
    return (0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF) and group % 2 == 0


def _empty_value(elem: DataElement) -> Any:
    return [] if elem.VR == "SQ" else None


def _values(elem: DataElement) -> list[Any]:
    return list(elem.value) if elem.VM > 1 else [elem.value]


def _set_values(elem: DataElement, values: list[str]) -> None:
    elem.value = values if len(values) > 1 else (values[0] if values else "")


def _replace_uid(elem: DataElement, pseudo: Pseudonymizer) -> int:
    replaced = [pseudo.uid(str(v)) for v in _values(elem) if v]
    _set_values(elem, replaced)
    return len(replaced)


def _shift(elem: DataElement, pseudo: Pseudonymizer) -> int:
    shift = pseudo.shift_date if elem.VR == "DA" else pseudo.shift_datetime
    shifted = [shift(str(v)) for v in _values(elem) if v not in (None, "")]
    kept = [v for v in shifted if v]
    _set_values(elem, kept)
    return len(kept)


def _dummy(elem: DataElement) -> Any:
    if elem.VR == "PN":
        return ANONYMOUS_NAME
    if elem.VR in ("LO", "SH", "LT", "ST", "UT", "UC"):
        return DUMMY_TEXT
    return None


def _walk(ds: Dataset, pseudo: Pseudonymizer, report: DeidReport, depth: int) -> None:
    for tag in list(ds.keys()):
        tag_int = int(tag)
        if Tag(tag).is_private:
            del ds[tag]
            report.private_removed += 1
            continue
        if _is_repeating_removed(tag_int):
            del ds[tag]
            report.removed += 1
            continue
        try:
            elem = ds[tag]
        except Exception:  # an element pydicom cannot decode: nothing to judge it by
            del ds[tag]
            report.removed += 1
            continue
        action = _STRICTER.get(tag_int) or ACTIONS.get(tag_int)
        if elem.VR == "SQ":
            if action == "X":
                del ds[tag]
                report.removed += 1
            elif action == "Z":
                elem.value = DicomSequence([])
                report.emptied += 1
            else:
                # D, X/Z, X/D, X/Z/D, X/Z/U* and unlisted: keep the items, clean inside
                for item in elem.value or []:
                    _walk(item, pseudo, report, depth + 1)
            continue
        if action is None:
            _default(ds, elem, pseudo, report)
            continue
        _act(ds, elem, action, pseudo, report)


def _default(ds: Dataset, elem: DataElement, pseudo: Pseudonymizer, report: DeidReport) -> None:
    """Attributes the table does not list: kept, but dates move and instance UIDs change."""
    if elem.VR in ("DA", "DT") and elem.value not in (None, ""):
        report.shifted_dates += _shift(elem, pseudo)
    elif elem.VR == "UI" and elem.value not in (None, ""):
        if elem.keyword in _KEEP_UIDS or str(elem.value).startswith(_DICOM_ROOT):
            return
        # An instance UID the table does not name: replaced all the same, to be safe.
        report.replaced_uids += _replace_uid(elem, pseudo)


def _act(
    ds: Dataset, elem: DataElement, action: str, pseudo: Pseudonymizer, report: DeidReport
) -> None:
    """One listed attribute. How the standard's combined actions are resolved here:

    * U → replaced UID;
    * dates (DA/DT) whose action allows keeping a value (Z, D or a combination)
      → shifted (Modified Dates option); the birth date → emptied;
    * times (TM) whose action allows keeping a value → kept (whole-day shifts
      leave the time of day as it was);
    * any other action starting with X → removed (the attribute is optional);
    * Z → emptied (Patient ID → a pseudonym, Patient's Name → ANONYMOUS, so
      that a reader can still tell studies of one patient apart);
    * D, Z/D → dummy value.
    """
    keyword = elem.keyword
    if action == "U":
        if elem.value not in (None, ""):
            report.replaced_uids += _replace_uid(elem, pseudo)
        return
    if action == "X":
        del ds[elem.tag]
        report.removed += 1
        return
    if elem.VR in ("DA", "DT") and keyword != "PatientBirthDate":
        if elem.value not in (None, ""):
            report.shifted_dates += _shift(elem, pseudo)
        return
    if elem.VR == "TM":
        return
    if action.startswith("X"):
        del ds[elem.tag]
        report.removed += 1
        return
    if keyword == "PatientID":
        elem.value = pseudo.patient_id(str(elem.value or ""))
    elif keyword == "PatientName":
        elem.value = ANONYMOUS_NAME
    elif action == "Z":
        elem.value = _empty_value(elem)
    else:
        elem.value = _dummy(elem)
    report.emptied += 1


def deidentify_dataset(ds: Dataset, pseudo: Pseudonymizer) -> DeidReport:
    """De-identify ``ds`` **in place** (pass a copy) and say what was done.

    Afterwards Patient Identity Removed is YES, the method is recorded
    (De-identification Method and its Code Sequence), Longitudinal Temporal
    Information Modified is MODIFIED, and Burned In Annotation is YES when the
    pixels may carry identifying text (see :func:`burned_in`). The file meta
    information, if any, is rebuilt for the new SOP Instance UID.
    """
    report = DeidReport(burned_in=burned_in(ds))
    _walk(ds, pseudo, report, 0)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = DEIDENTIFICATION_METHOD
    codes = []
    for value, meaning in METHOD_CODES:
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        codes.append(item)
    ds.DeidentificationMethodCodeSequence = DicomSequence(codes)
    ds.LongitudinalTemporalInformationModified = "MODIFIED"
    if "PatientName" not in ds:
        ds.PatientName = ANONYMOUS_NAME
    if "PatientID" not in ds:
        ds.PatientID = ""
    if report.burned_in in ("yes", "possible"):
        ds.BurnedInAnnotation = "YES"
        report.notes.append("pixels may show identifying text")
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        ds.file_meta = _new_meta(ds, meta)
    return report


def _new_meta(ds: Dataset, old: FileMetaDataset) -> FileMetaDataset:
    """File meta for the de-identified object: only what identifies nobody."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", old.get("MediaStorageSOPClassUID", ""))
    meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", "")
    meta.TransferSyntaxUID = old.get("TransferSyntaxUID", pydicom.uid.ExplicitVRLittleEndian)
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "PACS_DEID_1"
    return meta


class DeidentifyError(ValueError):
    """The object cannot be de-identified (unreadable, or written in a form pydicom cannot
    write back): callers leave it out rather than serve it as it is."""


def deidentify_file(source: BinaryIO, pseudo: Pseudonymizer) -> tuple[bytes, DeidReport]:
    """A de-identified Part 10 file made from the Part 10 stream ``source``.

    Pixel data is copied as it is (compressed stays compressed). Raises
    DeidentifyError when the source cannot be read or the result cannot be written.
    """
    try:
        ds = pydicom.dcmread(source, force=True)
    except Exception as exc:
        raise DeidentifyError(f"unreadable object: {exc}") from exc
    report = deidentify_dataset(ds, pseudo)
    out = io.BytesIO()
    try:
        ds.save_as(out, enforce_file_format=True)
    except Exception as exc:
        raise DeidentifyError(f"cannot write the de-identified object: {exc}") from exc
    return out.getvalue(), report


# ---------------------------------------------------------------- index rows


def deidentify_values(values: Mapping[str, Any], pseudo: Pseudonymizer) -> dict[str, Any]:
    """The same rules applied to ``{keyword: value}`` (worklist and series rows).

    Keywords the table does not list are kept, except UIDs (replaced) and dates
    (shifted), as in :func:`deidentify_dataset`; removed attributes become "".
    """
    out: dict[str, Any] = {}
    for keyword, value in values.items():
        action = KEYWORD_ACTIONS.get(keyword)
        text = "" if value is None else value
        if keyword.endswith("UID") and keyword not in _KEEP_UIDS:
            out[keyword] = pseudo.uid(str(text)) if text else ""
        elif keyword == "PatientName":
            out[keyword] = ANONYMOUS_NAME
        elif keyword == "PatientID":
            out[keyword] = pseudo.patient_id(str(text))
        elif keyword == "PatientBirthDate":
            out[keyword] = ""
        elif keyword.endswith("Date") and action != "X":
            out[keyword] = pseudo.shift_date(str(text)) if text else ""
        elif keyword.endswith("Time") and action != "X":
            out[keyword] = text
        elif action is not None:
            out[keyword] = "" if action.startswith(("X", "Z")) else _dummy_text(keyword)
        else:
            out[keyword] = text
    return out


def _dummy_text(keyword: str) -> str:
    return ANONYMOUS_NAME if keyword.endswith("Name") else DUMMY_TEXT


def identifying_keywords() -> Iterable[str]:
    """Keywords the profile removes, empties or replaces (for tests and documentation)."""
    return KEYWORD_ACTIONS.keys()
