"""The pages: worklist and viewer, and the static files (scripts, styles) they load.

The pages are shells: the data arrives as JSON from :mod:`pacs.viewer.api`
after the same access checks. What a page's script needs at start (language,
strings, CSRF token, the user) is embedded as a JSON data block, never as
inline script, so a strict Content-Security-Policy holds.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from pacs.archive import Archive
from pacs.errors import NotFound
from pacs.viewer import admin_audit, csrf, i18n
from pacs.viewer.access import Principal, current_principal
from pacs.viewer.auth import accounts, current_user, login_required
from pacs.viewer.scoped import study_row
from pacs.viewer.share_deid import deid_view

log = logging.getLogger(__name__)


def static_dir() -> Path:
    """Where ``static/`` is: next to the package in a checkout (or editable install),
    inside the package, or under ``<prefix>/share/pacs/static`` for a wheel install."""
    package = Path(__file__).resolve().parents[1]
    candidates = [
        package.parent / "static",
        package / "static",
        Path(sys.prefix) / "share" / "pacs" / "static",
    ]
    for candidate in candidates:
        if (candidate / "js").is_dir():
            return candidate
    return candidates[0]


bp = Blueprint(
    "ui",
    __name__,
    static_folder=str(static_dir()),
    static_url_path="/static",
    template_folder="templates",
)


# ---------------------------------------------------------------- navigation


@dataclass(frozen=True)
class NavLink:
    endpoint: str
    #: an i18n key
    label: str
    #: roles that see the link; empty: every signed-in user
    roles: tuple[str, ...] = ()
    order: int = 50


NAV_EXTENSION = "pacs_nav_links"


def add_nav_link(
    app: Flask, endpoint: str, label: str, roles: tuple[str, ...] = (), order: int = 50
) -> None:
    """Put a page in the top navigation (ordered by ``order``; the built-in ones use
    10 worklist, 20 dashboard, 30 links, 40 users, 50 audit). For example the
    operations dashboard: ``add_nav_link(app, "dashboard.page", "nav.dashboard",
    ("admin",), order=20)`` from its ``register``."""
    links: list[NavLink] = app.extensions.setdefault(NAV_EXTENSION, [])
    if not any(link.endpoint == endpoint for link in links):
        links.append(NavLink(endpoint, label, tuple(roles), order))
        links.sort(key=lambda link: link.order)


def nav_links() -> list[NavLink]:
    """The navigation links the signed-in user may follow (for the base template)."""
    user = current_user()
    if user is None:
        return []
    return [
        link
        for link in current_app.extensions.get(NAV_EXTENSION, [])
        if (not link.roles or user.role in link.roles)
        and link.endpoint in current_app.view_functions
    ]


def boot(**page: Any) -> dict[str, Any]:
    """What the page scripts need at start, embedded in the page as JSON."""
    lang = i18n.current_language()
    user = current_user()
    return {
        "lang": lang,
        "csrf": csrf.csrf_token(),
        "strings": i18n.catalog(lang),
        "user": (
            {"username": user.username, "name": user.display_name, "role": user.role}
            if user
            else None
        ),
        **page,
    }


@bp.get("/")
def home() -> Any:
    return redirect(url_for("ui.worklist_page"))


@bp.get("/worklist")
@login_required()
def worklist_page() -> Any:
    return render_template("ui/worklist.html", boot=boot(page="worklist"))


@bp.get("/viewer/<study_uid>")
def viewer_page(study_uid: str) -> Any:
    """The viewer for one study (any signed-in caller who may see it; else 404).

    A share link's caller gets the same viewer, restricted: no worklist, no
    priors, no sharing or assignment; a download button when the link allows it.
    """
    principal = current_principal()
    if principal is None:
        if session.get("share") or session.get("share_pending"):
            # A share session whose link ended: say why, not "sign in".
            return redirect(url_for("share.landing"))
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    try:
        deid = deid_view(principal)
        row = study_row(principal, deid.real(study_uid) if deid is not None else study_uid)
    except NotFound:
        abort(404)
    user = current_user()
    if user is not None:
        accounts().store.mark_opened(user.id, row["StudyInstanceUID"])
    admin_audit.record("study.open", study=row)
    return render_template(
        "ui/viewer.html",
        boot=boot(page="viewer", study_uid=study_uid, **_viewer_rights(principal)),
        share=principal.kind == "share",
        can_download=principal.can_download,
    )


def _viewer_rights(principal: Principal) -> dict[str, Any]:
    """What the viewer's toolbar offers this caller."""
    staff = principal.kind == "user" and principal.role in ("admin", "radiologist")
    rights: dict[str, Any] = {
        "can_download": principal.can_download,
        "can_share": staff,
        "can_choose_key_images": staff,
        "share": None,
    }
    if principal.kind == "share":
        from pacs.viewer.share import current_link

        link = current_link()
        rights["share"] = {
            "expires_at": link.expires_at.isoformat(timespec="seconds") if link else None,
            "deidentified": principal.deidentify,
            "by": link.created_by_name if link else "",
        }
    return rights


def register(app: Flask, archive: Archive) -> None:
    """The pages, and the features that hang off them: sharing, result sheets, audit."""
    from pacs.viewer import resultsheet, share

    app.register_blueprint(bp)
    share.register(app, archive)
    resultsheet.register(app)
    admin_audit.register(app)
    add_nav_link(app, "ui.worklist_page", "nav.worklist", (), order=10)
    # The operations dashboard (pacs/viewer/dashboard.py), listed once it is registered.
    add_nav_link(app, "ops.dashboard_page", "nav.dashboard", ("admin",), order=20)
    add_nav_link(app, "share_api.shares_page", "nav.shares", ("admin", "radiologist"), order=30)
    add_nav_link(app, "admin_users.users_page", "nav.users", ("admin",), order=40)
    add_nav_link(app, "admin_audit.audit_page", "nav.audit", ("admin",), order=50)
    app.jinja_env.globals["nav_links"] = nav_links

    @app.errorhandler(404)
    def not_found(exc: Exception) -> Any:
        if request.path.startswith(("/api/", "/dicomweb", "/static/")):
            return jsonify(error="Not Found", reason="no such resource"), 404
        return render_template("ui/error.html", message=i18n.t("error.not_found")), 404
