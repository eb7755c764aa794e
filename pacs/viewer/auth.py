"""Sign-in, sessions, the caller's account page, language choice and CSRF protection.

The session is Flask's signed cookie holding the user id and the user's
*session version*; every request checks both against the database (one
primary-key read), so disabling a user, changing a role or a password signs
that user out on every worker process and node at once.

Pages call :func:`login_required` (redirect to the sign-in page); JSON endpoints
call :func:`pacs.viewer.access.require_principal` (401/403), which finds the
signed-in user through :func:`session_principal`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    g,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from pacs.archive import Archive
from pacs.audit import Actor
from pacs.storage.accounts import ROLES, User
from pacs.viewer import admin_audit, csrf, i18n
from pacs.viewer.access import Principal, Unauthenticated, add_resolver, require_principal
from pacs.viewer.users import AccountError, Accounts, BadCredentials, LockedOut, LoginPolicy

log = logging.getLogger(__name__)

bp = Blueprint("auth", __name__, template_folder="templates")

F = TypeVar("F", bound=Callable[..., Any])
EXTENSION = "pacs_accounts"
SESSION_COOKIE = "pacs_session"
LANG_COOKIE_AGE = 365 * 24 * 3600


def accounts() -> Accounts:
    return current_app.extensions[EXTENSION]


# ---------------------------------------------------------------- the session


def _load_session_user() -> User | None:
    """The signed-in user of this request, or None (a stale session is cleared).

    The cookie expires after ``session_hours`` without use (Flask refreshes it on
    every request); :data:`MAX_SESSION_AGE` bounds a session however busy it is.
    """
    uid = session.get("uid")
    if not isinstance(uid, int):
        return None
    started = session.get("at")
    max_age = current_app.config["PACS_SESSION_MAX_AGE"]
    if not isinstance(started, int) or time.time() - started > max_age.total_seconds():
        log.info("session of user id %s is older than %s; signed out", uid, max_age)
        session.clear()
        return None
    user = accounts().store.get(uid)
    if user is None or user.disabled or session.get("sv") != user.session_version:
        log.info("session of user id %s no longer valid; signed out", uid)
        session.clear()
        return None
    return user


def current_user() -> User | None:
    """The user signed in by the session cookie (cached for the request).

    A request with an ``Authorization: Bearer`` header is never a session user:
    that is what makes such requests safe to exempt from CSRF checks.
    """
    if "pacs_user" not in g:
        g.pacs_user = None if csrf.is_bearer_request() else _load_session_user()
    return g.pacs_user


def session_principal() -> Principal | None:
    """The resolver registered with :func:`pacs.viewer.access.add_resolver`."""
    user = current_user()
    if user is None:
        return None
    study_pks = None if user.sees_all_studies else accounts().store.visible_study_pks(user.id)
    return Principal(
        kind="user",
        name=user.username,
        role=user.role,  # type: ignore[arg-type]
        study_pks=study_pks,
        extra={"user_id": str(user.id)},
    )


def user_principal() -> tuple[User, Principal]:
    """For JSON endpoints that need the account itself: 401 unless a session user calls."""
    principal = require_principal()
    user = current_user()
    if user is None or principal.kind != "user":
        raise Unauthenticated("this needs a signed-in user")
    return user, principal


def _start_session(user: User) -> None:
    session.clear()
    session.permanent = True
    session["uid"] = user.id
    session["sv"] = user.session_version
    session["at"] = int(time.time())
    csrf.rotate()


def safe_next(target: str | None, default: str = "/") -> str:
    """A same-site path to go back to after sign-in; anything else becomes ``default``."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return default
    if "\\" in target or any(ord(c) < 32 for c in target):
        return default
    return target


