"""C-FIND / C-MOVE / C-GET identifiers ↔ archive queries and response data sets."""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from pacs.charset import python_codecs
from pacs.errors import InvalidQuery
from pacs.scp.tuning import PreEncoded
from pacs.storage.matching import Level, Query

PATIENT_ROOT = "patient"
STUDY_ROOT = "study"

# Keys every response at a level carries (PS3.4 C.6.1.1 / C.6.2.1 unique keys).
_UNIQUE_KEYS = {
    Level.PATIENT: ("PatientID",),
    Level.STUDY: ("StudyInstanceUID",),
    Level.SERIES: ("SeriesInstanceUID",),
    Level.IMAGE: ("SOPInstanceUID",),
}
_LEVEL_ORDER = [Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE]
_NOT_CRITERIA = {"QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle"}
_INTEGER_KEYS = {
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "NumberOfSeriesRelatedInstances",
    "NumberOfPatientRelatedStudies",
    "NumberOfPatientRelatedSeries",
    "NumberOfPatientRelatedInstances",
    "SeriesNumber",
    "InstanceNumber",
}


def query_level(identifier: Dataset, model: str) -> Level:
    raw = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    try:
        level = Level(raw)
    except ValueError as exc:
        raise InvalidQuery(f"invalid QueryRetrieveLevel {raw!r}") from exc
    if level is Level.PATIENT and model == STUDY_ROOT:
        raise InvalidQuery("PATIENT level is not part of the Study Root model")
    return level


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(_as_text(v) for v in value)
    if isinstance(value, PersonName):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value)


def to_query(identifier: Dataset, model: str) -> tuple[Query, list[DataElement]]:
    """The archive query and the return keys (as elements) an identifier asks for."""
    level = query_level(identifier, model)
    criteria: dict[str, str] = {}
    requested: list[DataElement] = []
    for elem in identifier:
        if elem.tag.group in (0x0000, 0x0002) or elem.keyword in _NOT_CRITERIA:
            continue
        requested.append(elem)
        if elem.VR == "SQ" or not elem.keyword:
            continue
        try:
            text = _as_text(elem.value).strip()
        except Exception as exc:  # undecodable bytes in the request
            raise InvalidQuery(f"cannot decode {elem.keyword}: {exc}") from exc
        if text:
            criteria[elem.keyword] = text
    return Query(level, criteria), requested


def retrieve_selectors(identifier: Dataset, model: str) -> dict[str, Any]:
    """UIDs a C-MOVE / C-GET identifier selects, as ``Archive.instances`` arguments.

    PS3.4 C.4.2.2.1: the unique keys of the retrieve level and above; lists of
    UIDs are allowed at the retrieve level.
    """
    level = query_level(identifier, model)

    def uids(keyword: str) -> list[str]:
        value = identifier.get(keyword)
        if value is None or value == "":
            return []
        text = _as_text(value)
        return [u.strip() for u in text.split("\\") if u.strip()]

    selectors: dict[str, Any] = {}
    if level is Level.PATIENT:
        patient_ids = uids("PatientID")
        if len(patient_ids) != 1:
            raise InvalidQuery("a PATIENT level retrieve needs exactly one PatientID")
        selectors["patient_id"] = patient_ids[0]
        return selectors
    studies = uids("StudyInstanceUID")
    if not studies:
        raise InvalidQuery("a retrieve needs StudyInstanceUID")
    selectors["study_uids"] = studies
    if level in (Level.SERIES, Level.IMAGE):
        series = uids("SeriesInstanceUID")
        if not series:
            raise InvalidQuery(f"a {level} level retrieve needs SeriesInstanceUID")
        selectors["series_uids"] = series
    if level is Level.IMAGE:
        sops = uids("SOPInstanceUID")
        if not sops:
            raise InvalidQuery("an IMAGE level retrieve needs SOPInstanceUID")
        selectors["sop_uids"] = sops
    return selectors


def response_keywords(query: Query, requested: Sequence[DataElement]) -> list[str]:
    """What the index must fetch: the requested keys plus the unique keys down to the level."""
    keywords = [e.keyword for e in requested if e.keyword]
    depth = _LEVEL_ORDER.index(query.level)
    for level in _LEVEL_ORDER[: depth + 1]:
        if level is Level.PATIENT and query.level is not Level.PATIENT:
            continue
        keywords.extend(_UNIQUE_KEYS[level])
    return list(dict.fromkeys(keywords))


def _encodable(values: Sequence[str], charset: str) -> bool:
    codecs = python_codecs(charset.split("\\") if charset else "")
    for value in values:
        if value.isascii():
            continue
        # ISO 2022 sets switch code pages with escapes; pydicom does that per value.
        if not any(_fits(value, codec) for codec in codecs):
            return False
    return True


def _fits(value: str, codec: str) -> bool:
    try:
        value.encode(codec)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


