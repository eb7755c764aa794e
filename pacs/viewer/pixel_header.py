"""What a DICOM header says about displaying its pixels.

The pixel layout (:class:`Layout`), the lookup tables (:class:`Lut`) and the
display attributes (:class:`Display`: rescale, windows, VOI and modality LUTs,
photometric interpretation), per frame for enhanced multi-frame objects whose
functional groups override the shared values.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Layout:
    """The Image Pixel module values that shape the decoded array."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric: str
    planar_configuration: int
    frames: int
    keyword: str

    @property
    def is_colour(self) -> bool:
        return self.samples_per_pixel > 1 or self.photometric == "PALETTE COLOR"

    def native_frame_bytes(self) -> int | None:
        """Bytes of one native frame, or None when frames are not byte-aligned (1-bit)."""
        bits = self.rows * self.columns * self.samples_per_pixel * self.bits_allocated
        if self.photometric == "YBR_FULL_422" and self.samples_per_pixel == 3:
            bits = bits // 3 * 2  # PS3.3 C.7.6.3.1.2: two chroma samples per two pixels
        if bits % 8:
            return None
        if self.bits_allocated == 1 and self.frames > 1:
            return None
        return bits // 8


@dataclass(frozen=True, eq=False)
class Lut:
    """A modality or VOI lookup table (PS3.3 C.11.1, C.11.2)."""

    first_mapped: int
    bits: int
    data: np.ndarray  # read-only int64, one entry per input value from first_mapped on
    explanation: str = ""

    def lookup(self, values: np.ndarray) -> np.ndarray:
        """Table output for input values (inputs outside the table map to its ends)."""
        index = np.floor(values - self.first_mapped)
        np.clip(index, 0, len(self.data) - 1, out=index)
        return self.data[index.astype(np.intp)]

    def as_json(self) -> dict[str, Any]:
        return {
            "first_mapped": self.first_mapped,
            "bits": self.bits,
            "data": self.data.tolist(),
            "explanation": self.explanation,
        }


@dataclass(frozen=True)
class Display:
    """How stored values become grey levels (modality and VOI stages) for one frame."""

    photometric: str
    rescale_slope: float
    rescale_intercept: float
    modality_lut: Lut | None
    windows: tuple[tuple[float, float, str], ...]
    voi_lut: Lut | None
    voi_function: str
    pixel_spacing: tuple[float, float] | None


def has_functional_groups(ds: Dataset) -> bool:
    return "SharedFunctionalGroupsSequence" in ds or "PerFrameFunctionalGroupsSequence" in ds


def frame_groups(ds: Dataset, index: int) -> tuple[Dataset, ...]:
    """Shared then per-frame functional group items for frame ``index`` (later ones win)."""
    groups = []
    for keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        try:
            seq = ds.get(keyword)
            if keyword.startswith("Shared") and seq:
                groups.append(seq[0])
            elif seq and index < len(seq):
                groups.append(seq[index])
        except Exception:
            continue
    return tuple(groups)


def floats(value: Any) -> list[float]:
    if value is None or value == "":
        return []
    if not (isinstance(value, list | tuple) or type(value).__name__ == "MultiValue"):
        value = [value]
    out = []
    for item in value:
        try:
            out.append(float(item))
        except (TypeError, ValueError):
            continue
    return out


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return [str(v) for v in value]
    return [str(value)]


def _get(ds: Dataset, keyword: str) -> Any:
    try:
        return ds.get(keyword)
    except Exception:
        return None


def _item(ds: Dataset, keyword: str) -> Dataset | None:
    seq = _get(ds, keyword)
    try:
        return seq[0] if seq else None
    except Exception:
        return None


def _windows(ds: Dataset) -> tuple[tuple[float, float, str], ...]:
    centers = floats(_get(ds, "WindowCenter"))
    widths = floats(_get(ds, "WindowWidth"))
    notes = _strings(_get(ds, "WindowCenterWidthExplanation"))
    return tuple(
        (c, w, notes[i] if i < len(notes) else "")
        for i, (c, w) in enumerate(zip(centers, widths, strict=False))
    )


