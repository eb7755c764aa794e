"""CSRF protection for every request authenticated by the session cookie.

A random token lives in the signed session; a state-changing request (POST, PUT,
PATCH, DELETE) must echo it in the ``csrf_token`` form field or the
``X-CSRF-Token`` header (what the pages' ``fetch`` calls send). This applies to
every blueprint, so other features get it for free: their forms render
``{{ csrf_token() }}`` and their scripts send the header.

Exempt: requests carrying ``Authorization: Bearer …`` (partner systems; the
session is then ignored, see :func:`pacs.viewer.auth.session_principal`), views
marked with :func:`exempt`, and requests without any session (nothing to
forge; they are refused as unauthenticated further on). The sign-in form is
always checked, against a token issued with the form, so nobody can sign a
victim into the attacker's account.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, current_app, request, session

from pacs.errors import PacsError

log = logging.getLogger(__name__)

SESSION_KEY = "csrf"
FORM_FIELD = "csrf_token"
HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_EXEMPT = "pacs_csrf_exempt"
_ALWAYS = "pacs_csrf_always"

F = TypeVar("F", bound=Callable[..., Any])


class CsrfFailure(PacsError):
    """The request changes state but does not carry the session's CSRF token."""

    http_status = 403
    dicom_status = 0x0124


def csrf_token() -> str:
    """The session's token, created on first use (for forms and the pages' scripts)."""
    token = session.get(SESSION_KEY)
    if not token:
        token = secrets.token_urlsafe(32)
        session[SESSION_KEY] = token
    return token


def rotate() -> str:
    """A new token (at sign-in, so a token seen before signing in is worthless after)."""
    session[SESSION_KEY] = secrets.token_urlsafe(32)
    return session[SESSION_KEY]


def exempt(view: F) -> F:
    """Mark a view as authenticating its callers some other way (not by the session)."""
    setattr(view, _EXEMPT, True)
    return view


def always(view: F) -> F:
    """Check the token even without a signed-in session (the sign-in form)."""
    setattr(view, _ALWAYS, True)
    return view


def is_bearer_request() -> bool:
    return request.headers.get("Authorization", "").lower().startswith("bearer ")


def _presented() -> str:
    token = request.headers.get(HEADER, "")
    if not token and request.mimetype in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        token = request.form.get(FORM_FIELD, "")
    return token


def check_request() -> None:
    """Raise CsrfFailure when this request needs the token and lacks it."""
    if request.method in SAFE_METHODS or is_bearer_request():
        return
    view = current_app.view_functions.get(request.endpoint or "")
    if view is not None and getattr(view, _EXEMPT, False):
        return
    needed = bool(session) or (view is not None and getattr(view, _ALWAYS, False))
    if not needed:
        return
    expected = session.get(SESSION_KEY, "")
    presented = _presented()
    if not expected or not presented or not hmac.compare_digest(expected, presented):
        log.warning(
            "%s %s refused: missing or wrong CSRF token (from %s)",
            request.method,
            request.path,
            request.remote_addr,
        )
        raise CsrfFailure("missing or wrong CSRF token: reload the page and try again")


def protect(app: Flask) -> None:
    """Check every state-changing request of ``app`` (all blueprints)."""
    app.before_request(check_request)
    app.jinja_env.globals["csrf_token"] = csrf_token
