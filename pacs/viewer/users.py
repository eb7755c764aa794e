"""Accounts as the web side and the CLI use them: passwords, sign-in with lockout, first admin.

Passwords are hashed with scrypt (werkzeug); only the hash is stored, and no
password is ever logged. Sign-in failures are counted in the database, per
username and per client address, so a lockout holds on every worker process.
"""

from __future__ import annotations

import logging
import re
import secrets
import string
import sys
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TextIO

from sqlalchemy import Engine
from werkzeug.security import check_password_hash, generate_password_hash

from pacs.storage.accounts import ROLES, AccountStore, User, UsernameTaken, utcnow

log = logging.getLogger(__name__)

HASH_METHOD = "scrypt"
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 256
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{1,63}$")


@dataclass(frozen=True)
class LoginPolicy:
    """How many wrong passwords lock what, and for how long."""

    #: wrong passwords for one username within ``window`` before it is locked
    max_failures: int = 5
    #: wrong passwords from one address (any usernames) within ``window`` before it is blocked
    max_address_failures: int = 20
    window: timedelta = timedelta(minutes=15)


class AccountError(Exception):
    """A request about accounts that cannot be done; ``code`` names the reason for messages."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class LockedOut(AccountError):
    def __init__(self, until: datetime) -> None:
        super().__init__("locked", f"too many failed sign-ins; try again after {until:%H:%M} UTC")
        self.until = until


class BadCredentials(AccountError):
    def __init__(self) -> None:
        super().__init__("bad_credentials", "wrong username or password")


def normalize_username(raw: str) -> str:
    """The canonical form of a username: NFC, trimmed, lower case."""
    return unicodedata.normalize("NFC", raw).strip().lower()


def check_username(raw: str) -> str:
    """The normalised username, or AccountError("bad_username") when it is not acceptable."""
    name = normalize_username(raw)
    if not _USERNAME.match(name):
        raise AccountError(
            "bad_username",
            "a username is 2–64 characters: letters a–z, digits, '.', '_', '-', '@'",
        )
    return name


def check_password(password: str) -> None:
    """Raise AccountError("weak_password") unless the password is acceptable."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(
            "weak_password", f"a password needs at least {MIN_PASSWORD_LENGTH} characters"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError("weak_password", "that password is too long")


def hash_password(password: str) -> str:
    return generate_password_hash(password, method=HASH_METHOD)


def random_password(length: int = 16) -> str:
    """A password for printing once: letters and digits without look-alikes (0/O, 1/l/I)."""
    alphabet = "".join(c for c in string.ascii_letters + string.digits if c not in "0O1lI")
    return "".join(secrets.choice(alphabet) for _ in range(length))


# Checked when the username is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


