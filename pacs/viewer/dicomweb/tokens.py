"""API bearer tokens for partner systems: making them, and recognising them on requests.

A token is ``pacs_`` followed by 32 random bytes (URL-safe base64): 256 bits, so
a plain SHA-256 of it is a safe thing to store and look up (no salt or slow
hash is needed against guessing at that strength). The secret itself is shown
once, at creation, and never stored or logged; lists show its first characters.

Tokens authenticate DICOMweb and WADO-URI requests only (``/dicomweb``,
``/wado``): a partner system has no business on the pages or their JSON.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from flask import Flask, current_app, request

from pacs.archive import Archive
from pacs.storage.dicomweb_models import ApiToken, TokenStore, utcnow
from pacs.storage.objects import is_valid_uid
from pacs.viewer.access import Principal, add_resolver

log = logging.getLogger(__name__)

TOKEN_PREFIX = "pacs_"
#: request paths where a bearer token is accepted
TOKEN_PATHS = ("/dicomweb", "/wado")
EXTENSION = "pacs_dicomweb_tokens"
#: roles of signed-in users that may store through STOW-RS
WRITER_ROLES = frozenset({"admin", "radiologist"})


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def display_prefix(token: str) -> str:
    """What lists show to tell tokens apart (``pacs_AbCd1234``); not enough to use it."""
    return token[: len(TOKEN_PREFIX) + 8]


@dataclass(frozen=True)
class CreatedToken:
    token: ApiToken
    #: the secret, to show once
    secret: str


class InvalidTokenRequest(ValueError):
    """A token cannot be made as asked (bad name, UID, scope or expiry)."""


def create_token(
    store: TokenStore,
    name: str,
    *,
    study_uids: Sequence[str] = (),
    all_studies: bool = False,
    can_write: bool = False,
    expires_days: float | None = None,
    created_by: str = "",
    description: str = "",
) -> CreatedToken:
    """Make a token and store its hash. Raises InvalidTokenRequest, TokenNameTaken,
    StorageUnavailable."""
    name = name.strip()
    if not name or len(name) > 64 or not name.isprintable():
        raise InvalidTokenRequest("a token name is 1–64 printable characters")
    if all_studies and study_uids:
        raise InvalidTokenRequest("give either all studies or a list of studies, not both")
    if not all_studies and not study_uids:
        raise InvalidTokenRequest("give the studies the token may see, or all studies")
    bad = [u for u in study_uids if not is_valid_uid(u)]
    if bad:
        raise InvalidTokenRequest(f"not a valid Study Instance UID: {bad[0][:80]!r}")
    expires_at = None
    if expires_days is not None:
        if expires_days <= 0:
            raise InvalidTokenRequest("expiry must be a positive number of days")
        expires_at = utcnow() + timedelta(days=expires_days)
    secret = new_token()
    token = store.create(
        name,
        token_hash=hash_token(secret),
        token_prefix=display_prefix(secret),
        all_studies=all_studies,
        can_write=can_write,
        study_uids=list(study_uids),
        created_by=created_by,
        expires_at=expires_at,
        description=description,
    )
    log.info(
        "API token %r (#%d, %s) created by %s: %s%s%s",
        token.name,
        token.id,
        token.token_prefix,
        created_by or "?",
        "all studies" if all_studies else f"{len(study_uids)} study(ies)",
        ", may store" if can_write else "",
        f", expires {expires_at:%Y-%m-%d %H:%M} UTC" if expires_at else "",
    )
    return CreatedToken(token, secret)


def token_json(token: ApiToken) -> dict[str, object]:
    """A token as the admin endpoints and ``pacs token list --json`` show it."""
    return {
        "id": token.id,
        "name": token.name,
        "prefix": token.token_prefix,
        "all_studies": token.all_studies,
        "studies": token.study_uids(),
        "can_write": token.can_write,
        "description": token.description,
        "created_by": token.created_by,
        "created_at": token.created_at.isoformat(),
        "expires_at": token.expires_at.isoformat() if token.expires_at else None,
        "revoked_at": token.revoked_at.isoformat() if token.revoked_at else None,
        "last_used_at": token.last_used_at.isoformat() if token.last_used_at else None,
        "active": token.is_active(),
    }


def principal_for(token: ApiToken, store: TokenStore) -> Principal:
    """The caller a token stands for: role ``partner``, scoped to its studies."""
    extra = {"token_id": str(token.id), "can_write": "1" if token.can_write else ""}
    study_pks = None
    if not token.all_studies:
        uids = token.study_uids()
        study_pks = store.study_pks(uids)
        # Kept for STOW-RS: a scoped token may store into a granted study not archived yet.
        extra["study_uids"] = "\\".join(uids)
    return Principal(
        kind="token", name=token.name, role="partner", study_pks=study_pks, extra=extra
    )


def may_write(principal: Principal) -> bool:
    """STOW-RS: admin and radiologist users, and tokens made with write permission."""
    if principal.kind == "token":
        return principal.extra.get("can_write") == "1"
    return principal.kind == "user" and principal.role in WRITER_ROLES


def writable_study_uids(principal: Principal) -> frozenset[str] | None:
    """Study UIDs a scoped token may store into (None: any study)."""
    if principal.kind != "token" or principal.study_pks is None:
        return None
    uids = principal.extra.get("study_uids", "")
    return frozenset(u for u in uids.split("\\") if u)


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def token_resolver() -> Principal | None:
    """The partner behind ``Authorization: Bearer pacs_…`` on DICOMweb paths, if valid."""
    if not request.path.startswith(TOKEN_PATHS):
        return None
    secret = _bearer()
    if secret is None:
        return None
    store: TokenStore = current_app.extensions[EXTENSION]
    token = store.by_hash(hash_token(secret))
    if token is None:
        log.warning(
            "%s %s: unknown bearer token from %s", request.method, request.path, request.remote_addr
        )
        return None
    if not token.is_active():
        log.warning(
            "%s %s: %s token %r (#%d) from %s",
            request.method,
            request.path,
            "revoked" if token.revoked_at else "expired",
            token.name,
            token.id,
            request.remote_addr,
        )
        return None
    store.touch(token)
    return principal_for(token, store)


def register(app: Flask, archive: Archive) -> None:
    app.extensions[EXTENSION] = TokenStore(archive.index.engine)
    add_resolver(app, token_resolver)
