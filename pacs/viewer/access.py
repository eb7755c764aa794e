"""Who is asking, and which studies they may see.

Every request that touches patient data first resolves a :class:`Principal`:
a signed-in user (session), a partner system (API bearer token) or a share
link (a session scoped to one study). Resolvers are registered by the modules
that own each mechanism; :func:`require_principal` is the one gate every data
endpoint calls, and :meth:`Principal.scope` is what it passes to the archive
(``Query.study_scope``, ``Archive.instances(study_scope=...)``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from flask import Flask, g

from pacs.errors import PacsError

PrincipalKind = Literal["user", "token", "share"]
Role = Literal["admin", "radiologist", "referring", "partner", "share"]


class Unauthenticated(PacsError):
    http_status = 401
    dicom_status = 0x0124


class Forbidden(PacsError):
    http_status = 403
    dicom_status = 0x0124


@dataclass(frozen=True)
class Principal:
    kind: PrincipalKind
    #: username, token name, or share-link id — for logs and the audit trail
    name: str
    role: Role
    #: primary keys of the studies this principal may see; None means all
    study_pks: frozenset[int] | None = None
    #: within those studies, only these series (share links of chosen series)
    series_uids: frozenset[str] | None = None
    can_download: bool = True
    #: de-identify what is served (share links made with that option)
    deidentify: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def sees_everything(self) -> bool:
        return self.study_pks is None

    def scope(self) -> list[int] | None:
        """``study_scope`` for archive queries."""
        return None if self.study_pks is None else sorted(self.study_pks)

    def allows_study(self, study_pk: int) -> bool:
        return self.study_pks is None or study_pk in self.study_pks

    def has_role(self, roles: Iterable[str]) -> bool:
        return self.role in set(roles)


Resolver = Callable[[], Principal | None]
_RESOLVERS = "pacs_principal_resolvers"


def add_resolver(app: Flask, resolver: Resolver) -> None:
    """Register a way to recognise the caller (tried in registration order)."""
    app.extensions.setdefault(_RESOLVERS, []).append(resolver)


def current_principal() -> Principal | None:
    """The caller, resolved once per request; None when nobody is signed in."""
    if "pacs_principal" not in g:
        from flask import current_app

        principal = None
        for resolver in current_app.extensions.get(_RESOLVERS, []):
            principal = resolver()
            if principal is not None:
                break
        g.pacs_principal = principal
    return g.pacs_principal


def require_principal(*roles: str) -> Principal:
    """The caller, or 401 (nobody) / 403 (wrong role). Call before touching data."""
    principal = current_principal()
    if principal is None:
        raise Unauthenticated("sign in, or present a valid token or share link")
    if roles and not principal.has_role(roles):
        raise Forbidden(f"this needs one of the roles: {', '.join(roles)}")
    return principal
