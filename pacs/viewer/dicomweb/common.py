"""What every DICOMweb endpoint does first: find the caller, check UIDs, and fetch only
what the caller's scope allows.

Scope violations answer 404, exactly like a study that does not exist: a partner
token for study A learns nothing about whether study B is archived.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from flask import current_app, request

from pacs.archive import Archive
from pacs.config import Settings
from pacs.errors import InvalidQuery, NotFound
from pacs.storage.index import InstanceRef
from pacs.storage.objects import is_valid_uid
from pacs.viewer.access import Forbidden, Principal, require_principal

log = logging.getLogger(__name__)

PREFIX = "/dicomweb"
DICOM_JSON = "application/dicom+json"


def archive() -> Archive:
    return current_app.extensions["pacs_archive"]


def settings() -> Settings:
    return current_app.config["PACS_SETTINGS"]


_DEFAULT_PORTS = {"http": "80", "https": "443"}
_FORWARDED = ("Forwarded", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-Port")


def base_url() -> str:
    """Absolute URL of the DICOMweb root (RetrieveURL, BulkDataURI…).

    The configured public URL when there is one (a reverse proxy in front), else
    the URL this client used. Some clients (``dicomweb-client``) send a Host
    header without the port; when nothing says a proxy is in between, the port
    the request really arrived on is the one to put back.
    """
    public = settings().public_url.rstrip("/")
    if public:
        return public + PREFIX
    root = request.url_root.rstrip("/")
    host = request.host
    port = str(request.environ.get("SERVER_PORT", ""))
    if (
        ":" not in host.rsplit("]", 1)[-1]
        and port
        and port != _DEFAULT_PORTS.get(request.scheme)
        and not any(h in request.headers for h in _FORWARDED)
    ):
        root = f"{request.scheme}://{host}:{port}{request.script_root}"
    return root + PREFIX


def gate(*roles: str) -> Principal:
    """The caller, or 401/403. De-identified share links get no DICOMweb: it serves
    the stored objects as they are."""
    principal = require_principal(*roles)
    if principal.deidentify:
        raise Forbidden("this link shows de-identified images in the viewer only")
    return principal


def check_uid(value: str, what: str) -> str:
    """A UID from the URL, or 400 (it never reaches a query or a path otherwise)."""
    if not is_valid_uid(value):
        raise InvalidQuery(f"{what} {value[:80]!r} is not a valid UID")
    return value


def visible_refs(
    principal: Principal,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> list[InstanceRef]:
    """The instances selected by the URL that the caller may see; NotFound if none."""
    check_uid(study_uid, "Study Instance UID")
    selectors: dict[str, Any] = {"study_uid": study_uid, "study_scope": principal.scope()}
    if series_uid is not None:
        selectors["series_uids"] = [check_uid(series_uid, "Series Instance UID")]
    if sop_uid is not None:
        selectors["sop_uids"] = [check_uid(sop_uid, "SOP Instance UID")]
    refs = archive().instances(**selectors)
    if principal.series_uids is not None:
        refs = [r for r in refs if r.series_uid in principal.series_uids]
    if not refs:
        what = "instance" if sop_uid else "series" if series_uid else "study"
        raise NotFound(f"no such {what}")
    return refs


def one_ref(principal: Principal, study_uid: str, series_uid: str, sop_uid: str) -> InstanceRef:
    """One instance named by the URL that the caller may see; NotFound otherwise."""
    if principal.study_pks is not None:
        return visible_refs(principal, study_uid, series_uid, sop_uid)[0]
    # Unscoped callers (the frame requests of a viewer, hundreds a second): a
    # primary-key lookup, then the URL's UIDs must be the instance's own.
    check_uid(study_uid, "Study Instance UID")
    check_uid(series_uid, "Series Instance UID")
    ref = archive().instance(check_uid(sop_uid, "SOP Instance UID"))
    if (
        ref.study_uid != study_uid
        or ref.series_uid != series_uid
        or (principal.series_uids is not None and series_uid not in principal.series_uids)
    ):
        raise NotFound("no such instance")
    return ref


def query_values(name: str) -> list[str]:
    """All values of a query parameter, comma lists split (``includefield=a,b&includefield=c``)."""
    out: list[str] = []
    for value in request.args.getlist(name):
        out.extend(v.strip() for v in value.split(",") if v.strip())
    return out


def warning_header(messages: Sequence[str]) -> str:
    """PS3.18 8.4.3: ``Warning: 299 <service>: <text>`` (several joined by commas)."""
    return ", ".join(f'299 pacs "{m}"' for m in messages)
