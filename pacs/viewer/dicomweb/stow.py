"""STOW-RS (PS3.18 10.5): ``POST /dicomweb/studies[/{study}]`` with
``multipart/related; type="application/dicom"``.

The body is first copied part by part into spooled files (so a malformed body is
refused whole, with nothing stored, and no body is ever held in memory); then
each part goes through :meth:`pacs.archive.Archive.store_file`, the same path as
a C-STORE. The answer is the PS3.18 store-instances response data set (10.5.3): what was stored
(ReferencedSOPSequence) and what failed and why (FailedSOPSequence), with

- 200 when everything was stored, 202 when some parts failed, 409 when all did,
- 503 when nothing could be stored because storage is unavailable, 507 when it is full,
- 400 malformed multipart, 413 too large, 415 not ``application/dicom`` parts.
"""

from __future__ import annotations

import json
import logging
import warnings
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pydicom
from flask import Blueprint, Response, request

from pacs.archive import Source, StoreStatus
from pacs.errors import PacsError, PayloadTooLarge, StorageUnavailable
from pacs.viewer.access import Forbidden, Principal
from pacs.viewer.dicomweb import multipart
from pacs.viewer.dicomweb.common import (
    DICOM_JSON,
    archive,
    base_url,
    check_uid,
    gate,
    settings,
)
from pacs.viewer.dicomweb.dicomjson import Json
from pacs.viewer.dicomweb.negotiation import parse_media_type
from pacs.viewer.dicomweb.tokens import may_write, writable_study_uids

log = logging.getLogger(__name__)

bp = Blueprint("dicomweb_stow", __name__, url_prefix="/dicomweb")

# Failure reasons (PS3.4 B.2.3 storage statuses, as STOW-RS FailureReason) that come
# from this module rather than from an archive error (those carry their own).
STUDY_MISMATCH = 0xA900  # Error: Data Set does not match SOP Class (wrong study for the URL)
NOT_AUTHORIZED = 0x0124  # Refused: Not authorized (a scoped token, another study)
CANNOT_UNDERSTAND = 0xC000
PART_TYPES = ("application/dicom",)


class UnsupportedMediaType(PacsError):
    http_status = 415
    dicom_status = 0xC000


@dataclass
class PartOutcome:
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    stored: bool
    reason: int = 0
    #: the HTTP status of a failure that is the storage's, not the instance's
    #: (503 unavailable, 507 full; 0 for the instance's own failures)
    storage_status: int = 0
    message: str = ""


