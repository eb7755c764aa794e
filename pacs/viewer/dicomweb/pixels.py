"""WADO-RS pixels: frames (PS3.18 10.4.1.1.3), rendered images and thumbnails (10.4.1.1.4/5),
and the pixel data bulk data.

Frames go out as the client accepts them (PS3.18 8.7.3):

- ``application/octet-stream`` without a transfer syntax (or a native one): the
  native little-endian pixels, decoded when stored compressed;
- ``transfer-syntax=*``, or the media type of the stored syntax (``image/jls``,
  ``image/jp2``…): the stored bytes as they are, no decoding.

Each part's Content-Type names its transfer syntax, which is how viewers pick a
decoder. A frame whose layout is known (see :mod:`.frames`) is one ranged read;
everything else goes through :mod:`pacs.viewer.rendering`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from flask import Blueprint, Response, current_app, request

from pacs.archive import Archive
from pacs.dicomfile import read_instance
from pacs.errors import InvalidQuery, NotAcceptable, NotFound, PacsError
from pacs.storage.index import InstanceRef
from pacs.viewer import rendering
from pacs.viewer.access import Principal
from pacs.viewer.dicomweb import multipart
from pacs.viewer.dicomweb.common import archive, gate, one_ref, visible_refs
from pacs.viewer.dicomweb.frames import FrameLayout, LayoutCache, compute_layout, read_ranges
from pacs.viewer.dicomweb.negotiation import (
    EXPLICIT_LE,
    NATIVE_SYNTAXES,
    MediaRange,
    frame_content_type,
    frame_media_type,
    is_compressed,
)
from pacs.viewer.dicomweb.wado import accept_ranges, metadata_service

log = logging.getLogger(__name__)

bp = Blueprint("dicomweb_pixels", __name__, url_prefix="/dicomweb")
LAYOUT_EXTENSION = "pacs_dicomweb_layouts"
NATIVE_PART = frame_content_type(EXPLICIT_LE, "application/octet-stream")
MAX_FRAMES_PER_REQUEST = 10_000
DEFAULT_THUMBNAIL = (128, 128)
MAX_VIEWPORT = 4096
RENDERED_TYPES = {"image/jpeg": "jpeg", "image/png": "png", "image/webp": "webp"}


# ---------------------------------------------------------------- layouts


def layout_cache() -> LayoutCache:
    return current_app.extensions[LAYOUT_EXTENSION]


def layout_of(arch: Archive, ref: InstanceRef) -> FrameLayout | None:
    """The frame layout of ``ref``: cached, else from its series metadata row, else
    worked out from its header (and cached)."""
    cache = layout_cache()
    hit, layout = cache.get(ref.sop_uid, ref.sha256)
    if hit:
        return layout
    for sop, (sha, lay) in metadata_service().layouts(ref.series_uid).items():
        cache.put(sop, sha, lay)
    hit, layout = cache.get(ref.sop_uid, ref.sha256)
    if hit:
        return layout
    try:
        with arch.readable_path(ref) as path:
            parsed = read_instance(Path(path))
            layout = compute_layout(parsed.dataset, Path(path), ref.transfer_syntax_uid)
    except PacsError as exc:
        log.warning("frame layout of %s: %s", ref.sop_uid, exc.reason)
        layout = None
    cache.put(ref.sop_uid, ref.sha256, layout)
    return layout


def frame_total(arch: Archive, ref: InstanceRef, layout: FrameLayout | None) -> int:
    if layout is not None:
        return layout.count
    if ref.frames is not None:
        return ref.frames
    raise NotFound("this instance has no pixel data")


# ---------------------------------------------------------------- frame bytes


def native_frame(arch: Archive, ref: InstanceRef, layout: FrameLayout | None, n: int) -> bytes:
    if (
        layout is not None
        and layout.native is not None
        and ref.transfer_syntax_uid in NATIVE_SYNTAXES
    ):
        return read_ranges(arch, ref, layout.ranges(n))
    # rendering numbers frames from 0; DICOMweb from 1.
    return rendering.native_frame_bytes(arch, ref, n - 1)


def stored_frame(
    arch: Archive, ref: InstanceRef, layout: FrameLayout | None, n: int
) -> tuple[bytes, str]:
    if layout is not None:
        return read_ranges(arch, ref, layout.ranges(n)), ref.transfer_syntax_uid
    data, ts = rendering.stored_frame_bytes(arch, ref, n - 1)
    return data, str(ts)


@dataclass(frozen=True)
class FramePlan:
    """How to send frames: stored bytes (with this media type) or native pixels."""

    stored: bool
    media_type: str
    multipart: bool


def frame_plan(ranges: list[MediaRange], stored_ts: str) -> FramePlan:
    """The first way the Accept header allows (PS3.18 8.7.3.3.2), or 406."""
    octet = "application/octet-stream"
    stored_native = stored_ts in NATIVE_SYNTAXES
    stored_type = frame_media_type(stored_ts)
    for r in ranges:
        if r.is_multipart:
            multipart_ = True
        elif r.media_type == "*/*":
            # PS3.18 8.7.3.3.2: the default is native pixels, multipart.
            return FramePlan(False, octet, True)
        elif r.media_type == octet:
            multipart_ = False
        else:
            continue
        ts = r.transfer_syntax
        if r.part_matches(octet) and (ts is None or ts in NATIVE_SYNTAXES):
            return FramePlan(False, octet, multipart_)
        if ts not in (None, "*", stored_ts):
            continue
        if stored_native:
            if r.part_matches(octet):
                return FramePlan(False, octet, multipart_)
            continue
        if r.part_matches(stored_type):
            return FramePlan(True, stored_type, multipart_)
        if r.part_type == octet:
            return FramePlan(True, octet, multipart_)
    raise NotAcceptable(
        f"frames of this instance are available as application/octet-stream (native) or "
        f"{stored_type} (stored as {stored_ts})"
    )


def parse_frame_list(text: str) -> list[int]:
    try:
        numbers = [int(p) for p in text.split(",") if p.strip()]
    except ValueError as exc:
        raise InvalidQuery(f"frame numbers must be whole numbers: {text[:40]!r}") from exc
    if not numbers or any(n < 1 for n in numbers) or len(numbers) > MAX_FRAMES_PER_REQUEST:
        raise InvalidQuery("frame numbers start at 1")
    return numbers


def _etag(ref: InstanceRef, *parts: object) -> str:
    return '"' + "-".join([ref.sha256[:24], *map(str, parts)]) + '"'


def _not_modified(etag: str) -> Response | None:
    if etag in request.headers.get("If-None-Match", ""):
        return Response(status=304, headers={"ETag": etag})
    return None


def _cacheable(response: Response, etag: str) -> Response:
    # Stored bytes never change under the same sha256: browsers may keep them.
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = "private, max-age=86400"
    return response


@bp.get("/studies/<study>/series/<series>/instances/<sop>/frames/<frames>")
def retrieve_frames(study: str, series: str, sop: str, frames: str) -> Response:
    principal = gate()
    ref = one_ref(principal, study, series, sop)
    numbers = parse_frame_list(frames)
    plan = frame_plan(accept_ranges(), ref.transfer_syntax_uid)
    etag = _etag(ref, frames, plan.stored, plan.media_type, plan.multipart)
    cached = _not_modified(etag)
    if cached is not None:
        return cached
    arch = archive()
    layout = layout_of(arch, ref)
    total = frame_total(arch, ref, layout)
    for n in numbers:
        if n > total:
            raise NotFound(f"frame {n} does not exist; the instance has {total}")
    if not plan.multipart and len(numbers) > 1:
        raise NotAcceptable("several frames need multipart/related")
    parts: list[tuple[str, bytes]] = []
    for n in numbers:
        # A frame that does not decode raises rendering's FrameDecodeError (422).
        if plan.stored:
            data, ts = stored_frame(arch, ref, layout, n)
            parts.append((frame_content_type(ts, plan.media_type), data))
        else:
            parts.append((NATIVE_PART, native_frame(arch, ref, layout, n)))
    if not plan.multipart:
        response = Response(parts[0][1], content_type=parts[0][0])
    else:
        body, boundary = multipart.encode(parts)
        part_type = plan.media_type if plan.stored else "application/octet-stream"
        response = Response(body, content_type=multipart.content_type(part_type, boundary))
    return _cacheable(response, etag)


def pixel_bulkdata(ref: InstanceRef) -> Response:
    """Pixel Data (7FE00010) as bulk data: all frames, native, in one part; or the
    stored frames one per part when the client accepts the stored syntax."""
    arch = archive()
    layout = layout_of(arch, ref)
    total = frame_total(arch, ref, layout)
    plan = frame_plan(accept_ranges(), ref.transfer_syntax_uid)
    if plan.stored and is_compressed(ref.transfer_syntax_uid):
        parts = []
        for n in range(1, total + 1):
            data, ts = stored_frame(arch, ref, layout, n)
            parts.append((frame_content_type(ts, plan.media_type), data))
        body, boundary = multipart.encode(parts)
        return Response(body, content_type=multipart.content_type(plan.media_type, boundary))
    data = b"".join(native_frame(arch, ref, layout, n) for n in range(1, total + 1))
    if not plan.multipart:
        return Response(data, content_type=NATIVE_PART)
    body, boundary = multipart.encode([(NATIVE_PART, data)])
    return Response(body, content_type=multipart.content_type("application/octet-stream", boundary))


# ---------------------------------------------------------------- rendered, thumbnails


def _image_format() -> tuple[str, str]:
    for r in accept_ranges():
        if r.is_multipart:
            continue
        for media_type, fmt in RENDERED_TYPES.items():
            if r.media_type == media_type:
                return media_type, fmt
        if r.media_type in ("*/*", "image/*"):
            return "image/jpeg", "jpeg"
    raise NotAcceptable("rendered images are available as image/jpeg, image/png or image/webp")


def _numbers(name: str, count: int) -> list[float] | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    pieces = [p.strip() for p in raw.split(",")]
    try:
        values = [float(p) for p in pieces[:count]]
    except ValueError as exc:
        raise InvalidQuery(f"{name} must be numbers separated by commas") from exc
    if len(values) < count:
        raise InvalidQuery(f"{name} needs {count} values")
    return values


def _viewport() -> tuple[int, int] | None:
    values = _numbers("viewport", 2)
    if values is None:
        return None
    w, h = (int(v) for v in values)
    if not (0 < w <= MAX_VIEWPORT and 0 < h <= MAX_VIEWPORT):
        raise InvalidQuery(f"viewport must be 1–{MAX_VIEWPORT} pixels each way")
    return w, h


def _window() -> tuple[tuple[float, float] | None, str | None]:
    """``window=center,width[,function]`` (PS3.18 8.3.5.1.4)."""
    raw = request.args.get("window")
    if not raw:
        return None, None
    pieces = raw.split(",")
    function = pieces[2].strip().lower() if len(pieces) >= 3 and pieces[2].strip() else None
    if function is not None and function not in ("linear", "linear-exact", "sigmoid"):
        raise InvalidQuery("the window function is linear, linear-exact or sigmoid")
    values = _numbers("window", 2)
    assert values is not None
    if values[1] <= 0:
        raise InvalidQuery("window width must be positive")
    return (values[0], values[1]), function


def _quality() -> int:
    raw = request.args.get("quality")
    if raw is None or raw == "":
        return 90
    try:
        quality = int(raw)
    except ValueError as exc:
        raise InvalidQuery("quality is a whole number 1–100") from exc
    if not 1 <= quality <= 100:
        raise InvalidQuery("quality is a whole number 1–100")
    return quality


def render_response(ref: InstanceRef, frame: int | None, *, thumbnail: bool = False) -> Response:
    """A rendered image of frame ``frame`` (1-based), or of the representative frame
    (rendering's choice: the middle one) when ``frame`` is None."""
    media_type, fmt = _image_format()
    window, function = (None, None) if thumbnail else _window()
    size = _viewport() or (DEFAULT_THUMBNAIL if thumbnail else None)
    quality = _quality()
    etag = _etag(ref, "r", frame, window, function, size, fmt, quality, thumbnail)
    cached = _not_modified(etag)
    if cached is not None:
        return cached
    arch = archive()
    if thumbnail and frame is None:
        data = rendering.thumbnail(arch, ref, size, fmt)
    else:
        data = rendering.render(
            arch,
            ref,
            rendering.RenderRequest(
                frame=(frame or 1) - 1,
                window=window,
                size=size,
                format=fmt,
                quality=quality,
                function=function,
            ),
        )
    return _cacheable(Response(data, content_type=media_type), etag)


def _single_frame(frames: str) -> int:
    numbers = parse_frame_list(frames)
    if len(numbers) != 1:
        raise InvalidQuery("render one frame at a time")
    return numbers[0]


@bp.get("/studies/<study>/series/<series>/instances/<sop>/rendered")
def retrieve_instance_rendered(study: str, series: str, sop: str) -> Response:
    ref = one_ref(gate(), study, series, sop)
    return render_response(ref, 1)


@bp.get("/studies/<study>/series/<series>/instances/<sop>/frames/<frames>/rendered")
def retrieve_frame_rendered(study: str, series: str, sop: str, frames: str) -> Response:
    ref = one_ref(gate(), study, series, sop)
    return render_response(ref, _single_frame(frames))


def representative(refs: list[InstanceRef]) -> InstanceRef:
    """The instance that stands for a series or study: the middle image of the first
    series that has images (the first instance if none has)."""
    images = [r for r in refs if r.frames]
    if not images:
        raise NotFound("nothing to show: no instance has pixel data")
    first_series = images[0].series_uid
    series = [r for r in images if r.series_uid == first_series]
    return series[len(series) // 2]


def _thumbnail_of(principal: Principal, study: str, series: str | None = None) -> Response:
    return render_response(
        representative(visible_refs(principal, study, series)), 0, thumbnail=True
    )


@bp.get("/studies/<study>/thumbnail")
def retrieve_study_thumbnail(study: str) -> Response:
    return _thumbnail_of(gate(), study)


@bp.get("/studies/<study>/series/<series>/thumbnail")
def retrieve_series_thumbnail(study: str, series: str) -> Response:
    return _thumbnail_of(gate(), study, series)


@bp.get("/studies/<study>/series/<series>/instances/<sop>/thumbnail")
def retrieve_instance_thumbnail(study: str, series: str, sop: str) -> Response:
    ref = one_ref(gate(), study, series, sop)
    return render_response(ref, None, thumbnail=True)


@bp.get("/studies/<study>/series/<series>/instances/<sop>/frames/<frames>/thumbnail")
def retrieve_frame_thumbnail(study: str, series: str, sop: str, frames: str) -> Response:
    ref = one_ref(gate(), study, series, sop)
    return render_response(ref, _single_frame(frames), thumbnail=True)
