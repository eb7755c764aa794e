"""Per-instance geometry and display attributes of a series, for stacking and overlays.

The viewer needs what the index does not keep: Image Position/Orientation,
Slice Location, Pixel Spacing, windows, rescale, frame timing… This module reads
them from each instance's header once (pydicom, ``stop_before_pixels``) and
caches them per instance *content* (SOP Instance UID + SHA-256), so a replaced
instance is read again and nothing stale is served. A precomputed series
metadata (DICOM JSON, built for DICOMweb when a series settles) may replace the
reading later; the cache keeps the cost to one read per instance meanwhile.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from pacs.archive import Archive
from pacs.charset import apply_text_codec, clean_text
from pacs.storage.index import InstanceRef

log = logging.getLogger(__name__)

#: frames of an enhanced multi-frame instance whose per-frame positions we still read
MAX_PER_FRAME = 4000


class _LRU:
    """A small thread-safe LRU of header summaries (a few hundred bytes each)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> dict[str, Any] | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple[str, str], value: dict[str, Any]) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


def _floats(ds: Dataset, keyword: str, count: int | None = None) -> list[float] | None:
    try:
        value = ds.get(keyword)
        if value is None or value == "":
            return None
        items = list(value) if type(value).__name__ == "MultiValue" else [value]
        numbers = [float(v) for v in items]
    except (TypeError, ValueError):
        return None
    if count is not None and len(numbers) != count:
        return None
    if not all(math.isfinite(n) for n in numbers):
        return None
    return numbers


def _float(ds: Dataset, keyword: str) -> float | None:
    values = _floats(ds, keyword)
    return values[0] if values else None


def _int(ds: Dataset, keyword: str) -> int | None:
    value = _float(ds, keyword)
    return int(value) if value is not None else None


def _text(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception:  # an undecodable value shows as empty, not as an error page
        return ""
    if value is None:
        return ""
    if type(value).__name__ == "MultiValue":
        return "\\".join(clean_text(v) for v in value)
    return clean_text(value)


def _windows(ds: Dataset) -> list[list[Any]]:
    centers = _floats(ds, "WindowCenter") or []
    widths = _floats(ds, "WindowWidth") or []
    explanations = _text(ds, "WindowCenterWidthExplanation").split("\\")
    out = []
    for i, (c, w) in enumerate(zip(centers, widths, strict=False)):
        if w > 0:
            out.append([c, w, explanations[i] if i < len(explanations) else ""])
    return out


def _us_regions(ds: Dataset) -> list[dict[str, Any]]:
    """Calibrated regions of an ultrasound image (PS3.3 C.8.5.5), in mm per pixel."""
    out = []
    for item in ds.get("SequenceOfUltrasoundRegions", []) or []:
        try:
            units_x, units_y = int(item.PhysicalUnitsXDirection), int(item.PhysicalUnitsYDirection)
            dx, dy = float(item.PhysicalDeltaX), float(item.PhysicalDeltaY)
        except (AttributeError, TypeError, ValueError):
            continue
        if units_x != 3 or units_y != 3 or dx <= 0 or dy <= 0:  # 3 = cm
            continue
        out.append(
            {
                "x0": int(item.get("RegionLocationMinX0", 0)),
                "y0": int(item.get("RegionLocationMinY0", 0)),
                "x1": int(item.get("RegionLocationMaxX1", 0)),
                "y1": int(item.get("RegionLocationMaxY1", 0)),
                # cm → mm
                "spacing": [dy * 10.0, dx * 10.0],
            }
        )
    return out


def _functional(ds: Dataset) -> dict[str, Any]:
    """Geometry of an enhanced multi-frame instance from its functional groups."""
    out: dict[str, Any] = {}
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    if shared is not None:
        for item in shared.get("PlaneOrientationSequence", []) or []:
            out["iop"] = _floats(item, "ImageOrientationPatient", 6)
        for item in shared.get("PixelMeasuresSequence", []) or []:
            out["pixel_spacing"] = _floats(item, "PixelSpacing", 2)
            out["slice_thickness"] = _float(item, "SliceThickness")
        for item in shared.get("PixelValueTransformationSequence", []) or []:
            out["slope"] = _float(item, "RescaleSlope")
            out["intercept"] = _float(item, "RescaleIntercept")
        for item in shared.get("FrameVOILUTSequence", []) or []:
            out["windows"] = _windows(item)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if 0 < len(per_frame) <= MAX_PER_FRAME:
        positions: list[list[float] | None] = []
        for frame in per_frame:
            position = None
            for item in frame.get("PlanePositionSequence", []) or []:
                position = _floats(item, "ImagePositionPatient", 3)
            positions.append(position)
            if "iop" not in out or out["iop"] is None:
                for item in frame.get("PlaneOrientationSequence", []) or []:
                    out["iop"] = _floats(item, "ImageOrientationPatient", 6)
            if out.get("pixel_spacing") is None:
                for item in frame.get("PixelMeasuresSequence", []) or []:
                    out["pixel_spacing"] = _floats(item, "PixelSpacing", 2)
        if any(p is not None for p in positions):
            out["frame_positions"] = positions
    return {k: v for k, v in out.items() if v is not None}


def _has_overlay(ds: Dataset) -> bool:
    """Overlay planes (PS3.3 C.9.2) are groups 6000–601E, even numbers."""
    tags = ds.keys()  # tags only: iterating the data set would decode every element
    return any(0x6000 <= tag.group <= 0x601E and tag.group % 2 == 0 for tag in tags)


def summarize(ds: Dataset, ref: InstanceRef) -> dict[str, Any]:
    """What the viewer needs of one instance, from its header."""
    apply_text_codec(ds)
    spacing = _floats(ds, "PixelSpacing", 2)
    spacing_source = "PixelSpacing" if spacing else None
    if spacing is None:
        spacing = _floats(ds, "ImagerPixelSpacing", 2)
        spacing_source = "ImagerPixelSpacing" if spacing else None
    frames = _int(ds, "NumberOfFrames") or ref.frames or 1
    frame_time = _float(ds, "FrameTime")
    if frame_time is None and _float(ds, "CineRate"):
        frame_time = 1000.0 / float(_float(ds, "CineRate") or 1)
    if frame_time is None and _float(ds, "RecommendedDisplayFrameRate"):
        frame_time = 1000.0 / float(_float(ds, "RecommendedDisplayFrameRate") or 1)
    summary: dict[str, Any] = {
        "sop_uid": ref.sop_uid,
        "sop_class_uid": ref.sop_class_uid,
        "number": _int(ds, "InstanceNumber"),
        "frames": frames,
        "rows": _int(ds, "Rows") or ref.rows,
        "columns": _int(ds, "Columns") or ref.columns,
        "ipp": _floats(ds, "ImagePositionPatient", 3),
        "iop": _floats(ds, "ImageOrientationPatient", 6),
        "slice_location": _float(ds, "SliceLocation"),
        "slice_thickness": _float(ds, "SliceThickness"),
        "pixel_spacing": spacing,
        "spacing_source": spacing_source,
        "photometric": _text(ds, "PhotometricInterpretation"),
        "samples_per_pixel": _int(ds, "SamplesPerPixel") or 1,
        "bits_stored": _int(ds, "BitsStored"),
        "pixel_representation": _int(ds, "PixelRepresentation") or 0,
        "windows": _windows(ds),
        "slope": _float(ds, "RescaleSlope"),
        "intercept": _float(ds, "RescaleIntercept"),
        "rescale_type": _text(ds, "RescaleType"),
        "modality": _text(ds, "Modality"),
        "frame_time": frame_time,
        "patient_orientation": [p for p in _text(ds, "PatientOrientation").split("\\") if p],
        "laterality": _text(ds, "ImageLaterality") or _text(ds, "Laterality"),
        "view_position": _text(ds, "ViewPosition"),
        "image_type": _text(ds, "ImageType"),
        "lossy": _text(ds, "LossyImageCompression") == "01",
        "acquisition_time": _text(ds, "AcquisitionTime") or _text(ds, "ContentTime"),
        "series_description": _text(ds, "SeriesDescription"),
        "has_voi_lut": "VOILUTSequence" in ds,
        "has_overlay": _has_overlay(ds),
        "us_regions": _us_regions(ds),
        "transfer_syntax_uid": ref.transfer_syntax_uid,
    }
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        for key, value in _functional(ds).items():
            if summary.get(key) in (None, [], "") or key == "frame_positions":
                summary[key] = value
    return summary


def _normal(iop: Sequence[float]) -> tuple[float, float, float]:
    r, c = iop[:3], iop[3:]
    return (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])