def _peek(path: Path) -> tuple[str, str, str]:
    """(SOP Class, SOP Instance, Study Instance) UIDs of a part, "" when unreadable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(
                path,
                stop_before_pixels=True,
                force=True,
                specific_tags=["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"],
            )
        return (
            str(ds.get("SOPClassUID", "") or "").strip("\x00 "),
            str(ds.get("SOPInstanceUID", "") or "").strip("\x00 "),
            str(ds.get("StudyInstanceUID", "") or "").strip("\x00 "),
        )
    except Exception:  # anything unreadable is refused by store_file with its reason
        return "", "", ""


def _store_part(
    part: multipart.SpooledPart, principal: Principal, study: str | None, source: Source
) -> PartOutcome:
    sop_class, sop_uid, study_uid = _peek(part.path)
    outcome = PartOutcome(sop_class, sop_uid, study_uid, stored=False)
    declared = part.content_type
    if declared and parse_media_type(declared).media_type not in PART_TYPES:
        outcome.reason = CANNOT_UNDERSTAND
        outcome.message = f"part {part.index + 1} is {declared[:60]!r}, not application/dicom"
        return outcome
    if study is not None and study_uid and study_uid != study:
        outcome.reason = STUDY_MISMATCH
        outcome.message = f"instance {sop_uid} belongs to study {study_uid}, not {study}"
        return outcome
    allowed = writable_study_uids(principal)
    if allowed is not None and study_uid not in allowed:
        outcome.reason = NOT_AUTHORIZED
        outcome.message = f"token {principal.name!r} may not store into study {study_uid or '?'}"
        return outcome
    try:
        result = archive().store_file(part.path, source=source, consume=True)
    except PacsError as exc:
        outcome.reason = exc.dicom_status
        if isinstance(exc, StorageUnavailable):
            outcome.storage_status = exc.http_status
        outcome.message = exc.reason
        return outcome
    outcome.stored = True
    outcome.sop_class_uid = result.sop_class_uid
    outcome.sop_instance_uid = result.sop_instance_uid
    outcome.study_uid = result.study_instance_uid
    if result.status is StoreStatus.KEPT_EXISTING:
        outcome.message = "an archived object with this SOP Instance UID was kept"
    return outcome


def _ui(value: str) -> Json:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def _response_body(outcomes: list[PartOutcome], series_urls: dict[str, str]) -> Json:
    base = base_url()
    body: Json = {}
    stored = [o for o in outcomes if o.stored]
    failed = [o for o in outcomes if not o.stored]
    studies = {o.study_uid for o in stored}
    if len(studies) == 1:
        body["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{next(iter(studies))}"]}
    if failed:
        body["00081198"] = {
            "vr": "SQ",
            "Value": [
                {
                    "00081150": _ui(o.sop_class_uid),
                    "00081155": _ui(o.sop_instance_uid),
                    "00081197": {"vr": "US", "Value": [o.reason]},
                }
                for o in failed
            ],
        }
    if stored:
        body["00081199"] = {
            "vr": "SQ",
            "Value": [
                {
                    "00081150": _ui(o.sop_class_uid),
                    "00081155": _ui(o.sop_instance_uid),
                    "00081190": {
                        "vr": "UR",
                        "Value": [series_urls.get(o.sop_instance_uid, "")],
                    },
                }
                for o in stored
            ],
        }
    return body


def _status(outcomes: list[PartOutcome]) -> int:
    failed = [o for o in outcomes if not o.stored]
    if not failed:
        return 200
    if len(failed) < len(outcomes):
        return 202
    storage = {o.storage_status for o in failed}
    if 0 in storage:
        return 409
    # Full when every part met a full store: the client should not simply retry.
    return 507 if storage == {507} else 503


def _check_request() -> str:
    """The boundary of an acceptable request body; 415 / 400 / 413 otherwise."""
    content_type = request.headers.get("Content-Type", "")
    media = parse_media_type(content_type) if content_type else None
    if media is None or media.media_type != "multipart/related":
        raise UnsupportedMediaType(
            'STOW-RS takes multipart/related; type="application/dicom" bodies'
        )
    part_type = media.params.get("type", "application/dicom").strip().lower()
    if part_type not in PART_TYPES:
        raise UnsupportedMediaType(
            f'parts of type {part_type[:60]!r} are not supported; send type="application/dicom"'
        )
    boundary = media.params.get("boundary", "")
    if not boundary:
        raise multipart.MalformedMultipart("the Content-Type has no boundary")
    limit = settings().dicomweb_max_request_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body of {request.content_length} bytes exceeds {limit}")
    return boundary


def _store(study: str | None) -> Response:
    principal = gate()
    if not may_write(principal):
        raise Forbidden("this account or token may not store instances")
    if study is not None:
        check_uid(study, "Study Instance UID")
    boundary = _check_request()
    arch = archive()
    source = Source("web", user=principal.name[:64], address=request.remote_addr or "")
    with ExitStack() as stack:
        parts = multipart.read_parts(
            request.stream,
            boundary,
            spool=arch.spooled,
            stack=stack,
            max_part_bytes=settings().dicomweb_max_part_bytes,
            max_total_bytes=settings().dicomweb_max_request_bytes,
        )
        outcomes = [_store_part(part, principal, study, source) for part in parts]
    for o in outcomes:
        if not o.stored:
            log.warning(
                "STOW-RS from %s@%s: refused %s: 0x%04X %s",
                principal.name,
                request.remote_addr,
                o.sop_instance_uid or "a part",
                o.reason,
                o.message,
            )
    stored = [o for o in outcomes if o.stored]
    log.info(
        "STOW-RS from %s@%s: %d stored, %d failed",
        principal.name,
        request.remote_addr,
        len(stored),
        len(outcomes) - len(stored),
    )
    urls = _series_urls(stored)
    status = _status(outcomes)
    response = Response(
        json.dumps(_response_body(outcomes, urls), separators=(",", ":")),
        status=status,
        content_type=DICOM_JSON,
    )
    if status == 503:
        response.headers["Retry-After"] = "30"
    return response


def _series_urls(stored: list[PartOutcome]) -> dict[str, str]:
    """Instance RetrieveURLs (one index query for all stored instances)."""
    if not stored:
        return {}
    base = base_url()
    refs = archive().instances(sop_uids=[o.sop_instance_uid for o in stored])
    return {
        r.sop_uid: f"{base}/studies/{r.study_uid}/series/{r.series_uid}/instances/{r.sop_uid}"
        for r in refs
    }


@bp.post("/studies")
def store_instances() -> Response:
    return _store(None)


@bp.post("/studies/<study>")
def store_study_instances(study: str) -> Response:
    return _store(study)
