"""The pages: worklist and viewer, and the static files (scripts, styles) they load.

The pages are shells: the data arrives as JSON from :mod:`pacs.viewer.api`
after the same access checks. What a page's script needs at start (language,
strings, CSRF token, the user) is embedded as a JSON data block, never as
inline script, so a strict Content-Security-Policy holds.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, abort, jsonify, redirect, render_template, request, url_for

from pacs.archive import Archive
from pacs.errors import NotFound
from pacs.viewer import csrf, i18n
from pacs.viewer.access import current_principal
from pacs.viewer.auth import accounts, current_user, login_required
from pacs.viewer.scoped import study_row

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
    """The viewer for one study (any signed-in caller who may see it; else 404)."""
    principal = current_principal()
    if principal is None:
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    try:
        study_row(principal, study_uid)
    except NotFound:
        abort(404)
    user = current_user()
    if user is not None:
        accounts().store.mark_opened(user.id, study_uid)
    return render_template("ui/viewer.html", boot=boot(page="viewer", study_uid=study_uid))


def register(app: Flask, archive: Archive) -> None:
    app.register_blueprint(bp)

    @app.errorhandler(404)
    def not_found(exc: Exception) -> Any:
        if request.path.startswith(("/api/", "/dicomweb", "/static/")):
            return jsonify(error="Not Found", reason="no such resource"), 404
        return render_template("ui/error.html", message=i18n.t("error.not_found")), 404
