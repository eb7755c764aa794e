"""The administrators' page for users: add, disable/enable, change role, reset password."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Flask, redirect, render_template, request, url_for

from pacs.storage.accounts import ROLES
from pacs.viewer import admin_audit, i18n
from pacs.viewer.auth import accounts, current_user, login_required
from pacs.viewer.users import AccountError, random_password

log = logging.getLogger(__name__)

bp = Blueprint("admin_users", __name__, template_folder="templates")

#: the page's actions → audit action names (user.<name>, see docs/audit.md)
_ACTIONS = {"disable": "disable", "enable": "enable", "role": "role", "password": "password"}


def _page(status: int = 200, **context: Any) -> Any:
    users = accounts().store.list_users()
    return render_template("ui/users.html", users=users, roles=ROLES, **context), status


def _actor() -> str:
    user = current_user()
    return user.username if user else ""


@bp.get("/admin/users")
@login_required("admin")
def users_page() -> Any:
    return _page(message=request.args.get("msg", ""))


@bp.post("/admin/users")
@login_required("admin")
def users_add() -> Any:
    form = request.form
    password = form.get("password", "")
    generated = not password
    if generated:
        password = random_password()
    try:
        user = accounts().create(
            form.get("username", ""),
            password,
            role=form.get("role", ""),
            display_name=form.get("display_name", ""),
        )
    except AccountError as exc:
        admin_audit.record(
            "user.create",
            outcome="failure",
            details={"user": form.get("username", "")[:64], "reason": exc.code},
        )
        return _page(400, error=i18n.t(f"accounterr.{exc.code}"), form=form)
    log.info("user %s (%s) created by %s", user.username, user.role, _actor())
    admin_audit.record("user.create", details={"user": user.username, "role": user.role})
    if not generated:
        return _page(message=i18n.t("users.created", name=user.username))
    # Rendered, not redirected: a generated password is shown once and never put in a URL.
    return _page(message=i18n.t("users.password_reset", name=user.username), secret=password)


@bp.post("/admin/users/<username>/<action>")
@login_required("admin")
def users_action(username: str, action: str) -> Any:
    acc = accounts()
    if action not in _ACTIONS:
        return _page(404, error=i18n.t("error.not_found"))
    audited = f"user.{_ACTIONS[action]}"
    details: dict[str, Any] = {"user": username[:64]}
    try:
        if action == "disable":
            user = acc.set_disabled(username, True, actor=_actor())
        elif action == "enable":
            user = acc.set_disabled(username, False, actor=_actor())
        elif action == "role":
            details["role"] = request.form.get("role", "")[:16]
            user = acc.set_role(username, request.form.get("role", ""), actor=_actor())
        else:
            password = random_password()
            user = acc.set_password(username, password)
            log.info("password of %s reset by %s", user.username, _actor())
            admin_audit.record(audited, details={"user": user.username, "reset": True})
            return _page(
                message=i18n.t("users.password_reset", name=user.username), secret=password
            )
    except AccountError as exc:
        admin_audit.record(audited, outcome="failure", details={**details, "reason": exc.code})
        return _page(400, error=i18n.t(f"accounterr.{exc.code}"))
    admin_audit.record(audited, details={**details, "user": user.username})
    return redirect(
        url_for("admin_users.users_page", msg=i18n.t("users.updated", name=user.username))
    )


def register(app: Flask) -> None:
    app.register_blueprint(bp)
