"""The consultation pages and their JSON, for radiologists and administrators.

Asking and answering need the ``radiologist`` or ``admin`` role; the partner
registry and routing rules need ``admin``. Every study lookup passes the caller's
scope to the archive.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    jsonify,
    render_template,
    request,
    url_for,
)

from pacs.audit import Actor
from pacs.consult.consultations import LINK_DAYS
from pacs.errors import InvalidQuery, NotFound
from pacs.storage.consult_models import Consultation, NameTaken, Partner, Push
from pacs.storage.index import InstanceRef
from pacs.storage.objects import is_valid_uid
from pacs.viewer import consult_i18n, i18n
from pacs.viewer.access import Principal, require_principal
from pacs.viewer.auth import current_user, login_required
from pacs.viewer.consult import consult, page_boot

log = logging.getLogger(__name__)

bp = Blueprint("consult", __name__, template_folder="templates")

STAFF = ("admin", "radiologist")
#: thumbnails offered per series when choosing key images
SAMPLES_PER_SERIES = 24


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def _body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise InvalidQuery("send a JSON object")
    return data


def _who() -> tuple[str, str]:
    """(username, name to show) of the signed-in user."""
    user = current_user()
    if user is None:
        return "?", "?"
    return user.username, user.display_name or user.username


def _partner_names() -> dict[int, str]:
    return {p.id: p.name for p in consult().partners.all()}


# ---------------------------------------------------------------- JSON shapes


def push_json(push: Push, names: dict[int, str]) -> dict[str, Any]:
    return {
        "id": push.id,
        "partner": names.get(push.partner_id, f"#{push.partner_id}"),
        "partner_id": push.partner_id,
        "study_uid": push.study_uid,
        "series_uids": list(push.series_uids),
        "origin": push.origin,
        "transport": push.transport,
        "compression": push.compression,
        "state": push.state,
        "total": push.total,
        "sent": push.sent,
        "refused": push.refused,
        "bytes_total": push.bytes_total,
        "bytes_sent": push.bytes_sent,
        "wire_bytes": push.wire_bytes,
        "verified_count": push.verified_count,
        "attempts": push.attempts,
        "last_error": push.last_error,
        "created_by": push.created_by,
        "created_at": _iso(push.created_at),
        "started_at": _iso(push.started_at),
        "finished_at": _iso(push.finished_at),
    }


def request_json(c: Consultation, names: dict[int, str]) -> dict[str, Any]:
    push = consult().pushes.store.get(c.push_id) if c.push_id else None
    return {
        "id": c.id,
        "uid": c.uid,
        "direction": c.direction,
        "partner": names.get(c.partner_id, "") if c.partner_id else "",
        "partner_id": c.partner_id,
        "by_link": c.share_link_id is not None,
        "share_link_id": c.share_link_id,
        "study_uid": c.study_uid,
        "patient_name": c.patient_name,
        "patient_id": c.patient_id,
        "study_description": c.study_description,
        "message": c.message,
        "urgency": c.urgency,
        "status": c.status,
        "requested_by": c.requested_by_name or c.requested_by,
        "answer_text": c.answer_text,
        "answered_by": c.answered_by,
        "answer_sr_uid": c.answer_sr_uid,
        "key_images": list(c.key_images),
        "last_error": c.last_error,
        "created_at": _iso(c.created_at),
        "sent_at": _iso(c.sent_at),
        "viewed_at": _iso(c.viewed_at),
        "answered_at": _iso(c.answered_at),
        "push": push_json(push, names) if push else None,
    }


def partner_json(p: Partner) -> dict[str, Any]:
    return {
        "id": p.id,
        "name": p.name,
        "description": p.description,
        "ae_title": p.ae_title,
        "host": p.host,
        "port": p.port,
        "dicomweb_url": p.dicomweb_url,
        "pacs_url": p.pacs_url,
        "token_hint": p.token_hint,
        "has_token": bool(p.token_sealed),
        "issued_token": p.inbound_token_id is not None,
        "transport": p.transport,
        "compression": p.compression,
        "bandwidth_bps": p.bandwidth_bps,
        "scope": consult().partners.scope(p),
    }


# ---------------------------------------------------------------- pages


@bp.get("/consult")
@login_required(*STAFF)
def requests_page() -> Any:
    user = current_user()
    return render_template(
        "consult/requests.html",
        boot=page_boot(page="consult", is_admin=bool(user and user.role == "admin")),
    )


@bp.get("/consult/requests/<int:consult_id>")
@login_required(*STAFF)
def request_page(consult_id: int) -> Any:
    c = consult().requests.store.get(consult_id)
    if c is None:
        abort(404)
    if c.direction == "incoming":
        # Opening the request is reading it: the requester learns it was seen.
        consult().requests.mark_viewed(c, _who()[1])
    return render_template("consult/request.html", boot=page_boot(page="consult", id=c.id))


# ---------------------------------------------------------------- requests


@bp.get("/consult/api/requests")
def list_requests() -> Any:
    require_principal(*STAFF)
    direction = request.args.get("direction") or None
    if direction not in (None, "incoming", "outgoing"):
        raise InvalidQuery("direction is incoming or outgoing")
    study = request.args.get("study_uid") or None
    rows = consult().requests.store.recent(direction=direction, study_uid=study, limit=200)
    if direction != "incoming":
        consult().requests.note_link_views(rows)
        rows = consult().requests.store.recent(direction=direction, study_uid=study, limit=200)
    names = _partner_names()
    return jsonify(items=[request_json(c, names) for c in rows])


@bp.post("/consult/api/requests")
def create_request() -> Any:
    """``{"study_uid", "partner_id" (none: a link), "message", "urgency"}``. A partner
    without pacs gets a share link to the study; its address is in the answer once."""
    principal = require_principal(*STAFF)
    data = _body()
    partner = None
    if data.get("partner_id") not in (None, ""):
        partner = consult().partners.get(int(data["partner_id"]))
    username, name = _who()
    study_uid = str(data.get("study_uid", ""))
    made: dict[str, str] = {}

    def make_link() -> int:
        """A share link to the study (pacs/viewer/share*.py), audited there."""
        if "pacs_sharing" not in current_app.extensions:
            raise InvalidQuery("sharing is not enabled here: no link can be made")
        from pacs.viewer.share_api import create_link_for

        user = current_user()
        label = f"Hội chẩn / consultation: {partner.name if partner else ''}".strip(": ")
        link, token, _ = create_link_for(
            user, principal, study_uid, {"label": label, "days": LINK_DAYS}
        )
        made["link"] = request.host_url.rstrip("/") + url_for("consult_link.open_link", token=token)
        return link.id

    consultation = consult().requests.request(
        study_uid,
        partner,
        message=str(data.get("message", "")),
        urgency=str(data.get("urgency", "routine")),
        user=username,
        user_name=name,
        scope=principal.scope(),
        make_link=make_link,
    )
    body = request_json(consultation, _partner_names())
    body.update(made)
    return jsonify(body), 201


def _request(consult_id: int) -> Consultation:
    c = consult().requests.store.get(consult_id)
    if c is None:
        raise NotFound(f"no consultation #{consult_id}")
    return c


@bp.get("/consult/api/requests/<int:consult_id>")
def get_request(consult_id: int) -> Any:
    require_principal(*STAFF)
    consult().requests.note_link_views([_request(consult_id)])
    return jsonify(request_json(_request(consult_id), _partner_names()))


@bp.post("/consult/api/requests/<int:consult_id>/answer")
def answer_request(consult_id: int) -> Any:
    principal = require_principal(*STAFF)
    data = _body()
    name = _who()[1]
    keys = [str(k) for k in data.get("key_images") or [] if is_valid_uid(str(k))]
    settings = consult().settings
    answered = consult().requests.answer(
        _request(consult_id),
        str(data.get("text", "")),
        key_images=keys,
        author=name,
        institution=settings.institution_name or settings.ae_title,
        scope=principal.scope(),
    )
    return jsonify(request_json(answered, _partner_names()))


def images_json(principal: Principal, study_uid: str) -> dict[str, Any]:
    """The study's series with evenly spaced instances, to choose key images from."""
    refs = consult().archive.instances(study_uid=study_uid, study_scope=principal.scope())
    if principal.series_uids is not None:
        refs = [r for r in refs if r.series_uid in principal.series_uids]
    by_series: dict[str, list[InstanceRef]] = {}
    for ref in refs:
        if ref.rows:
            by_series.setdefault(ref.series_uid, []).append(ref)
    series = []
    for uid, items in by_series.items():
        step = max(1, len(items) // SAMPLES_PER_SERIES)
        picked = items[::step][:SAMPLES_PER_SERIES]
        series.append(
            {
                "series_uid": uid,
                "count": len(items),
                "instances": [{"sop_uid": r.sop_uid, "number": r.instance_number} for r in picked],
            }
        )
    return {"study_uid": study_uid, "series": series}


@bp.get("/consult/api/requests/<int:consult_id>/images")
def request_images(consult_id: int) -> Any:
    principal = require_principal(*STAFF)
    return jsonify(images_json(principal, _request(consult_id).study_uid))


@bp.get("/consult/api/strings")
def strings() -> Any:
    """The consultation strings, for pages that do not embed them (the worklist)."""
    require_principal(*STAFF)
    return jsonify(strings=consult_i18n.catalog(i18n.current_language()))


@bp.get("/consult/api/studies/status")
def study_statuses() -> Any:
    """Consultation badges for the worklist: per study, its requests' statuses."""
    require_principal(*STAFF)
    uids = [u for u in request.args.get("uids", "").split(",") if is_valid_uid(u)][:500]
    found = consult().requests.store.statuses(uids)
    return jsonify(
        studies={
            uid: [{"direction": d, "status": s, "urgency": u} for d, s, u in rows]
            for uid, rows in found.items()
        }
    )


# ---------------------------------------------------------------- pushes


@bp.get("/consult/api/pushes")
def list_pushes() -> Any:
    require_principal(*STAFF)
    study = request.args.get("study_uid") or None
    pushes = consult().pushes.store.recent(limit=200, study_uid=study)
    names = _partner_names()
    return jsonify(items=[push_json(p, names) for p in pushes])


@bp.post("/consult/api/pushes")
def create_push() -> Any:
    principal = require_principal(*STAFF)
    data = _body()
    study_uid = str(data.get("study_uid", ""))
    consult().requests.study_facts(study_uid, principal.scope())
    series = [str(s) for s in data.get("series_uids") or [] if is_valid_uid(str(s))]
    partner = consult().partners.get(int(data.get("partner_id") or 0))
    push = consult().pushes.create(
        partner, study_uid, series_uids=series, origin="manual", created_by=_who()[0]
    )
    _audit("consult.push", study_uid, partner=partner.name, push=push.id)
    return jsonify(push_json(push, _partner_names())), 201


@bp.post("/consult/api/pushes/<int:push_id>/retry")
def retry_push(push_id: int) -> Any:
    require_principal(*STAFF)
    push = consult().pushes.retry(push_id)
    return jsonify(push_json(push, _partner_names()))


@bp.post("/consult/api/pushes/<int:push_id>/cancel")
def cancel_push(push_id: int) -> Any:
    require_principal(*STAFF)
    if not consult().pushes.store.cancel(push_id):
        raise InvalidQuery("only a queued or running push can be cancelled")
    push = consult().pushes.store.get(push_id)
    assert push is not None
    return jsonify(push_json(push, _partner_names()))


# ---------------------------------------------------------------- partners


@bp.get("/consult/api/partners")
def list_partners() -> Any:
    require_principal(*STAFF)
    return jsonify(items=[partner_json(p) for p in consult().partners.all()])


def _partner_fields(data: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key in ("description", "ae_title", "host", "dicomweb_url", "pacs_url", "transport"):
        if key in data:
            fields[key] = str(data[key] or "")
    if "compression" in data:
        fields["compression"] = str(data["compression"] or "none")
    if data.get("scope"):
        fields["scope"] = str(data["scope"])
    for key in ("port", "bandwidth_bps"):
        if key in data and data[key] not in (None, ""):
            try:
                fields[key] = int(data[key])
            except (TypeError, ValueError) as exc:
                raise InvalidQuery(f"{key} must be a number") from exc
    if data.get("token"):
        fields["token"] = str(data["token"])
    return fields


@bp.post("/consult/api/partners")
def add_partner() -> Any:
    require_principal("admin")
    data = _body()
    try:
        partner = consult().partners.save(str(data.get("name", "")), **_partner_fields(data))
    except NameTaken as exc:
        raise InvalidQuery("a partner with that name exists") from exc
    _audit("consult.partner.add", "", partner=partner.name)
    return jsonify(partner_json(partner)), 201


@bp.post("/consult/api/partners/<int:partner_id>")
def update_partner(partner_id: int) -> Any:
    require_principal("admin")
    current = consult().partners.get(partner_id)
    partner = consult().partners.save(current.name, update=True, **_partner_fields(_body()))
    _audit("consult.partner.update", "", partner=partner.name)
    return jsonify(partner_json(partner))


@bp.delete("/consult/api/partners/<int:partner_id>")
def remove_partner(partner_id: int) -> Any:
    require_principal("admin")
    partner = consult().partners.remove(consult().partners.get(partner_id).name)
    _audit("consult.partner.remove", "", partner=partner.name)
    return jsonify(removed=partner.name)


@bp.post("/consult/api/partners/<int:partner_id>/token")
def issue_partner_token(partner_id: int) -> Any:
    require_principal("admin")
    partner = consult().partners.get(partner_id)
    secret = consult().partners.issue_token(partner, by=_who()[0])
    _audit("consult.partner.token", "", partner=partner.name)
    return jsonify(token=secret)


@bp.post("/consult/api/partners/<int:partner_id>/test")
def test_partner(partner_id: int) -> Any:
    require_principal("admin")
    checks = consult().partners.test(consult().partners.get(partner_id))
    return jsonify(checks=[{"what": c.what, "ok": c.ok, "detail": c.detail} for c in checks])


# ---------------------------------------------------------------- rules


def rule_json(rule: Any, names: dict[int, str]) -> dict[str, Any]:
    return {
        "id": rule.id,
        "name": rule.name,
        "partner": names.get(rule.partner_id, ""),
        "partner_id": rule.partner_id,
        "calling_ae": rule.calling_ae,
        "modality": rule.modality,
        "description_contains": rule.description_contains,
        "enabled": rule.enabled,
    }


@bp.get("/consult/api/rules")
def list_rules() -> Any:
    require_principal("admin")
    names = _partner_names()
    return jsonify(items=[rule_json(r, names) for r in consult().router.rules.all()])


@bp.post("/consult/api/rules")
def add_rule() -> Any:
    require_principal("admin")
    data = _body()
    partner = consult().partners.get(int(data.get("partner_id") or 0))
    modality = str(data.get("modality", "")).strip().upper()
    if modality and not (modality.isalnum() and len(modality) <= 16):
        raise InvalidQuery("modality must be a code like CT or MR")
    rule = consult().router.rules.add(
        partner.id,
        name=str(data.get("name", "")).strip(),
        calling_ae=str(data.get("calling_ae", "")).strip(),
        modality=modality,
        description_contains=str(data.get("description_contains", "")).strip(),
        created_by=_who()[0],
    )
    _audit("consult.rule.add", "", partner=partner.name, rule=rule.id)
    return jsonify(rule_json(rule, _partner_names())), 201


@bp.delete("/consult/api/rules/<int:rule_id>")
def remove_rule(rule_id: int) -> Any:
    require_principal("admin")
    if not consult().router.rules.remove(rule_id):
        raise NotFound(f"no rule #{rule_id}")
    _audit("consult.rule.remove", "", rule=rule_id)
    return jsonify(removed=rule_id)


# ---------------------------------------------------------------- audit


def _audit(action: str, study_uid: str, **details: Any) -> None:
    consult().archive.audit.record(
        action,
        Actor("user", _who()[0], request.remote_addr or ""),
        study_uid=study_uid,
        details=details,
    )


def register(app: Flask) -> None:
    app.register_blueprint(bp)
