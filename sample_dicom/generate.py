"""Generate the synthetic sample studies shipped in ``sample_dicom/``.

    python sample_dicom/generate.py [--out DIR]

Every image is a mathematical phantom: no real patient data is involved. The output is
deterministic (fixed seeds, UIDs hashed from fixed names, fixed dates), so the same script with the
same library versions writes byte-identical files. See ``sample_dicom/README.md`` for the key.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from enum import IntEnum
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import config, dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    MRImageStorage,
    UltrasoundMultiFrameImageStorage,
)

# pydicom's root: the project has no registered root, and hashing below it keeps UIDs unique.
UID_ROOT = "1.2.826.0.1.3680043.8.498."
IMPLEMENTATION_VERSION_NAME = "PACS_SAMPLES_1"
MANUFACTURER = "PACS synthetic phantom"
SOFTWARE_VERSION = "sample_dicom/generate.py 1"
SYNTHETIC_NOTE = "Synthetic phantom made by sample_dicom/generate.py - not a real patient"

Array = np.ndarray


def make_uid(*parts: str) -> str:
    """A UID that depends only on ``parts``, so every run names every object identically."""
    digest = hashlib.sha256("/".join(("pacs-sample-dicom", *parts)).encode()).digest()
    # 120 bits give at most 37 digits: 26 (root) + 37 stays within the 64-character UI limit.
    return UID_ROOT + str(int.from_bytes(digest[:15], "big"))


IMPLEMENTATION_CLASS_UID = make_uid("implementation-class", IMPLEMENTATION_VERSION_NAME)


def ds_str(value: float) -> str:
    """Format a DS value ourselves so float repr changes can never alter the files."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


# --------------------------------------------------------------------------------------------
# Who, where and when
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Patient:
    name: str
    patient_id: str
    birth_date: str
    sex: str


@dataclass(frozen=True)
class Study:
    folder: str
    patient: Patient
    study_date: str
    study_time: str
    accession: str
    study_id: str
    description: str
    referring_physician: str
    institution: str
    department: str
    station: str
    model: str
    body_part: str
    # None means the default repertoire: old modalities in Vietnam often strip the diacritics.
    charset: str | None


INSTITUTION_VI = "Bệnh viện Đa khoa tỉnh Quảng Nam"
INSTITUTION_ASCII = "BENH VIEN DA KHOA TINH QUANG NAM"

CT_STUDY = Study(
    folder="ct_head",
    patient=Patient("Nguyễn^Thị Hồng Nhung", "24003817", "19680314", "F"),
    study_date="20240318",
    study_time="084210",
    accession="CT2403180012",
    study_id="1012",
    description="CT sọ não không tiêm thuốc",
    referring_physician="Lê^Quang Vinh^^BS.",
    institution=INSTITUTION_VI,
    department="Khoa Chẩn đoán hình ảnh",
    station="CT01-CDHA",
    model="Phantom CT 64",
    body_part="HEAD",
    charset="ISO_IR 192",
)
MR_STUDY = Study(
    folder="mr_brain",
    patient=Patient("LE^VAN HUNG", "24011542", "19791102", "M"),
    study_date="20240506",
    study_time="141005",
    accession="MR2405060007",
    study_id="2207",
    description="MRI SO NAO KHONG TIEM",
    referring_physician="PHAN^THANH SON",
    institution=INSTITUTION_ASCII,
    department="KHOA CDHA",
    station="MR01-CDHA",
    model="Phantom MR 1.5T",
    body_part="BRAIN",
    charset=None,
)
CR_STUDY = Study(
    folder="cr_chest",
    patient=Patient("Trần^Văn Minh", "24015208", "19510830", "M"),
    study_date="20240621",
    study_time="075512",
    accession="CR2406210031",
    study_id="3031",
    description="X-quang ngực thẳng nghiêng",
    referring_physician="Võ^Thị Mỹ Dung^^BS.",
    institution=INSTITUTION_VI,
    department="Khoa Chẩn đoán hình ảnh",
    station="CR02-CDHA",
    model="Phantom CR",
    body_part="CHEST",
    charset="ISO_IR 192",
)
US_STUDY = Study(
    folder="us_cine",
    patient=Patient("PHAM^THI THU HA", "24019970", "19920125", "F"),
    study_date="20240709",
    study_time="102033",
    accession="US2407090018",
    study_id="4018",
    description="SIEU AM TIM",
    referring_physician="HUYNH^DUC THANG",
    institution=INSTITUTION_ASCII,
    department="PHONG SIEU AM TIM",
    station="US-TIM-02",
    model="Phantom Echo",
    body_part="HEART",
    charset=None,
)


@dataclass(frozen=True)
class Series:
    number: int
    description: str
    modality: str
    sop_class: str
    # Minutes after the study start: series in one study must not share a timestamp.
    minutes_after_start: int = 0


def patient_age(birth_date: str, on: str) -> str:
    born = date(int(birth_date[:4]), int(birth_date[4:6]), int(birth_date[6:]))
    seen = date(int(on[:4]), int(on[4:6]), int(on[6:]))
    years = seen.year - born.year - ((seen.month, seen.day) < (born.month, born.day))
    return f"{years:03d}Y"


def shifted_time(hhmmss: str, minutes: int) -> str:
    total = int(hhmmss[:2]) * 3600 + int(hhmmss[2:4]) * 60 + int(hhmmss[4:]) + minutes * 60
    return f"{total // 3600:02d}{total // 60 % 60:02d}{total % 60:02d}"


# --------------------------------------------------------------------------------------------
# Dataset assembly and writing
# --------------------------------------------------------------------------------------------


def base_dataset(study: Study, series: Series, instance: int) -> Dataset:
    """Patient, study, series, equipment and SOP common modules, shared by every modality."""
    sop_uid = make_uid(study.folder, "series", str(series.number), "instance", str(instance))
    when = shifted_time(study.study_time, series.minutes_after_start)
    ds = Dataset()
    if study.charset:
        ds.SpecificCharacterSet = study.charset
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.InstanceCreationDate = study.study_date
    ds.InstanceCreationTime = when
    ds.SOPClassUID = series.sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study.study_date
    ds.StudyTime = study.study_time
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = when
    ds.AccessionNumber = study.accession
    ds.Modality = series.modality
    ds.Manufacturer = MANUFACTURER
    ds.InstitutionName = study.institution
    ds.ReferringPhysicianName = study.referring_physician
    ds.StationName = study.station
    ds.StudyDescription = study.description
    ds.SeriesDescription = series.description
    ds.InstitutionalDepartmentName = study.department
    ds.ManufacturerModelName = study.model
    ds.PatientName = study.patient.name
    ds.PatientID = study.patient.patient_id
    ds.PatientBirthDate = study.patient.birth_date
    ds.PatientSex = study.patient.sex
    ds.PatientAge = patient_age(study.patient.birth_date, study.study_date)
    ds.BodyPartExamined = study.body_part
    ds.SoftwareVersions = SOFTWARE_VERSION
    ds.StudyInstanceUID = make_uid(study.folder, "study")
    ds.SeriesInstanceUID = make_uid(study.folder, "series", str(series.number))
    ds.StudyID = study.study_id
    ds.SeriesNumber = series.number
    ds.InstanceNumber = instance
    ds.BurnedInAnnotation = "NO"
    ds.ImageComments = SYNTHETIC_NOTE
    return ds