def login_required(*roles: str) -> Callable[[F], F]:
    """For pages: redirect to the sign-in page without a session, 403 page for other roles."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            user = current_user()
            if user is None:
                return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
            if roles and user.role not in roles:
                log.warning(
                    "%s %s refused: user %s (%s) lacks role %s",
                    request.method,
                    request.path,
                    user.username,
                    user.role,
                    "/".join(roles),
                )
                return render_template("ui/error.html", message=i18n.t("error.forbidden")), 403
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


# ---------------------------------------------------------------- sign-in pages


def _minutes_left(exc: LockedOut) -> int:
    from pacs.storage.accounts import utcnow

    return max(1, int((exc.until - utcnow()).total_seconds() // 60) + 1)


@bp.get("/login")
def login() -> Any:
    if current_user() is not None:
        return redirect(safe_next(request.args.get("next")))
    message = i18n.t("login.signed_out") if request.args.get("out") else ""
    return render_template(
        "ui/login.html", next=safe_next(request.args.get("next"), ""), info=message
    )


@bp.post("/login")
@csrf.always
def login_submit() -> Any:
    wants_json = request.is_json
    data = (request.get_json(silent=True) or {}) if wants_json else request.form
    username = str(data.get("username", ""))
    password = str(data.get("password", ""))
    target = safe_next(str(data.get("next", "")) or None)
    address = request.remote_addr or ""
    try:
        user = accounts().authenticate(username, password, address)
    except LockedOut as exc:
        _audit_login(username, "failure", "locked")
        message = i18n.t("login.locked", minutes=_minutes_left(exc))
        return _login_failed(message, 429, username, target, wants_json)
    except BadCredentials:
        _audit_login(username, "failure", "bad_credentials")
        return _login_failed(i18n.t("login.bad_credentials"), 401, username, target, wants_json)
    _start_session(user)
    g.pacs_user = user
    _audit_login(user.username, "success", "")
    if wants_json:
        response = jsonify(user=_user_json(user), csrf=session[csrf.SESSION_KEY])
    else:
        response = redirect(target)
    if user.language in i18n.LANGUAGES:
        _set_lang_cookie(response, user.language)
    return response


def _audit_login(username: str, outcome: str, reason: str) -> None:
    """A sign-in row: the name as typed (normalised), never the password."""
    from pacs.viewer.users import normalize_username

    admin_audit.record(
        "login",
        actor=Actor("user", normalize_username(username)[:64], request.remote_addr or ""),
        outcome=outcome,
        details={"reason": reason} if reason else None,
    )


def _user_actor(user: User) -> Actor:
    return Actor("user", user.username, request.remote_addr or "")


def _login_failed(message: str, status: int, username: str, target: str, as_json: bool) -> Any:
    if as_json:
        return jsonify(error="SignInFailed", reason=message), status
    return (
        render_template("ui/login.html", error=message, username=username, next=target),
        status,
    )


@bp.post("/logout")
def logout() -> Any:
    user = current_user()
    if user is not None:
        log.info("user %s signed out", user.username)
        admin_audit.record("logout", actor=_user_actor(user))
    session.clear()
    if request.is_json or request.accept_mimetypes.best == "application/json":
        return jsonify(status="signed out")
    return redirect(url_for("auth.login", out=1))


@bp.get("/account")
@login_required()
def account() -> Any:
    return render_template("ui/account.html", message=request.args.get("msg", ""))


@bp.post("/account/password")
@login_required()
def account_password() -> Any:
    user = current_user()
    assert user is not None
    new = request.form.get("new_password", "")
    if new != request.form.get("confirm_password", ""):
        return render_template("ui/account.html", error=i18n.t("account.mismatch")), 400
    try:
        accounts().change_own_password(user, request.form.get("current_password", ""), new)
    except AccountError as exc:
        admin_audit.record(
            "user.password",
            actor=_user_actor(user),
            outcome="failure",
            details={"user": user.username, "reason": exc.code},
        )
        return render_template("ui/account.html", error=i18n.t(f"accounterr.{exc.code}")), 400
    admin_audit.record("user.password", actor=_user_actor(user), details={"user": user.username})
    session.clear()
    return render_template("ui/login.html", info=i18n.t("account.password_changed"), next="")


@bp.post("/account/sessions")
@login_required()
def account_end_sessions() -> Any:
    user = current_user()
    assert user is not None
    accounts().store.end_sessions(user.id)
    log.info("user %s ended all their sessions", user.username)
    admin_audit.record("logout", actor=_user_actor(user), details={"everywhere": True})
    session.clear()
    return redirect(url_for("auth.login", out=1))


# ---------------------------------------------------------------- language


def _set_lang_cookie(response: Response, lang: str) -> None:
    response.set_cookie(i18n.COOKIE, lang, max_age=LANG_COOKIE_AGE, samesite="Lax", httponly=False)


@bp.post("/language")
def set_language() -> Any:
    """Remember the chosen language (cookie, and the account when signed in)."""
    data = (request.get_json(silent=True) or {}) if request.is_json else request.form
    lang = str(data.get("lang", ""))
    if lang not in i18n.LANGUAGES:
        return jsonify(error="InvalidLanguage", reason="use vi or en"), 400
    user = current_user()
    if user is not None and user.language != lang:
        accounts().store.set_language(user.id, lang)
    if request.is_json:
        response = make_response(jsonify(lang=lang))
    else:
        response = make_response(redirect(safe_next(str(data.get("next", "")))))
    _set_lang_cookie(response, lang)
    return response


# ---------------------------------------------------------------- JSON


def _user_json(user: User) -> dict[str, Any]:
    return {
        "username": user.username,
        "name": user.display_name,
        "role": user.role,
        "language": user.language,
    }


@bp.get("/api/session")
def api_session() -> Any:
    """Who is signed in, the CSRF token for scripts, and the language (401 when nobody)."""
    user, _ = user_principal()
    return jsonify(user=_user_json(user), csrf=csrf.csrf_token(), lang=i18n.current_language())


@bp.get("/api/users")
def api_users() -> Any:
    """Users of one role (``?role=referring``), for the study assignment dialog."""
    require_principal("admin", "radiologist")
    role = request.args.get("role", "referring")
    if role not in ROLES:
        return jsonify(error="InvalidQuery", reason="unknown role"), 400
    users = [u for u in accounts().store.list_users(role=role) if not u.disabled]
    return jsonify(users=[{"username": u.username, "name": u.display_name} for u in users])


# ---------------------------------------------------------------- wiring


#: blueprints of pages and page JSON: strict CSP, no caching of patient data
_PAGE_BLUEPRINTS = (
    "auth",
    "ui",
    "api",
    "admin_users",
    "admin_audit",
    "share",
    "share_api",
    "share_download",
    "resultsheet",
)


def _security_headers(response: Response) -> Response:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    # A share session's pages send no Referer at all: nothing of the link travels elsewhere.
    # (The session is looked at for pages only: touching it adds "Vary: Cookie".)
    in_share = request.blueprint == "share" or (
        request.blueprint in _PAGE_BLUEPRINTS and ("share" in session or "share_pending" in session)
    )
    response.headers.setdefault("Referrer-Policy", "no-referrer" if in_share else "same-origin")
    if request.blueprint in _PAGE_BLUEPRINTS:
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
            "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
            "form-action 'self'; frame-ancestors 'none'",
        )
        response.headers.setdefault("X-Frame-Options", "DENY")
        if request.endpoint == "ui.static":
            # Scripts and styles: kept, but checked (ETag) so an upgrade shows at once.
            response.headers["Cache-Control"] = "no-cache"
        else:
            # Patient data must not linger in shared browser caches; images revalidate by ETag.
            response.headers.setdefault("Cache-Control", "no-store")
    return response


def _csrf_failure(exc: csrf.CsrfFailure) -> Any:
    log.warning("%s %s refused: CsrfFailure: %s", request.method, request.path, exc.reason)
    if request.is_json or request.path.startswith("/api/") or request.headers.get(csrf.HEADER):
        return jsonify(error="CsrfFailure", reason=exc.reason), 403
    return render_template("ui/error.html", message=i18n.t("error.csrf")), 403


def register(app: Flask, archive: Archive) -> None:
    settings = app.config["PACS_SETTINGS"]
    policy = LoginPolicy(
        max_failures=settings.login_max_failures,
        max_address_failures=settings.login_max_address_failures,
        window=timedelta(minutes=settings.login_lockout_minutes),
    )
    app.config.update(
        SESSION_COOKIE_NAME=SESSION_COOKIE,
        # Idle limit: the cookie's expiry moves forward with every request.
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.session_hours),
        PACS_SESSION_MAX_AGE=timedelta(days=settings.session_max_days),
    )
    if settings.session_cookie_secure:
        app.config["SESSION_COOKIE_SECURE"] = True
    app.extensions[EXTENSION] = Accounts(archive.index.engine, policy)
    csrf.protect(app)
    add_resolver(app, session_principal)
    app.after_request(_security_headers)
    app.register_error_handler(csrf.CsrfFailure, _csrf_failure)

    @app.context_processor
    def _template_globals() -> dict[str, Any]:
        user = current_user()  # first: the language falls back to the account's choice
        return {
            "t": i18n.t,
            "lang": i18n.current_language(),
            "languages": i18n.LANGUAGE_NAMES,
            "current_user": user,
        }

    app.register_blueprint(bp)
    from pacs.viewer import admin_users

    admin_users.register(app)
