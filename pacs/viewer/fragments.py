"""Locating and unpacking frames in encapsulated (compressed) pixel data."""

from __future__ import annotations

import io
import struct
import zlib
from typing import BinaryIO

from pacs.errors import FrameDecodeError
from pacs.viewer.pixel_header import Layout

_ITEM = 0xE000FFFE  # (FFFE,E000) read as one little-endian uint32
_SEQUENCE_END = 0xE0DDFFFE  # (FFFE,E0DD)


def index_fragments(
    fp: BinaryIO, offset: int, bounds: tuple[int, list[int] | None]
) -> list[list[tuple[int, int]]]:
    """Group the fragments after ``offset`` into frames; [] when that needs the codec.

    Uses, in order, the Extended Offset Table, the Basic Offset Table, one
    fragment per frame, or all fragments for a single frame (PS3.5 A.4).
    """
    frames, extended = bounds
    fp.seek(offset)
    tag, length = struct.unpack("<LL", fp.read(8))
    if tag != _ITEM:
        raise FrameDecodeError("the encapsulated pixel data has no Basic Offset Table item")
    table = fp.read(length)
    first_item = fp.tell()
    fragments: list[tuple[int, int, int]] = []  # (item position, data position, length)
    while True:
        head = fp.read(8)
        if len(head) < 8:
            break
        tag, length = struct.unpack("<LL", head)
        if tag == _SEQUENCE_END:
            break
        if tag != _ITEM or length == 0xFFFFFFFF:
            raise FrameDecodeError("the encapsulated pixel data has a malformed fragment item")
        position = fp.tell()
        fragments.append((position - 8, position, length))
        fp.seek(length, io.SEEK_CUR)
    if not fragments:
        raise FrameDecodeError("the encapsulated pixel data has no fragments")
    starts = extended or (list(struct.unpack(f"<{len(table) // 4}L", table)) if table else None)
    if starts and len(starts) >= frames:
        groups: list[list[tuple[int, int]]] = [[] for _ in starts]
        relative = [item - first_item for item, _, _ in fragments]
        frame = 0
        for rel, (_, position, length) in zip(relative, fragments, strict=True):
            while frame + 1 < len(starts) and rel >= starts[frame + 1]:
                frame += 1
            groups[frame].append((position, length))
        return groups
    if len(fragments) == frames:
        return [[(position, length)] for _, position, length in fragments]
    if frames == 1:
        return [[(position, length) for _, position, length in fragments]]
    return []


def inflate(data: bytes) -> bytes:
    try:
        return zlib.decompress(data, -15)
    except zlib.error:
        return zlib.decompress(data, 47)  # tolerate a zlib or gzip wrapper


def unrle_bits(frame: bytes, layout: Layout) -> bytes:
    """Native bytes of an RLE-compressed 1-bit frame (PS3.5 G: PackBits segments)."""
    if len(frame) < 64:
        raise FrameDecodeError("the RLE header is truncated")
    header = struct.unpack("<16L", frame[:64])
    segments = header[0]
    if segments != layout.samples_per_pixel:
        raise FrameDecodeError(f"RLE data has {segments} segments, expected 1")
    end = header[2] if segments > 1 and header[2] else len(frame)
    data = frame[header[1] : end]
    out = bytearray()
    i = 0
    while i < len(data):
        n = data[i]
        if n < 128:
            out += data[i + 1 : i + 2 + n]
            i += n + 2
        elif n > 128:
            out += data[i + 1 : i + 2] * (257 - n)
            i += 2
        else:
            i += 1
    need = (layout.rows * layout.columns + 7) // 8
    if len(out) < need:
        raise FrameDecodeError("RLE data decodes to fewer bytes than the frame needs")
    return bytes(out[:need])
