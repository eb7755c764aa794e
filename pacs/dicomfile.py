"""Reading what the index needs from a DICOM Part 10 file, and refusing broken ones.

The header is parsed with pydicom's element generator, skipping large values
(pixel data is never read here). The same pass checks the structure: an
element that claims more bytes than the file holds, or an encapsulated value
without its delimiter, makes the file invalid — the reason is kept for the
log line and the failure status.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

from pydicom import config as pydicom_config
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filereader import data_element_generator, dcmread, read_preamble
from pydicom.filewriter import write_file_meta_info
from pydicom.tag import BaseTag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from pacs.charset import apply_text_codec, clean_text, fold, python_codecs
from pacs.errors import InvalidInstance
from pacs.storage.objects import is_valid_uid

# Values above this size stay on disk: the header fields we index are all short.
DEFER_SIZE = 1024
_PARSE_BUFFER = 64 * 1024
PIXEL_DATA = 0x7FE00010
UNDEFINED_LENGTH = 0xFFFFFFFF

# pydicom warns about every odd value in real-world files; we judge files ourselves.
pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE


@dataclass(frozen=True)
class InstanceHeader:
    """The attributes of one instance that the index keeps (decoded, NFC, unpadded)."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    study_instance_uid: str
    series_instance_uid: str
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    study_date: str
    study_time: str
    accession_number: str
    study_id: str
    study_description: str
    referring_physician: str
    institution: str
    modality: str
    series_number: int | None
    series_description: str
    body_part: str
    series_date: str
    series_time: str
    station_name: str
    instance_number: int | None
    rows: int | None
    columns: int | None
    frames: int | None
    bits_allocated: int | None
    specific_character_set: str
    #: "utf_8" or "cp1258" when the declared character set was wrong and repaired
    repaired_codec: str | None
    #: byte offset of the data set (after the File Meta Information)
    dataset_offset: int
    #: oddities worth a log line that do not make the instance invalid
    warnings: tuple[str, ...] = ()

    @property
    def patient_name_key(self) -> str:
        return fold(self.patient_name)


@dataclass
class ParsedInstance:
    header: InstanceHeader
    dataset: Dataset


# The elements the index reads, with the VR to decode them by (implicit VR files
# do not say). Decoding these few straight from their bytes costs a tenth of
# pydicom's general conversion, on every instance received.
_FIELDS: dict[str, tuple[int, str]] = {
    "SOPInstanceUID": (0x00080018, "UI"),
    "SOPClassUID": (0x00080016, "UI"),
    "StudyInstanceUID": (0x0020000D, "UI"),
    "SeriesInstanceUID": (0x0020000E, "UI"),
    "PatientID": (0x00100020, "LO"),
    "IssuerOfPatientID": (0x00100021, "LO"),
    "PatientName": (0x00100010, "PN"),
    "PatientBirthDate": (0x00100030, "DA"),
    "PatientSex": (0x00100040, "CS"),
    "StudyDate": (0x00080020, "DA"),
    "StudyTime": (0x00080030, "TM"),
    "AccessionNumber": (0x00080050, "SH"),
    "StudyID": (0x00200010, "SH"),
    "StudyDescription": (0x00081030, "LO"),
    "ReferringPhysicianName": (0x00080090, "PN"),
    "InstitutionName": (0x00080080, "LO"),
    "Modality": (0x00080060, "CS"),
    "SeriesNumber": (0x00200011, "IS"),
    "SeriesDescription": (0x0008103E, "LO"),
    "BodyPartExamined": (0x00180015, "CS"),
    "SeriesDate": (0x00080021, "DA"),
    "SeriesTime": (0x00080031, "TM"),
    "StationName": (0x00081010, "SH"),
    "InstanceNumber": (0x00200013, "IS"),
    "Rows": (0x00280010, "US"),
    "Columns": (0x00280011, "US"),
    "NumberOfFrames": (0x00280008, "IS"),
    "BitsAllocated": (0x00280100, "US"),
}
_TEXT_VRS = {"PN", "LO", "SH", "ST", "LT", "UT", "UC"}


