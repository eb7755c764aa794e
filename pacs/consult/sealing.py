"""Sealing the secrets pacs presents to partners (their DICOMweb / pacs tokens).

Unlike the tokens partners present to *us* (kept as hashes only), these must be
read back to be used, so they are encrypted at rest with a key derived from
``settings.secret_key``:

- **Fernet** (``cryptography``): AES-128-CBC with an HMAC-SHA256 over the whole
  token, a version byte and a timestamp. It is authenticated (a tampered or
  foreign value fails to open instead of decrypting to garbage), has one obvious
  way to use it, and ``cryptography`` is the maintained, audited library for it.
  A hand-rolled AES mode would be easy to get subtly wrong.
- The key is **HKDF-SHA256** of the secret key with a purpose label, so the same
  secret key signing sessions never doubles as an encryption key.

Without ``secret_key`` in the settings, the key that signs sessions is used: the
one the web app generates once per data directory (``data_dir/secret_key``);
several nodes sharing a database must set ``secret_key`` to one value anyway.
Changing it makes sealed secrets unreadable: :class:`SecretUnreadable` says to
enter the partner's token again. Secrets are never logged; lists show a hint.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pacs.config import Settings
from pacs.errors import ConfigError
from pacs.keys import installation_key

_PURPOSE = b"pacs consult partner secrets v1"


class SecretUnreadable(ConfigError):
    """A sealed secret does not open with this installation's key."""


class SecretBox:
    """Seal and open partner secrets for one installation."""

    def __init__(self, settings: Settings) -> None:
        material = installation_key(settings).encode("utf-8")
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_PURPOSE).derive(material)
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def seal(self, secret: str) -> str:
        """The encrypted form of ``secret`` (ASCII, safe to store)."""
        return self._fernet.encrypt(secret.encode("utf-8")).decode("ascii")

    def open(self, sealed: str) -> str:
        """The secret, or SecretUnreadable (tampered, or sealed under another key)."""
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode("utf-8")
        except (InvalidToken, ValueError) as exc:
            raise SecretUnreadable(
                "a partner secret cannot be decrypted (was secret_key changed?): "
                "enter the partner's token again with `pacs partner add --update`"
            ) from exc


def hint(secret: str) -> str:
    """What lists show of a secret: enough to recognise it, not to use it."""
    return secret[:8] + "…" if len(secret) > 12 else "…"