@functools.cache
def _tag_vr(keyword: str) -> tuple[int, str]:
    return tag_for_keyword(keyword) or 0, dictionary_VR(keyword)


# Text VRs we encode ourselves; the charset-dependent ones (PS3.5 6.1.2.3) use the
# response's character set, the others are ASCII.
_CHARSET_VRS = frozenset({"SH", "LO", "ST", "PN", "LT", "UC", "UT"})
_ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"})
# Explicit VR elements with a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)


class ResponseIdentifier(PreEncoded):
    """A C-FIND response identifier, encoded straight from the index row.

    A study list can be thousands of responses, and a pydicom data set built and
    written for each cost ~0.35 ms, most of a response's time on the wire. The
    elements here are flat text (or empty), so they encode in a few
    microseconds; anything else (ISO 2022 names, big endian, an unusual VR)
    goes through pydicom as before.
    """

    __slots__ = ("_charset", "_elements")

    def __init__(self, elements: dict[int, tuple[str, Any]], charset: str) -> None:
        self._elements = elements
        self._charset = charset

    def dataset(self) -> Dataset:
        ds = Dataset()
        for tag, (vr, value) in sorted(self._elements.items()):
            ds[tag] = DataElement(tag, vr, value)
        return ds

    def _codec(self, texts: Sequence[str]) -> str | None:
        if all(t.isascii() for t in texts):
            return "ascii"
        charset = self._charset
        if "\\" in charset or charset.startswith("ISO 2022"):
            return None  # code extensions switch sets within a value: pydicom's job
        return python_codecs([charset])[0]

    def encode_for(self, implicit_vr: bool, little_endian: bool) -> bytes | None:
        if not little_endian:
            return None
        # Values as text once: None, "" and [] are empty values.
        items = [
            (tag, vr, "\\".join(value) if isinstance(value, list) else value or "")
            for tag, (vr, value) in sorted(self._elements.items())
        ]
        codec = self._codec([text for _tag, _vr, text in items if text])
        if codec is None:
            return None
        parts = []
        for tag, vr, text in items:
            if not text:
                payload = b""
            elif vr in _CHARSET_VRS:
                payload = text.encode(codec)
            elif vr in _ASCII_VRS and text.isascii():
                payload = text.encode("ascii")
            else:
                return None
            if len(payload) % 2:
                payload += b"\x00" if vr == "UI" else b" "
            group, element = tag >> 16, tag & 0xFFFF
            if implicit_vr:
                parts.append(struct.pack("<HHI", group, element, len(payload)))
            elif vr in _LONG_VRS:
                parts.append(struct.pack("<HH2sHI", group, element, vr.encode(), 0, len(payload)))
            elif len(payload) < 0x10000 and len(vr) == 2:
                parts.append(struct.pack("<HH2sH", group, element, vr.encode(), len(payload)))
            else:
                return None
            parts.append(payload)
        return b"".join(parts)


def build_response(
    row: dict[str, Any],
    query: Query,
    requested: Sequence[DataElement],
    *,
    request_charset: str,
    retrieve_ae: str,
) -> ResponseIdentifier:
    """One C-FIND response identifier in the requested (or a sufficient) character set."""
    elements: dict[int, tuple[str, Any]] = {}
    texts = [v for v in row.values() if isinstance(v, str)]
    charset = request_charset
    if not _encodable(texts, charset):
        # The requested set cannot carry these names; UTF-8 can carry any.
        charset = "ISO_IR 192"
    if charset:
        elements[0x00080005] = ("CS", charset.split("\\") if "\\" in charset else charset)
    elements[0x00080052] = ("CS", query.level.value)
    for elem in requested:
        keyword = elem.keyword
        if keyword and keyword in row:
            _put(elements, keyword, row[keyword])
        elif keyword == "InstanceAvailability":
            _put(elements, keyword, "ONLINE")
        elif elem.VR == "SQ":
            elements[elem.tag] = ("SQ", [])
        else:
            # PS3.4 C.2.2.3: a requested key we do not keep is returned empty.
            elements[elem.tag] = (elem.VR, None)
    for keyword in _UNIQUE_KEYS[query.level]:
        if keyword in row and _tag_vr(keyword)[0] not in elements:
            _put(elements, keyword, row[keyword])
    _put(elements, "RetrieveAETitle", retrieve_ae)
    return ResponseIdentifier(elements, charset)


def _put(elements: dict[int, tuple[str, Any]], keyword: str, value: Any) -> None:
    tag, vr = _tag_vr(keyword)
    if value is None or value == "":
        value = None
    elif keyword == "ModalitiesInStudy":
        value = [m for m in str(value).split("\\") if m]
    elif keyword in _INTEGER_KEYS:
        value = str(int(value))
    elements[tag] = (vr, value)
