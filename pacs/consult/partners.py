"""The partner registry: adding, changing and removing partner hospitals, their secrets,
the token they present to us, and what is shared with them.

A partner's DICOM side is an ordinary remote AE (``remote_aes``, the registry the
SCP consults), enrolled with every permission and a study scope: ``shared`` (the
default: it sees only the studies shared with this partner) or ``all``. Its
DICOMweb side is an API token we issue (``pacs partner add --issue-token``) whose
study scopes follow the shares. The token *we* present to the partner is sealed
(:mod:`pacs.consult.sealing`) and never logged.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pacs.archive import Archive
from pacs.config import Settings
from pacs.consult.sealing import SecretBox, hint
from pacs.errors import InvalidQuery, NotFound
from pacs.storage.consult_models import (
    COMPRESSIONS,
    TRANSPORTS,
    NameTaken,
    Partner,
    PartnerStore,
    ShareStore,
)
from pacs.storage.dicomweb_models import TokenStore
from pacs.storage.index import RemoteNode

log = logging.getLogger(__name__)

SCOPES = ("shared", "all")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,47}$")
# Same format as pacs.viewer.dicomweb.tokens (which imports Flask): "pacs_" + 256 bits.
_TOKEN_PREFIX = "pacs_"


class InvalidPartner(InvalidQuery):
    """A partner cannot be registered as given (the message says why)."""


def _new_token() -> tuple[str, str, str]:
    """(secret, SHA-256 hex, display prefix) of a new API token."""
    secret = _TOKEN_PREFIX + secrets.token_urlsafe(32)
    return secret, hashlib.sha256(secret.encode()).hexdigest(), secret[: len(_TOKEN_PREFIX) + 8]


def _check_url(url: str, what: str) -> str:
    url = url.strip().rstrip("/")
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidPartner(f"{what} must be an http(s) URL, not {url[:100]!r}")
    return url


@dataclass(frozen=True)
class PartnerCheck:
    what: str
    ok: bool
    detail: str


class Partners:
    """Partner hospitals of this installation."""

    def __init__(self, settings: Settings, archive: Archive) -> None:
        self.settings = settings
        self.archive = archive
        engine = archive.index.engine
        self.store = PartnerStore(engine)
        self.shares = ShareStore(engine)
        self.tokens = TokenStore(engine)
        self._box: SecretBox | None = None

    @property
    def box(self) -> SecretBox:
        if self._box is None:
            self._box = SecretBox(self.settings)
        return self._box

    # ------------------------------------------------------------ lookups

    def get(self, partner_id: int) -> Partner:
        partner = self.store.get(partner_id)
        if partner is None:
            raise NotFound(f"no partner #{partner_id}")
        return partner

    def named(self, name: str) -> Partner:
        partner = self.store.by_name(name.strip())
        if partner is None:
            raise NotFound(f"no partner named {name!r} (pacs partner list)")
        return partner

    def all(self) -> list[Partner]:
        return self.store.all()

    def secret(self, partner: Partner) -> str | None:
        """The token we present to the partner (None when none is set)."""
        return self.box.open(partner.token_sealed) if partner.token_sealed else None

    def scope(self, partner: Partner) -> str:
        """The study scope of the partner's AE ("shared" / "all"; "" without DICOM)."""
        if not partner.ae_title:
            return ""
        node = self.archive.index.get_node(partner.ae_title)
        return (node.study_scope or "all") if node is not None else ""

    # ------------------------------------------------------------ changes

    def save(
        self,
        name: str,
        *,
        update: bool = False,
        description: str | None = None,
        ae_title: str | None = None,
        host: str | None = None,
        port: int | None = None,
        dicomweb_url: str | None = None,
        pacs_url: str | None = None,
        token: str | None = None,
        transport: str | None = None,
        compression: str | None = None,
        bandwidth_bps: int | None = None,
        scope: str | None = None,
    ) -> Partner:
        """Add a partner (or, with ``update``, change the fields given). Raises
        InvalidPartner, NotFound (update of an unknown partner), NameTaken."""
        name = name.strip()
        if not _NAME.match(name):
            raise InvalidPartner(
                "a partner name is 1–48 letters, digits, spaces, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        current = self.store.by_name(name)
        if update and current is None:
            raise NotFound(f"no partner named {name!r}")
        if not update and current is not None:
            raise NameTaken(name)
        fields: dict[str, Any] = {}
        if description is not None:
            fields["description"] = description.strip()[:255]
        if ae_title is not None:
            ae_title = ae_title.strip()
            if ae_title and (len(ae_title) > 16 or "\\" in ae_title or not ae_title.isprintable()):
                raise InvalidPartner("an AE title is 1–16 printable characters without '\\'")
            fields["ae_title"] = ae_title
        if host is not None:
            fields["host"] = host.strip()[:255]
        if port is not None:
            if not 0 <= port < 65536:
                raise InvalidPartner("port must be 1–65535")
            fields["port"] = port
        if dicomweb_url is not None:
            fields["dicomweb_url"] = _check_url(dicomweb_url, "the DICOMweb URL")
        if pacs_url is not None:
            fields["pacs_url"] = _check_url(pacs_url, "the pacs URL")
        if transport is not None:
            if transport not in TRANSPORTS:
                raise InvalidPartner(f"transport must be one of {', '.join(TRANSPORTS)}")
            fields["transport"] = transport
        if compression is not None:
            if compression not in COMPRESSIONS:
                raise InvalidPartner(f"compression must be one of {', '.join(COMPRESSIONS)}")
            fields["compression"] = compression
        if bandwidth_bps is not None:
            if bandwidth_bps < 0:
                raise InvalidPartner("a bandwidth cap is 0 (none) or bytes per second")
            fields["bandwidth_bps"] = bandwidth_bps
        if token is not None:
            token = token.strip()
            fields["token_sealed"] = self.box.seal(token) if token else ""
            fields["token_hint"] = hint(token) if token else ""
        if scope is not None and scope not in SCOPES:
            raise InvalidPartner(f"scope must be one of {', '.join(SCOPES)}")
        merged = {
            "ae_title": "",
            "host": "",
            "port": 0,
            "dicomweb_url": "",
            "transport": "dicom",
            **(current.__dict__ if current else {}),
            **fields,
        }
        if merged["ae_title"] and not (merged["host"] and merged["port"]):
            raise InvalidPartner("a DICOM partner needs a host and a port with its AE title")
        if merged["transport"] == "dicom" and not merged["ae_title"] and merged["dicomweb_url"]:
            fields["transport"] = merged["transport"] = "dicomweb"
        if merged["transport"] == "dicomweb" and not merged["dicomweb_url"]:
            raise InvalidPartner("sending over DICOMweb needs the partner's DICOMweb URL")
        if current is None:
            partner = self.store.add(name, **fields)
        else:
            self.store.update(current.id, **fields)
            partner = self.get(current.id)
            if current.ae_title and current.ae_title != partner.ae_title:
                self._forget_ae(current)
        if partner.ae_title:
            self._enrol(partner, scope)
        log.info(
            "partner %s %s (AE %s, DICOMweb %s, pacs %s, %s%s)",
            partner.name,
            "updated" if current else "added",
            partner.ae_title or "-",
            partner.dicomweb_url or "-",
            partner.pacs_url or "-",
            partner.transport,
            f", token {partner.token_hint}" if partner.token_hint else "",
        )
        return partner

    def _enrol(self, partner: Partner, scope: str | None) -> None:
        """The partner's AE in the SCP's registry, with every permission (its scope
        limits what it sees) and, on first enrolment, the "shared" scope."""
        existing = self.archive.index.get_node(partner.ae_title)
        if scope is None and existing is None:
            scope = "shared"
        self.archive.save_node(
            RemoteNode(
                ae_title=partner.ae_title,
                host=partner.host,
                port=partner.port,
                can_store=True,
                can_query=True,
                can_retrieve=True,
                is_destination=True,
                description=f"partner {partner.name}"[:255],
                study_scope=scope,
            )
        )

    def _forget_ae(self, partner: Partner) -> None:
        node = self.archive.index.get_node(partner.ae_title)
        if node is not None and node.description.startswith("partner "):
            self.archive.remove_node(partner.ae_title)

    def remove(self, name: str) -> Partner:
        """Remove a partner, its AE enrolment and the token it presented (revoked)."""
        partner = self.named(name)
        if partner.inbound_token_id is not None:
            self.tokens.revoke(partner.inbound_token_id)
        if partner.ae_title:
            self._forget_ae(partner)
        self.store.remove(partner.id)
        log.info("partner %s removed", partner.name)
        return partner

    def issue_token(self, partner: Partner, *, by: str = "") -> str:
        """A new token for the partner to present to us (the old one is revoked). It may
        store (answers come back through STOW-RS) and sees the shared studies, or all of
        them with scope "all". Returns the secret, to hand over once."""
        if partner.inbound_token_id is not None:
            self.tokens.revoke(partner.inbound_token_id)
        secret, digest, prefix = _new_token()
        everything = self.scope(partner) == "all"
        token = self.tokens.create(
            f"partner:{partner.name}",
            token_hash=digest,
            token_prefix=prefix,
            all_studies=everything,
            can_write=True,
            study_uids=[] if everything else self.shares.study_uids(partner.id),
            created_by=by or "consult",
            description=f"partner hospital {partner.name}",
            granted_by=f"consult:{partner.id}",
        )
        self.store.update(partner.id, inbound_token_id=token.id)
        log.info("issued token %s for partner %s", prefix, partner.name)
        return secret

    # ------------------------------------------------------------ sharing

    def share(self, partner: Partner, study_uid: str, reason: str) -> None:
        """Let the partner see a study: through its AE (scope "shared") and its token."""
        self.shares.share(partner.id, study_uid, reason)
        if partner.inbound_token_id is not None:
            self.tokens.add_scope(
                partner.inbound_token_id, study_uid, granted_by=f"consult:{partner.id}"
            )

    def accept_incoming(self, partner: Partner, study_uid: str, reason: str) -> bool:
        """A partner says it is sending us a study (or asking about one it sent): share
        it with the partner, unless the study is archived here already and was never
        shared with it — a partner must not gain sight of our studies by naming them.
        Returns whether the partner may see it now."""
        if self.shares.is_shared(partner.id, study_uid):
            return True
        if self.archive.index.study_pks([study_uid]):
            log.warning(
                "partner %s named study %s, archived here and not shared with it: refused "
                "(`pacs partner share` if it should see it)",
                partner.name,
                study_uid,
            )
            return False
        self.share(partner, study_uid, reason)
        return True

    def unshare(self, partner: Partner, study_uid: str) -> None:
        self.shares.unshare(partner.id, study_uid)
        if partner.inbound_token_id is None:
            return
        # TokenStore removes grants by who made them; keep the others of this partner.
        remaining = set(self.shares.study_uids(partner.id))
        self.tokens.remove_scopes(partner.inbound_token_id, granted_by=f"consult:{partner.id}")
        for uid in remaining:
            self.tokens.add_scope(partner.inbound_token_id, uid, granted_by=f"consult:{partner.id}")

    # ------------------------------------------------------------ checking

    def test(self, partner: Partner) -> list[PartnerCheck]:
        """Can we reach the partner? C-ECHO, a QIDO-RS search, and its pacs peer API."""
        from pacs.consult.httpclient import PartnerUnreachable, join, request

        checks: list[PartnerCheck] = []
        if partner.has_dicom:
            checks.append(self._echo(partner))
        token = None
        try:
            token = self.secret(partner)
        except Exception as exc:
            checks.append(PartnerCheck("token", False, str(getattr(exc, "reason", exc))))
        for what, base, path in (
            ("DICOMweb", partner.dicomweb_url, "studies?limit=1"),
            ("pacs", partner.pacs_url, "consult/api/peer/ping"),
        ):
            if not base:
                continue
            try:
                answer = request(join(base, path), token=token, timeout=15)
                ok = answer.status in (200, 204)
                detail = f"HTTP {answer.status}" + ("" if ok else f": {answer.reason}")
            except PartnerUnreachable as exc:
                ok, detail = False, str(exc)
            checks.append(PartnerCheck(what, ok, detail))
        return checks

    def _echo(self, partner: Partner) -> PartnerCheck:
        from pynetdicom import AE
        from pynetdicom.sop_class import Verification

        ae = AE(ae_title=self.settings.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 15
        ae.add_requested_context(Verification)
        try:
            assoc = ae.associate(partner.host, partner.port, ae_title=partner.ae_title)
            if not assoc.is_established:
                return PartnerCheck("C-ECHO", False, "association refused or no answer")
            status = assoc.send_c_echo()
            assoc.release()
            code = int(status.Status) if status is not None and "Status" in status else None
            return PartnerCheck("C-ECHO", code == 0, f"status {code}")
        finally:
            ae.shutdown()