def _lut(item: Dataset | None, *, signed_input: bool, little: bool) -> Lut | None:
    """A LUT from a Modality/VOI LUT Sequence item, or None if it is unusable."""
    if item is None:
        return None
    try:
        descriptor = [int(v) for v in item.LUTDescriptor]
        raw = item.LUTData
        entries = descriptor[0] or 65536
        first = descriptor[1]
        bits = descriptor[2]
        # The first mapped value is US or SS after the pixel representation (C.11.1.1.1).
        if signed_input and first >= 32768:
            first -= 65536
        elif not signed_input and first < 0:
            first += 65536
        if isinstance(raw, bytes | bytearray):
            data = np.frombuffer(raw, dtype="<u2" if little else ">u2").astype(np.int64)
        else:
            data = np.asarray(floats(raw) if not isinstance(raw, int) else [raw], np.int64)
        data = data[:entries] if len(data) >= entries else data
        if not len(data):
            return None
        if not 1 <= bits <= 16:
            bits = 16
        top = int(data.max())
        if top >= 1 << bits:
            bits = top.bit_length()
        data.flags.writeable = False
        explanation = str(item.get("LUTExplanation", "") or "")
        return Lut(first, bits, data, explanation)
    except Exception:
        log.info("ignored an unusable LUT item", exc_info=True)
        return None


def display_attributes(ds: Dataset, groups: tuple[Dataset, ...], layout: Layout | None) -> Display:
    """The display attributes of the top level, overridden by functional groups."""
    photometric = layout.photometric if layout else "MONOCHROME2"
    signed = bool(layout and layout.pixel_representation)
    little = ds.original_encoding[1] is not False
    slope = (floats(_get(ds, "RescaleSlope")) or [None])[0]
    intercept = (floats(_get(ds, "RescaleIntercept")) or [None])[0]
    windows = _windows(ds)
    function = str(_get(ds, "VOILUTFunction") or "")
    spacing = floats(_get(ds, "PixelSpacing")) or floats(_get(ds, "ImagerPixelSpacing"))
    for group in groups:
        transform = _item(group, "PixelValueTransformationSequence")
        if transform is not None:
            slope = (floats(_get(transform, "RescaleSlope")) or [slope])[0]
            intercept = (floats(_get(transform, "RescaleIntercept")) or [intercept])[0]
        voi = _item(group, "FrameVOILUTSequence")
        if voi is not None:
            windows = _windows(voi) or windows
            function = str(_get(voi, "VOILUTFunction") or function)
        measures = _item(group, "PixelMeasuresSequence")
        if measures is not None:
            spacing = floats(_get(measures, "PixelSpacing")) or spacing
    if slope is None and str(_get(ds, "Modality") or "") == "RTDOSE":
        # RT Dose: stored value × Dose Grid Scaling = dose in the Dose Units (C.8.8.3).
        slope = (floats(_get(ds, "DoseGridScaling")) or [None])[0]
    function = function.strip().upper()
    return Display(
        photometric=photometric,
        rescale_slope=slope if slope else 1.0,
        rescale_intercept=intercept or 0.0,
        modality_lut=_lut(_item(ds, "ModalityLUTSequence"), signed_input=signed, little=little),
        windows=windows,
        voi_lut=_lut(_item(ds, "VOILUTSequence"), signed_input=False, little=little),
        voi_function=function if function in ("LINEAR", "LINEAR_EXACT", "SIGMOID") else "LINEAR",
        pixel_spacing=(spacing[0], spacing[1]) if len(spacing) >= 2 else None,
    )


def header_size(ds: Dataset) -> int:
    """A rough count of the bytes the header holds (large LUT and overlay values)."""
    total = 0
    for elem in ds._dict.values():
        value = getattr(elem, "value", None)
        if isinstance(value, bytes | bytearray):
            total += len(value)
        else:
            total += 64
    return total
