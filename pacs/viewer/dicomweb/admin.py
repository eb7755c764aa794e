"""JSON admin endpoints for partner tokens and CORS origins (admin users only).

``GET/POST /dicomweb/_tokens``, ``DELETE /dicomweb/_tokens/{id}``,
``GET/PUT /dicomweb/_cors``. Admins are signed-in users: bearer tokens are
never admins (their role is ``partner``), and session requests that change
state carry the CSRF token (:mod:`pacs.viewer.csrf` checks every blueprint).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from pacs.errors import InvalidQuery, NotFound
from pacs.storage.dicomweb_models import CorsStore, TokenNameTaken, TokenStore
from pacs.viewer.dicomweb import cors
from pacs.viewer.dicomweb.common import gate
from pacs.viewer.dicomweb.tokens import (
    EXTENSION as TOKENS,
)
from pacs.viewer.dicomweb.tokens import (
    InvalidTokenRequest,
    create_token,
    token_json,
)

log = logging.getLogger(__name__)

bp = Blueprint("dicomweb_admin", __name__, url_prefix="/dicomweb")


def _tokens() -> TokenStore:
    return current_app.extensions[TOKENS]


def _body() -> dict[str, Any]:
    if not request.is_json:
        raise InvalidQuery("send a JSON body (Content-Type: application/json)")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidQuery("the body must be a JSON object")
    return body


@bp.get("/_tokens")
def list_tokens() -> Response:
    gate("admin")
    return jsonify(tokens=[token_json(t) for t in _tokens().list_tokens()])


@bp.post("/_tokens")
def add_token() -> tuple[Response, int]:
    admin = gate("admin")
    body = _body()
    studies = body.get("studies") or []
    expires = body.get("expires_days")
    if not isinstance(studies, list) or not all(isinstance(s, str) for s in studies):
        raise InvalidQuery("studies must be a list of Study Instance UIDs")
    if expires is not None and not isinstance(expires, int | float):
        raise InvalidQuery("expires_days must be a number")
    try:
        created = create_token(
            _tokens(),
            str(body.get("name", "")),
            study_uids=studies,
            all_studies=bool(body.get("all", False)),
            can_write=bool(body.get("write", False)),
            expires_days=expires,
            created_by=f"admin:{admin.name}",
            description=str(body.get("description", ""))[:255],
        )
    except InvalidTokenRequest as exc:
        raise InvalidQuery(str(exc)) from exc
    except TokenNameTaken as exc:
        raise InvalidQuery(f"an active token is already named {exc.args[0]!r}") from exc
    # The secret is in this answer only; it is not stored and never logged.
    return jsonify(token=created.secret, **token_json(created.token)), 201


@bp.delete("/_tokens/<int:token_id>")
def revoke_token(token_id: int) -> Response:
    admin = gate("admin")
    token = _tokens().get(token_id)
    if token is None:
        raise NotFound("no such token")
    if _tokens().revoke(token_id):
        log.warning("API token %r (#%d) revoked by %s", token.name, token.id, admin.name)
    return Response(status=204)


@bp.get("/_cors")
def list_origins() -> Response:
    gate("admin")
    return jsonify(origins=CorsStore(_tokens().engine).origins())


@bp.put("/_cors")
def set_origins() -> Response:
    admin = gate("admin")
    body = _body()
    wanted = body.get("origins")
    if not isinstance(wanted, list) or not all(isinstance(o, str) for o in wanted):
        raise InvalidQuery("origins must be a list like ['https://viewer.example.org']")
    try:
        origins = {cors.normalise_origin(o) for o in wanted}
    except ValueError as exc:
        raise InvalidQuery(str(exc)) from exc
    store = CorsStore(_tokens().engine)
    current = set(store.origins())
    for origin in current - origins:
        store.remove(origin)
    for origin in origins - current:
        store.add(origin)
    current_app.extensions[cors.EXTENSION].forget()
    log.warning("DICOMweb CORS origins set to %s by %s", sorted(origins) or "none", admin.name)
    return jsonify(origins=sorted(origins))
