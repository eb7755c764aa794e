"""Where each frame's bytes lie in a stored file, so a frame is one ranged read.

A viewer opening a 1 000-slice series asks for 1 000 frames; parsing each file
again for every request would cost more than sending it. The layout of every
instance is worked out once (when the series metadata is built, or on first
use) and kept in the series metadata row and a per-process cache:

- native little-endian pixel data: the offset of the first frame and the frame size;
- encapsulated pixel data: the byte ranges of each frame's fragments, from the
  Basic Offset Table, or one fragment per frame when the table is empty.

Anything else (big endian, deflated, 1-bit, fragments that cannot be assigned
to frames without decoding) has no layout; :mod:`pacs.viewer.rendering` handles
those.
"""

from __future__ import annotations

import struct
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from pacs.archive import Archive
from pacs.storage.index import InstanceRef
from pacs.viewer.dicomweb.negotiation import NATIVE_SYNTAXES, is_compressed

PIXEL_DATA = 0x7FE00010
EXTENDED_OFFSET_TABLE = 0x7FE00001
UNDEFINED_LENGTH = 0xFFFFFFFF
ITEM = 0xE000FFFE  # (FFFE,E000) read as little-endian uint32 of group then element
SEQ_DELIMITER = 0xE0DDFFFE

Range = tuple[int, int]


@dataclass(frozen=True)
class FrameLayout:
    transfer_syntax: str
    count: int
    #: native: (file offset of frame 1, bytes per frame)
    native: Range | None = None
    #: encapsulated: per frame, the (file offset, length) of its fragments
    fragments: tuple[tuple[Range, ...], ...] | None = None

    def ranges(self, frame: int) -> list[Range]:
        """Byte ranges of frame ``frame`` (1-based); IndexError when out of range."""
        if not 1 <= frame <= self.count:
            raise IndexError(frame)
        if self.native is not None:
            start, size = self.native
            return [(start + (frame - 1) * size, size)]
        assert self.fragments is not None
        return list(self.fragments[frame - 1])

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ts": self.transfer_syntax, "n": self.count}
        if self.native is not None:
            out["native"] = list(self.native)
        if self.fragments is not None:
            out["frag"] = [[list(r) for r in frame] for frame in self.fragments]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FrameLayout:
        native = tuple(data["native"]) if "native" in data else None
        fragments = (
            tuple(tuple((int(o), int(n)) for o, n in frame) for frame in data["frag"])
            if "frag" in data
            else None
        )
        return cls(data["ts"], int(data["n"]), native, fragments)  # type: ignore[arg-type]


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        if value is None or value == "":
            return None
        return int(value)
    except (TypeError, ValueError):
        return None


def frame_count(ds: Dataset) -> int:
    return max(1, _int(ds, "NumberOfFrames") or 1)


def compute_layout(ds: Dataset, path: Path, transfer_syntax: str) -> FrameLayout | None:
    """The frame layout of the file at ``path`` whose header is ``ds`` (a
    :func:`pacs.dicomfile.read_instance` data set with deferred pixel data), or
    None when frames cannot be located without decoding."""
    raw = ds._dict.get(PIXEL_DATA)  # the raw element: its offset, without reading it
    if not isinstance(raw, RawDataElement) or raw.value_tell is None:
        return None
    count = frame_count(ds)
    if raw.length != UNDEFINED_LENGTH:
        if transfer_syntax not in NATIVE_SYNTAXES:
            return None
        rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
        bits = _int(ds, "BitsAllocated")
        samples = _int(ds, "SamplesPerPixel") or 1
        if not rows or not columns or bits not in (8, 16, 32, 64):
            return None
        size = rows * columns * samples * (bits // 8)
        if size * count > raw.length:
            return None
        return FrameLayout(transfer_syntax, count, native=(raw.value_tell, size))
    if not is_compressed(transfer_syntax) or EXTENDED_OFFSET_TABLE in ds._dict:
        return None
    with path.open("rb") as fh:
        items = scan_items(fh, raw.value_tell)
    if items is None or not items:
        return None
    bot, fragments = items[0], items[1:]
    if not fragments:
        return None
    if count == 1:
        return FrameLayout(transfer_syntax, 1, fragments=(tuple(fragments),))
    if bot[1]:
        with path.open("rb") as fh:
            fh.seek(bot[0])
            table = fh.read(bot[1])
        offsets = list(struct.unpack(f"<{len(table) // 4}I", table[: len(table) // 4 * 4]))
        return _frames_from_offsets(transfer_syntax, count, offsets, fragments)
    if len(fragments) == count:
        return FrameLayout(transfer_syntax, count, fragments=tuple((f,) for f in fragments))
    return None


def _frames_from_offsets(
    transfer_syntax: str, count: int, offsets: list[int], fragments: list[Range]
) -> FrameLayout | None:
    if len(offsets) != count or offsets != sorted(offsets) or offsets[0] != 0:
        return None
    # PS3.5 A.4: offsets count from the first byte of the first fragment's item tag.
    first = fragments[0][0]
    frames: list[list[Range]] = [[] for _ in range(count)]
    for data_offset, length in fragments:
        index = _frame_for(data_offset - first, offsets)
        if index is None:
            return None
        frames[index].append((data_offset, length))
    if any(not f for f in frames):
        return None
    return FrameLayout(transfer_syntax, count, fragments=tuple(tuple(f) for f in frames))


def _frame_for(relative: int, offsets: list[int]) -> int | None:
    index = None
    for i, start in enumerate(offsets):
        if relative >= start:
            index = i
        else:
            break
    return index


def scan_items(fh: BinaryIO, start: int, limit: int = 1_000_000) -> list[Range] | None:
    """(offset, length) of each item of encapsulated pixel data starting at ``start``;
    the first is the Basic Offset Table. None when the structure is broken."""
    fh.seek(start)
    items: list[Range] = []
    position = start
    for _ in range(limit):
        header = fh.read(8)
        if len(header) < 8:
            return None
        tag, length = struct.unpack("<II", header)
        position += 8
        if tag == SEQ_DELIMITER:
            return items
        if tag != ITEM or length == UNDEFINED_LENGTH:
            return None
        items.append((position, length))
        position += length
        fh.seek(position)
    return None


def read_ranges(archive: Archive, ref: InstanceRef, ranges: Iterable[Range]) -> bytes:
    """The bytes of ``ranges`` of a stored object, concatenated."""
    local = archive.local_path(ref)
    chunks = []
    if local is not None:
        with local.open("rb") as fh:
            for offset, length in ranges:
                fh.seek(offset)
                chunks.append(fh.read(length))
    else:
        # Remote stores: ranged GETs, never the whole object.
        for offset, length in ranges:
            chunks.append(archive.objects.read_range(ref.object_key, offset, length))
    return b"".join(chunks)


class LayoutCache:
    """Frame layouts by (SOP Instance UID, sha256), least recently used dropped first.

    Keyed by content hash, so a replaced instance never gets an old layout.
    """

    def __init__(self, capacity: int = 50_000) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, str], FrameLayout | None] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, sop_uid: str, sha256: str) -> tuple[bool, FrameLayout | None]:
        with self._lock:
            key = (sop_uid, sha256)
            if key not in self._items:
                return False, None
            self._items.move_to_end(key)
            return True, self._items[key]

    def put(self, sop_uid: str, sha256: str, layout: FrameLayout | None) -> None:
        with self._lock:
            self._items[(sop_uid, sha256)] = layout
            self._items.move_to_end((sop_uid, sha256))
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