class _Fields:
    """Reads the index's fields from raw elements, deferring to pydicom when unsure.

    ``codec`` is the one Python codec that decodes this data set's text, or None
    when its character set needs pydicom (ISO 2022 code extensions).
    """

    def __init__(self, ds: Dataset, little: bool, codec: str | None) -> None:
        self.ds = ds
        self.little = little
        self.codec = codec

    def _raw(self, keyword: str) -> tuple[bytes | None, str, bool]:
        """(value bytes or None, VR, usable): unusable means ask pydicom."""
        tag, vr = _FIELDS[keyword]
        elem = self.ds._dict.get(tag)  # raw, not converted: that is the point
        if elem is None:
            return None, vr, True
        if not isinstance(elem, RawDataElement) or elem.value is None:
            return None, vr, False
        return elem.value, vr, True

    def text(self, keyword: str) -> str:
        value, vr, usable = self._raw(keyword)
        if not usable:
            return _text(self.ds, keyword)
        if not value:
            return ""
        if vr in _TEXT_VRS:
            if self.codec is None:
                return _text(self.ds, keyword)
            decoded = value.decode(self.codec, "replace")
            if vr == "PN":
                # pydicom drops empty trailing component groups ("Wang^Xiao=王^小=").
                decoded = decoded.rstrip(" \x00").rstrip("=")
        else:
            decoded = value.decode("ascii", "replace")
        return "\\".join(clean_text(part) for part in decoded.split("\\"))

    def integer(self, keyword: str) -> int | None:
        value, vr, usable = self._raw(keyword)
        if not usable:
            return _int(self.ds, keyword)
        if not value:
            return None
        if vr == "US":
            if len(value) < 2:
                return None
            return int.from_bytes(value[:2], "little" if self.little else "big")
        try:
            return int(float(value.decode("ascii").split("\\")[0].strip(" \x00")))
        except ValueError:
            return None


