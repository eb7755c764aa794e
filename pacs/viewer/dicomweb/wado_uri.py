"""WADO-URI (PS3.18 9): ``/dicomweb/wado?requestType=WADO&studyUID=…&seriesUID=…&objectUID=…``,
also at ``/wado`` where older viewers and PACS integrations look for it.

``contentType`` picks the answer: ``application/dicom`` (the stored file, or
converted to ``transferSyntax``), ``image/jpeg`` or ``image/png`` (rendered,
with ``frameNumber``, ``rows``/``columns``, ``windowCenter``/``windowWidth``
and ``imageQuality``). Without it, single-frame images come as JPEG and
everything else as DICOM (PS3.18 9.1.2.2.1).
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, request

from pacs.errors import InvalidQuery, NotAcceptable
from pacs.viewer import rendering
from pacs.viewer.access import Forbidden
from pacs.viewer.dicomweb.common import archive, gate, one_ref
from pacs.viewer.dicomweb.negotiation import parse_accept
from pacs.viewer.dicomweb.transcode import can_produce
from pacs.viewer.dicomweb.wado import _single_instance, audit_download

log = logging.getLogger(__name__)

bp = Blueprint("dicomweb_wado_uri", __name__)
IMAGE_TYPES = {"image/jpeg": "jpeg", "image/png": "png"}
UNSUPPORTED = ("anonymize", "region", "presentationUID", "presentationSeriesUID")


def _required(name: str) -> str:
    value = request.args.get(name, "").strip()
    if not value:
        raise InvalidQuery(f"WADO-URI needs the {name} parameter")
    return value


def _int(name: str, low: int, high: int) -> int | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError as exc:
        raise InvalidQuery(f"{name} must be a whole number") from exc
    if not low <= value <= high:
        raise InvalidQuery(f"{name} must be between {low} and {high}")
    return value


def _float(name: str) -> float | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    try:
        return float(raw.split("\\")[0])
    except ValueError as exc:
        raise InvalidQuery(f"{name} must be a number") from exc


def _content_type(single_frame_image: bool) -> str:
    requested = request.args.get("contentType", "").strip()
    if not requested:
        return "image/jpeg" if single_frame_image else "application/dicom"
    for r in parse_accept(requested):
        if r.media_type == "application/dicom" or r.media_type in IMAGE_TYPES:
            return r.media_type
        if r.media_type in ("*/*", "image/*"):
            return (
                "image/jpeg"
                if single_frame_image or r.media_type == "image/*"
                else ("application/dicom")
            )
    raise NotAcceptable("WADO-URI serves contentType application/dicom, image/jpeg or image/png")


def _wado() -> Response:
    if request.args.get("requestType", "") != "WADO":
        raise InvalidQuery("requestType must be WADO")
    principal = gate()
    study, series, sop = _required("studyUID"), _required("seriesUID"), _required("objectUID")
    for name in UNSUPPORTED:
        if request.args.get(name, "").strip().lower() not in ("", "no"):
            raise InvalidQuery(f"the WADO-URI parameter {name} is not supported")
    ref = one_ref(principal, study, series, sop)
    media_type = _content_type(ref.frames == 1)
    if media_type == "application/dicom":
        if not principal.can_download:
            raise Forbidden("this link allows viewing, not downloading")
        target = request.args.get("transferSyntax", "").strip() or ref.transfer_syntax_uid
        if not can_produce(ref.transfer_syntax_uid, target, has_pixels=ref.frames is not None):
            raise NotAcceptable(f"cannot send this object in transfer syntax {target[:64]}")
        log.info("WADO-URI: %s retrieves %s", principal.name, ref.sop_uid)
        audit_download(archive(), ref.study_uid, "wado-uri", 1)
        response = _single_instance(archive(), ref, target)
        response.headers["Content-Type"] = "application/dicom"
        return response
    if not ref.frames:
        raise NotAcceptable("this object has no image; ask for contentType=application/dicom")
    frame = _int("frameNumber", 1, ref.frames or 1) or 1
    rows, columns = _int("rows", 1, 4096), _int("columns", 1, 4096)
    size = None
    if rows or columns:
        size = (columns or rows or 0, rows or columns or 0)
    center, width = _float("windowCenter"), _float("windowWidth")
    if (center is None) != (width is None):
        raise InvalidQuery("give both windowCenter and windowWidth")
    if width is not None and width <= 0:
        raise InvalidQuery("windowWidth must be positive")
    quality = _int("imageQuality", 1, 100) or 90
    data = rendering.render(
        archive(),
        ref,
        rendering.RenderRequest(
            frame=frame - 1,  # rendering counts from 0, WADO-URI from 1
            window=(center, width) if center is not None and width is not None else None,
            size=size,
            format=IMAGE_TYPES[media_type],
            quality=quality,
        ),
    )
    response = Response(data, content_type=media_type)
    response.headers["Cache-Control"] = "private, max-age=86400"
    return response


@bp.get("/dicomweb/wado")
def wado_uri() -> Response:
    return _wado()


@bp.get("/wado")
def wado_uri_legacy() -> Response:
    return _wado()
