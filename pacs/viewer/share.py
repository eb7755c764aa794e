"""Opening a share link: ``/s/<token>`` → (PIN) → a session scoped to one study → the viewer.

The token is in the address only for the first request: the answer moves it
into a session (the signed cookie holds the link's id, never the token) and
redirects to an address without it, with ``Referrer-Policy: no-referrer`` and
``Cache-Control: no-store``, so the token leaks neither through the address
bar, the Referer header nor caches. Opening a link in a browser where someone
is signed in signs them out there first: one browser, one identity.

Each request of a share session resolves a :class:`Principal` of kind
"share" (see :func:`share_principal`): the link is read from the database every
time, so a revoked or expired link stops working at once, on every worker.

Refusals (unknown, expired, revoked, locked, wrong PIN) are clear pages in the
caller's language, and audit rows; they are logged by link id, never by token.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    g,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from pacs.archive import Archive
from pacs.audit import Actor
from pacs.storage.sharing_models import ShareLink, utcnow
from pacs.viewer import admin_audit, csrf, i18n
from pacs.viewer.access import Principal, add_resolver
from pacs.viewer.share_deid import EXTENSION as DEID_EXTENSION
from pacs.viewer.share_deid import DeidViews
from pacs.viewer.share_links import SharePolicy, Sharing, pseudonymizer

log = logging.getLogger(__name__)

bp = Blueprint("share", __name__, template_folder="templates")

EXTENSION = "pacs_sharing"
SESSION_KEY = "share"
PENDING_KEY = "share_pending"
#: a share session lasts at most this long without opening the link again
SESSION_MAX_AGE = timedelta(hours=12)


def sharing() -> Sharing:
    return current_app.extensions[EXTENSION]


def link_actor(link_id: int | None) -> Actor:
    """How a share link appears in the audit trail."""
    name = f"link-{link_id}" if link_id is not None else "link-unknown"
    return Actor("share", name, request.remote_addr or "")


def _study_facts(link: ShareLink) -> dict[str, Any]:
    """The study row of a link (patient, for the audit trail); {} if it is gone."""
    from pacs.storage.matching import Level, Query

    archive: Archive = current_app.extensions["pacs_archive"]
    rows = archive.search(
        Query(Level.STUDY, {"StudyInstanceUID": link.study_uid}),
        ["StudyInstanceUID", "PatientID", "PatientName"],
    )
    return rows[0] if rows else {"StudyInstanceUID": link.study_uid}


def _agent() -> str:
    return (request.user_agent.string or "")[:160]


# ---------------------------------------------------------------- the principal


def share_principal() -> Principal | None:
    """The resolver for share sessions (registered after the user session's).

    A request with ``Authorization: Bearer`` is never a share session (as it is
    never a user session): that keeps such requests safe to exempt from CSRF.
    """
    if csrf.is_bearer_request():
        return None
    data = session.get(SESSION_KEY)
    if not isinstance(data, dict) or not isinstance(data.get("id"), int):
        return None
    started = data.get("at")
    if not isinstance(started, int) or time.time() - started > SESSION_MAX_AGE.total_seconds():
        return None
    link = sharing().store.get(data["id"])
    if link is None or link.status() not in ("active", "locked"):
        # Locked means "no more PIN guesses", not "shut out whoever already got in".
        return None
    g.pacs_share_link = link
    study_pk = sharing().store.study_pk(link.study_uid)
    if study_pk is None:
        return None
    return Principal(
        kind="share",
        name=f"link-{link.id}",
        role="share",
        study_pks=frozenset({study_pk}),
        series_uids=frozenset(link.series_uids) if link.series_uids else None,
        can_download=link.can_download,
        deidentify=link.deidentify,
        extra={"share_id": str(link.id), "study_uid": link.study_uid},
    )


def current_link() -> ShareLink | None:
    """The link of this request's share session (after the principal was resolved)."""
    from pacs.viewer.access import current_principal

    principal = current_principal()
    if principal is None or principal.kind != "share":
        return None
    return g.get("pacs_share_link")


def viewer_uid(link: ShareLink) -> str:
    """The study UID the viewer's address carries for this link (a pseudonym if de-identified)."""
    return pseudonymizer(link).uid(link.study_uid) if link.deidentify else link.study_uid


# ---------------------------------------------------------------- pages


def _no_referrer(response: Response) -> Response:
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


def _refused(reason: str, status: int, **values: Any) -> Response:
    """A clear page saying why the link does not open (vi/en)."""
    response = make_response(
        render_template(
            "ui/share_refused.html",
            reason=reason,
            message=i18n.t(f"share.refused.{reason}", **values),
            # Never send the language switch back to /s/<token>.
            lang_next=url_for("share.landing"),
        ),
        status,
    )
    return _no_referrer(response)


def _minutes_until(when: Any) -> int:
    return max(1, int((when - utcnow()).total_seconds() // 60) + 1)


def _refusal_for(link: ShareLink) -> Response | None:
    status = link.status()
    if status == "revoked":
        return _refused("revoked", 410)
    if status == "expired":
        return _refused("expired", 410)
    if status == "locked":
        return _refused("locked", 429, minutes=_minutes_until(link.pin_locked_until))
    return None


def _grant(link: ShareLink) -> Response:
    """Start the share session, count the open, and go to the viewer (no token in sight)."""
    session.clear()
    session.permanent = True
    session[SESSION_KEY] = {"id": link.id, "at": int(time.time())}
    csrf.rotate()
    sharing().store.record_open(link.id, request.remote_addr or "", _agent())
    log.info("share link %d opened from %s", link.id, request.remote_addr)
    admin_audit.record(
        "share.open",
        actor=link_actor(link.id),
        study=_study_facts(link),
        details={"link": link.id, "agent": _agent()[:80]},
    )
    return _no_referrer(redirect(url_for("share.landing"), code=303))


@bp.get("/s/<token>")
def open_link(token: str) -> Any:
    """Exchange the token for a session; never echo or log the token.

    Any failure is answered here: the app's error handlers log the request path,
    and this path holds the token.
    """
    try:
        return _open_link(token)
    except Exception as exc:
        log.error(
            "share link could not be opened from %s: %s", request.remote_addr, type(exc).__name__
        )
        return _refused("unavailable", 503)


def _open_link(token: str) -> Any:
    link = sharing().find(token)
    if link is None:
        log.warning("share link refused from %s: unknown token", request.remote_addr)
        admin_audit.record(
            "share.open", actor=link_actor(None), outcome="failure", details={"reason": "unknown"}
        )
        return _refused("unknown", 404)
    refusal = _refusal_for(link)
    if refusal is not None:
        log.warning(
            "share link %d refused from %s: %s", link.id, request.remote_addr, link.status()
        )
        admin_audit.record(
            "share.open",
            actor=link_actor(link.id),
            outcome="failure",
            study=_study_facts(link),
            details={"link": link.id, "reason": link.status()},
        )
        return refusal
    if link.has_pin:
        session.clear()
        session[PENDING_KEY] = {"id": link.id, "at": int(time.time())}
        return _no_referrer(redirect(url_for("share.pin_form"), code=303))
    return _grant(link)


def _pending_link() -> ShareLink | None:
    data = session.get(PENDING_KEY)
    if not isinstance(data, dict) or not isinstance(data.get("id"), int):
        return None
    if not isinstance(data.get("at"), int) or time.time() - data["at"] > 3600:
        return None
    return sharing().store.get(data["id"])


@bp.get("/shared/pin")
def pin_form() -> Any:
    link = _pending_link()
    if link is None:
        return redirect(url_for("share.landing"))
    refusal = _refusal_for(link)
    if refusal is not None:
        return refusal
    return _no_referrer(
        make_response(render_template("ui/share_pin.html", lang_next=url_for("share.pin_form")))
    )


@bp.post("/shared/pin")
def pin_submit() -> Any:
    link = _pending_link()
    if link is None:
        return redirect(url_for("share.landing"))
    refusal = _refusal_for(link)
    if refusal is not None:
        return refusal
    check = sharing().check_pin(link, request.form.get("pin", ""))
    if check.ok:
        return _grant(link)
    admin_audit.record(
        "share.pin",
        actor=link_actor(link.id),
        outcome="failure",
        study=_study_facts(link),
        details={
            "link": link.id,
            "locked": check.locked_until is not None,
            "attempts_left": check.attempts_left,
        },
    )
    if check.locked_until is not None:
        return _refused("locked", 429, minutes=_minutes_until(check.locked_until))
    response = make_response(
        render_template(
            "ui/share_pin.html",
            error=i18n.t("share.pin.wrong", left=check.attempts_left),
            lang_next=url_for("share.pin_form"),
        ),
        401,
    )
    return _no_referrer(response)


@bp.get("/shared")
def landing() -> Any:
    """Where a share session goes: the viewer, the PIN form, or why the link no longer opens."""
    from pacs.viewer.access import current_principal

    principal = current_principal()
    if principal is not None and principal.kind == "share":
        link = current_link()
        assert link is not None
        target = url_for("ui.viewer_page", study_uid=viewer_uid(link))
        return _no_referrer(redirect(target, code=303))
    if _pending_link() is not None:
        return redirect(url_for("share.pin_form"))
    data = session.get(SESSION_KEY)
    if isinstance(data, dict) and isinstance(data.get("id"), int):
        link = sharing().store.get(data["id"])
        if link is not None:
            refusal = _refusal_for(link)
            if refusal is not None:
                return refusal
    return _refused("session", 401)


@bp.post("/shared/leave")
def leave() -> Any:
    """End the share session in this browser."""
    session.clear()
    return _refused("left", 200)


# ---------------------------------------------------------------- wiring


def _policy(settings: Any) -> SharePolicy:
    # Settings the lead may add to pacs.config; the defaults hold until then.
    return SharePolicy(
        default_days=settings.share_default_days,
        max_days=settings.share_max_days,
        pin_max_failures=settings.share_pin_max_failures,
        pin_lockout=timedelta(minutes=settings.share_pin_lockout_minutes),
    )


def _pseudonymizer_for(share_id: str) -> Any:
    link = sharing().store.get(int(share_id))
    if link is None:
        from pacs.errors import NotFound

        raise NotFound("no such link")
    return pseudonymizer(link)


def register(app: Flask, archive: Archive) -> None:
    """Sharing: the link flow, the share-session resolver, the sharer's API and downloads."""
    from pacs.viewer import share_api, share_download

    app.extensions[EXTENSION] = Sharing(archive.index.engine, _policy(app.config["PACS_SETTINGS"]))
    app.extensions[DEID_EXTENSION] = DeidViews(_pseudonymizer_for)
    add_resolver(app, share_principal)
    app.register_blueprint(bp)
    share_api.register(app)
    share_download.register(app)
