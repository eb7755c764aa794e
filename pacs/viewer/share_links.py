"""Share links as a service: make tokens, find links by token, check PINs, revoke.

A token is 32 random bytes (256 bits) in URL-safe base64; the database keeps
only its SHA-256, so reading the database does not open any link (and 256
random bits need no slow hash: nobody can enumerate them). A PIN is short, so
it is hashed like a password (scrypt) and guarded by a lockout counted in the
database: after ``pin_max_failures`` wrong PINs the link is locked for
``pin_lockout`` on every worker process.

Nothing here logs a token or a PIN; links are named by their id in logs.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine
from werkzeug.security import check_password_hash, generate_password_hash

from pacs.deidentify import Pseudonymizer
from pacs.storage.sharing_models import ShareLink, SharingStore, utcnow

log = logging.getLogger(__name__)

TOKEN_BYTES = 32
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{32,64}$")
_PIN = re.compile(r"^[0-9]{4,12}$")


class ShareError(Exception):
    """A sharing request that cannot be done; ``code`` names the reason for messages."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class SharePolicy:
    default_days: int = 7
    max_days: int = 90
    #: wrong PINs before the link is locked
    pin_max_failures: int = 5
    pin_lockout: timedelta = timedelta(minutes=15)


@dataclass(frozen=True)
class PinCheck:
    ok: bool
    #: set when the link is (now) locked
    locked_until: datetime | None = None
    #: wrong PINs left before the lock (when not ok and not locked)
    attempts_left: int = 0


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def check_pin_format(pin: str) -> str:
    """The PIN, or ShareError("bad_pin"): 4 to 12 digits."""
    pin = pin.strip()
    if not _PIN.match(pin):
        raise ShareError("bad_pin", "a PIN is 4 to 12 digits")
    return pin


def pseudonymizer(link: ShareLink) -> Pseudonymizer:
    """The link's consistent replacements (UIDs, patient ID, dates)."""
    return Pseudonymizer(bytes.fromhex(link.pseudonym_salt))


class Sharing:
    """The share-link operations; one per process, safe to share between threads."""

    def __init__(self, engine: Engine, policy: SharePolicy | None = None) -> None:
        self.store = SharingStore(engine)
        self.policy = policy or SharePolicy()

    def create(
        self,
        study_uid: str,
        *,
        by_user_id: int | None,
        by_name: str,
        days: int | None = None,
        pin: str = "",
        can_download: bool = False,
        deidentify: bool = False,
        series_uids: Sequence[str] | None = None,
        label: str = "",
    ) -> tuple[ShareLink, str]:
        """A new link and its token (returned once, never stored).

        Raises ShareError ("bad_days", "bad_pin") and StorageUnavailable.
        """
        days = self.policy.default_days if days is None else days
        if not 1 <= days <= self.policy.max_days:
            raise ShareError("bad_days", f"a link lasts 1 to {self.policy.max_days} days")
        pin_hash = generate_password_hash(check_pin_format(pin), method="scrypt") if pin else ""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        link = self.store.create_link(
            token_hash=token_hash(token),
            study_uid=study_uid,
            series_uids=list(series_uids) if series_uids else None,
            created_by=by_user_id,
            created_by_name=by_name,
            label=label.strip()[:128],
            expires_at=utcnow() + timedelta(days=days),
            pin_hash=pin_hash,
            can_download=can_download,
            deidentify=deidentify,
            pseudonym_salt=secrets.token_hex(32),
        )
        log.info(
            "share link %d for study %s created by %s (%d days%s%s%s)",
            link.id,
            study_uid,
            by_name,
            days,
            ", PIN" if pin else "",
            ", download" if can_download else "",
            ", de-identified" if deidentify else "",
        )
        return link, token

    def find(self, token: str) -> ShareLink | None:
        """The link a token opens (whatever its status), or None."""
        if not _TOKEN.match(token or ""):
            return None
        return self.store.by_token_hash(token_hash(token))

    def check_pin(self, link: ShareLink, pin: str) -> PinCheck:
        """Whether ``pin`` opens ``link``; wrong ones are counted and lock the link.

        A locked link refuses every PIN, the right one too, until the lock ends.
        """
        now = utcnow()
        if link.pin_locked_until is not None and link.pin_locked_until > now:
            return PinCheck(False, locked_until=link.pin_locked_until)
        if not link.has_pin:
            return PinCheck(True)
        if _PIN.match(pin.strip()) and check_password_hash(link.pin_hash, pin.strip()):
            return PinCheck(True)
        failures, locked_until = self.store.pin_failed(
            link.id, max_failures=self.policy.pin_max_failures, lockout=self.policy.pin_lockout
        )
        if locked_until is not None:
            log.warning(
                "share link %d locked until %s after %d wrong PINs",
                link.id,
                f"{locked_until:%H:%M} UTC",
                failures,
            )
            return PinCheck(False, locked_until=locked_until)
        log.warning("share link %d: wrong PIN (%d so far)", link.id, failures)
        return PinCheck(False, attempts_left=max(0, self.policy.pin_max_failures - failures))

    def revoke(self, link_id: int, by: str) -> bool:
        revoked = self.store.revoke(link_id, by)
        if revoked:
            log.info("share link %d revoked by %s", link_id, by)
        return revoked
