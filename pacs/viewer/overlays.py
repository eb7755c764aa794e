"""Overlay planes (group 60xx): 1-bit graphics drawn over an image."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from pydicom.uid import ExplicitVRBigEndian

from pacs.errors import PacsError
from pacs.viewer.pixel_header import Layout, floats

if TYPE_CHECKING:
    from pacs.viewer.pixels import PixelSource

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class OverlayPlane:
    """One overlay plane (PS3.3 C.9.2) as it applies to one frame.

    ``mask`` is a read-only boolean array (rows, columns), True where the overlay
    is drawn. ``origin`` is the (row, column) of the mask's top-left pixel in the
    image, 0-based (DICOM's Overlay Origin minus one); it may be negative or lie
    beyond the image, and only the part over the image is meant to be shown.
    """

    group: int
    rows: int
    columns: int
    origin: tuple[int, int]
    type: str  # "G" graphics or "R" region of interest
    label: str
    description: str
    mask: np.ndarray

    def packed(self) -> bytes:
        """The mask as bits, row-major, most significant bit first, zero-padded at the end."""
        return np.packbits(self.mask, axis=None).tobytes()

    def on_image(self, rows: int, columns: int) -> np.ndarray:
        """The mask placed on an image grid of ``rows`` × ``columns`` (cropped at its edges)."""
        out = np.zeros((rows, columns), dtype=bool)
        top, left = self.origin
        r0, c0 = max(top, 0), max(left, 0)
        r1, c1 = min(top + self.rows, rows), min(left + self.columns, columns)
        if r0 < r1 and c0 < c1:
            out[r0:r1, c0:c1] = self.mask[r0 - top : r1 - top, c0 - left : c1 - left]
        return out

    def as_json(self) -> dict[str, Any]:
        """JSON-able form: ``bits`` is :meth:`packed` in base64."""
        import base64

        return {
            "group": f"{self.group:04X}",
            "rows": self.rows,
            "columns": self.columns,
            "origin": list(self.origin),
            "type": self.type,
            "label": self.label,
            "description": self.description,
            "bits": base64.b64encode(self.packed()).decode("ascii"),
        }


def overlay_planes(source: PixelSource, index: int) -> list[OverlayPlane]:
    """The overlay planes (groups 6000–601E) that apply to frame ``index``.

    A plane without Number of Frames in Overlay applies to every frame; one with
    it applies from Image Frame Origin on. Overlays embedded in unused high bits
    of the pixel data (a retired encoding still found in old files) are extracted too.
    Raises NotFound for a missing frame; unusable planes are skipped.
    """
    layout = source.check_frame(index)
    header = source.header
    big_endian = source.transfer_syntax == ExplicitVRBigEndian
    planes = []
    for group in range(0x6000, 0x6020, 2):
        if (group << 16 | 0x0010) not in header._dict:
            continue
        try:
            plane = _overlay(source, layout, group, index, big_endian)
        except PacsError:
            raise
        except Exception:
            log.info("skipped unusable overlay group %04X", group, exc_info=True)
            continue
        if plane is not None:
            planes.append(plane)
    return planes


def _overlay(
    source: PixelSource, layout: Layout, group: int, index: int, big_endian: bool
) -> OverlayPlane | None:
    header = source.header

    def value(element: int) -> Any:
        tag = group << 16 | element
        return header[tag].value if tag in header._dict else None

    rows, columns = int(value(0x0010)), int(value(0x0011))
    origin = floats(value(0x0050)) or [1.0, 1.0]
    frames_in_overlay = value(0x0015)
    frame = 0
    if frames_in_overlay not in (None, ""):
        first = int(value(0x0051) or 1)
        frame = index + 1 - first
        if not 0 <= frame < int(frames_in_overlay):
            return None
    data = value(0x3000)
    size = rows * columns
    if data:
        raw = np.frombuffer(data, dtype=np.uint8)
        if big_endian and len(raw) % 2 == 0:
            raw = raw.reshape(-1, 2)[:, ::-1].ravel()  # OW words were byte-swapped
        bits = np.unpackbits(raw, bitorder="little")[frame * size : (frame + 1) * size]
        if len(bits) < size:
            return None
        mask = bits.reshape(rows, columns).astype(bool)
    else:
        position = value(0x0102)
        if position is None or int(value(0x0100) or 1) == 1:
            return None
        if (rows, columns) != (layout.rows, layout.columns):
            return None
        pixels = source.native_array(index, correct_unused_bits=False)
        unsigned = pixels.view(f"u{pixels.dtype.itemsize}")
        mask = ((unsigned >> int(position)) & 1).astype(bool)
    mask.flags.writeable = False
    return OverlayPlane(
        group=group,
        rows=rows,
        columns=columns,
        origin=(int(origin[0]) - 1, int(origin[1]) - 1),
        type=str(value(0x0040) or "G").strip().upper(),
        label=str(value(0x1500) or ""),
        description=str(value(0x0022) or ""),
        mask=mask,
    )
