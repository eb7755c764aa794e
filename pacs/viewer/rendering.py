"""The server-side pixel pipeline: stored instance → frame → grey levels or colour → image.

Used by the viewer API (rendered images, thumbnails, raw frames for window/level
in the browser) and by DICOMweb (rendered resources, frames in native or stored
syntax). Flask-free: every function takes the :class:`~pacs.archive.Archive` and
an :class:`~pacs.storage.index.InstanceRef`.

Greyscale follows PS3.3 C.11: stored value → modality transform (Rescale
Slope/Intercept or Modality LUT Sequence) → VOI transform (the requested window,
else the file's first window, else its VOI LUT, else the frame's value range) →
8 bits, inverted for MONOCHROME1. For integer samples of up to 16 bits the
whole chain is one 8-bit lookup table over every possible stored value, built
once per (instance, window) and applied with a single ``numpy.take``; numpy and
Pillow release the GIL there, so request threads render in parallel.

Three process-wide caches (see :func:`configure_caches`): parsed instance headers,
decoded frames keyed by (SOP Instance UID, content hash, frame) with a byte
budget, and encoded images keyed by the request, so repeating a render costs a
dictionary lookup. Raw and native frames are copies out of the frame cache.
Encoded images are also kept on disk for every worker of the node
(:mod:`pacs.viewer.rendered_files`, :func:`configure_rendered_files`).

Errors: :class:`FrameDecodeError` (422) when pixels cannot be decoded,
:class:`~pacs.errors.NotFound` for a frame out of range or an instance without
pixel data, :class:`~pacs.errors.InvalidQuery` for a malformed request, and the
archive's own errors when the object cannot be read.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

import numpy as np
from PIL import Image
from pydicom.pixels.utils import pack_bits
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pacs.dicomfile import open_for_parsing, positioned_stream
from pacs.errors import FrameDecodeError, InvalidQuery, NotFound, PacsError
from pacs.viewer.framecache import ByteLRU, CacheStats
from pacs.viewer.overlays import OverlayPlane
from pacs.viewer.overlays import overlay_planes as _source_overlays
from pacs.viewer.pixel_header import Display, Lut
from pacs.viewer.pixels import (
    DecodedFrame,
    PixelSource,
    load_file_source,
    load_source,
)
from pacs.viewer.rendered_files import RenderedFiles

# Pillow imports its encoders on the first save: ~80 ms that the first image a
# worker serves would otherwise pay, every time a worker starts.
Image.preinit()

if TYPE_CHECKING:
    from pacs.archive import Archive
    from pacs.storage.index import InstanceRef

__all__ = [
    "FrameDecodeError",
    "NativeFrame",
    "OverlayPlane",
    "Prefetch",
    "RawFrame",
    "RenderRequest",
    "cache_stats",
    "clear_caches",
    "configure_caches",
    "fit_size",
    "frame_count",
    "native_frame",
    "native_frame_bytes",
    "overlay_planes",
    "overlay_png",
    "prefetch",
    "raw_frame",
    "render",
    "render_file",
    "stored_frame_bytes",
    "thumbnail",
    "window_levels",
]

log = logging.getLogger(__name__)

Format = Literal["jpeg", "png", "webp"]
FORMATS = ("jpeg", "png", "webp")
VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
MEDIA_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}

DEFAULT_FRAME_CACHE_BYTES = 256 << 20
DEFAULT_OUTPUT_CACHE_BYTES = 48 << 20
DEFAULT_SOURCE_CACHE_BYTES = 64 << 20
#: PNG deflate settings: after PNG's row filters, zlib's run-length strategy is both faster
#: and smaller on medical images than the default one (512×512 CT: 2.5 ms and 64 KB,
#: against 3.4 ms and 70 KB at level 1 and 4.5 ms and 64 KB at level 6)
PNG_OPTIONS: dict[str, int] = {"compress_level": 6, "compress_type": zlib.Z_RLE}
#: libwebp effort 0–6; 2 keeps a 512×512 encode near 10 ms
WEBP_METHOD = 2
THUMBNAIL_QUALITY = 80
#: remote objects up to this size are fetched whole (one request); larger ones by ranges
REMOTE_WHOLE_OBJECT_BYTES = 8 << 20
PREFETCH_WORKERS = 2


# ---------------------------------------------------------------- requests and results


@dataclass(frozen=True)
class RenderRequest:
    """What image to make of one frame.

    ``window`` is (center, width) in modality units (after rescale); None uses the
    file's first window, else its VOI LUT, else the frame's value range.
    ``size`` is a (width, height) box the image is fitted into, aspect kept; an
    image smaller than the box is not enlarged. ``overlays`` burns the overlay
    planes (groups 60xx) in white. ``function`` replaces the file's VOI LUT Function
    (PS3.3 C.11.2.1.3) for the window, as DICOMweb's ``window=c,w,function`` asks.
    Invalid values raise InvalidQuery.
    """

    frame: int = 0
    window: tuple[float, float] | None = None
    size: tuple[int, int] | None = None
    format: Format = "jpeg"
    quality: int = 90
    invert: bool = False
    overlays: bool = False
    #: overrides the file's VOI LUT Function for the window: LINEAR, LINEAR_EXACT, SIGMOID
    function: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.frame, bool) or not isinstance(self.frame, int) or self.frame < 0:
            raise InvalidQuery(f"frame must be a whole number ≥ 0, not {self.frame!r}")
        if self.window is not None:
            try:
                center, width = (float(v) for v in self.window)
            except (TypeError, ValueError):
                raise InvalidQuery("window must be (center, width)") from None
            if not (np.isfinite(center) and np.isfinite(width)) or width <= 0:
                raise InvalidQuery("window width must be a positive number")
            object.__setattr__(self, "window", (center, width))
        if self.size is not None:
            try:
                width, height = (int(v) for v in self.size)
            except (TypeError, ValueError):
                raise InvalidQuery("size must be (width, height)") from None
            if width < 1 or height < 1 or width > 16384 or height > 16384:
                raise InvalidQuery("size must be between 1 and 16384 pixels each way")
            object.__setattr__(self, "size", (width, height))
        if self.format not in FORMATS:
            raise InvalidQuery(f"format must be one of {', '.join(FORMATS)}")
        if not isinstance(self.quality, int) or not 1 <= self.quality <= 100:
            raise InvalidQuery("quality must be a whole number between 1 and 100")
        if self.function is not None:
            function = str(self.function).strip().upper().replace("-", "_")
            if function not in VOI_FUNCTIONS:
                raise InvalidQuery("the window function is LINEAR, LINEAR_EXACT or SIGMOID")
            object.__setattr__(self, "function", function)


@dataclass(frozen=True)
class RawFrame:
    """One frame's samples for window/level in the browser, and what they mean.

    ``data`` is little-endian, row-major, RGB interleaved for colour. Greyscale
    keeps its stored values (``dtype`` uint8/int8/uint16/int16; float32 for float
    data and for 32-bit integers), to be mapped as
    ``value * rescale_slope + rescale_intercept``; when the file has a Modality
    LUT Sequence it is applied here, so ``data`` holds its output (uint16) and
    slope/intercept are 1/0. Colour (RGB, YBR, palette) is always uint8 RGB.
    ``voi_lut`` is ``{"first_mapped", "bits", "data", "explanation"}``: ``data[i]``
    is the output for input ``first_mapped + i`` in modality units, inputs beyond
    the table map to its ends, output range 0 … 2**bits − 1.
    """

    data: bytes
    dtype: str
    rows: int
    columns: int
    samples_per_pixel: int
    photometric: str
    rescale_slope: float
    rescale_intercept: float
    windows: list[tuple[float, float, str]]
    voi_lut: dict[str, Any] | None
    pixel_spacing: tuple[float, float] | None
    min_value: float
    max_value: float
    #: LINEAR, LINEAR_EXACT or SIGMOID (PS3.3 C.11.2.1.3), for the windows
    voi_function: str = "LINEAR"
    bits_stored: int = 0


@dataclass(frozen=True)
class NativeFrame:
    """A frame as DICOM native pixel data (little endian) and the attributes describing it.

    Differs from the file's header only where decoding changed it: YBR colour is
    RGB after decompression, and planar configuration is 0.
    """

    data: bytes
    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric: str
    planar_configuration: int


# ---------------------------------------------------------------- caches


def _sizeof(value: Any) -> int:
    if isinstance(value, bytes):
        return len(value) + 100
    if isinstance(value, RawFrame | NativeFrame):
        return len(value.data) + 1000
    if isinstance(value, PixelSource):
        return value.nbytes
    if isinstance(value, DecodedFrame):
        return value.nbytes
    if isinstance(value, np.ndarray):
        return int(value.nbytes) + 100
    return 1000


_sources: ByteLRU[Any, PixelSource] = ByteLRU(
    DEFAULT_SOURCE_CACHE_BYTES, _sizeof, name="instance headers"
)
_frames: ByteLRU[Any, DecodedFrame] = ByteLRU(
    DEFAULT_FRAME_CACHE_BYTES, _sizeof, name="decoded frames"
)
_outputs: ByteLRU[Any, Any] = ByteLRU(DEFAULT_OUTPUT_CACHE_BYTES, _sizeof, name="outputs")
_luts: ByteLRU[Any, np.ndarray] = ByteLRU(8 << 20, _sizeof, name="lookup tables")


def configure_caches(
    *,
    frame_bytes: int | None = None,
    output_bytes: int | None = None,
    source_bytes: int | None = None,
) -> None:
    """Set the byte budgets of the process-wide caches (shrinking evicts at once)."""
    if frame_bytes is not None:
        _frames.set_budget(frame_bytes)
    if output_bytes is not None:
        _outputs.set_budget(output_bytes)
    if source_bytes is not None:
        _sources.set_budget(source_bytes)


_files: RenderedFiles | None = None


def configure_rendered_files(files: RenderedFiles | None) -> None:
    """Keep rendered images on disk too, shared by the worker processes (None: off)."""
    global _files
    _files = files


def cache_stats() -> list[CacheStats]:
    return [cache.stats() for cache in (_sources, _frames, _outputs, _luts)]


def clear_caches() -> None:
    for cache in (_sources, _frames, _outputs, _luts):
        cache.clear()


def _instance_key(ref: InstanceRef) -> tuple[str, str]:
    # The content hash is part of every key: a re-sent object with the same SOP
    # Instance UID but different bytes must never be served from the old one's cache.
    return (ref.sop_uid, ref.sha256)


def _source(archive: Archive, ref: InstanceRef) -> PixelSource:
    return _sources.get_or_load(_instance_key(ref), partial(_load_source, archive, ref))


def _load_source(archive: Archive, ref: InstanceRef) -> PixelSource:
    path = archive.local_path(ref)
    if path is not None:
        opener = partial(open_for_parsing, path)
        return load_source(opener, ref.transfer_syntax_uid, ref.dataset_offset)
    if ref.size_bytes > REMOTE_WHOLE_OBJECT_BYTES:
        # A large remote object (a long cine, a whole-slide level): read the header and
        # then each frame by ranged reads instead of downloading all of it per frame.
        read = partial(archive.read_range, ref)
        opener = partial(_ranged_stream, read, ref.size_bytes)
        return load_source(opener, ref.transfer_syntax_uid, ref.dataset_offset)
    # A small remote object: one request, kept in memory with the parsed header.
    with archive.open(ref) as stream:
        data = stream.read()
    source = load_source(partial(io.BytesIO, data), ref.transfer_syntax_uid, ref.dataset_offset)
    source.nbytes += len(data)
    return source


def _ranged_stream(read: Callable[[int, int], bytes], size: int) -> BinaryIO:
    """A seekable stream over ``read(start, length)`` calls to a remote object."""

    def read_into(view: memoryview, offset: int) -> int:
        data = read(offset, len(view))
        view[: len(data)] = data
        return len(data)

    # Buffered so that parsing the header (many small reads) costs one request.
    return positioned_stream(read_into, size, 256 << 10)


def _decoded(source: PixelSource, key: tuple[str, str], index: int) -> DecodedFrame:
    source.check_frame(index)
    return _frames.get_or_load((*key, index), partial(source.decode, index))


# ---------------------------------------------------------------- public API


def frame_count(archive: Archive, ref: InstanceRef) -> int:
    """Number of frames (0 without pixel data). From the index when it knows, else the file."""
    if ref.frames is not None:
        return int(ref.frames)
    return _source(archive, ref).frame_count


def render(archive: Archive, ref: InstanceRef, request: RenderRequest | None = None) -> bytes:
    """Frame ``request.frame`` as an encoded 8-bit greyscale or RGB image.

    Raises NotFound (no such frame, no pixel data), FrameDecodeError, or the
    archive's errors when the object cannot be read.
    """
    request = request or RenderRequest()
    key = ("render", *_instance_key(ref), request)
    cached = _outputs.get(key)
    if cached is not None:
        return cached
    files = _files
    if files is not None:
        kept = files.get(ref.study_uid, key)
        if kept is not None:
            _outputs.put(key, kept)
            return kept
    source = _source(archive, ref)
    decoded = _decoded(source, _instance_key(ref), request.frame)
    data = _render(source, decoded, request)
    _outputs.put(key, data)
    if files is not None:
        files.put(ref.study_uid, key, data)
    return data


def thumbnail(
    archive: Archive,
    ref: InstanceRef,
    size: int | tuple[int, int] = 128,
    format: Format = "jpeg",
) -> bytes:
    """The middle frame fitted into ``size`` × ``size`` (or a (width, height) box).

    Raises as :func:`render` does.
    """
    frames = frame_count(archive, ref)
    if frames < 1:
        raise NotFound("the instance has no pixel data")
    box = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    request = RenderRequest(frame=frames // 2, size=box, format=format, quality=THUMBNAIL_QUALITY)
    return render(archive, ref, request)


def render_file(path: str | Path, request: RenderRequest | None = None) -> bytes:
    """Render a DICOM file that is not in the archive (previews, checks); not cached."""
    request = request or RenderRequest()
    source = load_file_source(str(path))
    source.check_frame(request.frame)
    return _render(source, source.decode(request.frame), request)


def raw_frame(archive: Archive, ref: InstanceRef, frame: int) -> RawFrame:
    """Frame ``frame``'s samples and display attributes (see :class:`RawFrame`).

    Built from the decoded-frame cache each time (a copy of the samples): caching
    the result as well would hold every frame twice.
    """
    source = _source(archive, ref)
    return _raw(source, _decoded(source, _instance_key(ref), frame), frame)


def native_frame(archive: Archive, ref: InstanceRef, frame: int) -> NativeFrame:
    """Frame ``frame`` as uncompressed native pixel data, little endian, with its attributes.

    Native little-endian files give their stored bytes unchanged (a single read);
    everything else comes from the decoded-frame cache. Raises NotFound or
    FrameDecodeError.
    """
    source = _source(archive, ref)
    layout = source.check_frame(frame)
    photometric = layout.photometric
    planar = layout.planar_configuration
    bits_allocated = layout.bits_allocated
    if not source.encapsulated and source.transfer_syntax in (
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
    ):
        data = source.stored_frame(frame)
    else:
        decoded = _decoded(source, _instance_key(ref), frame)
        if decoded.native_equivalent:
            pixels = decoded.pixels
            photometric = "RGB" if decoded.colour else photometric
        else:
            pixels = source.native_array(frame)
            if layout.samples_per_pixel == 3:
                photometric = "RGB"
        planar = 0
        if bits_allocated == 1:
            data = pack_bits(pixels.ravel())
        else:
            data = _little_endian_bytes(pixels)
            bits_allocated = pixels.dtype.itemsize * 8
    return NativeFrame(
        data=data,
        rows=layout.rows,
        columns=layout.columns,
        samples_per_pixel=layout.samples_per_pixel,
        bits_allocated=bits_allocated,
        bits_stored=min(layout.bits_stored, bits_allocated),
        pixel_representation=layout.pixel_representation,
        photometric=photometric,
        planar_configuration=planar,
    )


def native_frame_bytes(archive: Archive, ref: InstanceRef, frame: int) -> bytes:
    """Frame ``frame`` as DICOM native pixel data, little endian (see :func:`native_frame`)."""
    return native_frame(archive, ref, frame).data


def stored_frame_bytes(archive: Archive, ref: InstanceRef, frame: int) -> tuple[bytes, str]:
    """Frame ``frame`` exactly as stored, and the transfer syntax UID of those bytes.

    Encapsulated syntaxes give the frame's fragments joined, undecoded, with the
    stored transfer syntax. Native syntaxes give native little-endian bytes
    (:func:`native_frame_bytes`) with Explicit VR Little Endian.
    """
    source = _source(archive, ref)
    source.check_frame(frame)
    if source.encapsulated:
        return source.stored_frame(frame), str(source.transfer_syntax)
    return native_frame_bytes(archive, ref, frame), str(ExplicitVRLittleEndian)


def overlay_planes(archive: Archive, ref: InstanceRef, frame: int) -> list[OverlayPlane]:
    """The overlay planes that apply to frame ``frame`` (see :class:`OverlayPlane`).

    Each has a boolean ``mask`` with its ``origin`` (0-based row, column; may lie
    outside the image), ``packed()`` bits and ``as_json()``. Raises NotFound.
    """
    return _source_overlays(_source(archive, ref), frame)


def overlay_png(
    archive: Archive,
    ref: InstanceRef,
    frame: int,
    colour: tuple[int, int, int] = (255, 255, 255),
) -> bytes | None:
    """The overlay planes of frame ``frame`` drawn on a transparent PNG the size of the image.

    None when no overlay applies to the frame; raises NotFound for a missing frame.
    """
    key = ("overlay", *_instance_key(ref), frame, colour)
    cached = _outputs.get(key)
    if cached is not None:
        return cached or None
    source = _source(archive, ref)
    layout = source.check_frame(frame)
    planes = _source_overlays(source, frame)
    data = b""
    if planes:
        mask = np.zeros((layout.rows, layout.columns), dtype=bool)
        for plane in planes:
            mask |= plane.on_image(layout.rows, layout.columns)
        rgba = np.zeros((layout.rows, layout.columns, 4), dtype=np.uint8)
        rgba[mask] = (*colour, 255)
        out = io.BytesIO()
        Image.fromarray(rgba).save(out, "PNG", **PNG_OPTIONS)
        data = out.getvalue()
    _outputs.put(key, data)
    return data or None


# ---------------------------------------------------------------- prefetch


class Prefetch:
    """A running prefetch; :meth:`cancel` stops it between frames."""

    def __init__(self) -> None:
        self.futures: list[Future[int]] = []
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self.bytes = 0
        self.frames = 0

    def cancel(self) -> None:
        self._cancelled.set()
        for future in self.futures:
            future.cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """True when every instance has been handled within ``timeout`` seconds."""
        _, pending = wait_futures(self.futures, timeout=timeout)
        return not pending

    def _add(self, nbytes: int) -> None:
        with self._lock:
            self.bytes += nbytes
            self.frames += 1


_pool: ThreadPoolExecutor | None = None
_pool_pid = 0
_pool_lock = threading.Lock()


def _prefetch_pool() -> ThreadPoolExecutor:
    global _pool, _pool_pid
    with _pool_lock:
        # A pool inherited through fork() has no threads behind it: make a new one.
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(PREFETCH_WORKERS, thread_name_prefix="pixel-prefetch")
            _pool_pid = os.getpid()
        return _pool


def prefetch(
    archive: Archive, refs: Iterable[InstanceRef], *, max_bytes: int | None = None
) -> Prefetch:
    """Decode every frame of ``refs`` into the frame cache on background threads.

    Instances are taken in the order given (pass the series from the slice being
    viewed outwards). Stops after ``max_bytes`` of new frames (default: three
    quarters of the frame cache, so a prefetch never evicts everything else).
    Failures are logged and skipped. Returns at once.
    """
    job = Prefetch()
    budget = max_bytes if max_bytes is not None else _frames.budget * 3 // 4
    pool = _prefetch_pool()
    job.futures = [pool.submit(_prefetch_one, archive, ref, job, budget) for ref in refs]
    return job


def _prefetch_one(archive: Archive, ref: InstanceRef, job: Prefetch, budget: int) -> int:
    done = 0
    try:
        source = _source(archive, ref)
        key = _instance_key(ref)
        for index in range(source.frame_count):
            if job.cancelled or job.bytes >= budget:
                break
            if (*key, index) in _frames:
                continue
            job._add(_decoded(source, key, index).nbytes)
            done += 1
    except PacsError as exc:
        log.debug("prefetch of %s skipped: %s", ref.sop_uid, exc.reason)
    except Exception:
        log.exception("prefetch of %s failed", ref.sop_uid)
    return done


# ---------------------------------------------------------------- rendering


def _guarded(what: str, make: Callable[[], Any]) -> Any:
    """``make()``, with an unexpected failure logged in full and reported as a 422.

    Decoded pixels from the field hold surprises (odd attribute values, shapes);
    the caller gets a reason, the log keeps the traceback for the developers.
    """
    try:
        return make()
    except PacsError:
        raise
    except Exception as exc:
        log.exception("%s failed", what)
        raise FrameDecodeError(f"the {what} cannot be made: {exc}") from exc


def _render(source: PixelSource, decoded: DecodedFrame, request: RenderRequest) -> bytes:
    return _guarded("image", partial(_render_unguarded, source, decoded, request))


def _render_unguarded(source: PixelSource, decoded: DecodedFrame, request: RenderRequest) -> bytes:
    display = source.display(request.frame)
    if decoded.colour:
        image = colour_levels(decoded.pixels, request.window, request.invert)
    else:
        bits_stored = source.layout.bits_stored if source.layout else 16
        image = grey_levels(
            decoded, display, request.window, request.invert, bits_stored, request.function
        )
    if request.overlays:
        image = _burn_overlays(image, _source_overlays(source, request.frame))
    return encode(image, request.format, request.quality, request.size)


def _burn_overlays(image: np.ndarray, planes: Sequence[OverlayPlane]) -> np.ndarray:
    if not planes:
        return image
    image = image.copy()
    rows, columns = image.shape[:2]
    for plane in planes:
        image[plane.on_image(rows, columns)] = 255
    return image


def window_levels(
    values: np.ndarray, center: float, width: float, function: str = "LINEAR"
) -> np.ndarray:
    """The VOI window function (PS3.3 C.11.2.1.2 and C.11.2.1.3) as levels in [0, 1].

    LINEAR treats a width below 1 as 1 (a threshold at ``center - 0.5``).
    """
    x = np.asarray(values, dtype=np.float64)
    if function == "SIGMOID":
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / max(width, 1e-9)))
    if function == "LINEAR_EXACT":
        return np.clip((x - center) / max(width, 1e-9) + 0.5, 0.0, 1.0)
    if width <= 1:
        return (x > center - 0.5).astype(np.float64)
    return np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _to_byte(levels: np.ndarray, flip: bool) -> np.ndarray:
    out = np.floor(levels * 255.0 + 0.5)
    np.clip(out, 0, 255, out=out)
    out = out.astype(np.uint8)
    return 255 - out if flip else out


def _modality(values: np.ndarray, display: Display) -> np.ndarray:
    if display.modality_lut is not None:
        return display.modality_lut.lookup(values)
    if display.rescale_slope == 1.0 and display.rescale_intercept == 0.0:
        return values
    return values * display.rescale_slope + display.rescale_intercept


def _voi_spec(
    decoded: DecodedFrame,
    display: Display,
    window: tuple[float, float] | None,
    bits_stored: int,
    function: str | None = None,
) -> tuple[Any, ...]:
    """Which VOI transform applies: ("window", c, w, fn), ("lut", Lut) or ("range", lo, hi)."""
    function = function or display.voi_function
    if window is not None:
        return ("window", window[0], window[1], function)
    if display.windows:
        center, width, _ = display.windows[0]
        return ("window", center, width, function)
    if display.voi_lut is not None:
        return ("lut", display.voi_lut)
    pixels = decoded.pixels
    identity = (
        display.modality_lut is None
        and display.rescale_slope == 1.0
        and display.rescale_intercept == 0.0
    )
    if identity and pixels.dtype == np.uint8 and bits_stored == 8:
        # An 8-bit image without VOI is meant to be shown as stored.
        return ("range", 0.0, 255.0)
    if identity and bits_stored == 1:
        # A 1-bit image (segmentation, mask) is black and white even when all one value.
        return ("range", 0.0, 1.0)
    low, high = decoded.value_range
    if display.modality_lut is not None and pixels.dtype.kind in "iu":
        mapped = display.modality_lut.lookup(np.arange(low, high + 1, dtype=np.float64))
        return ("range", float(mapped.min()), float(mapped.max()))
    ends = _modality(np.array([low, high], dtype=np.float64), display)
    return ("range", float(ends.min()), float(ends.max()))


def _voi(values: np.ndarray, spec: tuple[Any, ...]) -> np.ndarray:
    kind = spec[0]
    if kind == "window":
        return window_levels(values, spec[1], spec[2], spec[3])
    if kind == "lut":
        lut: Lut = spec[1]
        return lut.lookup(values) / float((1 << lut.bits) - 1)
    low, high = spec[1], spec[2]
    if high <= low:
        return np.zeros(np.shape(values), dtype=np.float64)
    return np.clip((np.asarray(values, dtype=np.float64) - low) / (high - low), 0.0, 1.0)


def grey_levels(
    decoded: DecodedFrame,
    display: Display,
    window: tuple[float, float] | None,
    invert: bool,
    bits_stored: int = 16,
    function: str | None = None,
) -> np.ndarray:
    """A greyscale frame as 8-bit display levels (modality → VOI → MONOCHROME1/invert)."""
    pixels = decoded.pixels
    spec = _voi_spec(decoded, display, window, bits_stored, function)
    flip = (display.photometric == "MONOCHROME1") != invert
    if pixels.dtype.kind in "iu" and pixels.dtype.itemsize <= 2:
        unsigned = np.dtype(f"u{pixels.dtype.itemsize}")
        key = (pixels.dtype.str, display, spec, flip)
        lut = _luts.get(key)
        if lut is None:
            domain = np.arange(1 << (8 * unsigned.itemsize), dtype=unsigned)
            stored = domain.view(pixels.dtype).astype(np.float64)
            lut = _to_byte(_voi(_modality(stored, display), spec), flip)
            _luts.put(key, lut)
        return np.take(lut, pixels.view(unsigned))
    values = _modality(pixels.astype(np.float64), display)
    return _to_byte(_voi(values, spec), flip)


def colour_levels(rgb: np.ndarray, window: tuple[float, float] | None, invert: bool) -> np.ndarray:
    """An 8-bit RGB frame, windowed per channel and/or inverted when asked."""
    if window is None and not invert:
        return rgb
    key = ("rgb", window, invert)
    lut = _luts.get(key)
    if lut is None:
        levels = np.arange(256, dtype=np.float64) / 255.0
        if window is not None:
            levels = window_levels(np.arange(256), window[0], window[1])
        lut = _to_byte(levels, invert)
        _luts.put(key, lut)
    return np.take(lut, rgb)


def fit_size(width: int, height: int, box: tuple[int, int] | None) -> tuple[int, int]:
    """(width, height) scaled down to fit ``box`` with the aspect kept; never enlarged."""
    if box is None or (width <= box[0] and height <= box[1]):
        return width, height
    scale = min(box[0] / width, box[1] / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def encode(
    image: np.ndarray, format: Format, quality: int = 90, size: tuple[int, int] | None = None
) -> bytes:
    """An 8-bit greyscale (rows, columns) or RGB (rows, columns, 3) array as an image file."""
    picture = Image.fromarray(np.ascontiguousarray(image))
    target = fit_size(picture.width, picture.height, size)
    if target != picture.size:
        picture = picture.resize(target, Image.Resampling.BICUBIC, reducing_gap=2.0)
    out = io.BytesIO()
    if format == "jpeg":
        # 4:4:4 chroma at high quality: colour Doppler and annotations stay sharp.
        picture.save(out, "JPEG", quality=quality, subsampling=0 if quality >= 90 else 2)
    elif format == "png":
        picture.save(out, "PNG", **PNG_OPTIONS)
    else:
        picture.save(out, "WEBP", quality=quality, method=WEBP_METHOD, lossless=quality >= 100)
    return out.getvalue()


# ---------------------------------------------------------------- raw and native frames


def _little_endian_bytes(pixels: np.ndarray) -> bytes:
    return np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<")).tobytes()


def _raw(source: PixelSource, decoded: DecodedFrame, frame: int) -> RawFrame:
    return _guarded("raw frame", partial(_raw_unguarded, source, decoded, frame))


def _raw_unguarded(source: PixelSource, decoded: DecodedFrame, frame: int) -> RawFrame:
    layout = source.layout
    assert layout is not None
    display = source.display(frame)
    pixels = decoded.pixels
    slope, intercept = display.rescale_slope, display.rescale_intercept
    if decoded.colour:
        photometric, samples = "RGB", 3
    else:
        photometric, samples = display.photometric, 1
        if photometric not in ("MONOCHROME1", "MONOCHROME2"):
            photometric = "MONOCHROME2"
        if display.modality_lut is not None and pixels.dtype.kind in "iu":
            pixels = display.modality_lut.lookup(pixels).astype(np.uint16)
            slope, intercept = 1.0, 0.0
        elif pixels.dtype.name not in ("uint8", "int8", "uint16", "int16", "float32"):
            pixels = pixels.astype(np.float32)
    low, high = (
        decoded.value_range
        if pixels is decoded.pixels
        else (float(pixels.min()), float(pixels.max()))
    )
    return RawFrame(
        data=_little_endian_bytes(pixels),
        dtype=pixels.dtype.name,
        rows=layout.rows,
        columns=layout.columns,
        samples_per_pixel=samples,
        photometric=photometric,
        rescale_slope=slope,
        rescale_intercept=intercept,
        windows=[] if decoded.colour else list(display.windows),
        voi_lut=(
            display.voi_lut.as_json()
            if display.voi_lut is not None and not decoded.colour
            else None
        ),
        pixel_spacing=display.pixel_spacing,
        min_value=low,
        max_value=high,
        voi_function=display.voi_function,
        bits_stored=8 if decoded.colour else layout.bits_stored,
    )