def set_grayscale_pixel_module(
    ds: Dataset, rows: int, columns: int, bits_stored: int, photometric: str = "MONOCHROME2"
) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0


def attach_file_meta(ds: Dataset, transfer_syntax: str) -> None:
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    # Our own implementation UID, so a pydicom upgrade does not by itself change every file.
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds.file_meta = meta


def store_native(ds: Dataset, pixels: Array) -> None:
    attach_file_meta(ds, ExplicitVRLittleEndian)
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds["PixelData"].VR = "OW"


def store_compressed(ds: Dataset, pixels: Array, transfer_syntax: str, plugin: str) -> None:
    attach_file_meta(ds, transfer_syntax)
    # The plugin is named so the bytes never depend on which optional codecs happen to be
    # installed; the UID must survive because our UIDs are meant to be reproducible.
    ds.compress(transfer_syntax, pixels, encoding_plugin=plugin, generate_instance_uid=False)
    ds.LossyImageCompression = "00"


def write(ds: Dataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(path, ds, enforce_file_format=True)


# --------------------------------------------------------------------------------------------
# Image helpers (plain arithmetic, so results are the same on every CPU)
# --------------------------------------------------------------------------------------------


def binomial_blur(img: Array) -> Array:
    """3x3 [1 2 1] blur: softens phantom edges the way a real system's resolution does."""
    p = np.pad(img, 1, mode="edge")
    rows = (p[:, :-2] + 2.0 * p[:, 1:-1] + p[:, 2:]) * 0.25
    return (rows[:-2] + 2.0 * rows[1:-1] + rows[2:]) * 0.25


# Standard deviation of binomially blurred unit white noise: (6/16) per axis.
BLURRED_NOISE_STD = 0.375


def correlated_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> Array:
    """Real image noise is correlated; it also compresses better than white noise."""
    return binomial_blur(rng.standard_normal(shape)) * (sigma / BLURRED_NOISE_STD)


def box_blur(img: Array, radius: int) -> Array:
    """Separable moving average via cumulative sums, for CR-style unsharp masking."""
    out = img
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius + 1, radius)
        c = np.cumsum(np.pad(out, pad, mode="edge"), axis=axis)
        width = 2 * radius + 1
        hi = np.take(c, np.arange(width, c.shape[axis]), axis=axis)
        lo = np.take(c, np.arange(0, c.shape[axis] - width), axis=axis)
        out = (hi - lo) / width
    return out


def upsample2(img: Array) -> Array:
    """Double the resolution: the CR anatomy is smooth, so computing it at half size is enough."""
    return binomial_blur(np.repeat(np.repeat(img, 2, axis=0), 2, axis=1))


def smoothstep(edge0: float, edge1: float, x: Array) -> Array:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def chord(distance: Array, radius: float) -> Array:
    """Path length of a ray through a cylinder or sphere of ``radius`` at ``distance``."""
    return 2.0 * np.sqrt(np.maximum(radius * radius - distance * distance, 0.0))


def shell(distance: Array, radius: float, cortex: float) -> Array:
    """Path through a bone with a dense cortex and a lighter marrow cavity."""
    return chord(distance, radius) - 0.55 * chord(distance, radius - cortex)


# --------------------------------------------------------------------------------------------
# Head phantom, shared by the CT and the MR (same anatomy, different contrast)
# --------------------------------------------------------------------------------------------


class Tissue(IntEnum):
    AIR = 0
    SCALP = 1
    BONE = 2
    DIPLOE = 3
    CSF = 4
    GRAY = 5
    WHITE = 6
    DEEP_GRAY = 7
    CALCIFICATION = 8
    ORBITAL_FAT = 9
    GLOBE = 10
    LENS = 11


@dataclass(frozen=True)
class Ellipsoid:
    centre: tuple[float, float, float]  # mm, patient LPS: +x left, +y posterior, +z head
    axes: tuple[float, float, float]  # semi-axes, mm
    tissue: Tissue
    yaw: float = 0.0  # degrees about z; its long axis leans towards +x posteriorly when < 0


def mirrored(
    x: float, y: float, z: float, axes: tuple[float, float, float], tissue: Tissue, yaw: float = 0.0
) -> tuple[Ellipsoid, Ellipsoid]:
    return (Ellipsoid((-x, y, z), axes, tissue, -yaw), Ellipsoid((x, y, z), axes, tissue, yaw))


# Painter's order: each structure overwrites what came before it. Modelled on the Shepp-Logan
# idea (nested ellipsoids) but with labelled anatomy so CT and MR can give it their own contrast.
HEAD: tuple[Ellipsoid, ...] = (
    Ellipsoid((0, 0, 0), (76, 96, 100), Tissue.SCALP),
    Ellipsoid((0, -95, -50), (10, 16, 22), Tissue.SCALP),  # nose
    Ellipsoid((0, -96, -52), (4, 9, 15), Tissue.AIR),  # nasal cavity
    Ellipsoid((0, 1, 0), (71, 91, 95), Tissue.BONE),  # outer table
    Ellipsoid((0, 1, 0), (69.5, 89.5, 93.5), Tissue.DIPLOE),
    Ellipsoid((0, 1, 0), (67.5, 87.5, 91.5), Tissue.BONE),  # inner table
    Ellipsoid((0, 1, 0), (65.5, 85.5, 89.5), Tissue.CSF),  # subarachnoid space
    Ellipsoid((0, 2, 0), (64, 84, 88), Tissue.GRAY),
    Ellipsoid((0, 4, 6), (52, 68, 68), Tissue.WHITE),
    *mirrored(17, 8, 4, (8, 14, 11), Tissue.DEEP_GRAY),  # basal ganglia
    *mirrored(10, 4, 16, (5.5, 26, 15), Tissue.CSF, yaw=-16),  # lateral ventricles
    Ellipsoid((0, 10, 2), (1.8, 9, 9), Tissue.CSF),  # third ventricle
    Ellipsoid((0, -58, 28), (1.4, 26, 52), Tissue.CSF),  # interhemispheric fissure
    Ellipsoid((0, 64, 28), (1.4, 22, 52), Tissue.CSF),
    Ellipsoid((0, 28, 6), (2.5, 2.5, 2.5), Tissue.CALCIFICATION),  # pineal gland
    *mirrored(19, 30, 14, (2.5, 2.5, 2.5), Tissue.CALCIFICATION),  # choroid plexus
    *mirrored(30, -64, -33, (19, 22, 18), Tissue.BONE),  # bony orbits
    *mirrored(30, -66, -33, (16.5, 19.5, 15.5), Tissue.ORBITAL_FAT),
    *mirrored(30, -76, -33, (11.5, 11.5, 11.5), Tissue.GLOBE),
    *mirrored(30, -87, -33, (4.5, 1.8, 4.5), Tissue.LENS),
    *mirrored(30, 12, -54, (4.5, 24, 6), Tissue.BONE, yaw=-50),  # petrous ridges
    Ellipsoid((0, -2, -58), (7, 13, 12), Tissue.BONE),  # clivus
)


