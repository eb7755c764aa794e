"""open_for_parsing: the file pydicom parses headers from keeps its own position."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from pacs.dicomfile import open_for_parsing, read_instance
from pacs.errors import InvalidInstance


def test_reads_seeks_and_tells_like_a_plain_file(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(300_000))
    rng = random.Random(7)
    with open_for_parsing(path) as ours, path.open("rb") as plain:
        for _ in range(400):
            action = rng.choice(["read", "read", "seek", "seek-relative", "tell"])
            if action == "read":
                size = rng.choice([0, 1, 7, 4096, 70_000, 400_000])
                assert ours.read(size) == plain.read(size)
            elif action == "seek":
                offset = rng.randrange(0, 320_000)
                assert ours.seek(offset) == plain.seek(offset)
            elif action == "seek-relative":
                offset = rng.randrange(-1000, 1000)
                if plain.tell() + offset >= 0:
                    assert ours.seek(offset, io.SEEK_CUR) == plain.seek(offset, io.SEEK_CUR)
            assert ours.tell() == plain.tell()
        assert ours.read() == plain.read()
    assert ours.closed


def test_a_missing_file_raises_like_open(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_for_parsing(tmp_path / "missing")


def test_headers_parse_through_it(tmp_path: Path) -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        setattr(ds, keyword, generate_uid())
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientName = "Trần^Thị Bích"
    ds.BitsAllocated = 16
    ds.PixelData = b"\x01\x02" * 50_000
    path = tmp_path / "ct.dcm"
    ds.save_as(path, enforce_file_format=True)
    header = read_instance(path).header
    assert header.sop_instance_uid == ds.SOPInstanceUID
    assert header.patient_name == "Trần^Thị Bích"
    # The data set starts with its first element, Specific Character Set (0008,0005).
    assert header.dataset_offset == path.read_bytes().index(b"\x08\x00\x05\x00CS")


def _ct(tmp_path: Path, syntax: str = ExplicitVRLittleEndian) -> tuple[Path, Dataset]:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        setattr(ds, keyword, generate_uid())
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp_path / "ct.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path, ds


def test_the_transfer_syntax_comes_from_the_meta_bytes_as_pydicom_reads_it(
    tmp_path: Path,
) -> None:
    path, _ = _ct(tmp_path, syntax="1.2.840.10008.1.2")  # odd length: padded with NUL
    assert b"1.2.840.10008.1.2\x00" in path.read_bytes()
    parsed = read_instance(path)
    assert parsed.header.transfer_syntax_uid == "1.2.840.10008.1.2"
    assert parsed.dataset.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"
    assert parsed.header.warnings == ()


def test_a_file_meta_naming_another_instance_is_indexed_under_the_data_sets_uid(
    tmp_path: Path,
) -> None:
    path, ds = _ct(tmp_path)
    other = ds.SOPInstanceUID[:-1] + ("1" if ds.SOPInstanceUID[-1] != "1" else "2")
    data = path.read_bytes()
    meta_end = data.index(b"\x08\x00")  # the data set's first element, group 0008
    path.write_bytes(
        data[:meta_end].replace(ds.SOPInstanceUID.encode(), other.encode()) + data[meta_end:]
    )
    header = read_instance(path).header
    assert header.sop_instance_uid == ds.SOPInstanceUID
    assert any(f"File Meta / C-STORE names SOP Instance {other}," in w for w in header.warnings)


def test_a_file_meta_without_transfer_syntax_is_refused(tmp_path: Path) -> None:
    path, _ = _ct(tmp_path)
    data = path.read_bytes()
    # Rename the (0002,0010) element's tag to (0002,0012), keeping every length.
    at = data.index(b"\x02\x00\x10\x00UI")
    path.write_bytes(data[:at] + b"\x02\x00\x12\x00UI" + data[at + 6 :])
    with pytest.raises(InvalidInstance, match="no Transfer Syntax UID"):
        read_instance(path)
