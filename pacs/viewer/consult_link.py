"""Consultation links: a partner without pacs reads the study in our viewer and answers.

Built on the share links of ``pacs/viewer/share*.py``: asking such a partner makes
a share link to the study (hashed 256-bit token, expiry, revocation from the
shares page, opens counted, audited), and the address handed over is
``/c/<token>``. Opening it is opening the share link — the same share session,
resolved by the sharing module's own resolver on every request (a revoked or
expired link stops at once) — except that it lands on ``/consult/link``: the
request, a button to the viewer (which shows that study and nothing else), and
the answer form. The share link's own address ``/s/<token>`` opens the viewer.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from pacs.audit import Actor
from pacs.errors import NotFound
from pacs.storage.consult_models import Consultation
from pacs.storage.objects import is_valid_uid
from pacs.viewer import csrf
from pacs.viewer.access import Forbidden, current_principal
from pacs.viewer.consult import consult, page_boot
from pacs.viewer.consult_api import images_json

log = logging.getLogger(__name__)

bp = Blueprint("consult_link", __name__, template_folder="templates")


def _no_referrer(response: Response) -> Response:
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


def _invalid() -> Response:
    return _no_referrer(make_response(render_template("consult/link_invalid.html"), 404))


def _linked() -> Consultation:
    """The request of this share session, or Forbidden / NotFound."""
    principal = current_principal()
    share_id = principal.extra.get("share_id") if principal is not None else None
    if principal is None or principal.kind != "share" or not share_id:
        raise Forbidden("open the consultation link again")
    c = consult().requests.store.by_share_link(int(share_id))
    if c is None:
        raise NotFound("this link is not a consultation")
    return c


@bp.get("/c/<token>")
def open_link(token: str) -> Any:
    """Open the consultation's share link; the token is never logged or echoed."""
    from pacs.viewer import share

    sharing = current_app.extensions.get(share.EXTENSION)
    link = sharing.find(token[:100]) if sharing is not None else None
    c = consult().requests.store.by_share_link(link.id) if link is not None else None
    if link is None or c is None or link.status() != "active" or link.has_pin:
        log.warning("consultation link refused from %s", request.remote_addr)
        return _invalid()
    # What share._grant does, landing here instead of in the viewer: one browser, one
    # identity (whoever was signed in is signed out), the open counted and audited.
    session.clear()
    session.permanent = True
    session[share.SESSION_KEY] = {"id": link.id, "at": int(time.time())}
    csrf.rotate()
    sharing.store.record_open(link.id, request.remote_addr or "", "")
    consult().requests.mark_viewed(c, f"link-{link.id}")
    consult().archive.audit.record(
        "share.open",
        Actor("share", f"link-{link.id}", request.remote_addr or ""),
        study_uid=c.study_uid,
        patient_id=c.patient_id,
        patient_name=c.patient_name,
        details={"link": link.id, "consultation": c.uid},
    )
    return _no_referrer(redirect(url_for("consult_link.link_page"), code=303))


@bp.get("/consult/link")
def link_page() -> Any:
    try:
        _linked()
    except (Forbidden, NotFound):
        return _invalid()
    return _no_referrer(
        make_response(
            render_template("consult/link.html", boot=page_boot(page="consult-link", share=True))
        )
    )


@bp.get("/consult/link/api")
def link_request() -> Any:
    c = _linked()
    principal = current_principal()
    assert principal is not None
    return {
        "uid": c.uid,
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
        "images": images_json(principal, c.study_uid),
    }


@bp.post("/consult/link/api/answer")
def link_answer() -> Any:
    c = _linked()
    principal = current_principal()
    assert principal is not None
    data = request.get_json(silent=True) or {}
    author = str(data.get("author", "")).strip()[:64] or f"link-{c.share_link_id}"
    keys = [str(k) for k in data.get("key_images") or [] if is_valid_uid(str(k))]
    answered = consult().requests.answer(
        c,
        str(data.get("text", "")),
        key_images=keys,
        author=author,
        institution=str(data.get("institution", "")).strip()[:64],
        scope=principal.scope(),
    )
    return {"status": answered.status, "answer_text": answered.answer_text}


def register(app: Flask) -> None:
    app.register_blueprint(bp)
