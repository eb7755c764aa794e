"""The sharer's side: create, list and revoke share links (and shares with accounts).

For administrators and radiologists only. A new link's address (with its
token) and QR code are in the answer to its creation, and nowhere else ever:
the server keeps only the token's hash. The list shows each link's status,
how many times and when it was opened, and from where.

Sharing with a *registered* referring doctor is a time-limited assignment
(``study_assignments`` of kind "shared"), listed and removed here too.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import pydicom
from flask import (
    Blueprint,
    Flask,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from pacs.deidentify import burned_in
from pacs.errors import InvalidQuery, NotFound
from pacs.storage.objects import is_valid_uid
from pacs.storage.sharing_models import ShareLink, utcnow
from pacs.viewer import admin_audit, i18n
from pacs.viewer.access import Forbidden
from pacs.viewer.auth import accounts, current_user, login_required, user_principal
from pacs.viewer.scoped import archive, scoped_refs, study_row
from pacs.viewer.share import sharing
from pacs.viewer.share_links import ShareError
from pacs.viewer.users import AccountError

log = logging.getLogger(__name__)

bp = Blueprint("share_api", __name__, template_folder="templates")

SHARER_ROLES = ("admin", "radiologist")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def share_url(token: str) -> str:
    """The link's address, on the public address when one is configured."""
    settings = current_app.config["PACS_SETTINGS"]
    base = settings.public_url.rstrip("/") or request.url_root.rstrip("/")
    return f"{base}/s/{token}"


def qr_svg(text: str, scale: int = 4) -> str:
    """An inline SVG QR code of ``text`` (error correction M: survives a crumpled sheet),
    sized by its viewBox so that CSS decides how big it prints."""
    import segno

    return segno.make_qr(text, error="m").svg_inline(
        scale=scale, border=2, dark="#000", omitsize=True
    )


def link_json(link: ShareLink, *, with_opens: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": link.id,
        "study_uid": link.study_uid,
        "label": link.label,
        "status": link.status(),
        "created_at": _iso(link.created_at),
        "created_by": link.created_by_name,
        "expires_at": _iso(link.expires_at),
        "revoked_at": _iso(link.revoked_at),
        "revoked_by": link.revoked_by,
        "protected": link.has_pin,
        "can_download": link.can_download,
        "deidentify": link.deidentify,
        "series": list(link.series_uids) if link.series_uids else None,
        "open_count": link.open_count,
        "first_opened_at": _iso(link.first_opened_at),
        "last_opened_at": _iso(link.last_opened_at),
        "last_opened_from": link.last_opened_from,
        "locked_until": _iso(link.pin_locked_until) if link.status() == "locked" else None,
    }
    if with_opens:
        body["opens"] = [
            {"at": _iso(o.at), "address": o.address, "agent": o.agent}
            for o in sharing().store.opens(link.id, limit=10)
        ]
    return body


def _accounts_json(study_uid: str) -> list[dict[str, Any]]:
    return [
        {
            "username": a.username,
            "name": a.display_name,
            "by": a.assigned_by,
            "at": _iso(a.created_at),
            "expires_at": _iso(a.expires_at),
            "expired": bool(a.expires_at and a.expires_at <= utcnow()),
        }
        for a in accounts().store.assignments([study_uid])
        if a.kind == "shared"
    ]


def _burned_in_series(principal: Any, study_uid: str) -> list[dict[str, str]]:
    """Series whose pixels may carry the patient's name (one header read per series)."""
    first: dict[str, Any] = {}
    for ref in scoped_refs(principal, study_uid=study_uid):
        if ref.rows and ref.series_uid not in first:
            first[ref.series_uid] = ref
    risky = []
    for ref in first.values():
        try:
            with archive().readable_path(ref) as path:
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception as exc:  # unreadable header: say "possible", do not fail the dialog
            log.debug("burned-in check of %s failed: %s", ref.sop_uid, exc)
            risky.append({"series_uid": ref.series_uid, "modality": "", "risk": "possible"})
            continue
        risk = burned_in(ds)
        if risk != "no":
            risky.append(
                {
                    "series_uid": ref.series_uid,
                    "modality": str(ds.get("Modality", "")),
                    "description": str(ds.get("SeriesDescription", "")),
                    "risk": risk,
                }
            )
    return risky


def _sharer() -> tuple[Any, Any]:
    user, principal = user_principal()
    if principal.role not in SHARER_ROLES:
        raise Forbidden(f"this needs one of the roles: {', '.join(SHARER_ROLES)}")
    return user, principal


@bp.get("/api/studies/<study_uid>/shares")
def list_shares(study_uid: str) -> Any:
    _, principal = _sharer()
    study_row(principal, study_uid)
    policy = sharing().policy
    return jsonify(
        links=[link_json(link) for link in sharing().store.links(study_uid=study_uid)],
        accounts=_accounts_json(study_uid),
        burned_in=_burned_in_series(principal, study_uid),
        default_days=policy.default_days,
        max_days=policy.max_days,
    )


def _bool(value: Any) -> bool:
    return value is True or str(value).lower() in ("1", "true", "on", "yes")


def _days(raw: Any) -> int | None:
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except (TypeError, ValueError) as exc:
        raise InvalidQuery("days must be a whole number") from exc