def head_labels(z: float, coords: Array, scale: float) -> Array:
    """Label map of the axial plane at height ``z`` on a square grid with ``coords`` (mm)."""
    labels = np.zeros((coords.size, coords.size), dtype=np.uint8)
    for e in HEAD:
        cx, cy, cz = (c * scale for c in e.centre)
        a, b, c = (s * scale for s in e.axes)
        k = 1.0 - ((z - cz) / c) ** 2
        if k <= 0.0:
            continue
        # Only touch the bounding box of the cross-section: keeps 128 slices fast.
        reach = max(a, b) * math.sqrt(k)
        c0, c1 = np.searchsorted(coords, (cx - reach, cx + reach))
        r0, r1 = np.searchsorted(coords, (cy - reach, cy + reach))
        dx = coords[None, c0:c1] - cx
        dy = coords[r0:r1, None] - cy
        cos, sin = math.cos(math.radians(e.yaw)), math.sin(math.radians(e.yaw))
        u = (dx * cos + dy * sin) / a
        v = (dy * cos - dx * sin) / b
        window = labels[r0:r1, c0:c1]
        window[u * u + v * v <= k] = e.tissue
    return labels


def tissue_lut(values: dict[Tissue, float]) -> Array:
    lut = np.zeros(len(Tissue))
    for tissue, value in values.items():
        lut[tissue] = value
    return lut


# --------------------------------------------------------------------------------------------
# CT head: 128 axial slices, JPEG-LS lossless
# --------------------------------------------------------------------------------------------

CT_SIZE = 512
CT_SPACING = 0.45  # mm; 230.4 mm field of view
CT_SLICES = 128
CT_STEP = 1.25  # mm, contiguous slices
CT_FIRST_Z = -63.75  # skull base; the last slice sits at the vertex (z = +95)
CT_NOISE_HU = 3.0
CT_HU = tissue_lut(
    {
        Tissue.AIR: -1000,
        Tissue.SCALP: 30,
        Tissue.BONE: 1150,
        Tissue.DIPLOE: 550,
        Tissue.CSF: 6,
        Tissue.GRAY: 40,
        Tissue.WHITE: 28,
        Tissue.DEEP_GRAY: 36,
        Tissue.CALCIFICATION: 160,
        Tissue.ORBITAL_FAT: -95,
        Tissue.GLOBE: 12,
        Tissue.LENS: 95,
    }
)
CT_SERIES = Series(2, "Sọ não 1.25mm cửa sổ nhu mô", "CT", CTImageStorage)


def grid_coords(size: int, spacing: float) -> Array:
    return (np.arange(size) - (size - 1) / 2.0) * spacing


def ct_slice(z: float, rng: np.random.Generator) -> Array:
    labels = head_labels(z, grid_coords(CT_SIZE, CT_SPACING), 1.0)
    hu = binomial_blur(CT_HU[labels])
    # Air is left noise-free: real scanners show noise there too, but it made the files 2.4x.
    hu += correlated_noise(rng, hu.shape, CT_NOISE_HU) * (labels != Tissue.AIR)
    return np.clip(np.rint(hu) + 1024.0, 0, 4095).astype(np.uint16)


def ct_dataset(index: int, z: float) -> Dataset:
    ds = base_dataset(CT_STUDY, CT_SERIES, index + 1)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.FrameOfReferenceUID = make_uid(CT_STUDY.folder, "frame-of-reference")
    ds.PositionReferenceIndicator = ""
    ds.ScanOptions = "HELICAL MODE"
    ds.SliceThickness = ds_str(CT_STEP)
    ds.KVP = "120"
    ds.DataCollectionDiameter = "500"
    ds.ReconstructionDiameter = ds_str(CT_SIZE * CT_SPACING)
    ds.DistanceSourceToDetector = "1040"
    ds.DistanceSourceToPatient = "570"
    ds.GantryDetectorTilt = "0"
    ds.TableHeight = "160"
    ds.RotationDirection = "CW"
    ds.ExposureTime = "1000"
    ds.XRayTubeCurrent = 250
    ds.Exposure = 250
    ds.FilterType = "HEAD FILTER"
    ds.GeneratorPower = 30
    ds.FocalSpots = "0.7"
    ds.ConvolutionKernel = "STANDARD"
    ds.PatientPosition = "HFS"
    ds.RevolutionTime = 1.0
    ds.SpiralPitchFactor = 0.53
    ds.CTDIvol = 55.2
    ds.AcquisitionNumber = 1
    ds.ImagesInAcquisition = CT_SLICES
    origin = ds_str(-(CT_SIZE - 1) / 2.0 * CT_SPACING)
    ds.ImagePositionPatient = [origin, origin, ds_str(z)]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SliceLocation = ds_str(z)
    set_grayscale_pixel_module(ds, CT_SIZE, CT_SIZE, 12)
    ds.PixelSpacing = [ds_str(CT_SPACING), ds_str(CT_SPACING)]
    ds.WindowCenter = ["40", "600"]
    ds.WindowWidth = ["80", "2800"]
    ds.WindowCenterWidthExplanation = ["BRAIN", "BONE"]
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    return ds


def write_ct(out: Path) -> Iterator[Path]:
    rng = np.random.default_rng(20240318)
    for index in range(CT_SLICES):
        z = CT_FIRST_Z + index * CT_STEP
        ds = ct_dataset(index, z)
        # JPEG-LS: measured 2.5x smaller than RLE here (RLE chokes on the noisy low byte).
        store_compressed(ds, ct_slice(z, rng), JPEGLSLossless, "pyjpegls")
        path = out / CT_STUDY.folder / f"CT_{index + 1:03d}.dcm"
        write(ds, path)
        yield path


# --------------------------------------------------------------------------------------------
# MR brain: 24 axial T2 TSE slices, uncompressed Explicit VR Little Endian
# --------------------------------------------------------------------------------------------

MR_SIZE = 256
MR_SPACING = 0.8984375  # 230 mm / 256
MR_SLICES = 24
MR_THICKNESS = 5.0
MR_STEP = 6.0  # 1 mm gap, as in a routine 2D protocol
MR_FIRST_Z = -52.0
MR_HEAD_SCALE = 1.04  # a different (larger) head from the CT patient's
MR_NOISE = 14.0
MR_T2 = tissue_lut(
    {
        Tissue.AIR: 0,
        Tissue.SCALP: 900,
        Tissue.BONE: 30,
        Tissue.DIPLOE: 780,
        Tissue.CSF: 2000,
        Tissue.GRAY: 1050,
        Tissue.WHITE: 720,
        Tissue.DEEP_GRAY: 880,
        Tissue.CALCIFICATION: 150,
        Tissue.ORBITAL_FAT: 1150,
        Tissue.GLOBE: 2100,
        Tissue.LENS: 250,
    }
)
MR_SERIES = Series(3, "t2_tse_tra_5mm", "MR", MRImageStorage, minutes_after_start=4)


