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
from collections.abc import Callable
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

from pacs.errors import FrameDecodeError, NotFound, PacsError
from pacs.viewer.fragments import index_fragments, inflate, unrle_bits
from pacs.viewer.pixel_header import (
    Display,
    Layout,
    display_attributes,
    frame_groups,
    has_functional_groups,
    header_size,
)

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
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV"}


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
        self.display_attributes: Display | None = None
        self._frame_displays: dict[int, Display] = {}
        self.nbytes = resident_bytes + header_size(header) + 2048

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
                    self._fragments = index_fragments(fp, self._offset, self._frame_bounds())
            return self._fragments or None

    def _frame_bounds(self) -> tuple[int, list[int] | None]:
        """(frames, extended offsets or None) for :func:`index_fragments`."""
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
                    inflate(frame), None, 1, correct_unused_bits, big_endian=False
                )
            if self.transfer_syntax == RLELossless and layout.bits_allocated == 1:
                return self._decode_native(
                    unrle_bits(frame, layout), None, 1, correct_unused_bits, big_endian=False
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
        if not has_functional_groups(self.header):
            if self.display_attributes is None:
                self.display_attributes = display_attributes(self.header, (), self.layout)
            return self.display_attributes
        with self._lock:
            found = self._frame_displays.get(index)
        if found is None:
            found = display_attributes(self.header, frame_groups(self.header, index), self.layout)
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


def _first_line(exc: BaseException) -> str:
    """The telling part of a decoder's message, on one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Unable to decode as exceptions"):
        # pydicom lists each plugin's failure on its own line, as "name: message".
        lines = [line.split(": ", 1)[-1] for line in lines[1:]]
    return (" / ".join(lines) or type(exc).__name__)[:300]