def _text(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception:  # a value pydicom cannot convert is as good as absent here
        return ""
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(clean_text(v) for v in value)
    return clean_text(value)


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        if value is None or value == "":
            return None
        if type(value).__name__ == "MultiValue":
            value = value[0]
        return int(float(value))
    except Exception:
        return None


def _date(value: str) -> str:
    """A DA value as YYYYMMDD (old files write 2001.01.31), or "" when it is not a date."""
    cleaned = value.replace(".", "").replace("-", "").strip()
    return cleaned if len(cleaned) == 8 and cleaned.isdigit() else ""


def _time(value: str) -> str:
    """A TM value as HHMMSS[.ffffff]: "1200" and "12:00" become "120000".

    Stored this way, times compare as strings, so range matching needs no parsing.
    """
    cleaned = value.replace(":", "").strip()
    whole, dot, fraction = cleaned.partition(".")
    if not whole.isdigit() or len(whole) > 6 or len(whole) % 2:
        return ""
    fraction = "".join(c for c in fraction if c.isdigit())[:6]
    return whole.ljust(6, "0") + ("." + fraction if dot and fraction else "")


class PositionedReader(io.RawIOBase):
    """A seekable, read-only stream over positioned reads, keeping its own position.

    ``read_into(view, offset)`` fills ``view`` from ``offset`` and returns the count:
    ``os.preadv`` on a local file, a ranged request to a remote object. pydicom asks
    its stream for the position about 55 times per header; on a real file each
    ``tell`` was an ``lseek`` system call, which also gives the GIL away.
    """

    def __init__(
        self,
        read_into: Callable[[memoryview, int], int],
        size: int,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self._read_into = read_into
        self._size = size
        self._on_close = on_close
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: Any) -> int:
        wanted = min(len(buffer), self._size - self._position)
        if wanted <= 0:
            return 0
        with memoryview(buffer) as view:
            count = self._read_into(view[:wanted], self._position)
        self._position += count
        return count

    def close(self) -> None:
        if not self.closed and self._on_close is not None:
            self._on_close()
        super().close()


def positioned_stream(
    read_into: Callable[[memoryview, int], int],
    size: int,
    buffer_size: int,
    on_close: Callable[[], None] | None = None,
) -> BinaryIO:
    """A buffered :class:`PositionedReader`: many small reads cost one positioned read."""
    reader = PositionedReader(read_into, size, on_close)
    return io.BufferedReader(reader, buffer_size)  # type: ignore[return-value]


def open_for_parsing(path: str | Path) -> BinaryIO:
    """``open(path, "rb")`` for pydicom's readers: buffered, with a free ``tell``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
    except OSError:
        os.close(fd)
        raise
    return positioned_stream(
        lambda view, offset: os.preadv(fd, [view], offset),
        size,
        _PARSE_BUFFER,
        on_close=lambda: os.close(fd),
    )


def _read_meta(fp: BinaryIO) -> tuple[FileMetaDataset, int]:
    """Parse group 0002 at the current position; returns it and where the data set starts."""
    raw: dict[BaseTag, RawDataElement] = {}
    gen = data_element_generator(
        fp, False, True, stop_when=lambda tag, vr, length: tag.group != 0x0002
    )
    for elem in gen:
        raw[elem.tag] = elem
    meta = FileMetaDataset(raw)
    return meta, fp.tell()


def _meta_uid(meta: FileMetaDataset, tag: int) -> str:
    """A UID of the File Meta Information, read from its bytes when it is still raw:
    pydicom's conversion of one value cost as much as a tenth of the whole parse."""
    elem = meta._dict.get(BaseTag(tag))
    if elem is None:
        return ""
    value = elem.value
    if isinstance(elem, RawDataElement) and isinstance(value, bytes):
        return value.decode("ascii", "replace").strip("\x00 ")
    return str(meta.get(tag).value or "").strip("\x00 ")


def _read_raw(
    fp: BinaryIO, size: int, ts: UID, defer_size: int | None = DEFER_SIZE
) -> dict[BaseTag, Any]:
    elements: dict[BaseTag, Any] = {}
    try:
        for elem in data_element_generator(
            fp, ts.is_implicit_VR, ts.is_little_endian, defer_size=defer_size
        ):
            length = getattr(elem, "length", None)
            tell = getattr(elem, "value_tell", None)
            if (
                length is not None
                and tell is not None
                and length != UNDEFINED_LENGTH
                and tell + length > size
            ):
                raise InvalidInstance(
                    f"truncated: element {elem.tag} declares {length} bytes but the "
                    f"file ends {size - tell} bytes after its start"
                )
            elements[elem.tag] = elem
    except InvalidInstance:
        raise
    except EOFError as exc:
        raise InvalidInstance(f"truncated: {exc}") from exc
    except Exception as exc:
        raise InvalidInstance(f"unreadable data set: {type(exc).__name__}: {exc}") from exc
    return elements


def _inflated_dataset(fp: BinaryIO) -> dict[BaseTag, Any]:
    try:
        data = zlib.decompress(fp.read(), -zlib.MAX_WBITS)
    except zlib.error as exc:
        raise InvalidInstance(f"deflated data set does not inflate: {exc}") from exc
    # Offsets point into the inflated buffer, so nothing may be deferred to the file.
    return _read_raw(BytesIO(data), len(data), ExplicitVRLittleEndian, defer_size=None)


def read_instance(path: Path) -> ParsedInstance:
    """Parse and check the Part 10 file at ``path``.

    Raises :class:`InvalidInstance` with a human-readable reason when the file is
    not DICOM, is truncated, lacks a required UID, or has an invalid UID.
    """
    try:
        size = path.stat().st_size
        with open_for_parsing(path) as fp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                read_preamble(fp, False)
            except Exception as exc:
                raise InvalidInstance("not a DICOM Part 10 file (no DICM prefix)") from exc
            meta, offset = _read_meta(fp)
            ts_value = _meta_uid(meta, 0x00020010)
            if not ts_value:
                raise InvalidInstance("File Meta Information has no Transfer Syntax UID")
            ts = UID(ts_value)
            if ts == DeflatedExplicitVRLittleEndian:
                raw = _inflated_dataset(fp)
            elif ts.is_transfer_syntax:
                raw = _read_raw(fp, size, ts)
            elif ts.is_valid:
                # An unknown transfer syntax UID: every one defined since 2005 that
                # pydicom does not know is an encapsulated (compressed) syntax, and
                # those are explicit VR little endian outside the pixel data.
                raw = _read_raw(fp, size, ExplicitVRLittleEndian)
            else:
                raise InvalidInstance(f"invalid Transfer Syntax UID {ts[:70]!r}")
    except OSError as exc:
        raise InvalidInstance(f"cannot read file: {exc}") from exc
    if not raw:
        raise InvalidInstance("empty data set")

    implicit = ts.is_implicit_VR if ts.is_transfer_syntax else False
    little = ts.is_little_endian if ts.is_transfer_syntax else True
    ds: Dataset
    if ts == DeflatedExplicitVRLittleEndian:
        ds = Dataset(raw)
        ds.file_meta = meta
    else:
        # A FileDataset knows its file, so a deferred value can still be read on demand.
        ds = FileDataset(
            str(path), raw, file_meta=meta, is_implicit_VR=implicit, is_little_endian=little
        )
    charset_elem = raw.get(BaseTag(0x00080005))
    declared = ""
    if charset_elem is not None and getattr(charset_elem, "value", None):
        declared = charset_elem.value.decode("ascii", "replace").strip(" \x00")
    codecs = python_codecs(declared.split("\\"))
    ds.set_original_encoding(implicit, little, codecs)
    repaired = apply_text_codec(ds)
    single = repaired or (
        codecs[0] if len(codecs) == 1 and not declared.startswith("ISO 2022") else None
    )
    fields = _Fields(ds, little, single)
    return ParsedInstance(_header(ds, fields, ts, declared, repaired, offset), ds)


def _header(
    ds: Dataset, f: _Fields, ts: str, declared: str, repaired: str | None, offset: int
) -> InstanceHeader:
    uids = {}
    for keyword in ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID"):
        value = f.text(keyword)
        if not value:
            raise InvalidInstance(f"missing {keyword}")
        if not is_valid_uid(value):
            raise InvalidInstance(f"{keyword} {value[:70]!r} is not a valid UID")
        uids[keyword] = value
    notes = []
    meta_sop = _meta_uid(ds.file_meta, 0x00020003)
    if meta_sop and meta_sop != uids["SOPInstanceUID"]:
        # The data set is the instance; the header (or C-STORE command) only names it.
        notes.append(
            f"File Meta / C-STORE names SOP Instance {meta_sop}, the data set says "
            f"{uids['SOPInstanceUID']}: indexed under the data set's UID"
        )
    if repaired:
        notes.append(f"text decoded as {repaired} although the file declares {declared!r}")
    return InstanceHeader(
        sop_instance_uid=uids["SOPInstanceUID"],
        sop_class_uid=uids["SOPClassUID"],
        transfer_syntax_uid=str(ts),
        study_instance_uid=uids["StudyInstanceUID"],
        series_instance_uid=uids["SeriesInstanceUID"],
        patient_id=f.text("PatientID"),
        issuer_of_patient_id=f.text("IssuerOfPatientID"),
        patient_name=f.text("PatientName"),
        patient_birth_date=_date(f.text("PatientBirthDate")),
        patient_sex=f.text("PatientSex")[:16],
        study_date=_date(f.text("StudyDate")),
        study_time=_time(f.text("StudyTime")),
        accession_number=f.text("AccessionNumber")[:64],
        study_id=f.text("StudyID")[:16],
        study_description=f.text("StudyDescription")[:64],
        referring_physician=f.text("ReferringPhysicianName")[:324],
        institution=f.text("InstitutionName")[:64],
        modality=f.text("Modality")[:16],
        series_number=f.integer("SeriesNumber"),
        series_description=f.text("SeriesDescription")[:64],
        body_part=f.text("BodyPartExamined")[:64],
        series_date=_date(f.text("SeriesDate")),
        series_time=_time(f.text("SeriesTime")),
        station_name=f.text("StationName")[:64],
        instance_number=f.integer("InstanceNumber"),
        rows=f.integer("Rows"),
        columns=f.integer("Columns"),
        frames=f.integer("NumberOfFrames") or (1 if PIXEL_DATA in ds else None),
        bits_allocated=f.integer("BitsAllocated"),
        specific_character_set=declared[:64],
        repaired_codec=repaired,
        dataset_offset=offset,
        warnings=tuple(notes),
    )


def has_part10_prefix(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def wrap_in_part10(source: Path, directory: Path) -> Path:
    """Write a Part 10 copy of a file that lacks the preamble or File Meta Information.

    The data set bytes are copied unchanged after a new File Meta header; the
    transfer syntax is the one the file declares in a partial meta group, or the
    one pydicom infers. Raises :class:`InvalidInstance` if that is impossible.
    """
    with source.open("rb") as fp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        partial, offset = _read_meta(fp)
        try:
            fp.seek(offset)
            ds = dcmread(fp, force=True, stop_before_pixels=True)
        except Exception as exc:
            raise InvalidInstance(f"not a DICOM file: {exc}") from exc
    ts_value = partial.get("TransferSyntaxUID")
    if ts_value:
        ts = UID(str(ts_value).strip("\x00 "))
    else:
        implicit, little = ds.original_encoding
        if implicit is None:
            raise InvalidInstance("not a DICOM file: no recognisable data elements")
        ts = (
            ImplicitVRLittleEndian
            if implicit
            else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
        )
    sop_class = str(ds.get("SOPClassUID", "") or "")
    sop_uid = str(ds.get("SOPInstanceUID", "") or "")
    if not (is_valid_uid(sop_class) and is_valid_uid(sop_uid)):
        raise InvalidInstance("not a DICOM instance: no valid SOP Class / SOP Instance UID")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.8.498.1")
    fd, name = tempfile.mkstemp(dir=directory, suffix=".dcm")
    with os.fdopen(fd, "wb") as out, source.open("rb") as src:
        out.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(out, meta, enforce_standard=True)  # type: ignore[arg-type]
        src.seek(offset)
        shutil.copyfileobj(src, out, 1 << 20)
    return Path(name)


def iter_dataset_bytes(fp: BinaryIO, offset: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    """The stored data set (without File Meta), as sent over DICOM."""
    fp.seek(offset)
    while data := fp.read(chunk):
        yield data
