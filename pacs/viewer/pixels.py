"""The pixel data of one stored instance: where it is, and its frames decoded.

A :class:`PixelSource` is built once per instance (the header up to the pixel
data, where the pixel data sits, how its frames are laid out) and then reads
single frames on demand: a native frame is one byte range of the file, an
encapsulated frame is only its own fragments. Nothing stays open between calls,
so one source serves many threads.

Decoding goes through pydicom's decoders, trying the installed plugins in the
order measured best on the shared corpus (fast and agreeing with each other),
and falling back to the next on failure. Two encodings pydicom 3.0 cannot
decode are handled here: Deflated Image Frame Compression and RLE of 1-bit
data. A frame that cannot be decoded raises :class:`FrameDecodeError` with the
reason; a frame number out of range raises :class:`~pacs.errors.NotFound`.
"""

from __future__ import annotations

import io
import logging
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, get_frame
from pydicom.filereader import read_dataset
from pydicom.pixels import get_decoder
from pydicom.pixels.processing import apply_color_lut, convert_color_space
from pydicom.pixels.utils import pack_bits
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from pacs.errors import NotFound, PacsError

log = logging.getLogger(__name__)

PIXEL_KEYWORDS = {
    0x7FE00010: "PixelData",
    0x7FE00008: "FloatPixelData",
    0x7FE00009: "DoubleFloatPixelData",
}
#: Deflated Image Frame Compression (a recent PS3.5 addition): each frame deflated on its
#: own (RFC 1951, no zlib header); pydicom 3.0 does not know it
DEFLATED_IMAGE_FRAME = UID("1.2.840.10008.1.2.8.1")
_J2K = (JPEG2000Lossless, JPEG2000)
_HTJ2K = (HTJ2KLossless, HTJ2KLosslessRPCL, HTJ2K)
_JPEG = (JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1)
_JPEG_LS = (JPEGLSLossless, JPEGLSNearLossless)

# Plugins in the order tried, from decoding every file of the shared corpus with each
# one: Pillow (libjpeg-turbo) is the fastest lossy JPEG decoder and agrees with GDCM to
# the grey level while pylibjpeg's libjpeg differs by up to 3; CharLS (pyjpegls) is the
# fastest JPEG-LS decoder; Pillow's JPEG 2000 path mis-decoded a Toshiba file, so it
# comes last there. Plugins not named here are tried after these.
PLUGIN_ORDER: dict[str, tuple[str, ...]] = {
    JPEGBaseline8Bit: ("pillow", "gdcm", "pylibjpeg"),
    JPEGExtended12Bit: ("pillow", "gdcm", "pylibjpeg"),
    JPEGLossless: ("gdcm", "pylibjpeg"),
    JPEGLosslessSV1: ("gdcm", "pylibjpeg"),
    JPEGLSLossless: ("pyjpegls", "gdcm", "pylibjpeg"),
    JPEGLSNearLossless: ("pyjpegls", "gdcm", "pylibjpeg"),
    JPEG2000Lossless: ("gdcm", "pylibjpeg", "pillow"),
    JPEG2000: ("gdcm", "pylibjpeg", "pillow"),
    RLELossless: ("pylibjpeg", "pydicom"),
}

#: the largest decoded frame we accept (a 16-bit 16k × 16k image is 512 MiB)
MAX_FRAME_BYTES = 1 << 30
_ITEM = 0xE000FFFE  # (FFFE,E000) read as one little-endian uint32
_SEQUENCE_END = 0xE0DDFFFE  # (FFFE,E0DD)
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV"}


class FrameDecodeError(PacsError):
    """The pixel data of an instance cannot be turned into an image."""

    http_status = 422


def codec_name(transfer_syntax: str) -> str:
    """A short human name for the compression of a transfer syntax ("JPEG 2000"...)."""
    if transfer_syntax in _J2K:
        return "JPEG 2000"
    if transfer_syntax in _HTJ2K:
        return "HTJ2K"
    if transfer_syntax in _JPEG_LS:
        return "JPEG-LS"
    if transfer_syntax in _JPEG:
        return "JPEG"
    if transfer_syntax == RLELossless:
        return "RLE"
    if transfer_syntax == DEFLATED_IMAGE_FRAME:
        return "Deflated image frame"
    name = UID(transfer_syntax).name
    return name if name != transfer_syntax else f"transfer syntax {transfer_syntax}"