def create_link_for(
    user: Any, principal: Any, study_uid: str, data: Any
) -> tuple[ShareLink, str, dict[str, Any]]:
    """Create a link from request data (JSON or form); audited. Raises InvalidQuery."""
    row = study_row(principal, study_uid)
    series = data.get("series") or None
    if isinstance(series, str):
        series = [s for s in series.split(",") if s]
    if series is not None:
        if not isinstance(series, list) or not all(
            isinstance(s, str) and is_valid_uid(s) for s in series
        ):
            raise InvalidQuery("series must be a list of Series Instance UIDs")
        present = {r.series_uid for r in scoped_refs(principal, study_uid=study_uid)}
        if not set(series) <= present:
            raise NotFound("a chosen series is not in this study")
    try:
        link, token = sharing().create(
            study_uid,
            by_user_id=user.id,
            by_name=user.username,
            days=_days(data.get("days")),
            pin=str(data.get("pin") or ""),
            can_download=_bool(data.get("download")),
            deidentify=_bool(data.get("deidentify")),
            series_uids=series,
            label=str(data.get("label") or ""),
        )
    except ShareError as exc:
        raise InvalidQuery(i18n.t(f"shareerr.{exc.code}", max=sharing().policy.max_days)) from exc
    admin_audit.record(
        "share.create",
        study=row,
        details={
            "link": link.id,
            "label": link.label,
            "expires_at": _iso(link.expires_at),
            "protected": link.has_pin,
            "download": link.can_download,
            "deidentified": link.deidentify,
            "series": len(link.series_uids) if link.series_uids else "all",
        },
    )
    return link, token, row


@bp.post("/api/studies/<study_uid>/shares")
def create_share(study_uid: str) -> Any:
    """``{"days", "pin", "download", "deidentify", "series", "label"}`` → a link (201), or
    ``{"username", "days"}`` → a time-limited share with that referring doctor's account."""
    user, principal = _sharer()
    data = request.get_json(silent=True) or {}
    if data.get("username"):
        return _share_with_account(user, principal, study_uid, data)
    link, token, _ = create_link_for(user, principal, study_uid, data)
    url = share_url(token)
    return jsonify(link=link_json(link, with_opens=False), url=url, qr_svg=qr_svg(url)), 201


def _share_with_account(user: Any, principal: Any, study_uid: str, data: Any) -> Any:
    row = study_row(principal, study_uid)
    try:
        target = accounts().get(str(data.get("username", "")))
    except AccountError as exc:
        raise NotFound(exc.message) from exc
    if target.role != "referring" or target.disabled:
        raise InvalidQuery(i18n.t("shareerr.not_referring"))
    days = _days(data.get("days")) or sharing().policy.default_days
    if not 1 <= days <= sharing().policy.max_days:
        raise InvalidQuery(i18n.t("shareerr.bad_days", max=sharing().policy.max_days))
    expires = utcnow() + timedelta(days=days)
    created = accounts().store.share_with(
        target.id, study_uid, by_user_id=user.id, expires_at=expires
    )
    log.info(
        "study %s shared with %s by %s until %s", study_uid, target.username, user.username, expires
    )
    admin_audit.record(
        "share.create",
        study=row,
        details={"account": target.username, "expires_at": _iso(expires), "renewed": not created},
    )
    return jsonify(accounts=_accounts_json(study_uid)), 201 if created else 200


@bp.delete("/api/studies/<study_uid>/shares/accounts/<username>")
def remove_account_share(study_uid: str, username: str) -> Any:
    user, principal = _sharer()
    row = study_row(principal, study_uid)
    try:
        target = accounts().get(username)
    except AccountError as exc:
        raise NotFound(exc.message) from exc
    if accounts().store.unassign(target.id, study_uid, kind="shared"):
        log.info("share of %s with %s removed by %s", study_uid, target.username, user.username)
        admin_audit.record("share.revoke", study=row, details={"account": target.username})
    return jsonify(accounts=_accounts_json(study_uid))


def revoke_link(link_id: int) -> ShareLink:
    """Revoke a link the caller may manage; audited. Raises NotFound."""
    user, principal = _sharer()
    link = sharing().store.get(link_id)
    if link is None:
        raise NotFound("no such link")
    row = study_row(principal, link.study_uid)
    if sharing().revoke(link.id, user.username):
        admin_audit.record("share.revoke", study=row, details={"link": link.id})
    fresh = sharing().store.get(link.id)
    assert fresh is not None
    return fresh


@bp.post("/api/shares/<int:link_id>/revoke")
def revoke_share(link_id: int) -> Any:
    return jsonify(link=link_json(revoke_link(link_id)))


# ---------------------------------------------------------------- the links page


@bp.get("/shares")
@login_required(*SHARER_ROLES)
def shares_page() -> Any:
    """Every link the user made (administrators: everybody's), newest first."""
    user = current_user()
    assert user is not None
    everyone = user.role == "admin" and request.args.get("mine") != "1"
    links = sharing().store.links(created_by=None if everyone else user.id)
    studies = _study_summaries(sorted({link.study_uid for link in links}))
    return render_template(
        "ui/shares.html",
        links=[link_json(link) for link in links],
        studies=studies,
        everyone=everyone,
        message=request.args.get("msg", ""),
    )


def _study_summaries(study_uids: list[str]) -> dict[str, dict[str, str]]:
    from pacs.storage.matching import Level, Query

    if not study_uids:
        return {}
    found: dict[str, dict[str, str]] = {}
    # A multi-valued UID match, in slices (the index binds each UID as a parameter).
    for start in range(0, len(study_uids), 200):
        chunk = study_uids[start : start + 200]
        rows = archive().search(
            Query(Level.STUDY, {"StudyInstanceUID": "\\".join(chunk)}),
            ["StudyInstanceUID", "PatientName", "PatientID", "StudyDate", "StudyDescription"],
        )
        for row in rows:
            found[row["StudyInstanceUID"]] = row
    return found


@bp.post("/shares/<int:link_id>/revoke")
@login_required(*SHARER_ROLES)
def revoke_from_page(link_id: int) -> Any:
    revoke_link(link_id)
    return redirect(url_for("share_api.shares_page", msg=i18n.t("share.revoked_msg")))


def register(app: Flask) -> None:
    app.register_blueprint(bp)
