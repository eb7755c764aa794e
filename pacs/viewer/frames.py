"""Pixel endpoints: rendered images, thumbnails, overlays, and raw frames in batches.

Two paths, both decoded on the server by :mod:`pacs.viewer.rendering`:

* **rendered** — JPEG/PNG/WebP at a requested size and window: thumbnails,
  phones, slow links;
* **raw** — the frame's stored values (e.g. 16-bit), so window/level runs in the
  browser without a round trip. Several frames travel in one response (fewer
  requests over one keep-alive connection), optionally gzip-compressed when the
  client finds its link slow.

Batch format (all little-endian), one record per requested frame, in order::

    u32 header_length | header (UTF-8 JSON) | zero padding to 8 bytes
    | pixel data (header["length"] bytes) | zero padding to 8 bytes

Records start on 8-byte boundaries, so the browser can view the pixel data as
a typed array without copying. A frame that cannot be decoded is a record with
``"error"`` and no data; the others still arrive.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Blueprint, Response, current_app, request

from pacs.archive import Archive
from pacs.errors import InvalidQuery, NotFound, PacsError
from pacs.storage.index import InstanceRef
from pacs.viewer.access import require_principal
from pacs.viewer.scoped import scoped_instance, scoped_refs
from pacs.viewer.share_deid import deid_view, real_uid

log = logging.getLogger(__name__)

MAX_BATCH = 64
MAX_SIZE = 4096
FORMATS = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
_FRAME_SPEC = re.compile(r"^([0-9.]{1,64})/([0-9]{1,6})$")
# Decoding releases the GIL in the codecs: frames of one batch decode side by side.
_POOL = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="frames")


def _rendering() -> Any:
    from pacs.viewer import rendering

    return rendering


def _archive() -> Archive:
    return current_app.extensions["pacs_archive"]


def prefetch(archive: Archive, refs: Sequence[InstanceRef]) -> None:
    """Ask the renderer to start decoding ``refs`` (never fails the request)."""
    try:
        _rendering().prefetch(archive, list(refs))
    except Exception as exc:  # prefetch only saves time; the viewer works without it
        log.debug("prefetch failed: %s", exc)


def _instance(sop_uid: str) -> InstanceRef:
    """The instance named in the URL (a pseudonym for a de-identified link), in scope."""
    principal = require_principal()
    return scoped_instance(principal, real_uid(principal, sop_uid))


def _image_response(data: bytes, mimetype: str, etag: str) -> Response:
    response = Response(data, mimetype=mimetype)
    response.set_etag(etag)
    # Revalidated every time (the session is checked), answered 304 when unchanged.
    response.headers["Cache-Control"] = "private, no-cache"
    return response.make_conditional(request)


def _float_arg(name: str) -> float | None:
    raw = request.args.get(name)
    if raw in (None, ""):
        return None
    try:
        return float(raw)  # type: ignore[arg-type]
    except ValueError as exc:
        raise InvalidQuery(f"{name} must be a number") from exc


def _int_arg(name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.args.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)  # type: ignore[arg-type]
    except ValueError as exc:
        raise InvalidQuery(f"{name} must be a whole number") from exc
    if not low <= value <= high:
        raise InvalidQuery(f"{name} must be between {low} and {high}")
    return value


def _format() -> str:
    fmt = request.args.get("format", "jpeg").lower()
    if fmt not in FORMATS:
        raise InvalidQuery("format must be jpeg, png or webp")
    return fmt


# ---------------------------------------------------------------- rendered images


def rendered(sop_uid: str, frame: int) -> Response:
    """One frame as an image; ``wc``/``ww`` window, ``w``/``h`` size, ``format``, ``quality``,
    ``invert``. Frames are numbered from 1 (as in DICOMweb)."""
    ref = _instance(sop_uid)
    r = _rendering()
    center, width = _float_arg("wc"), _float_arg("ww")
    window = (center, width) if center is not None and width is not None and width > 0 else None
    w = _int_arg("w", None, 1, MAX_SIZE)
    h = _int_arg("h", None, 1, MAX_SIZE)
    size = (w, h) if w and h else None
    fmt = _format()
    quality = _int_arg("quality", 90, 1, 100)
    invert = request.args.get("invert", "") in ("1", "true")
    req = r.RenderRequest(
        frame=frame - 1, window=window, size=size, format=fmt, quality=quality, invert=invert
    )
    data = r.render(_archive(), ref, req)
    etag = f"{ref.sha256[:32]}-{frame}-{window}-{size}-{fmt}-{quality}-{int(invert)}"
    return _image_response(data, FORMATS[fmt], etag)


def instance_thumbnail(sop_uid: str) -> Response:
    ref = _instance(sop_uid)
    size = _int_arg("size", 128, 16, 512) or 128
    data = _rendering().thumbnail(_archive(), ref, size=size, format="jpeg")
    return _image_response(data, "image/jpeg", f"{ref.sha256[:32]}-t{size}")


def series_thumbnail(series_uid: str) -> Response:
    """The middle instance of the series (its middle frame if multi-frame), as a thumbnail."""
    principal = require_principal()
    series_uid = real_uid(principal, series_uid)
    refs = [r for r in scoped_refs(principal, series_uids=[series_uid]) if r.rows]
    if not refs:
        raise NotFound(f"no image in series {series_uid}")
    ref = refs[len(refs) // 2]
    size = _int_arg("size", 128, 16, 512) or 128
    data = _rendering().thumbnail(_archive(), ref, size=size, format="jpeg")
    return _image_response(data, "image/jpeg", f"{ref.sha256[:32]}-t{size}")


def overlay(sop_uid: str, frame: int) -> Response:
    """The overlay planes of a frame as a transparent PNG (404 when there are none).

    De-identified links get none: overlays may carry text (PS3.15 E.1-1 removes them).
    """
    if require_principal().deidentify:
        raise NotFound("no overlay")
    ref = _instance(sop_uid)
    data = _rendering().overlay_png(_archive(), ref, frame - 1)
    if data is None:
        raise NotFound("no overlay")
    return _image_response(data, "image/png", f"{ref.sha256[:32]}-o{frame}")


# ---------------------------------------------------------------- raw frames


def _parse_frames(spec: str) -> list[tuple[str, int]]:
    wanted = []
    for item in spec.split(","):
        m = _FRAME_SPEC.match(item.strip())
        if not m:
            raise InvalidQuery("f must list frames as SOPInstanceUID/frame, comma-separated")
        number = int(m.group(2))
        if number < 1:
            raise InvalidQuery("frames are numbered from 1")
        wanted.append((m.group(1), number))
    if not wanted or len(wanted) > MAX_BATCH:
        raise InvalidQuery(f"ask for 1 to {MAX_BATCH} frames at a time")
    return wanted


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 8)


def _record(header: dict[str, Any], data: bytes = b"") -> Iterator[bytes]:
    header["length"] = len(data)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    head = struct.pack("<I", len(encoded)) + encoded
    yield head + _pad(len(head))
    if data:
        yield data
        yield _pad(len(data))


def raw_header(raw: Any) -> dict[str, Any]:
    """The JSON description of a decoded frame (everything but the bytes)."""
    return {
        "dtype": raw.dtype,
        "rows": raw.rows,
        "columns": raw.columns,
        "samples_per_pixel": raw.samples_per_pixel,
        "photometric": raw.photometric,
        "slope": raw.rescale_slope,
        "intercept": raw.rescale_intercept,
        "windows": [list(w) for w in (raw.windows or [])],
        "voi_lut": _jsonable(raw.voi_lut),
        "pixel_spacing": list(raw.pixel_spacing) if raw.pixel_spacing else None,
        "min": raw.min_value,
        "max": raw.max_value,
        "voi_function": getattr(raw, "voi_function", "LINEAR"),
        "bits_stored": getattr(raw, "bits_stored", 0),
    }


def _jsonable(value: Any) -> Any:
    if value is None:
        return None
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        value = asdict(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _decode(archive: Archive, ref: InstanceRef | None, sop: str, frame: int) -> list[bytes]:
    base: dict[str, Any] = {"sop_uid": sop, "frame": frame}
    if ref is None:
        return list(_record({**base, "error": "not found", "status": 404}))
    r = _rendering()
    try:
        raw = r.raw_frame(archive, ref, frame - 1)
    except PacsError as exc:
        return list(_record({**base, "error": exc.reason, "status": exc.http_status}))
    except Exception as exc:  # one broken frame must not break the batch
        log.exception("raw frame %s/%d failed", sop, frame)
        return list(_record({**base, "error": f"decoding failed: {exc}", "status": 500}))
    return list(_record({**base, **raw_header(raw)}, raw.data))


def _batch(
    archive: Archive, wanted: list[tuple[str, int]], refs: dict[str, InstanceRef]
) -> Iterator[bytes]:
    jobs = [_POOL.submit(_decode, archive, refs.get(sop), sop, n) for sop, n in wanted]
    for job in jobs:
        yield from job.result()


def _gzip(chunks: Iterable[bytes]) -> Iterator[bytes]:
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    for chunk in chunks:
        out = compressor.compress(chunk)
        if out:
            yield out
    yield compressor.flush()


def raw_frames() -> Response:
    """Several raw frames in one response: ``?f=sop/1,sop/2,…`` (``&z=1`` to gzip)."""
    principal = require_principal()
    wanted = _parse_frames(request.args.get("f", ""))
    deid = deid_view(principal)
    # Requested name → real UID (the same for callers who see real data).
    names = {sop: sop for sop, _ in wanted}
    if deid is not None:
        for sop in names:
            try:
                names[sop] = deid.real(sop)
            except NotFound:
                names[sop] = ""
    found = {r.sop_uid: r for r in scoped_refs(principal, sop_uids=sorted(set(names.values())))}
    # Records carry the name the caller used, so a de-identified viewer never sees a real UID.
    refs = {sop: found[real] for sop, real in names.items() if real in found}
    body: Iterable[bytes] = _batch(_archive(), wanted, refs)
    headers = {"Cache-Control": "private, no-store", "X-Pacs-Frames": str(len(wanted))}
    if request.args.get("z") == "1":
        body = _gzip(body)
        headers["Content-Encoding"] = "gzip"
    return Response(body, mimetype="application/octet-stream", headers=headers)


def register(bp: Blueprint) -> None:
    """Add the pixel endpoints to the API blueprint (under /api)."""
    bp.add_url_rule(
        "/instances/<sop_uid>/frames/<int:frame>/rendered", view_func=rendered, methods=["GET"]
    )
    bp.add_url_rule(
        "/instances/<sop_uid>/frames/<int:frame>/overlay", view_func=overlay, methods=["GET"]
    )
    bp.add_url_rule("/instances/<sop_uid>/thumbnail", view_func=instance_thumbnail, methods=["GET"])
    bp.add_url_rule("/series/<series_uid>/thumbnail", view_func=series_thumbnail, methods=["GET"])
    bp.add_url_rule("/frames", view_func=raw_frames, methods=["GET"])
