"""The pacs-to-pacs endpoints: what a partner's pacs calls on ours.

Callers present the API token we issued them (``Authorization: Bearer``); the
token names the partner (``consult_partners.inbound_token_id``). Nothing here is
reachable with a session or a share link. Every call is idempotent: the other
side's job may repeat it after a failure.

- ``GET  /consult/api/peer/ping`` — are we reachable, and do we know the caller?
- ``POST /consult/api/peer/studies`` — a study the partner is about to send us:
  its token and AE may store into it and count it (refused, 403, for a study
  archived here that was never shared with that partner).
- ``POST /consult/api/peer/requests`` — a consultation request for us.
- ``POST /consult/api/peer/requests/<uid>/status`` — ``viewed`` / ``answered`` on
  a request we made.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request

from pacs.errors import InvalidQuery
from pacs.storage.consult_models import Partner
from pacs.storage.dicomweb_models import TokenStore
from pacs.storage.objects import is_valid_uid
from pacs.viewer import csrf
from pacs.viewer.access import Forbidden, Principal, add_resolver, require_principal
from pacs.viewer.consult import consult
from pacs.viewer.dicomweb.tokens import hash_token

log = logging.getLogger(__name__)

PREFIX = "/consult/api/peer"
_TOKENS = "pacs_consult_peer_tokens"

bp = Blueprint("consult_peer", __name__, url_prefix=PREFIX)


def peer_resolver() -> Principal | None:
    """The partner behind a bearer token on the peer endpoints (others: not ours)."""
    if not request.path.startswith(PREFIX + "/") or not csrf.is_bearer_request():
        return None
    secret = request.headers.get("Authorization", "").partition(" ")[2].strip()
    if not secret:
        return None
    store: TokenStore = current_app.extensions[_TOKENS]
    token = store.by_hash(hash_token(secret))
    if token is None or not token.is_active():
        log.warning(
            "%s %s: unknown or inactive token from %s",
            request.method,
            request.path,
            request.remote_addr,
        )
        return None
    partner = consult().partners.store.by_inbound_token(token.id)
    if partner is None:
        log.warning(
            "%s %s: token %s is no partner's (from %s)",
            request.method,
            request.path,
            token.token_prefix,
            request.remote_addr,
        )
        return None
    store.touch(token)
    return Principal(
        kind="token",
        name=partner.name,
        role="partner",
        study_pks=frozenset(),
        extra={"partner_id": str(partner.id), "token_id": str(token.id)},
    )


def _partner() -> Partner:
    principal = require_principal("partner")
    partner_id = principal.extra.get("partner_id")
    if not partner_id:
        raise Forbidden("only a partner hospital calls this")
    return consult().partners.get(int(partner_id))


def _body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise InvalidQuery("send a JSON object")
    return data


@bp.get("/ping")
@csrf.exempt
def ping() -> Any:
    partner = _partner()
    return jsonify(ok=True, partner=partner.name, ae_title=consult().settings.ae_title)


@bp.post("/studies")
@csrf.exempt
def announce_study() -> Any:
    partner = _partner()
    study_uid = str(_body().get("study_uid", ""))
    if not is_valid_uid(study_uid):
        raise InvalidQuery("study_uid must be a valid UID")
    if not consult().partners.accept_incoming(partner, study_uid, "received"):
        raise Forbidden("that study is archived here and not shared with you")
    return jsonify(study_uid=study_uid, shared=True)


@bp.post("/requests")
@csrf.exempt
def receive_request() -> Any:
    partner = _partner()
    c = consult().requests.receive(partner, _body())
    return jsonify(uid=c.uid, status=c.status), 201


@bp.post("/requests/<uid>/status")
@csrf.exempt
def request_status(uid: str) -> Any:
    partner = _partner()
    c = consult().requests.status_from_partner(partner, uid[:64], _body())
    return jsonify(uid=c.uid, status=c.status)


def register(app: Flask) -> None:
    app.extensions[_TOKENS] = TokenStore(app.extensions["pacs_archive"].index.engine)
    add_resolver(app, peer_resolver)
    app.register_blueprint(bp)