def stack_order(items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """Instances in display order, and what decided it ("position" or "number").

    Single-frame images sharing one orientation are sorted along the slice normal,
    in the direction that keeps the instance numbers ascending where possible;
    anything else is sorted by Instance Number.
    """

    def by_number(item: dict[str, Any]) -> tuple[int, int, str]:
        number = item.get("number")
        return (0 if number is not None else 1, number or 0, item["sop_uid"])

    numbered = sorted(items, key=by_number)
    single = [i for i in items if i.get("frames", 1) == 1]
    iops = {tuple(round(v, 3) for v in i["iop"]) for i in single if i.get("iop")}
    if len(single) != len(items) or len(items) < 2 or len(iops) != 1:
        return numbered, "number"
    if any(i.get("ipp") is None for i in items):
        return numbered, "number"
    normal = _normal(next(iter(iops)))

    def distance(item: dict[str, Any]) -> float:
        return sum(p * n for p, n in zip(item["ipp"], normal, strict=True))

    ordered = sorted(items, key=lambda i: (distance(i), by_number(i)))
    numbers = [i.get("number") for i in ordered if i.get("number") is not None]
    descending = sum(1 for a, b in itertools.pairwise(numbers) if b < a)
    if numbers and descending > (len(numbers) - 1) / 2:
        ordered.reverse()
    return ordered, "position"


class SeriesMetadata:
    """Reads and caches instance headers; one per process."""

    def __init__(self, archive: Archive, *, cache_entries: int = 50_000, threads: int = 4) -> None:
        self.archive = archive
        self._cache = _LRU(cache_entries)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="series-meta")

    def _read(self, ref: InstanceRef) -> dict[str, Any]:
        key = (ref.sop_uid, ref.sha256)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        try:
            with self.archive.readable_path(ref) as path:
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            summary = summarize(ds, ref)
        except Exception as exc:  # one unreadable header must not hide the rest of the series
            log.warning("cannot read the header of %s: %s", ref.sop_uid, exc)
            summary = {
                "sop_uid": ref.sop_uid,
                "number": ref.instance_number,
                "frames": ref.frames or 1,
                "rows": ref.rows,
                "columns": ref.columns,
                "error": "unreadable header",
            }
        self._cache.put(key, summary)
        return summary

    def instances(self, refs: Sequence[InstanceRef]) -> list[dict[str, Any]]:
        """Summaries of ``refs`` (same order).

        Headers not cached are read in parallel only from a remote store, where
        waiting on the network dominates; local reads are bound by parsing (the
        GIL), so threads would only add contention.
        """
        missing = [r for r in refs if self._cache.get((r.sop_uid, r.sha256)) is None]
        if len(missing) > 4 and self.archive.local_path(missing[0]) is None:
            list(self._pool.map(self._read, missing))
        return [self._read(r) for r in refs]
