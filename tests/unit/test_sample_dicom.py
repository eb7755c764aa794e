"""The committed sample studies: valid Part 10 files, decodable, recognisable, reproducible."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileDataset
from pydicom.filebase import DicomBytesIO
from pydicom.pixels import apply_modality_lut
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    MRImageStorage,
    UltrasoundMultiFrameImageStorage,
)

SAMPLES = Path(__file__).resolve().parents[2] / "sample_dicom"
UID_ROOT = "1.2.826.0.1.3680043.8.498."
VIETNAMESE_NAME = "Nguyễn^Thị Hồng Nhung"

# folder -> (number of files, SOP class, transfer syntax, modality)
EXPECTED = {
    "ct_head": (128, CTImageStorage, JPEGLSLossless, "CT"),
    "mr_brain": (24, MRImageStorage, ExplicitVRLittleEndian, "MR"),
    "cr_chest": (2, ComputedRadiographyImageStorage, JPEG2000Lossless, "CR"),
    "us_cine": (1, UltrasoundMultiFrameImageStorage, JPEGBaseline8Bit, "US"),
}

REQUIRED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "StudyDescription",
    "ReferringPhysicianName",
    "SeriesNumber",
    "SeriesDescription",
    "BodyPartExamined",
    "Modality",
    "Manufacturer",
    "InstitutionName",
    "StationName",
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "InstanceNumber",
)
PATIENT_AND_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "AccessionNumber",
    "StudyID",
)

# Encoders we do not own (CharLS, OpenJPEG, libjpeg-turbo inside Pillow) may emit different
# bytes after an upgrade while the image stays the same. Value: tolerated mean absolute pixel
# difference (0 = lossless, must be exact). Natively stored pixels have no such excuse.
THIRD_PARTY_CODECS = {JPEGLSLossless: 0.0, JPEG2000Lossless: 0.0, JPEGBaseline8Bit: 1.0}
# Derived from the encoded size, so it legitimately moves with the JPEG encoder.
ENCODER_DEPENDENT_TAGS = (0x7FE00010, 0x00282112)  # Pixel Data, Lossy Image Compression Ratio


def sample_files(folder: str | None = None) -> list[Path]:
    pattern = f"{folder}/*.dcm" if folder else "*/*.dcm"
    return sorted(SAMPLES.glob(pattern))


@pytest.fixture(scope="module")
def datasets() -> dict[Path, FileDataset]:
    return {path: pydicom.dcmread(path) for path in sample_files()}


def of(datasets: dict[Path, FileDataset], folder: str) -> list[FileDataset]:
    return [ds for path, ds in datasets.items() if path.parent.name == folder]


def load_generator() -> ModuleType:
    # sample_dicom/ is not a package; dataclasses need the module registered while it loads.
    spec = importlib.util.spec_from_file_location("sample_dicom_generate", SAMPLES / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Keep sample_dicom/ free of a __pycache__ that would only add to its size.
    write_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
        sys.dont_write_bytecode = write_bytecode
    return module


# ----------------------------------------------------------------------------------------------
# Files and headers
# ----------------------------------------------------------------------------------------------


def test_layout_and_size_budget() -> None:
    assert {p.parent.name for p in sample_files()} == set(EXPECTED)
    for folder, (count, *_rest) in EXPECTED.items():
        assert len(sample_files(folder)) == count, folder
    sizes = [p.stat().st_size for p in sample_files()]
    assert max(sizes) < 4_000_000
    assert sum(sizes) < 20_000_000


@pytest.mark.parametrize("folder", sorted(EXPECTED))
def test_part10_file_meta(folder: str, datasets: dict[Path, FileDataset]) -> None:
    _, sop_class, transfer_syntax, modality = EXPECTED[folder]
    for path in sample_files(folder):
        head = path.read_bytes()[:132]
        assert head[:128] == b"\0" * 128 and head[128:] == b"DICM", path.name
        ds = datasets[path]
        meta = ds.file_meta
        assert meta.TransferSyntaxUID == transfer_syntax
        assert meta.MediaStorageSOPClassUID == ds.SOPClassUID == sop_class
        assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert UID(meta.ImplementationClassUID).is_valid
        assert meta.ImplementationVersionName
        assert ds.Modality == modality


@pytest.mark.parametrize("folder", sorted(EXPECTED))
def test_required_attributes_are_consistent(folder: str, datasets: dict[Path, FileDataset]) -> None:
    series = of(datasets, folder)
    for ds in series:
        missing = [k for k in REQUIRED if k not in ds or ds[k].value in (None, "")]
        assert not missing, missing
        for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
            uid = UID(ds[keyword].value)
            assert uid.is_valid and uid.startswith(UID_ROOT), (keyword, uid)
        if folder in ("ct_head", "mr_brain"):
            assert UID(ds.FrameOfReferenceUID).is_valid
    # One patient and one study per folder; instance numbers 1..n within each series.
    for keyword in PATIENT_AND_STUDY:
        assert len({str(ds[keyword].value) for ds in series}) == 1, keyword
    by_series: dict[str, list[int]] = {}
    for ds in series:
        by_series.setdefault(ds.SeriesInstanceUID, []).append(int(ds.InstanceNumber))
    for numbers in by_series.values():
        assert sorted(numbers) == list(range(1, len(numbers) + 1))


def test_uids_are_unique_across_studies(datasets: dict[Path, FileDataset]) -> None:
    sop_uids = [ds.SOPInstanceUID for ds in datasets.values()]
    assert len(set(sop_uids)) == len(sop_uids)
    studies = {folder: {ds.StudyInstanceUID for ds in of(datasets, folder)} for folder in EXPECTED}
    assert len(set.union(*studies.values())) == len(EXPECTED)
    patients = {ds.PatientID for ds in datasets.values()}
    assert len(patients) == len(EXPECTED)


def test_readme_describes_every_study() -> None:
    readme = (SAMPLES / "README.md").read_text(encoding="utf-8")
    for folder in EXPECTED:
        assert f"{folder}/" in readme, folder


# ----------------------------------------------------------------------------------------------
# Pixel data
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", sorted(EXPECTED))
def test_pixel_data_decodes(folder: str, datasets: dict[Path, FileDataset]) -> None:
    for ds in of(datasets, folder):
        pixels = ds.pixel_array
        frames = int(ds.get("NumberOfFrames", 1))
        shape = (ds.Rows, ds.Columns) if ds.SamplesPerPixel == 1 else (ds.Rows, ds.Columns, 3)
        assert pixels.shape == ((frames, *shape) if frames > 1 else shape)
        assert int(pixels.max()) < 2**ds.BitsStored
        assert pixels.std() > 0


def ct_slice(datasets: dict[Path, FileDataset], z: float) -> tuple[FileDataset, np.ndarray]:
    ds = next(ds for ds in of(datasets, "ct_head") if float(ds.ImagePositionPatient[2]) == z)
    return ds, apply_modality_lut(ds.pixel_array, ds)


def test_ct_geometry(datasets: dict[Path, FileDataset]) -> None:
    series = sorted(of(datasets, "ct_head"), key=lambda ds: int(ds.InstanceNumber))
    z = np.array([float(ds.ImagePositionPatient[2]) for ds in series])
    assert np.allclose(np.diff(z), 1.25)
    for ds, position in zip(series, z, strict=True):
        assert float(ds.SliceLocation) == position
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert [float(v) for v in ds.PixelSpacing] == [0.45, 0.45]
        assert (ds.Rows, ds.Columns, ds.BitsAllocated) == (512, 512, 16)
        assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, -1024.0)
        assert [float(v) for v in ds.WindowCenter] == [40, 600]


def test_ct_phantom_is_a_head(datasets: dict[Path, FileDataset]) -> None:
    """Slice at z = +15 mm, through the lateral ventricles."""
    _, hu = ct_slice(datasets, 15.0)

    def at(x_mm: float, y_mm: float, half: int = 3) -> float:
        row, col = round(y_mm / 0.45 + 255.5), round(x_mm / 0.45 + 255.5)
        return float(hu[row - half : row + half + 1, col - half : col + half + 1].mean())

    air = float(hu[:40, :40].mean())
    white, gray, ventricle = at(-35, -30), at(-58, 0, 2), at(-10, 4, 2)
    assert -1005 < air < -995
    assert 20 < white < 36
    assert 33 < gray < 47 and gray > white + 5
    assert ventricle < 15
    skull_row = hu[256, :]
    assert skull_row.max() > 900  # the bone window shows the calvarium
    inside_skull = hu[256 - 60 : 256 + 60, 256 - 60 : 256 + 60]
    assert 10 < float(np.median(inside_skull)) < 45
    assert float(np.median(inside_skull)) - air > 1000


def test_mr_has_t2_contrast(datasets: dict[Path, FileDataset]) -> None:
    ds = next(ds for ds in of(datasets, "mr_brain") if float(ds.SliceLocation) == 14.0)
    img = ds.pixel_array.astype(float)

    def at(x_mm: float, y_mm: float) -> float:
        row, col = round(y_mm / 0.8984375 + 127.5), round(x_mm / 0.8984375 + 127.5)
        return float(img[row - 1 : row + 2, col - 1 : col + 2].mean())

    assert at(-10.4, 4.2) > 2 * at(-36, -31)  # CSF bright, white matter dark on T2
    assert float(img[:20, :20].mean()) < 60  # Rician background noise only
    assert ds.EchoTime and ds.RepetitionTime and float(ds.MagneticFieldStrength) == 1.5


def test_cr_chest_contrast(datasets: dict[Path, FileDataset]) -> None:
    pa = next(ds for ds in of(datasets, "cr_chest") if ds.ViewPosition == "PA")
    img = pa.pixel_array.astype(float)
    assert pa.PhotometricInterpretation == "MONOCHROME1" and pa.BitsStored == 12
    lung = img[980:1020, 435:475].mean()  # right lung, 85 mm from the midline
    spine = img[980:1020, 860:900].mean()
    # MONOCHROME1: more exposure (air-filled lung) is a higher value, displayed darker.
    assert lung > spine + 800
    assert img[:10, :10].mean() < 300  # collimated border, unexposed


def test_us_cine_moves(datasets: dict[Path, FileDataset]) -> None:
    ds = of(datasets, "us_cine")[0]
    frames = ds.pixel_array
    assert frames.shape == (30, 480, 640, 3)
    assert ds.PhotometricInterpretation == "YBR_FULL_422"
    assert int(ds.CineRate) == 30 and float(ds.FrameTime) * 30 == pytest.approx(1000, abs=0.01)
    assert frames[:, 5, 5].max() < 20  # outside the fan
    fan = frames[:, 150:350, 250:400, 0].astype(float)
    assert fan.mean() > 30
    assert np.abs(fan[7] - fan[0]).mean() > 5  # systole: the heart has contracted
    ecg = frames[0, 450:480, 100:500]
    assert (ecg[..., 1] > 150).any() and (ecg[..., 1].astype(int) - ecg[..., 0] > 100).any()


# ----------------------------------------------------------------------------------------------
# Character sets
# ----------------------------------------------------------------------------------------------


def test_vietnamese_name_round_trips(datasets: dict[Path, FileDataset]) -> None:
    path = SAMPLES / "ct_head" / "CT_001.dcm"
    ds = datasets[path]
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == VIETNAMESE_NAME
    assert ds.PatientName.family_name == "Nguyễn"
    assert ds.PatientName.given_name == "Thị Hồng Nhung"
    assert ds.InstitutionName == "Bệnh viện Đa khoa tỉnh Quảng Nam"
    assert VIETNAMESE_NAME.encode("utf-8") in path.read_bytes()
    # And back out again through pydicom's writer.
    buffer = DicomBytesIO()
    ds.save_as(buffer)
    again = pydicom.dcmread(DicomBytesIO(buffer.getvalue()))
    assert str(again.PatientName) == VIETNAMESE_NAME
    assert again.StudyDescription == "CT sọ não không tiêm thuốc"


def test_ascii_studies_declare_no_character_set(datasets: dict[Path, FileDataset]) -> None:
    for folder in ("mr_brain", "us_cine"):
        for ds in of(datasets, folder):
            assert "SpecificCharacterSet" not in ds
            assert str(ds.PatientName).isascii()


# ----------------------------------------------------------------------------------------------
# Reproducibility
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("sample_dicom")
    load_generator().generate(out)
    yield out


def header(ds: Dataset) -> Dataset:
    for tag in ENCODER_DEPENDENT_TAGS:
        ds.pop(tag, None)
    return ds


def assert_same_image(committed: Path, fresh: Path) -> None:
    old, new = pydicom.dcmread(committed), pydicom.dcmread(fresh)
    ts = old.file_meta.TransferSyntaxUID
    assert ts in THIRD_PARTY_CODECS, f"{committed.name}: natively encoded, bytes must match"
    assert old.file_meta == new.file_meta
    difference = np.abs(old.pixel_array.astype(float) - new.pixel_array.astype(float))
    assert difference.mean() <= THIRD_PARTY_CODECS[ts], committed.name
    assert header(old) == header(new), committed.name


def test_regeneration_reproduces_committed_files(regenerated: Path) -> None:
    committed = {p.relative_to(SAMPLES) for p in sample_files()}
    fresh = {p.relative_to(regenerated) for p in sorted(regenerated.glob("*/*.dcm"))}
    assert fresh == committed
    for relative in sorted(committed):
        if (SAMPLES / relative).read_bytes() != (regenerated / relative).read_bytes():
            assert_same_image(SAMPLES / relative, regenerated / relative)