# ---------------------------------------------------------------- what the header says


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


# ---------------------------------------------------------------- decoded frames


class DecodedFrame:
    """One decoded frame ready for display.

    ``pixels`` is read-only: stored values (rows, columns) for greyscale, with the
    bits above Bits Stored cleared or sign-extended; 8-bit RGB (rows, columns, 3)
    for colour (palette applied, YBR converted, 16-bit samples scaled).
    ``native_equivalent`` says whether ``pixels`` are also the frame's native
    samples (false for palette indices, 16-bit colour and 64-bit floats).
    """

    __slots__ = ("_range", "colour", "native_equivalent", "pixels")

    def __init__(self, pixels: np.ndarray, *, colour: bool, native_equivalent: bool) -> None:
        pixels.flags.writeable = False
        self.pixels = pixels
        self.colour = colour
        self.native_equivalent = native_equivalent
        self._range: tuple[float, float] | None = None

    @property
    def nbytes(self) -> int:
        return int(self.pixels.nbytes) + 200

    @property
    def value_range(self) -> tuple[float, float]:
        """(min, max) of the samples, computed once."""
        if self._range is None:
            if self.pixels.size == 0:
                self._range = (0.0, 0.0)
            else:
                self._range = (float(self.pixels.min()), float(self.pixels.max()))
        return self._range


# ---------------------------------------------------------------- the source


Opener = Callable[[], BinaryIO]