class Accounts:
    """The account operations; one instance per process, safe to share between threads."""

    def __init__(self, engine: Engine, policy: LoginPolicy | None = None) -> None:
        self.store = AccountStore(engine)
        self.policy = policy or LoginPolicy()

    # ------------------------------------------------------------ users

    def create(self, username: str, password: str, *, role: str, display_name: str = "") -> User:
        """Create a user. Raises AccountError (bad name, weak password, taken, unknown role)."""
        name = check_username(username)
        check_password(password)
        if role not in ROLES:
            raise AccountError("bad_role", f"the role must be one of {', '.join(ROLES)}")
        try:
            user = self.store.create_user(
                name,
                role=role,
                password_hash=hash_password(password),
                display_name=display_name.strip()[:128],
            )
        except UsernameTaken as exc:
            raise AccountError("taken", f"user {name!r} already exists") from exc
        log.info("created user %s (%s)", name, role)
        return user

    def get(self, username: str) -> User:
        """The user, or AccountError("unknown_user")."""
        user = self.store.by_username(normalize_username(username))
        if user is None:
            raise AccountError("unknown_user", f"no user {normalize_username(username)!r}")
        return user

    def set_password(self, username: str, password: str) -> User:
        """New password (ends the user's sessions and clears a lockout)."""
        user = self.get(username)
        check_password(password)
        self.store.set_password_hash(user.id, hash_password(password))
        self.store.clear_failures(user.username)
        log.info("password of user %s changed; their sessions ended", user.username)
        return user

    def change_own_password(self, user: User, current: str, new: str) -> None:
        """A signed-in user changes their password; AccountError when ``current`` is wrong."""
        fresh = self.store.get(user.id)
        if fresh is None or not check_password_hash(fresh.password_hash, current):
            raise AccountError("bad_current_password", "the current password is wrong")
        self.set_password(user.username, new)

    def set_disabled(self, username: str, disabled: bool, *, actor: str = "") -> User:
        """Disable (ends every session) or enable (also clears a lockout) a user.

        Refuses (AccountError "last_admin") to disable the last enabled administrator.
        """
        user = self.get(username)
        if (
            disabled
            and user.role == "admin"
            and not user.disabled
            and self.store.count_admins(enabled_only=True) <= 1
        ):
            raise AccountError("last_admin", "cannot disable the last enabled administrator")
        self.store.set_disabled(user.id, disabled)
        if not disabled:
            self.store.clear_failures(user.username)
        log.info(
            "user %s %s%s",
            user.username,
            "disabled" if disabled else "enabled",
            f" by {actor}" if actor else "",
        )
        return user

    def set_role(self, username: str, role: str, *, actor: str = "") -> User:
        user = self.get(username)
        if role not in ROLES:
            raise AccountError("bad_role", f"the role must be one of {', '.join(ROLES)}")
        if (
            user.role == "admin"
            and role != "admin"
            and not user.disabled
            and self.store.count_admins(enabled_only=True) <= 1
        ):
            raise AccountError("last_admin", "cannot demote the last enabled administrator")
        self.store.set_role(user.id, role)
        log.info("user %s is now %s%s", user.username, role, f" (by {actor})" if actor else "")
        return user

    # ------------------------------------------------------------ sign-in

    def authenticate(self, username: str, password: str, address: str) -> User:
        """The user these credentials name, or LockedOut / BadCredentials.

        Every outcome is recorded (without the password). Unknown names cost the
        same hashing time as known ones and are locked the same way, so neither
        timing nor lockout tells an attacker which usernames exist.
        """
        name = normalize_username(username)[:64]
        now = utcnow()
        since = now - self.policy.window
        failures, latest = self.store.recent_failures(username=name, since=since)
        if failures >= self.policy.max_failures and latest is not None:
            log.warning("sign-in refused for %r from %s: account locked", name, address)
            raise LockedOut(latest + self.policy.window)
        by_address, latest_addr = self.store.recent_failures(address=address, since=since)
        if by_address >= self.policy.max_address_failures and latest_addr is not None:
            log.warning("sign-in refused for %r from %s: address blocked", name, address)
            raise LockedOut(latest_addr + self.policy.window)
        user = self.store.by_username(name)
        ok = check_password_hash(user.password_hash if user else _DUMMY_HASH, password)
        if user is None or not ok or user.disabled:
            self.store.record_attempt(name, address, succeeded=False)
            reason = "unknown user" if user is None else "disabled" if ok else "wrong password"
            log.warning("sign-in failed for %r from %s: %s", name, address, reason)
            if failures + 1 >= self.policy.max_failures:
                log.warning(
                    "account %r locked for %s after repeated failures", name, self.policy.window
                )
            raise BadCredentials()
        self.store.record_attempt(name, address, succeeded=True)
        self.store.touch_login(user.id)
        log.info("user %s signed in from %s", name, address)
        return user


def ensure_first_admin(
    engine: Engine,
    *,
    url: str = "",
    username: str = "admin",
    out: TextIO | None = None,
) -> tuple[str, str] | None:
    """Create an administrator with a random password when there is no administrator at all.

    Returns ``(username, password)`` when one was created (the password is written
    once to ``out``, by default stdout, and never logged), else None. ``engine``
    may also be an :class:`pacs.archive.Archive`. Raises StorageUnavailable.
    """
    engine = getattr(getattr(engine, "index", None), "engine", engine)
    accounts = Accounts(engine)
    if accounts.store.count_admins() > 0:
        return None
    name = username
    password = random_password()
    for n in range(1, 100):
        try:
            accounts.create(name, password, role="admin", display_name="Administrator")
            break
        except AccountError as exc:
            if exc.code != "taken":
                raise
            if accounts.store.count_admins() > 0:
                return None  # another process created one meanwhile
            name = f"{username}{n + 1}"
    else:
        return None
    stream = out or sys.stdout
    where = f" at {url.rstrip('/')}/login" if url else ""
    stream.write(
        "\n"
        "  pacs: no administrator existed, so one was created.\n"
        f"  Sign in{where} as {name!r} with the password: {password}\n"
        "  This password is shown only this once: change it on the Account page\n"
        f"  or with `pacs user passwd {name}`.\n"
        "  pacs: đã tạo tài khoản quản trị đầu tiên.\n"
        f"  Đăng nhập{where} bằng {name!r}, mật khẩu: {password}\n"
        "  Mật khẩu chỉ hiện một lần: hãy đổi ngay ở trang Tài khoản\n"
        f"  hoặc bằng `pacs user passwd {name}`.\n\n"
    )
    stream.flush()
    log.warning("created the first administrator account %r (password printed on stdout)", name)
    return name, password