def coil_shading(coords: Array) -> Array:
    """Receive-coil sensitivity: brighter towards the back of the head, as with a head coil."""
    x = coords[None, :] / 115.0
    y = coords[:, None] / 115.0
    return 0.92 + 0.10 * y + 0.06 * (x * x + y * y)


def mr_slice(z: float, rng: np.random.Generator) -> Array:
    coords = grid_coords(MR_SIZE, MR_SPACING)
    labels = head_labels(z, coords, MR_HEAD_SCALE)
    signal = binomial_blur(MR_T2[labels]) * coil_shading(coords)
    # Magnitude images of complex data: the background shows Rician, not Gaussian, noise.
    real = signal + rng.standard_normal(signal.shape) * MR_NOISE
    imag = rng.standard_normal(signal.shape) * MR_NOISE
    return np.clip(np.rint(np.sqrt(real * real + imag * imag)), 0, 4095).astype(np.uint16)


def mr_dataset(index: int, z: float) -> Dataset:
    ds = base_dataset(MR_STUDY, MR_SERIES, index + 1)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "NORM"]
    ds.FrameOfReferenceUID = make_uid(MR_STUDY.folder, "frame-of-reference")
    ds.PositionReferenceIndicator = ""
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = ["SK", "SP", "OSP"]
    ds.ScanOptions = "PFP"
    ds.MRAcquisitionType = "2D"
    ds.SequenceName = "*tse2d1_15"
    ds.AngioFlag = "N"
    ds.SliceThickness = ds_str(MR_THICKNESS)
    ds.RepetitionTime = "4000"
    ds.EchoTime = "96"
    ds.NumberOfAverages = "2"
    ds.ImagingFrequency = "63.676"
    ds.ImagedNucleus = "1H"
    ds.EchoNumbers = "1"
    ds.MagneticFieldStrength = "1.5"
    ds.SpacingBetweenSlices = ds_str(MR_STEP)
    ds.NumberOfPhaseEncodingSteps = "205"
    ds.EchoTrainLength = "15"
    ds.PercentSampling = "80"
    ds.PercentPhaseFieldOfView = "100"
    ds.PixelBandwidth = "190"
    ds.ProtocolName = "t2_tse_tra"
    ds.TransmitCoilName = "Body"
    ds.ReceiveCoilName = "Head 12"
    ds.AcquisitionMatrix = [256, 0, 0, 205]
    ds.InPlanePhaseEncodingDirection = "ROW"
    ds.FlipAngle = "150"
    ds.VariableFlipAngleFlag = "N"
    ds.PatientPosition = "HFS"
    ds.AcquisitionNumber = 1
    origin = ds_str(-(MR_SIZE - 1) / 2.0 * MR_SPACING)
    ds.ImagePositionPatient = [origin, origin, ds_str(z)]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SliceLocation = ds_str(z)
    set_grayscale_pixel_module(ds, MR_SIZE, MR_SIZE, 12)
    ds.PixelSpacing = [ds_str(MR_SPACING), ds_str(MR_SPACING)]
    ds.WindowCenter = "1000"
    ds.WindowWidth = "2200"
    return ds


def write_mr(out: Path) -> Iterator[Path]:
    rng = np.random.default_rng(20240506)
    for index in range(MR_SLICES):
        z = MR_FIRST_Z + index * MR_STEP
        ds = mr_dataset(index, z)
        store_native(ds, mr_slice(z, rng))
        path = out / MR_STUDY.folder / f"MR_{index + 1:02d}.dcm"
        write(ds, path)
        yield path


# --------------------------------------------------------------------------------------------
# CR chest: PA and left lateral, 12-bit MONOCHROME1, JPEG 2000 lossless
# --------------------------------------------------------------------------------------------

CR_COLUMNS = 1760
CR_ROWS = 2140
CR_SPACING = 0.2  # mm at the detector: a 35 x 43 cm plate
MODEL_SPACING = 2 * CR_SPACING  # anatomy is computed at half resolution, see upsample2()
MIDLINE = CR_COLUMNS * CR_SPACING / 2.0
BONE_EXTRA = 1.6  # bone attenuates ~2.6x soft tissue; it also displaces soft tissue
LUNG_AIR = 0.8  # lung is ~80 % air by volume
CR_NOISE = 6.0
CR_UNEXPOSED = 130.0  # pixel value under the collimator blades
LEAD_MARKER = 170.0

# A 5 x 7 dot-matrix font is enough for the lead side markers radiographers tape to the plate.
GLYPHS = {
    "R": ("11110", "10001", "10001", "11110", "10100", "10010", "10001"),
    "L": ("10000", "10000", "10000", "10000", "10000", "10000", "11111"),
}


@dataclass(frozen=True)
class Projection:
    series: Series
    view_position: str
    patient_orientation: tuple[str, str]
    marker: str
    anatomy: Callable[[Array, Array], Array]  # (dx, v) mm -> soft-tissue equivalent path, mm
    exposure_offset: float  # the plate reader's auto-ranging, so both views use the full range
    exposure_ms: int
    mas: int  # the lateral needs about twice the dose: it crosses ~33 cm instead of ~22 cm


