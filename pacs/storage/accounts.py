"""Accounts: web users, sign-in attempts, which studies a user opened, and study assignments.

Everything here lives in the index database because several worker processes
(and nodes) serve the same users: a disabled account, a changed password or a
lockout must hold on every one of them at once.

Studies are referred to by Study Instance UID, not by primary key: a
``pacs reindex`` renumbers the study rows, and a user's assignments and
"opened" marks must survive it (and must never point at a different study that
happened to get a deleted study's number).

Only plain dataclasses leave this module; password *hashes* are made and checked
by the caller (``pacs.viewer.users``), this module only stores them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    Boolean,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Mapped, mapped_column

from pacs.errors import StorageUnavailable
from pacs.roles import ROLES, ROLES_SEEING_ALL
from pacs.storage.database import aware, unavailable, utcnow, writer
from pacs.storage.models import UI, Base, Study

log = logging.getLogger(__name__)

#: kinds of study assignment: "assigned" by staff now, "shared" by the sharing feature later
ASSIGNMENT_KINDS = ("assigned", "shared")


# ---------------------------------------------------------------- tables


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: normalised (lower case, NFC); what people type to sign in
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128), default="")
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    #: part of every session cookie; bumping it signs the user out everywhere
    session_version: Mapped[int] = mapped_column(Integer, default=1)
    #: "vi", "en" or "" (follow the browser)
    language: Mapped[str] = mapped_column(String(8), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    password_changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class LoginAttemptRow(Base):
    __tablename__ = "login_attempts"
    __table_args__ = (
        Index("ix_login_attempts_username_at", "username", "at"),
        Index("ix_login_attempts_address_at", "address", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: as typed (normalised), whether or not such a user exists
    username: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(64), default="")
    succeeded: Mapped[bool] = mapped_column(Boolean, default=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class StudyViewRow(Base):
    """A user opened a study (the worklist shows it as read)."""

    __tablename__ = "study_views"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    study_uid: Mapped[str] = mapped_column(String(UI), primary_key=True)
    first_opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StudyAssignmentRow(Base):
    """A study a (referring) user may see: assigned by staff, or (later) shared."""

    __tablename__ = "study_assignments"
    __table_args__ = (
        UniqueConstraint("user_id", "study_uid", "kind", name="uq_study_assignments_user_study"),
        Index("ix_study_assignments_study_uid", "study_uid"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    study_uid: Mapped[str] = mapped_column(String(UI))
    kind: Mapped[str] = mapped_column(String(16), default="assigned")
    assigned_by: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    note: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: None: no end; the sharing feature sets it for time-limited shares
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


# ---------------------------------------------------------------- values


@dataclass(frozen=True)
class User:
    id: int
    username: str
    display_name: str
    role: str
    password_hash: str
    disabled: bool
    session_version: int
    language: str
    created_at: datetime
    password_changed_at: datetime
    last_login_at: datetime | None

    @property
    def sees_all_studies(self) -> bool:
        return self.role in ROLES_SEEING_ALL


@dataclass(frozen=True)
class Assignment:
    user_id: int
    username: str
    display_name: str
    study_uid: str
    kind: str
    assigned_by: str
    created_at: datetime
    expires_at: datetime | None


class UsernameTaken(Exception):
    """A user with that name already exists."""


_USER_COLUMNS = (
    UserRow.id,
    UserRow.username,
    UserRow.display_name,
    UserRow.role,
    UserRow.password_hash,
    UserRow.disabled,
    UserRow.session_version,
    UserRow.language,
    UserRow.created_at,
    UserRow.password_changed_at,
    UserRow.last_login_at,
)


def _user(row: object) -> User:
    values = list(row)  # type: ignore[call-overload]
    for i in (8, 9, 10):
        values[i] = aware(values[i])
    return User(*values)


class AccountStore:
    """Users, sign-in attempts, study views and assignments in the index database.

    Every method is one short transaction; any thread or process may call any of
    them. Database failures raise :class:`pacs.errors.StorageUnavailable`.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = writer(engine)

    def _fail(self, what: str, exc: SQLAlchemyError) -> StorageUnavailable:
        return unavailable("user database", what, exc)

    # ------------------------------------------------------------ users

    def create_user(
        self, username: str, *, role: str, password_hash: str, display_name: str = ""
    ) -> User:
        """Insert a user. Raises UsernameTaken, ValueError (unknown role), StorageUnavailable."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
        now = utcnow()
        try:
            with self._writer.begin() as conn:
                pk = conn.execute(
                    insert(UserRow).returning(UserRow.id),
                    {
                        "username": username,
                        "display_name": display_name,
                        "role": role,
                        "password_hash": password_hash,
                        "disabled": False,
                        "session_version": 1,
                        "language": "",
                        "created_at": now,
                        "updated_at": now,
                        "password_changed_at": now,
                    },
                ).scalar_one()
        except IntegrityError as exc:
            raise UsernameTaken(username) from exc
        except SQLAlchemyError as exc:
            raise self._fail("create user", exc) from exc
        user = self.get(pk)
        assert user is not None
        return user

    def get(self, user_id: int) -> User | None:
        return self._one(select(*_USER_COLUMNS).where(UserRow.id == user_id))

    def by_username(self, username: str) -> User | None:
        return self._one(select(*_USER_COLUMNS).where(UserRow.username == username))

    def _one(self, stmt: object) -> User | None:
        try:
            with self.engine.connect() as conn:
                row = conn.execute(stmt).first()  # type: ignore[call-overload]
        except SQLAlchemyError as exc:
            raise self._fail("user lookup", exc) from exc
        return _user(row) if row is not None else None

    def list_users(self, role: str | None = None) -> list[User]:
        stmt = select(*_USER_COLUMNS).order_by(UserRow.username)
        if role is not None:
            stmt = stmt.where(UserRow.role == role)
        try:
            with self.engine.connect() as conn:
                return [_user(r) for r in conn.execute(stmt)]
        except SQLAlchemyError as exc:
            raise self._fail("list users", exc) from exc

    def count_admins(self, *, enabled_only: bool = False) -> int:
        stmt = select(func.count(UserRow.id)).where(UserRow.role == "admin")
        if enabled_only:
            stmt = stmt.where(UserRow.disabled.is_(False))
        try:
            with self.engine.connect() as conn:
                return int(conn.execute(stmt).scalar_one())
        except SQLAlchemyError as exc:
            raise self._fail("count admins", exc) from exc

    def _update(self, user_id: int, what: str, **values: object) -> bool:
        values["updated_at"] = utcnow()
        try:
            with self._writer.begin() as conn:
                result = conn.execute(update(UserRow).where(UserRow.id == user_id).values(values))
                return result.rowcount > 0
        except SQLAlchemyError as exc:
            raise self._fail(what, exc) from exc

    def set_password_hash(self, user_id: int, password_hash: str) -> bool:
        """Replace the password; every existing session of the user ends."""
        return self._update(
            user_id,
            "set password",
            password_hash=password_hash,
            password_changed_at=utcnow(),
            session_version=UserRow.session_version + 1,
        )

    def set_disabled(self, user_id: int, disabled: bool) -> bool:
        """Disable (ending every session) or enable a user."""
        return self._update(
            user_id,
            "disable user" if disabled else "enable user",
            disabled=disabled,
            session_version=UserRow.session_version + 1,
        )

    def set_role(self, user_id: int, role: str) -> bool:
        """Change the role; sessions end so no page keeps the old permissions."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        return self._update(
            user_id, "set role", role=role, session_version=UserRow.session_version + 1
        )

    def set_display_name(self, user_id: int, display_name: str) -> bool:
        return self._update(user_id, "set name", display_name=display_name)

    def set_language(self, user_id: int, language: str) -> bool:
        return self._update(user_id, "set language", language=language)

    def end_sessions(self, user_id: int) -> bool:
        """Sign the user out on every device."""
        return self._update(user_id, "end sessions", session_version=UserRow.session_version + 1)

    def touch_login(self, user_id: int) -> None:
        self._update(user_id, "record login", last_login_at=utcnow())

    # ------------------------------------------------------------ sign-in attempts

    def record_attempt(self, username: str, address: str, *, succeeded: bool) -> None:
        """Remember one sign-in attempt; old attempts (over a day) are dropped on the way."""
        now = utcnow()
        try:
            with self._writer.begin() as conn:
                conn.execute(
                    insert(LoginAttemptRow),
                    {
                        "username": username[:64],
                        "address": address[:64],
                        "succeeded": succeeded,
                        "at": now,
                    },
                )
                conn.execute(delete(LoginAttemptRow).where(LoginAttemptRow.at < now - _KEEP))
        except SQLAlchemyError as exc:
            raise self._fail("record sign-in attempt", exc) from exc

    def recent_failures(
        self, *, username: str | None = None, address: str | None = None, since: datetime
    ) -> tuple[int, datetime | None]:
        """(failures since ``since`` and after the last success, time of the latest one).

        For a username, a success resets the count; for an address it does not (one
        valid account must not launder an address that is guessing at others).
        """
        cond = [LoginAttemptRow.at >= since]
        if username is not None:
            cond.append(LoginAttemptRow.username == username)
            last_ok = (
                select(func.max(LoginAttemptRow.at))
                .where(
                    LoginAttemptRow.username == username,
                    LoginAttemptRow.succeeded.is_(True),
                    LoginAttemptRow.at >= since,
                )
                .scalar_subquery()
            )
            cond.append(LoginAttemptRow.at > func.coalesce(last_ok, since - timedelta(1)))
        if address is not None:
            cond.append(LoginAttemptRow.address == address)
        stmt = select(func.count(LoginAttemptRow.id), func.max(LoginAttemptRow.at)).where(
            LoginAttemptRow.succeeded.is_(False), *cond
        )
        try:
            with self.engine.connect() as conn:
                count, latest = conn.execute(stmt).one()
        except SQLAlchemyError as exc:
            raise self._fail("read sign-in attempts", exc) from exc
        return int(count), aware(latest)

    def clear_failures(self, username: str) -> None:
        """Forget a user's failed attempts (an administrator unlocked the account)."""
        try:
            with self._writer.begin() as conn:
                conn.execute(
                    delete(LoginAttemptRow).where(
                        LoginAttemptRow.username == username, LoginAttemptRow.succeeded.is_(False)
                    )
                )
        except SQLAlchemyError as exc:
            raise self._fail("clear sign-in attempts", exc) from exc

    # ------------------------------------------------------------ study views

    def mark_opened(self, user_id: int, study_uid: str) -> None:
        now = utcnow()
        try:
            with self._writer.begin() as conn:
                updated = conn.execute(
                    update(StudyViewRow)
                    .where(StudyViewRow.user_id == user_id, StudyViewRow.study_uid == study_uid)
                    .values(last_opened_at=now)
                ).rowcount
                if not updated:
                    conn.execute(
                        insert(StudyViewRow),
                        {
                            "user_id": user_id,
                            "study_uid": study_uid,
                            "first_opened_at": now,
                            "last_opened_at": now,
                        },
                    )
        except IntegrityError:
            # Two tabs opened it at once: the other one recorded it.
            pass
        except SQLAlchemyError as exc:
            raise self._fail("record study view", exc) from exc

    def opened(self, user_id: int, study_uids: Iterable[str]) -> dict[str, datetime]:
        """Of ``study_uids``, those the user has opened, with the last time."""
        uids = list(study_uids)
        if not uids:
            return {}
        stmt = select(StudyViewRow.study_uid, StudyViewRow.last_opened_at).where(
            StudyViewRow.user_id == user_id, StudyViewRow.study_uid.in_(uids)
        )
        try:
            with self.engine.connect() as conn:
                return {uid: aware(at) for uid, at in conn.execute(stmt)}  # type: ignore[misc]
        except SQLAlchemyError as exc:
            raise self._fail("read study views", exc) from exc

    # ------------------------------------------------------------ assignments

    def assign(
        self,
        user_id: int,
        study_uid: str,
        *,
        by_user_id: int | None,
        kind: str = "assigned",
        note: str = "",
        expires_at: datetime | None = None,
    ) -> bool:
        """Let ``user_id`` see the study; False when it already could (same kind)."""
        if kind not in ASSIGNMENT_KINDS:
            raise ValueError(f"unknown assignment kind {kind!r}")
        try:
            with self._writer.begin() as conn:
                conn.execute(
                    insert(StudyAssignmentRow),
                    {
                        "user_id": user_id,
                        "study_uid": study_uid,
                        "kind": kind,
                        "assigned_by": by_user_id,
                        "note": note[:255],
                        "created_at": utcnow(),
                        "expires_at": expires_at,
                    },
                )
        except IntegrityError:
            return False
        except SQLAlchemyError as exc:
            raise self._fail("assign study", exc) from exc
        return True

    def share_with(
        self, user_id: int, study_uid: str, *, by_user_id: int | None, expires_at: datetime
    ) -> bool:
        """Share the study with a user's account until ``expires_at`` (kind "shared").

        Sharing again renews the expiry. True when a new share was made.
        """
        try:
            with self._writer.begin() as conn:
                renewed = conn.execute(
                    update(StudyAssignmentRow)
                    .where(
                        StudyAssignmentRow.user_id == user_id,
                        StudyAssignmentRow.study_uid == study_uid,
                        StudyAssignmentRow.kind == "shared",
                    )
                    .values(expires_at=expires_at, assigned_by=by_user_id, created_at=utcnow())
                ).rowcount
                if renewed:
                    return False
                conn.execute(
                    insert(StudyAssignmentRow),
                    {
                        "user_id": user_id,
                        "study_uid": study_uid,
                        "kind": "shared",
                        "assigned_by": by_user_id,
                        "note": "",
                        "created_at": utcnow(),
                        "expires_at": expires_at,
                    },
                )
        except IntegrityError:
            return False  # shared at the same moment elsewhere
        except SQLAlchemyError as exc:
            raise self._fail("share study", exc) from exc
        return True

    def unassign(self, user_id: int, study_uid: str, *, kind: str = "assigned") -> bool:
        try:
            with self._writer.begin() as conn:
                return (
                    conn.execute(
                        delete(StudyAssignmentRow).where(
                            StudyAssignmentRow.user_id == user_id,
                            StudyAssignmentRow.study_uid == study_uid,
                            StudyAssignmentRow.kind == kind,
                        )
                    ).rowcount
                    > 0
                )
        except SQLAlchemyError as exc:
            raise self._fail("unassign study", exc) from exc

    def visible_study_pks(self, user_id: int) -> frozenset[int]:
        """Primary keys of the archived studies assigned or shared (and not expired) to a user."""
        now = utcnow()
        stmt = (
            select(Study.id)
            .join(StudyAssignmentRow, StudyAssignmentRow.study_uid == Study.study_uid)
            .where(
                StudyAssignmentRow.user_id == user_id,
                (StudyAssignmentRow.expires_at.is_(None)) | (StudyAssignmentRow.expires_at > now),
            )
        )
        try:
            with self.engine.connect() as conn:
                return frozenset(conn.execute(stmt).scalars())
        except SQLAlchemyError as exc:
            raise self._fail("read assignments", exc) from exc

    def assignments(self, study_uids: Sequence[str]) -> list[Assignment]:
        """Who may see each of these studies through an assignment or share."""
        if not study_uids:
            return []
        by = UserRow.__table__.alias("by_user")
        stmt = (
            select(
                StudyAssignmentRow.user_id,
                UserRow.username,
                UserRow.display_name,
                StudyAssignmentRow.study_uid,
                StudyAssignmentRow.kind,
                func.coalesce(by.c.username, ""),
                StudyAssignmentRow.created_at,
                StudyAssignmentRow.expires_at,
            )
            .join(UserRow, UserRow.id == StudyAssignmentRow.user_id)
            .outerjoin(by, by.c.id == StudyAssignmentRow.assigned_by)
            .where(StudyAssignmentRow.study_uid.in_(list(study_uids)))
            .order_by(UserRow.username)
        )
        try:
            with self.engine.connect() as conn:
                return [
                    Assignment(*r[:6], aware(r[6]), aware(r[7]))  # type: ignore[arg-type]
                    for r in conn.execute(stmt)
                ]
        except SQLAlchemyError as exc:
            raise self._fail("read assignments", exc) from exc


#: sign-in attempts older than this are deleted (lockout windows are much shorter)
_KEEP = timedelta(days=1)