class PixelSource:
    """One instance's pixel data and the header attributes that describe it.

    Build with :func:`load_source` (a stored object) or :func:`load_file_source`
    (any file). Thread-safe: it holds no open file, only a way to open one.
    """

    def __init__(
        self,
        *,
        header: Dataset,
        transfer_syntax: UID,
        opener: Opener,
        value_offset: int,
        value_length: int | None,
        vr: str,
        layout: Layout | None,
        resident_bytes: int = 0,
    ) -> None:
        self.header = header
        self.transfer_syntax = transfer_syntax
        self.layout = layout
        self._open = _guarded(opener)
        self._offset = value_offset
        self._length = value_length  # None: encapsulated (undefined length)
        self._vr = vr
        self._lock = threading.Lock()
        self._fragments: list[list[tuple[int, int]]] | None = None
        self._palette: np.ndarray | None = None
        self._plugin: str | None = None
        self._display: Display | None = None
        self._frame_displays: dict[int, Display] = {}
        self.nbytes = resident_bytes + _header_size(header) + 2048

    # ------------------------------------------------------------ facts

    @property
    def encapsulated(self) -> bool:
        return self._length is None

    @property
    def frame_count(self) -> int:
        return self.layout.frames if self.layout else 0

    def check_frame(self, index: int) -> Layout:
        """The layout, if frame ``index`` exists; else NotFound."""
        layout = self.layout
        if layout is None:
            raise NotFound("the instance has no pixel data")
        if not 0 <= index < layout.frames:
            raise NotFound(
                f"frame {index} does not exist: the instance has {layout.frames} "
                f"frame{'s' if layout.frames != 1 else ''} (numbered from 0)"
            )
        return layout

    # ------------------------------------------------------------ frames as stored

    def stored_frame(self, index: int) -> bytes:
        """Frame ``index`` exactly as stored: its fragments joined, or its native bytes.

        For native data whose frames are not byte-aligned (multi-frame 1-bit) the
        frame's bits are repacked to start at a byte boundary.
        """
        layout = self.check_frame(index)
        if self.encapsulated:
            return self._encoded_frame(index)
        size = layout.native_frame_bytes()
        if size is None:
            return pack_bits(self.native_array(index).ravel())
        return self._native_range(index * size, size, index)

    def _native_range(self, start: int, size: int, index: int) -> bytes:
        """``size`` bytes of the pixel data value from ``start`` (for frame ``index``)."""
        assert self._length is not None
        if start + size > self._length:
            raise FrameDecodeError(
                f"the pixel data holds {self._length} bytes; frame {index} needs bytes "
                f"{start}–{start + size}"
            )
        with self._open() as fp:
            fp.seek(self._offset + start)
            data = fp.read(size)
        if len(data) != size:
            raise FrameDecodeError("the pixel data is shorter than the header says")
        return data

    def _encoded_frame(self, index: int) -> bytes:
        fragments = self._fragment_index()
        with self._open() as fp:
            if fragments is None:
                # Several fragments per frame and no offset table: let pydicom find
                # the frame boundaries (JPEG end-of-image markers).
                fp.seek(self._offset)
                try:
                    return get_frame(fp, index, number_of_frames=self.frame_count, endianness="<")
                except Exception as exc:
                    raise FrameDecodeError(f"frame {index} cannot be located: {exc}") from exc
            parts = []
            for position, length in fragments[index]:
                fp.seek(position)
                parts.append(fp.read(length))
        return b"".join(parts)

    def _fragment_index(self) -> list[list[tuple[int, int]]] | None:
        """Per frame, the (file position, length) of its fragments; found once."""
        with self._lock:
            if self._fragments is None:
                with self._open() as fp:
                    self._fragments = _index_fragments(fp, self._offset, self._frame_bounds())
            return self._fragments or None

    def _frame_bounds(self) -> tuple[int, list[int] | None]:
        """(frames, extended offsets or None) for :func:`_index_fragments`."""
        offsets = None
        table = self.header.get((0x7FE0, 0x0001))
        if table is not None and table.value:
            raw = table.value
            offsets = list(struct.unpack(f"<{len(raw) // 8}Q", raw))
        return self.frame_count, offsets

    # ------------------------------------------------------------ decoding

    def decode(self, index: int) -> DecodedFrame:
        """Frame ``index`` decoded for display (see :class:`DecodedFrame`).

        Raises NotFound (no such frame) or FrameDecodeError.
        """
        layout = self.check_frame(index)
        arr, photometric = self._decode_array(index)
        try:
            return self._displayable(arr, photometric, layout)
        except FrameDecodeError:
            raise
        except Exception as exc:
            raise FrameDecodeError(f"the decoded pixels cannot be displayed: {exc}") from exc

    def native_array(self, index: int, *, correct_unused_bits: bool = True) -> np.ndarray:
        """Frame ``index`` as native samples (planar configuration 0, YBR converted to RGB).

        Palette indices stay indices; with ``correct_unused_bits=False`` the bits
        above Bits Stored keep whatever the file had (embedded overlays live there).
        """
        self.check_frame(index)
        arr, _ = self._decode_array(index, correct_unused_bits=correct_unused_bits)
        return arr

    def _decode_array(
        self, index: int, *, correct_unused_bits: bool = True
    ) -> tuple[np.ndarray, str]:
        layout = self.check_frame(index)
        size = layout.rows * layout.columns * layout.samples_per_pixel
        size *= max(1, layout.bits_allocated // 8)
        if size > MAX_FRAME_BYTES:
            # A header that claims a gigantic frame must not take the server's memory.
            raise FrameDecodeError(
                f"a {layout.columns}×{layout.rows} frame ({size >> 20} MiB decoded) is larger "
                f"than this server decodes ({MAX_FRAME_BYTES >> 20} MiB)"
            )
        try:
            if not self.encapsulated:
                size = layout.native_frame_bytes()
                if size is None:
                    return self._unpack_bits(index, layout)
                buf = self._native_range(index * size, size, index)
                return self._decode_native(buf, None, 1, correct_unused_bits)
            frame = self._encoded_frame(index)
            if self.transfer_syntax == DEFLATED_IMAGE_FRAME:
                return self._decode_native(
                    _inflate(frame), None, 1, correct_unused_bits, big_endian=False
                )
            if self.transfer_syntax == RLELossless and layout.bits_allocated == 1:
                return self._decode_native(
                    _unrle_bits(frame, layout), None, 1, correct_unused_bits, big_endian=False
                )
            return self._decode_encapsulated(frame, correct_unused_bits)
        except PacsError:
            raise
        except Exception as exc:
            raise FrameDecodeError(
                f"{codec_name(self.transfer_syntax)} data could not be decoded: {exc}"
            ) from exc

    def _unpack_bits(self, index: int, layout: Layout) -> tuple[np.ndarray, str]:
        """A 1-bit frame of native data, reading only the bytes that hold its bits.

        PS3.5 8.1.1: 1-bit frames follow each other without padding, least
        significant bit first, so a frame may start in the middle of a byte.
        """
        if layout.samples_per_pixel != 1:
            raise FrameDecodeError("1-bit pixel data with several samples per pixel")
        count = layout.rows * layout.columns
        first_bit = index * count
        start, end = first_bit // 8, (first_bit + count + 7) // 8
        data = self._native_range(start, end - start, index)
        bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
        skip = first_bit % 8
        return bits[skip : skip + count].reshape(layout.rows, layout.columns), layout.photometric

    def _options(self, frames: int, correct_unused_bits: bool) -> dict[str, Any]:
        layout = self.layout
        assert layout is not None
        opts: dict[str, Any] = {
            "rows": layout.rows,
            "columns": layout.columns,
            "samples_per_pixel": layout.samples_per_pixel,
            "bits_allocated": layout.bits_allocated,
            "bits_stored": layout.bits_stored,
            "pixel_representation": layout.pixel_representation,
            "photometric_interpretation": layout.photometric,
            "number_of_frames": frames,
            "pixel_keyword": layout.keyword,
            "correct_unused_bits": correct_unused_bits,
            "as_rgb": True,
        }
        if layout.samples_per_pixel > 1:
            opts["planar_configuration"] = layout.planar_configuration
        if self._vr in ("OB", "OW"):
            opts["pixel_vr"] = self._vr
        return opts

    def _decode_native(
        self,
        buf: bytes,
        index: int | None,
        frames: int,
        correct_unused_bits: bool,
        *,
        big_endian: bool | None = None,
    ) -> tuple[np.ndarray, str]:
        if big_endian is None:
            big_endian = self.transfer_syntax == ExplicitVRBigEndian
        decoder = get_decoder(ExplicitVRBigEndian if big_endian else ExplicitVRLittleEndian)
        arr, props = decoder.as_array(
            buf, index=index, **self._options(frames, correct_unused_bits)
        )
        return arr, str(props.get("photometric_interpretation", ""))

    def _decode_encapsulated(
        self, frame: bytes, correct_unused_bits: bool
    ) -> tuple[np.ndarray, str]:
        try:
            decoder = get_decoder(self.transfer_syntax)
        except NotImplementedError:
            raise FrameDecodeError(
                f"{codec_name(self.transfer_syntax)} pixel data cannot be decoded on this "
                "server (no decoder for this transfer syntax)"
            ) from None
        available = decoder.available_plugins
        order = [p for p in PLUGIN_ORDER.get(self.transfer_syntax, ()) if p in available]
        order += [p for p in available if p not in order]
        if self._plugin in order:
            # The plugin that decoded this instance before goes first, so all frames of
            # a multi-frame object come from the same decoder.
            order.remove(self._plugin)
            order.insert(0, self._plugin)
        if not order:
            raise FrameDecodeError(
                f"{codec_name(self.transfer_syntax)} pixel data cannot be decoded on this "
                "server (no decoding plugin installed)"
            )
        source = encapsulate([frame], has_bot=False)
        failures = []
        for plugin in order:
            try:
                arr, props = decoder.as_array(
                    source,
                    index=0,
                    decoding_plugin=plugin,
                    **self._options(1, correct_unused_bits),
                )
            except Exception as exc:
                failures.append(f"{plugin}: {_first_line(exc)}")
                continue
            self._plugin = plugin
            return arr, str(props.get("photometric_interpretation", ""))
        raise FrameDecodeError(
            f"{codec_name(self.transfer_syntax)} data could not be decoded: " + "; ".join(failures)
        )

    def _displayable(self, arr: np.ndarray, photometric: str, layout: Layout) -> DecodedFrame:
        if layout.samples_per_pixel == 1 and layout.photometric == "PALETTE COLOR":
            return DecodedFrame(self._palette_table()[arr], colour=True, native_equivalent=False)
        if layout.samples_per_pixel == 1:
            native = arr.dtype != np.float64
            if arr.dtype.kind == "f":
                arr = np.nan_to_num(arr.astype(np.float32, copy=False), copy=False)
            return DecodedFrame(arr, colour=False, native_equivalent=native)
        if layout.samples_per_pixel != 3:
            raise FrameDecodeError(
                f"{layout.samples_per_pixel} samples per pixel "
                f"({layout.photometric}) is not supported"
            )
        native = arr.dtype == np.uint8
        arr = _to_rgb(arr, photometric or layout.photometric)
        if arr.dtype != np.uint8:
            arr = _scale_to_8bit(arr, layout.bits_stored)
        return DecodedFrame(np.ascontiguousarray(arr), colour=True, native_equivalent=native)

    def _palette_table(self) -> np.ndarray:
        """Stored value → 8-bit RGB, for every value the stored bits can hold."""
        with self._lock:
            if self._palette is None:
                self._palette = _palette_table(self.header, self.layout)
            return self._palette

    # ------------------------------------------------------------ display attributes

    def display(self, index: int) -> Display:
        """Modality/VOI attributes for frame ``index`` (functional groups win)."""
        if not _has_functional_groups(self.header):
            if self._display is None:
                self._display = _display(self.header, (), self.layout)
            return self._display
        with self._lock:
            found = self._frame_displays.get(index)
        if found is None:
            found = _display(self.header, _frame_groups(self.header, index), self.layout)
            with self._lock:
                self._frame_displays[index] = found
        return found


# ---------------------------------------------------------------- loading


def load_source(opener: Opener, transfer_syntax: str, dataset_offset: int) -> PixelSource:
    """Parse a stored Part 10 object whose transfer syntax and data set offset are known.

    ``opener()`` must return a new seekable binary stream over the object each
    time. Deflated data sets are inflated and kept in memory; everything else is
    read on demand. Raises FrameDecodeError when the header cannot be read.
    """
    ts = UID(transfer_syntax)
    try:
        if ts == DeflatedExplicitVRLittleEndian:
            with opener() as fp:
                raw = fp.read()
            return _source_from_dataset(dcmread(io.BytesIO(raw), force=True), ts)
        with opener() as fp:
            fp.seek(dataset_offset)
            little = ts != ExplicitVRBigEndian
            implicit = ts == ImplicitVRLittleEndian
            header = read_dataset(fp, implicit, little, stop_when=_at_pixel_data)
            element = _read_pixel_element_header(fp, implicit, little)
    except PacsError:
        raise
    except FileNotFoundError as exc:
        raise NotFound("the stored object is missing") from exc
    except Exception as exc:
        raise FrameDecodeError(f"the instance header cannot be read: {exc}") from exc
    if element is None:
        return PixelSource(
            header=header,
            transfer_syntax=ts,
            opener=opener,
            value_offset=0,
            value_length=0,
            vr="",
            layout=None,
        )
    tag, vr, offset, length = element
    layout = _layout(header, PIXEL_KEYWORDS[tag], length, ts)
    return PixelSource(
        header=header,
        transfer_syntax=ts,
        opener=opener,
        value_offset=offset,
        value_length=length,
        vr=vr,
        layout=layout,
    )


def load_file_source(path: str) -> PixelSource:
    """Parse any DICOM file (with or without File Meta) held wholly in memory.

    For files outside the archive (previews, tests); the transfer syntax comes
    from the File Meta or pydicom's guess. Raises FrameDecodeError.
    """
    try:
        ds = dcmread(path, force=True)
        ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        if not ts:
            implicit, little = ds.original_encoding
            if implicit:
                ts = ImplicitVRLittleEndian
            else:
                ts = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        return _source_from_dataset(ds, UID(str(ts)))
    except PacsError:
        raise
    except Exception as exc:
        raise FrameDecodeError(f"the file cannot be read as DICOM: {exc}") from exc


def _source_from_dataset(ds: Dataset, ts: UID) -> PixelSource:
    """A source whose pixel data value is held in memory (from a fully read data set)."""
    tag = next((t for t in PIXEL_KEYWORDS if t in ds._dict), None)
    if tag is None:
        return PixelSource(
            header=ds,
            transfer_syntax=ts,
            opener=io.BytesIO,
            value_offset=0,
            value_length=0,
            vr="",
            layout=None,
        )
    element = ds[tag]
    value = element.value or b""
    length = None if element.is_undefined_length else len(value)
    layout = _layout(ds, PIXEL_KEYWORDS[tag], length, ts)
    header = Dataset()
    header.update({t: e for t, e in ds.items() if t < 0x7FE00000})
    header.set_original_encoding(*ds.original_encoding)
    return PixelSource(
        header=header,
        transfer_syntax=ts,
        opener=lambda: io.BytesIO(value),
        value_offset=0,
        value_length=length,
        vr=str(element.VR)[:2],
        layout=layout,
        resident_bytes=len(value),
    )


def _guarded(opener: Opener) -> Opener:
    """``opener`` with a vanished file reported as NotFound (deleted or replaced meanwhile)."""

    def open_stream() -> BinaryIO:
        try:
            return opener()
        except FileNotFoundError as exc:
            raise NotFound("the stored object is missing") from exc

    return open_stream


def _at_pixel_data(tag: int, vr: str | None, length: int) -> bool:
    return tag in PIXEL_KEYWORDS


def _read_pixel_element_header(
    fp: BinaryIO, implicit: bool, little: bool
) -> tuple[int, str, int, int | None] | None:
    """(tag, VR, value offset, value length or None if undefined) at ``fp``, or None."""
    head = fp.read(8)
    if len(head) < 8:
        return None
    endian = "<" if little else ">"
    group, elem = struct.unpack(f"{endian}HH", head[:4])
    tag = (group << 16) | elem
    if tag not in PIXEL_KEYWORDS:
        return None
    if implicit:
        (length,) = struct.unpack(f"{endian}L", head[4:])
        vr = "OW"
    else:
        vr_bytes = head[4:6]
        vr = vr_bytes.decode("ascii", "replace")
        if vr_bytes in _LONG_VRS:
            (length,) = struct.unpack(f"{endian}L", fp.read(4))
        else:
            (length,) = struct.unpack(f"{endian}H", head[6:])
    return tag, vr, fp.tell(), (None if length == 0xFFFFFFFF else length)


def _int_value(ds: Dataset, keyword: str, default: int | None = None) -> int | None:
    try:
        value = ds.get(keyword)
    except Exception:
        return default
    if value is None or value == "":
        return default
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _layout(ds: Dataset, keyword: str, length: int | None, ts: UID) -> Layout:
    """The pixel layout from the header; FrameDecodeError when it cannot describe an image."""
    rows = _int_value(ds, "Rows")
    columns = _int_value(ds, "Columns")
    float_bits = {"FloatPixelData": 32, "DoubleFloatPixelData": 64}.get(keyword)
    bits_allocated = _int_value(ds, "BitsAllocated", float_bits)
    for name, value in (("Rows", rows), ("Columns", columns), ("Bits Allocated", bits_allocated)):
        if not value or value < 0:
            raise FrameDecodeError(f"the pixel data cannot be read: {name} is missing or invalid")
    assert rows and columns and bits_allocated
    spp = _int_value(ds, "SamplesPerPixel", 1) or 1
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if not photometric:
        photometric = "MONOCHROME2" if spp == 1 else "RGB"
    bits_stored = _int_value(ds, "BitsStored", bits_allocated) or bits_allocated
    bits_stored = min(bits_stored, bits_allocated)
    layout = Layout(
        rows=rows,
        columns=columns,
        samples_per_pixel=spp,
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        pixel_representation=_int_value(ds, "PixelRepresentation", 0) or 0,
        photometric=photometric,
        planar_configuration=_int_value(ds, "PlanarConfiguration", 0) or 0,
        frames=1,
        keyword=keyword,
    )
    frames = _int_value(ds, "NumberOfFrames")
    if frames is None or frames < 1:
        # Absent means one frame; an unreadable value (e.g. "1A") is worked out
        # from the size of native data, else taken as one frame.
        frames = 1
        size = layout.native_frame_bytes()
        if "NumberOfFrames" in ds and length and size:
            frames = max(1, length // size)
    return Layout(**{**layout.__dict__, "frames": frames})


# ---------------------------------------------------------------- encapsulated frames


def _index_fragments(
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


def _inflate(data: bytes) -> bytes:
    try:
        return zlib.decompress(data, -15)
    except zlib.error:
        return zlib.decompress(data, 47)  # tolerate a zlib or gzip wrapper


def _unrle_bits(frame: bytes, layout: Layout) -> bytes:
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


# ---------------------------------------------------------------- colour


def _to_rgb(arr: np.ndarray, photometric: str) -> np.ndarray:
    """RGB samples from a three-sample frame in whatever colour space the decoder left."""
    if photometric in ("YBR_FULL", "YBR_FULL_422"):
        return convert_color_space(arr, "YBR_FULL", "RGB")
    if photometric in ("YBR_PARTIAL_422", "YBR_PARTIAL_420"):
        # PS3.3 C.7.6.3.1.2: Y 16–235, Cb/Cr 16–240; stretch to full range first
        full = arr.astype(np.float32)
        full[..., 0] = (full[..., 0] - 16) * (255 / 219)
        full[..., 1:] = (full[..., 1:] - 128) * (255 / 224) + 128
        return convert_color_space(np.clip(full + 0.5, 0, 255).astype(np.uint8), "YBR_FULL", "RGB")
    return arr


def _scale_to_8bit(arr: np.ndarray, bits_stored: int) -> np.ndarray:
    top = float((1 << min(bits_stored, 16)) - 1)
    scaled = np.clip(arr.astype(np.float32) * (255.0 / top) + 0.5, 0, 255)
    return scaled.astype(np.uint8)


def _palette_table(header: Dataset, layout: Layout | None) -> np.ndarray:
    """(2**bits allocated, 3) uint8: the 8-bit RGB colour of every possible stored value."""
    assert layout is not None
    try:
        descriptor = header.RedPaletteColorLookupTableDescriptor
        entries, first = int(descriptor[0]) or 65536, int(descriptor[1])
        # pydicom applies the tables (plain or segmented) to every input value once.
        colours = apply_color_lut(np.arange(first, first + entries, dtype=np.int64), header)
    except Exception as exc:
        raise FrameDecodeError(f"the palette colour lookup table is unusable: {exc}") from exc
    colours = colours[..., :3]
    if colours.dtype != np.uint8:
        colours = _scale_to_8bit(colours, 16)
    domain = np.arange(1 << min(layout.bits_allocated, 16), dtype=np.int64) - first
    return np.ascontiguousarray(colours[np.clip(domain, 0, entries - 1)])


# ---------------------------------------------------------------- overlays


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
    origin = _floats(value(0x0050)) or [1.0, 1.0]
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


# ---------------------------------------------------------------- display attributes


def _has_functional_groups(ds: Dataset) -> bool:
    return "SharedFunctionalGroupsSequence" in ds or "PerFrameFunctionalGroupsSequence" in ds


def _frame_groups(ds: Dataset, index: int) -> tuple[Dataset, ...]:
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


def _floats(value: Any) -> list[float]:
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
    centers = _floats(_get(ds, "WindowCenter"))
    widths = _floats(_get(ds, "WindowWidth"))
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
            data = np.asarray(_floats(raw) if not isinstance(raw, int) else [raw], np.int64)
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


def _display(ds: Dataset, groups: tuple[Dataset, ...], layout: Layout | None) -> Display:
    """The display attributes of the top level, overridden by functional groups."""
    photometric = layout.photometric if layout else "MONOCHROME2"
    signed = bool(layout and layout.pixel_representation)
    little = ds.original_encoding[1] is not False
    slope = (_floats(_get(ds, "RescaleSlope")) or [None])[0]
    intercept = (_floats(_get(ds, "RescaleIntercept")) or [None])[0]
    windows = _windows(ds)
    function = str(_get(ds, "VOILUTFunction") or "")
    spacing = _floats(_get(ds, "PixelSpacing")) or _floats(_get(ds, "ImagerPixelSpacing"))
    for group in groups:
        transform = _item(group, "PixelValueTransformationSequence")
        if transform is not None:
            slope = (_floats(_get(transform, "RescaleSlope")) or [slope])[0]
            intercept = (_floats(_get(transform, "RescaleIntercept")) or [intercept])[0]
        voi = _item(group, "FrameVOILUTSequence")
        if voi is not None:
            windows = _windows(voi) or windows
            function = str(_get(voi, "VOILUTFunction") or function)
        measures = _item(group, "PixelMeasuresSequence")
        if measures is not None:
            spacing = _floats(_get(measures, "PixelSpacing")) or spacing
    if slope is None and str(_get(ds, "Modality") or "") == "RTDOSE":
        # RT Dose: stored value × Dose Grid Scaling = dose in the Dose Units (C.8.8.3).
        slope = (_floats(_get(ds, "DoseGridScaling")) or [None])[0]
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


def _header_size(ds: Dataset) -> int:
    """A rough count of the bytes the header holds (large LUT and overlay values)."""
    total = 0
    for elem in ds._dict.values():
        value = getattr(elem, "value", None)
        if isinstance(value, bytes | bytearray):
            total += len(value)
        else:
            total += 64
    return total


def _first_line(exc: BaseException) -> str:
    """The telling part of a decoder's message, on one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Unable to decode as exceptions"):
        # pydicom lists each plugin's failure on its own line, as "name: message".
        lines = [line.split(": ", 1)[-1] for line in lines[1:]]
    return (" / ".join(lines) or type(exc).__name__)[:300]