def model_grid() -> tuple[Array, Array]:
    """dx (mm from the midline, +towards image right) and v (mm down from the top edge)."""
    u = (np.arange(CR_COLUMNS // 2) + 0.5) * MODEL_SPACING
    v = (np.arange(CR_ROWS // 2) + 0.5) * MODEL_SPACING
    return u[None, :] - MIDLINE, v[:, None]


def ellipsoid_path(
    dx: Array, v: Array, centre: tuple[float, float], axes: tuple[float, float, float]
) -> Array:
    """Ray length through an ellipsoid whose third axis lies along the beam."""
    a, b, c = axes
    q = 1.0 - ((dx - centre[0]) / a) ** 2 - ((v - centre[1]) / b) ** 2
    return 2.0 * c * np.sqrt(np.maximum(q, 0.0))


def segment_distance(
    dx: Array, v: Array, start: tuple[float, float], end: tuple[float, float]
) -> tuple[Array, Array]:
    """Distance to a segment and the position along it (0 at start, 1 at end)."""
    ex, ev = end[0] - start[0], end[1] - start[1]
    t = np.clip(((dx - start[0]) * ex + (v - start[1]) * ev) / (ex * ex + ev * ev), 0.0, 1.0)
    return np.hypot(dx - start[0] - t * ex, v - start[1] - t * ev), t


def window(
    dx: Array, v: Array, x_range: tuple[float, float], v_range: tuple[float, float]
) -> tuple[slice, slice]:
    """Rows and columns of the model grid covering a box: small structures stay cheap."""
    cols = np.searchsorted(dx[0], sorted(x_range))
    rows = np.searchsorted(v[:, 0], sorted(v_range))
    return slice(int(rows[0]), int(rows[1])), slice(int(cols[0]), int(cols[1]))


def add_curve_bone(
    total: Array,
    dx: Array,
    v: Array,
    side: float,
    curve: Callable[[Array], Array],
    radius: float,
    span: tuple[float, float],
    fade: float,
    weight: float = 1.0,
) -> None:
    """Add a rib-like tube along ``v = curve(side * dx)``, fading out at both ends of ``span``."""
    ends = curve(np.linspace(span[0], span[1], 64))
    rows, cols = window(
        dx,
        v,
        (side * span[0], side * span[1]),
        (float(ends.min()) - radius, float(ends.max()) + radius),
    )
    t = side * dx[:, cols]
    vv = v[rows, :]
    step = 0.5
    slope = (curve(t + step) - curve(t - step)) / (2 * step)
    distance = np.abs(vv - curve(t)) / np.sqrt(1.0 + slope * slope)
    taper = smoothstep(span[0], span[0] + fade, t) * smoothstep(span[1], span[1] - fade, t)
    total[rows, cols] += weight * shell(distance, radius, 1.6) * taper


def add_vessel(
    total: Array,
    dx: Array,
    v: Array,
    start: tuple[float, float],
    end: tuple[float, float],
    radius: float,
) -> None:
    """A pulmonary vessel tapering from ``radius`` to a third of it."""
    rows, cols = window(
        dx,
        v,
        (min(start[0], end[0]) - radius, max(start[0], end[0]) + radius),
        (min(start[1], end[1]) - radius, max(start[1], end[1]) + radius),
    )
    distance, t = segment_distance(dx[:, cols], v[rows, :], start, end)
    total[rows, cols] += chord(distance, radius * (1.0 - 0.67 * t))


def above(dome: Array, v: Array) -> Array:
    """1 above a diaphragm dome, 0 below it, with a soft edge: lungs stop at the diaphragm."""
    return smoothstep(0.0, 8.0, dome - v)


def trunk_path(dx: Array, v: Array, half_width: Array, half_depth: Array) -> Array:
    return half_depth * chord(dx / half_width, 1.0)


def vertebral_phase(v: Array) -> tuple[Array, Array]:
    """Position within each 25 mm level, and 1 in a vertebral body / 0 in a disc."""
    phase = np.mod(v - 30.0, 25.0)
    return phase, smoothstep(1.0, 4.0, phase) * smoothstep(25.0, 22.0, phase)


def spine_pa(dx: Array, v: Array) -> Array:
    phase, in_body = vertebral_phase(v)
    body = chord(dx, 19.0) * (0.55 + 0.45 * in_body)
    centre = v - phase + 12.5
    pedicles = sum(
        shell(np.hypot((dx - side) / 0.7, v - centre), 5.5, 1.8) for side in (-13.0, 13.0)
    )
    spinous = chord(np.hypot(dx / 0.6, (v - centre - 6.0) / 1.2), 4.0)
    # Vertebral bodies are cancellous: far less dense than the cortex of a rib.
    return 0.35 * body + 0.3 * pedicles + 0.3 * spinous


def posterior_rib(top: float) -> Callable[[Array], Array]:
    # Up and out from the spine, then steeply down along the lateral chest wall.
    return lambda s: top - 0.25 * s + 0.0035 * s * s


def anterior_rib(top: float) -> Callable[[Array], Array]:
    # From the lateral wall down and inwards; the costal cartilage at the end is invisible.
    return lambda s: top + 40.0 + 0.42 * (150.0 - s)


def clavicle(s: Array) -> Array:
    return 94.0 - 0.12 * (s - 20.0) - 0.0016 * (s - 20.0) * (135.0 - s)


def ribs_pa(dx: Array, v: Array) -> Array:
    total = np.zeros(np.broadcast_shapes(dx.shape, v.shape))
    for side in (-1.0, 1.0):
        for i in range(10):
            top = 92.0 + 20.0 * i + 0.7 * i * i
            add_curve_bone(total, dx, v, side, posterior_rib(top), 5.5, (14.0, 158.0), 10.0)
            if i < 7:
                add_curve_bone(total, dx, v, side, anterior_rib(top), 4.5, (55.0, 156.0), 18.0, 0.7)
        add_curve_bone(total, dx, v, side, clavicle, 7.0, (18.0, 140.0), 6.0)
        total += shell(np.hypot(side * dx - 172.0, v - 102.0), 26.0, 4.0)  # humeral head
    return total


def hilar_vessels(dx: Array, v: Array, lungs: Array) -> Array:
    """Branching pulmonary vessels and hilar shadows: the 'lung markings' of every chest film."""
    rng = np.random.default_rng(20240621)
    total = np.zeros_like(lungs)
    for side, hilum in ((-1.0, (-45.0, 200.0)), (1.0, (48.0, 207.0))):
        total += ellipsoid_path(dx, v, hilum, (12.0, 26.0, 16.0))
        for _ in range(18):
            # 0 rad points to the apex, pi to the base: the fan covers the whole lung.
            angle = rng.uniform(0.2, 2.95)
            length = rng.uniform(60.0, 120.0)
            start = (hilum[0] + rng.uniform(-6.0, 6.0), hilum[1] + rng.uniform(-15.0, 15.0))
            end = (start[0] + side * math.sin(angle) * length, start[1] - math.cos(angle) * length)
            add_vessel(total, dx, v, start, end, rng.uniform(2.5, 4.0))
            fork = rng.choice((-0.45, 0.45))
            middle = ((start[0] + end[0]) / 2.0, (start[1] + end[1]) / 2.0)
            branch = (
                middle[0] + side * math.sin(angle + fork) * length * 0.45,
                middle[1] - math.cos(angle + fork) * length * 0.45,
            )
            add_vessel(total, dx, v, middle, branch, 1.8)
    return total * LUNG_AIR * smoothstep(2.0, 20.0, lungs)


def chest_pa(dx: Array, v: Array) -> Array:
    body = trunk_path(
        dx,
        v,
        60.0 + 108.0 * smoothstep(50.0, 125.0, v) - 8.0 * smoothstep(300.0, 430.0, v),
        55.0 + 50.0 * smoothstep(50.0, 125.0, v),
    )
    shoulders = sum(
        ellipsoid_path(dx, v, (side * 156.0, 106.0), (42.0, 42.0, 30.0)) for side in (-1.0, 1.0)
    )
    right_dome = 296.0 + 0.006 * (dx + 70.0) ** 2
    left_dome = 312.0 + 0.006 * (dx - 75.0) ** 2
    right_lung = ellipsoid_path(dx, v, (-85.0, 200.0), (52.0, 122.0, 80.0))
    left_lung = ellipsoid_path(dx, v, (89.0, 212.0), (52.0, 118.0, 78.0))
    lungs = right_lung * above(right_dome, v) + left_lung * above(left_dome, v)
    heart = ellipsoid_path(dx, v, (22.0, 285.0), (68.0, 60.0, 58.0))
    aortic_knob = ellipsoid_path(dx, v, (34.0, 150.0), (17.0, 15.0, 30.0))
    lungs = np.maximum(lungs - heart - aortic_knob, 0.0)
    trachea = chord(dx + 0.02 * (v - 160.0), 9.0) * smoothstep(168.0, 155.0, v)
    # Maximum, not sum: where the airways join, the air column is not twice as thick.
    right_bronchus = chord(segment_distance(dx, v, (0.0, 158.0), (-30.0, 192.0))[0], 6.5)
    left_bronchus = chord(segment_distance(dx, v, (0.0, 158.0), (34.0, 200.0))[0], 6.5)
    airways = np.maximum(trachea, np.maximum(right_bronchus, left_bronchus))
    gastric_bubble = ellipsoid_path(dx, v, (78.0, 342.0), (30.0, 15.0, 30.0)) * (v > left_dome)
    air = LUNG_AIR * lungs + airways + gastric_bubble
    bone = spine_pa(dx, v) + ribs_pa(dx, v)
    return body + shoulders - air + hilar_vessels(dx, v, lungs) + BONE_EXTRA * bone


def spine_lateral(dx: Array, v: Array) -> Array:
    _, in_body = vertebral_phase(v)
    body = 36.0 * smoothstep(38.0, 41.0, dx) * smoothstep(76.0, 73.0, dx) * in_body
    posterior = 14.0 * smoothstep(80.0, 84.0, dx) * smoothstep(112.0, 106.0, dx)
    return 0.4 * body + 0.5 * posterior * (0.6 + 0.4 * in_body)


def lateral_rib(top: float) -> Callable[[Array], Array]:
    # Seen from the side, ribs run from the spine obliquely down towards the sternum.
    return lambda s: top + 0.38 * (100.0 - s) + 0.0012 * (100.0 - s) ** 2


def ribs_lateral(dx: Array, v: Array) -> Array:
    total = np.zeros(np.broadcast_shapes(dx.shape, v.shape))
    for i in range(10):
        for offset in (0.0, 7.0):  # the two sides project with slightly different magnification
            rib = lateral_rib(92.0 + 21.0 * i + offset)
            add_curve_bone(total, dx, v, 1.0, rib, 5.0, (-104.0, 100.0), 25.0, weight=0.45)
    return total


def chest_lateral(dx: Array, v: Array) -> Array:
    body = trunk_path(
        dx, v, 58.0 + 67.0 * smoothstep(50.0, 125.0, v), 60.0 + 100.0 * smoothstep(50.0, 125.0, v)
    )
    right_dome = 290.0 + 0.004 * (dx + 20.0) ** 2
    left_dome = 302.0 + 0.004 * (dx + 20.0) ** 2
    right_lung = ellipsoid_path(dx, v, (2.0, 200.0), (92.0, 122.0, 55.0))
    left_lung = ellipsoid_path(dx, v, (6.0, 210.0), (90.0, 118.0, 55.0))
    lungs = right_lung * above(right_dome, v) + left_lung * above(left_dome, v)
    heart = ellipsoid_path(dx, v, (-35.0, 268.0), (58.0, 62.0, 65.0))
    lungs = np.maximum(lungs - heart, 0.0)
    trachea = chord(dx - 0.1 * (v - 40.0), 9.0) * smoothstep(178.0, 165.0, v)
    gastric_bubble = ellipsoid_path(dx, v, (-15.0, 334.0), (26.0, 13.0, 30.0)) * (v > left_dome)
    sternum_front_back = smoothstep(-114.0, -110.0, dx) * smoothstep(-100.0, -104.0, dx)
    sternum = 22.0 * sternum_front_back * smoothstep(105.0, 115.0, v) * smoothstep(275.0, 265.0, v)
    air = LUNG_AIR * lungs + trachea + gastric_bubble
    bone = spine_lateral(dx, v) + ribs_lateral(dx, v) + 0.5 * sternum
    return body - air + BONE_EXTRA * bone


def stamp_marker(img: Array, letter: str, left: int, top: int, dot: int) -> None:
    glyph = np.array([[bit == "1" for bit in row] for row in GLYPHS[letter]])
    mask = np.kron(glyph, np.ones((dot, dot), dtype=bool))
    region = img[top : top + mask.shape[0], left : left + mask.shape[1]]
    region[mask] = LEAD_MARKER


def collimate(img: Array) -> Array:
    """Blades leave an unexposed border, white on MONOCHROME1 - as on every real plate."""
    rows = (np.arange(img.shape[0]) + 0.5) * CR_SPACING
    cols = (np.arange(img.shape[1]) + 0.5) * CR_SPACING
    inside = (
        smoothstep(8.0, 9.5, cols)[None, :]
        * smoothstep(344.0, 342.5, cols)[None, :]
        * smoothstep(6.0, 7.5, rows)[:, None]
        * smoothstep(422.0, 420.5, rows)[:, None]
    )
    return CR_UNEXPOSED + (img - CR_UNEXPOSED) * inside


def radiograph(projection: Projection, rng: np.random.Generator) -> Array:
    dx, v = model_grid()
    path = upsample2(projection.anatomy(dx, v))
    # A CR reader stores log exposure, so pixel value falls linearly with attenuation.
    raw = 3750.0 - 11.0 * (path - projection.exposure_offset)
    # Unsharp masking with a wide kernel: the standard CR look (ribs pop through the heart).
    processed = raw + 0.8 * (raw - box_blur(raw, 40))
    processed += correlated_noise(rng, processed.shape, CR_NOISE)
    # The reader's output range is clipped; lead and the blades lie below it, as on real plates.
    image = np.clip(processed, 200.0, 3950.0)
    stamp_marker(image, projection.marker, 110, 110, 12)
    image = collimate(image)
    return np.clip(np.rint(image), 0, 4095).astype(np.uint16)


CR_PA_SERIES = Series(1, "Ngực thẳng PA", "CR", ComputedRadiographyImageStorage)
CR_LATERAL_SERIES = Series(
    2, "Ngực nghiêng trái", "CR", ComputedRadiographyImageStorage, minutes_after_start=3
)
CR_PROJECTIONS = (
    # PA is displayed as if facing the patient (their left on the image right); the lateral
    # puts the sternum on the image left, so rows run towards the back.
    Projection(CR_PA_SERIES, "PA", ("L", "F"), "R", chest_pa, 0.0, 8, 3),
    Projection(CR_LATERAL_SERIES, "LL", ("P", "F"), "L", chest_lateral, 110.0, 20, 6),
)


def cr_dataset(projection: Projection) -> Dataset:
    ds = base_dataset(CR_STUDY, projection.series, 1)
    ds.ViewPosition = projection.view_position
    ds.PatientOrientation = list(projection.patient_orientation)
    ds.KVP = "125"
    ds.DistanceSourceToDetector = "1800"
    ds.ExposureTime = projection.exposure_ms
    ds.XRayTubeCurrent = round(projection.mas * 1000 / projection.exposure_ms)
    ds.Exposure = projection.mas
    ds.ImagerPixelSpacing = [ds_str(CR_SPACING), ds_str(CR_SPACING)]
    ds.PixelSpacing = [ds_str(CR_SPACING), ds_str(CR_SPACING)]
    ds.PlateType = "ST-VI"
    ds.Sensitivity = "200"
    ds.CassetteOrientation = "PORTRAIT"
    ds.CassetteSize = "35CMX43CM"
    ds.AcquisitionDeviceProcessingDescription = f"CHEST {projection.view_position}"
    set_grayscale_pixel_module(ds, CR_ROWS, CR_COLUMNS, 12, "MONOCHROME1")
    ds.WindowCenter = "2100"
    ds.WindowWidth = "3400"
    return ds


def write_cr(out: Path) -> Iterator[Path]:
    rng = np.random.default_rng(20240621)
    for projection in CR_PROJECTIONS:
        ds = cr_dataset(projection)
        store_compressed(ds, radiograph(projection, rng), JPEG2000Lossless, "pylibjpeg")
        path = out / CR_STUDY.folder / f"CR_{projection.view_position}.dcm"
        write(ds, path)
        yield path


# --------------------------------------------------------------------------------------------
# Ultrasound: apical four-chamber echo cine, 30 frames, YBR_FULL_422 JPEG baseline
# --------------------------------------------------------------------------------------------

US_ROWS = 480
US_COLUMNS = 640
US_FRAMES = 30
US_FPS = 30  # 30 frames at 30 fps: exactly one beat at 60/min, so the cine loops seamlessly
US_CM_PER_PIXEL = 0.035
APEX = (40, 320)  # row, column of the transducer
US_DEPTH_CM = 14.0
US_HALF_ANGLE = math.radians(37.5)
US_JPEG_QUALITY = 85
SPECKLE_MARGIN = 40  # pixels: tissue may move this far, so the texture must reach that far
US_SERIES = Series(1, "2D A4C", "US", UltrasoundMultiFrameImageStorage)

BLOOD = 0.02
MYOCARDIUM = 0.55
BRIGHT = 1.4

# (x, depth, semi-x, semi-depth) in cm; x grows to the image right (the patient's left in A4C).
WALLS = (
    (1.7, 6.0, 2.35, 4.4),
    (-1.9, 6.7, 1.65, 3.3),
    (1.6, 11.3, 1.95, 1.95),
    (-1.8, 11.1, 1.75, 1.85),
)
CAVITIES = (
    (1.7, 6.2, 1.5, 3.6),
    (-1.9, 6.9, 1.2, 2.8),
    (1.6, 11.3, 1.65, 1.65),
    (-1.8, 11.1, 1.45, 1.55),
)
Segment = tuple[tuple[float, float], tuple[float, float]]
VALVES_CLOSED: tuple[Segment, ...] = (((0.35, 9.7), (3.1, 9.75)), ((-0.5, 9.6), (-3.1, 9.45)))
VALVES_OPEN: tuple[Segment, ...] = (
    ((0.35, 9.7), (0.95, 8.3)),
    ((3.1, 9.75), (2.6, 8.4)),
    ((-0.5, 9.6), (-0.9, 8.4)),
    ((-3.1, 9.45), (-2.7, 8.3)),
)


def contraction(phase: float) -> float:
    """0 at rest, 1 at end-systole; systole takes ~40 % of the beat."""
    if 0.04 <= phase <= 0.42:
        return math.sin(math.pi * (phase - 0.04) / 0.38) ** 2
    return 0.0


def ellipse(
    x: Array, d: Array, shape: tuple[float, float, float, float], grow: float = 0.0
) -> Array:
    cx, cd, a, b = shape
    return ((x - cx) / (a + grow)) ** 2 + ((d - cd) / (b + grow)) ** 2 <= 1.0


def echogenicity(x: Array, d: Array, phase: float) -> Array:
    """Backscatter strength of the anatomy at material coordinates (x, d) in cm."""
    bands = 0.5 + 0.5 * np.cos(2.0 * math.pi * d / 0.45)
    echo = np.where(d < 1.8, 0.5 + 0.4 * bands, 0.15)  # chest wall layers, then lung/tissue
    pericardium = (0.2, 8.2, 4.9, 6.4)
    echo[ellipse(x, d, pericardium, 0.25)] = BRIGHT
    echo[ellipse(x, d, pericardium)] = 0.2
    for wall in WALLS:
        echo[ellipse(x, d, wall)] = MYOCARDIUM
    for cavity in CAVITIES:
        echo[ellipse(x, d, cavity)] = BLOOD
    for start, end in VALVES_CLOSED if contraction(phase) > 0.02 else VALVES_OPEN:
        echo[segment_distance(x, d, start, end)[0] < 0.09] = 1.1
    return binomial_blur(echo)


def speckle_texture(rng: np.random.Generator) -> Array:
    """Rayleigh speckle, longer across the beam than along it, as a real PSF makes it."""
    shape = (US_ROWS + 2 * SPECKLE_MARGIN, US_COLUMNS // 2 + SPECKLE_MARGIN)
    real = binomial_blur(binomial_blur(rng.standard_normal(shape)))
    imag = binomial_blur(binomial_blur(rng.standard_normal(shape)))
    magnitude = np.sqrt(real * real + imag * imag)
    return binomial_blur(np.repeat(magnitude / magnitude.mean(), 2, axis=1))


def material_coordinates(x: Array, d: Array, squeeze: float) -> tuple[Array, Array]:
    """Where the tissue now at (x, d) sits at end-diastole: the heart contracts in systole."""
    rx, rd = x - 0.3, d - 7.2
    q = (rx / 4.2) ** 2 + (rd / 5.2) ** 2
    scale = 1.0 + 0.16 * squeeze / (1.0 + q * q)
    return 0.3 + rx * scale * scale**0.3, 7.2 + rd * scale


def sample(texture: Array, x: Array, d: Array) -> Array:
    rows = np.rint(d / US_CM_PER_PIXEL).astype(np.intp) + APEX[0] + SPECKLE_MARGIN
    cols = np.rint(x / US_CM_PER_PIXEL).astype(np.intp) + APEX[1] + SPECKLE_MARGIN
    return texture[np.clip(rows, 0, texture.shape[0] - 1), np.clip(cols, 0, texture.shape[1] - 1)]


def sector_grid() -> tuple[Array, Array, Array]:
    x = (np.arange(US_COLUMNS)[None, :] - APEX[1]) * US_CM_PER_PIXEL
    d = (np.arange(US_ROWS)[:, None] - APEX[0]) * US_CM_PER_PIXEL
    x, d = np.broadcast_arrays(x, d)
    inside = (np.hypot(x, d) <= US_DEPTH_CM) & (np.abs(x) <= d * math.tan(US_HALF_ANGLE))
    return x, d, inside


def ecg(phase: Array) -> Array:
    """P, Q, R, S and T waves as Gaussians on a periodic time axis."""
    total = np.zeros_like(phase)
    for centre, height, width in (
        (0.88, 0.15, 0.025),
        (0.015, -0.12, 0.008),
        (0.03, 1.0, 0.009),
        (0.045, -0.25, 0.009),
        (0.33, 0.3, 0.04),
    ):
        offset = np.mod(phase - centre + 0.5, 1.0) - 0.5
        total += height * np.exp(-((offset / width) ** 2))
    return total


def draw_overlay(rgb: Array, phase: float) -> None:
    """Screen furniture burned into every echo cine: grey bar, depth scale, ECG and cursor."""
    rgb[60:316, 16:24] = (255 - np.arange(256))[:, None, None]
    scale_col = APEX[1] + round(US_DEPTH_CM * math.sin(US_HALF_ANGLE) / US_CM_PER_PIXEL) + 14
    for cm in range(int(US_DEPTH_CM) + 1):
        row = APEX[0] + round(cm / US_CM_PER_PIXEL)
        rgb[row : row + 2, scale_col : scale_col + (9 if cm % 5 == 0 else 4)] = 200
    rr, cc = np.ogrid[:12, :12]
    dot = (rr - 5.5) ** 2 + (cc - 5.5) ** 2 <= 20
    rgb[APEX[0] + 4 : APEX[0] + 16, APEX[1] + 60 : APEX[1] + 72][dot] = (255, 150, 0)
    cols = np.arange(40, 600)
    trace = np.rint(466.0 - 14.0 * ecg((cols - 40) / 560.0)).astype(np.intp)
    for col, y0, y1 in zip(cols[1:], trace[:-1], trace[1:], strict=True):
        rgb[min(y0, y1) : max(y0, y1) + 2, col] = (40, 220, 90)
    cursor = 40 + round(phase * 560)
    rgb[446:480, cursor : cursor + 2] = (240, 220, 40)


def echo_frame(index: int, texture: Array, grid: tuple[Array, Array, Array]) -> Array:
    x, d, inside = grid
    phase = index / US_FRAMES
    mx, md = material_coordinates(x, d, contraction(phase))
    intensity = echogenicity(mx, md, phase) * sample(texture, mx, md) * (1.0 - 0.025 * d)
    decibels = 20.0 * np.log10(intensity + 1e-4)
    grey = np.clip((decibels + 34.0) / 40.0, 0.0, 1.0) * 255.0 * inside
    rgb = np.repeat(np.rint(grey).astype(np.uint8)[:, :, None], 3, axis=2)
    draw_overlay(rgb, phase)
    return rgb


def jpeg_frame(rgb: Array) -> bytes:
    buffer = io.BytesIO()
    # 4:2:2 chroma subsampling is what YBR_FULL_422 promises the reader.
    Image.fromarray(rgb, "RGB").save(
        buffer, format="JPEG", quality=US_JPEG_QUALITY, subsampling="4:2:2", optimize=False
    )
    return buffer.getvalue()


def us_region() -> Dataset:
    """Calibration of the sector so viewers can measure in cm."""
    half_width = round(US_DEPTH_CM * math.sin(US_HALF_ANGLE) / US_CM_PER_PIXEL)
    region = Dataset()
    region.RegionSpatialFormat = 1  # 2D
    region.RegionDataType = 1  # tissue
    region.RegionFlags = 0
    region.RegionLocationMinX0 = APEX[1] - half_width
    region.RegionLocationMinY0 = APEX[0]
    region.RegionLocationMaxX1 = APEX[1] + half_width
    region.RegionLocationMaxY1 = APEX[0] + round(US_DEPTH_CM / US_CM_PER_PIXEL)
    region.ReferencePixelX0 = half_width
    region.ReferencePixelY0 = 0
    region.PhysicalUnitsXDirection = 3  # cm
    region.PhysicalUnitsYDirection = 3
    region.ReferencePixelPhysicalValueX = 0.0
    region.ReferencePixelPhysicalValueY = 0.0
    region.PhysicalDeltaX = US_CM_PER_PIXEL
    region.PhysicalDeltaY = US_CM_PER_PIXEL
    region.TransducerFrequency = 2500  # kHz
    return region


def us_dataset(frames: list[bytes]) -> Dataset:
    ds = base_dataset(US_STUDY, US_SERIES, 1)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "CARDIAC", "0001"]
    ds.FrameOfReferenceUID = make_uid(US_STUDY.folder, "frame-of-reference")
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.NumberOfFrames = len(frames)
    ds.FrameIncrementPointer = 0x00181063  # (0018,1063) Frame Time
    ds.FrameTime = ds_str(1000.0 / US_FPS)
    ds.CineRate = US_FPS
    ds.RecommendedDisplayFrameRate = US_FPS
    ds.ActualFrameDuration = round(1000 / US_FPS)
    ds.PreferredPlaybackSequencing = 0  # loop
    ds.StartTrim = 1
    ds.StopTrim = len(frames)
    ds.HeartRate = 60
    ds.Rows = US_ROWS
    ds.Columns = US_COLUMNS
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.TransducerData = ["P4-2", "", ""]
    ds.TransducerType = "SECTOR_PHASED"
    ds.ProcessingFunction = "CARDIAC"
    ds.DepthOfScanField = round(US_DEPTH_CM * 10)
    ds.SequenceOfUltrasoundRegions = [us_region()]
    raw_size = US_ROWS * US_COLUMNS * 3 * len(frames)
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = ds_str(round(raw_size / sum(map(len, frames)), 2))
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    attach_file_meta(ds, JPEGBaseline8Bit)
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds


def write_us(out: Path) -> Iterator[Path]:
    texture = speckle_texture(np.random.default_rng(20240709))
    grid = sector_grid()
    frames = [jpeg_frame(echo_frame(i, texture, grid)) for i in range(US_FRAMES)]
    path = out / US_STUDY.folder / "US_CINE.dcm"
    write(us_dataset(frames), path)
    yield path


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

WRITERS: tuple[tuple[Study, Callable[[Path], Iterator[Path]]], ...] = (
    (CT_STUDY, write_ct),
    (MR_STUDY, write_mr),
    (CR_STUDY, write_cr),
    (US_STUDY, write_us),
)


def generate(out: Path) -> list[Path]:
    """Write every sample study below ``out``; returns the files written."""
    written: list[Path] = []
    # A bad VR or an over-long value should stop the build, not ship in the samples.
    previous = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.RAISE
    try:
        for study, writer in WRITERS:
            # Stale files from an older layout would otherwise linger beside the new ones.
            for old in sorted((out / study.folder).glob("*.dcm")):
                old.unlink()
            written.extend(writer(out))
    finally:
        config.settings.writing_validation_mode = previous
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="output folder (default: the sample_dicom folder itself)",
    )
    args = parser.parse_args(argv)
    written = generate(args.out)
    for study, _ in WRITERS:
        files = [p for p in written if p.parent.name == study.folder]
        size = sum(p.stat().st_size for p in files)
        print(f"{study.folder:10s} {len(files):4d} files {size / 1e6:7.2f} MB")
    print(
        f"{'total':10s} {len(written):4d} files "
        f"{sum(p.stat().st_size for p in written) / 1e6:7.2f} MB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
