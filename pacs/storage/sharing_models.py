"""Share links, their opens, and the key images chosen for a study's result sheet.

A share link lets someone without an account see one study (or chosen series)
until it expires or is revoked. Only a hash of its token is stored: whoever
reads the database cannot open the links. A PIN, when set, is stored as a
password hash made by the caller; wrong PINs are counted here, in the database,
so a lockout holds on every worker process and node.

Studies are named by Study Instance UID (as assignments are), so links and key
images survive a ``pacs reindex``.

Only plain dataclasses leave this module; tokens and PINs are hashed by the
caller (``pacs.viewer.share_links``), never seen here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
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
    Text,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Mapped, mapped_column

from pacs.errors import StorageUnavailable
from pacs.storage.database import aware, unavailable, utcnow, writer
from pacs.storage.models import UI, Base, Study

log = logging.getLogger(__name__)

#: at most this many key images per study (what an A4 result sheet holds)
MAX_KEY_IMAGES = 4
#: opens kept per link for the sharer's list ("when and from where")
MAX_OPENS_KEPT = 200


# ---------------------------------------------------------------- tables


class ShareLinkRow(Base):
    __tablename__ = "share_links"
    __table_args__ = (
        Index("ix_share_links_study_uid", "study_uid"),
        Index("ix_share_links_created_by", "created_by"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: SHA-256 (hex) of the token; the token itself is never stored
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    study_uid: Mapped[str] = mapped_column(String(UI))
    #: JSON list of Series Instance UIDs; "" means the whole study
    series_uids: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    #: kept as text too: the list still says who shared after the user is gone
    created_by_name: Mapped[str] = mapped_column(String(64), default="")
    #: for whom, in the sharer's words ("BS. Hùng, BV Trung ương Huế")
    label: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_by: Mapped[str] = mapped_column(String(64), default="")
    #: password hash of the PIN; "" when the link has none
    pin_hash: Mapped[str] = mapped_column(String(255), default="")
    pin_failures: Mapped[int] = mapped_column(Integer, default=0)
    pin_locked_until: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    can_download: Mapped[bool] = mapped_column(Boolean, default=False)
    deidentify: Mapped[bool] = mapped_column(Boolean, default=False)
    #: random hex, the key of the link's pseudonyms (de-identified links)
    pseudonym_salt: Mapped[str] = mapped_column(String(64), default="")
    open_count: Mapped[int] = mapped_column(Integer, default=0)
    first_opened_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_opened_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_opened_from: Mapped[str] = mapped_column(String(64), default="")


class ShareOpenRow(Base):
    """One successful opening of a link: when, from which address, with which browser."""

    __tablename__ = "share_opens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    link_id: Mapped[int] = mapped_column(
        ForeignKey("share_links.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    address: Mapped[str] = mapped_column(String(64), default="")
    agent: Mapped[str] = mapped_column(String(160), default="")


class KeyImageRow(Base):
    """An image the radiologist chose for the study's printed result sheet."""

    __tablename__ = "key_images"

    study_uid: Mapped[str] = mapped_column(String(UI), primary_key=True)
    sop_uid: Mapped[str] = mapped_column(String(UI), primary_key=True)
    #: 1-based, as in DICOMweb
    frame: Mapped[int] = mapped_column(Integer, primary_key=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    chosen_by: Mapped[str] = mapped_column(String(64), default="")
    chosen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# ---------------------------------------------------------------- values


@dataclass(frozen=True)
class ShareLink:
    id: int
    study_uid: str
    #: None: the whole study
    series_uids: tuple[str, ...] | None
    created_by: int | None
    created_by_name: str
    label: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoked_by: str
    pin_hash: str
    pin_failures: int
    pin_locked_until: datetime | None
    can_download: bool
    deidentify: bool
    pseudonym_salt: str
    open_count: int
    first_opened_at: datetime | None
    last_opened_at: datetime | None
    last_opened_from: str

    @property
    def has_pin(self) -> bool:
        return bool(self.pin_hash)

    def status(self, now: datetime | None = None) -> str:
        """ "revoked", "expired", "locked" (too many wrong PINs, for now) or "active"."""
        now = now or utcnow()
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= now:
            return "expired"
        if self.pin_locked_until is not None and self.pin_locked_until > now:
            return "locked"
        return "active"


@dataclass(frozen=True)
class ShareOpen:
    at: datetime
    address: str
    agent: str


@dataclass(frozen=True)
class KeyImage:
    study_uid: str
    sop_uid: str
    frame: int
    position: int
    chosen_by: str
    chosen_at: datetime


class TooManyKeyImages(Exception):
    """The study already has :data:`MAX_KEY_IMAGES` key images."""


_LINK_COLUMNS = tuple(
    getattr(ShareLinkRow, name)
    for name in (
        "id",
        "study_uid",
        "series_uids",
        "created_by",
        "created_by_name",
        "label",
        "created_at",
        "expires_at",
        "revoked_at",
        "revoked_by",
        "pin_hash",
        "pin_failures",
        "pin_locked_until",
        "can_download",
        "deidentify",
        "pseudonym_salt",
        "open_count",
        "first_opened_at",
        "last_opened_at",
        "last_opened_from",
    )
)


def _link(row: object) -> ShareLink:
    values = list(row)  # type: ignore[call-overload]
    values[2] = tuple(json.loads(values[2])) if values[2] else None
    for i in (6, 7, 8, 12, 17, 18):
        values[i] = aware(values[i])
    return ShareLink(*values)


# ---------------------------------------------------------------- the store


class SharingStore:
    """Share links, opens and key images in the index database.

    Every method is one short transaction; any thread or process may call any
    of them. Database failures raise :class:`pacs.errors.StorageUnavailable`.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = writer(engine)

    def _fail(self, what: str, exc: SQLAlchemyError) -> StorageUnavailable:
        return unavailable("sharing database", what, exc)

    # ------------------------------------------------------------ studies

    def study_pk(self, study_uid: str) -> int | None:
        """The index's primary key of the study (changes with a reindex), or None."""
        try:
            with self.engine.connect() as conn:
                return conn.execute(
                    select(Study.id).where(Study.study_uid == study_uid)
                ).scalar_one_or_none()
        except SQLAlchemyError as exc:
            raise self._fail("study lookup", exc) from exc

    # ------------------------------------------------------------ links

    def create_link(
        self,
        *,
        token_hash: str,
        study_uid: str,
        series_uids: Sequence[str] | None,
        created_by: int | None,
        created_by_name: str,
        label: str,
        expires_at: datetime,
        pin_hash: str,
        can_download: bool,
        deidentify: bool,
        pseudonym_salt: str,
    ) -> ShareLink:
        """Insert a link. Raises StorageUnavailable (also on the impossible token clash)."""
        try:
            with self._writer.begin() as conn:
                pk = conn.execute(
                    insert(ShareLinkRow).returning(ShareLinkRow.id),
                    {
                        "token_hash": token_hash,
                        "study_uid": study_uid,
                        "series_uids": json.dumps(sorted(series_uids)) if series_uids else "",
                        "created_by": created_by,
                        "created_by_name": created_by_name[:64],
                        "label": label[:128],
                        "created_at": utcnow(),
                        "expires_at": expires_at,
                        "revoked_at": None,
                        "revoked_by": "",
                        "pin_hash": pin_hash,
                        "pin_failures": 0,
                        "can_download": can_download,
                        "deidentify": deidentify,
                        "pseudonym_salt": pseudonym_salt,
                        "open_count": 0,
                        "last_opened_from": "",
                    },
                ).scalar_one()
        except SQLAlchemyError as exc:
            raise self._fail("create share link", exc) from exc
        link = self.get(pk)
        assert link is not None
        return link

    def get(self, link_id: int) -> ShareLink | None:
        return self._one(select(*_LINK_COLUMNS).where(ShareLinkRow.id == link_id))

    def by_token_hash(self, token_hash: str) -> ShareLink | None:
        return self._one(select(*_LINK_COLUMNS).where(ShareLinkRow.token_hash == token_hash))

    def _one(self, stmt: object) -> ShareLink | None:
        try:
            with self.engine.connect() as conn:
                row = conn.execute(stmt).first()  # type: ignore[call-overload]
        except SQLAlchemyError as exc:
            raise self._fail("share link lookup", exc) from exc
        return _link(row) if row is not None else None

    def links(
        self,
        *,
        study_uid: str | None = None,
        created_by: int | None = None,
        limit: int = 500,
    ) -> list[ShareLink]:
        """Links, newest first, of one study and/or one sharer."""
        stmt = select(*_LINK_COLUMNS).order_by(ShareLinkRow.created_at.desc(), ShareLinkRow.id)
        if study_uid is not None:
            stmt = stmt.where(ShareLinkRow.study_uid == study_uid)
        if created_by is not None:
            stmt = stmt.where(ShareLinkRow.created_by == created_by)
        try:
            with self.engine.connect() as conn:
                return [_link(r) for r in conn.execute(stmt.limit(limit))]
        except SQLAlchemyError as exc:
            raise self._fail("list share links", exc) from exc

    def revoke(self, link_id: int, by: str) -> bool:
        """Revoke at once (every session of the link ends); False if already revoked/unknown."""
        try:
            with self._writer.begin() as conn:
                result = conn.execute(
                    update(ShareLinkRow)
                    .where(ShareLinkRow.id == link_id, ShareLinkRow.revoked_at.is_(None))
                    .values(revoked_at=utcnow(), revoked_by=by[:64])
                )
                return result.rowcount > 0
        except SQLAlchemyError as exc:
            raise self._fail("revoke share link", exc) from exc

    def record_open(self, link_id: int, address: str, agent: str) -> None:
        """Count one successful opening, and remember when and from where."""
        now = utcnow()
        try:
            with self._writer.begin() as conn:
                conn.execute(
                    update(ShareLinkRow)
                    .where(ShareLinkRow.id == link_id)
                    .values(
                        open_count=ShareLinkRow.open_count + 1,
                        first_opened_at=func.coalesce(ShareLinkRow.first_opened_at, now),
                        last_opened_at=now,
                        last_opened_from=address[:64],
                        pin_failures=0,
                    )
                )
                conn.execute(
                    insert(ShareOpenRow),
                    {"link_id": link_id, "at": now, "address": address[:64], "agent": agent[:160]},
                )
                # Keep the newest opens only: a link opened all day must not grow forever.
                stale = (
                    select(ShareOpenRow.id)
                    .where(ShareOpenRow.link_id == link_id)
                    .order_by(ShareOpenRow.at.desc(), ShareOpenRow.id.desc())
                    .offset(MAX_OPENS_KEPT)
                )
                conn.execute(delete(ShareOpenRow).where(ShareOpenRow.id.in_(stale)))
        except SQLAlchemyError as exc:
            raise self._fail("record share link open", exc) from exc

    def opens(self, link_id: int, limit: int = 20) -> list[ShareOpen]:
        stmt = (
            select(ShareOpenRow.at, ShareOpenRow.address, ShareOpenRow.agent)
            .where(ShareOpenRow.link_id == link_id)
            .order_by(ShareOpenRow.at.desc(), ShareOpenRow.id.desc())
            .limit(limit)
        )
        try:
            with self.engine.connect() as conn:
                return [ShareOpen(aware(at), addr, agent) for at, addr, agent in conn.execute(stmt)]  # type: ignore[arg-type]
        except SQLAlchemyError as exc:
            raise self._fail("read share link opens", exc) from exc

    def pin_failed(
        self, link_id: int, *, max_failures: int, lockout: timedelta
    ) -> tuple[int, datetime | None]:
        """Count a wrong PIN: (failures so far, locked until — set when this one hit the limit).

        Read and update happen in one write transaction (``BEGIN IMMEDIATE`` on
        SQLite, a row lock on PostgreSQL), so simultaneous guesses on several
        workers are all counted.
        """
        now = utcnow()
        try:
            with self._writer.begin() as conn:
                row = conn.execute(
                    select(ShareLinkRow.pin_failures, ShareLinkRow.pin_locked_until)
                    .where(ShareLinkRow.id == link_id)
                    .with_for_update()
                ).first()
                if row is None:
                    return 0, None
                failures = int(row[0]) + 1
                locked_until = None
                values: dict[str, object] = {"pin_failures": failures}
                if failures >= max_failures:
                    locked_until = now + lockout
                    # The count starts again after the lockout.
                    values = {"pin_failures": 0, "pin_locked_until": locked_until}
                conn.execute(update(ShareLinkRow).where(ShareLinkRow.id == link_id).values(values))
                return failures, locked_until
        except SQLAlchemyError as exc:
            raise self._fail("count wrong PIN", exc) from exc

    # ------------------------------------------------------------ key images

    def key_images(self, study_uid: str) -> list[KeyImage]:
        stmt = (
            select(
                KeyImageRow.study_uid,
                KeyImageRow.sop_uid,
                KeyImageRow.frame,
                KeyImageRow.position,
                KeyImageRow.chosen_by,
                KeyImageRow.chosen_at,
            )
            .where(KeyImageRow.study_uid == study_uid)
            .order_by(KeyImageRow.position, KeyImageRow.chosen_at)
        )
        try:
            with self.engine.connect() as conn:
                return [KeyImage(*r[:5], aware(r[5])) for r in conn.execute(stmt)]  # type: ignore[arg-type]
        except SQLAlchemyError as exc:
            raise self._fail("read key images", exc) from exc

    def add_key_image(self, study_uid: str, sop_uid: str, frame: int, *, by: str) -> bool:
        """Choose an image; False when it already was. Raises TooManyKeyImages."""
        try:
            with self._writer.begin() as conn:
                exists = conn.execute(
                    select(KeyImageRow.position).where(
                        KeyImageRow.study_uid == study_uid,
                        KeyImageRow.sop_uid == sop_uid,
                        KeyImageRow.frame == frame,
                    )
                ).first()
                if exists is not None:
                    return False
                count, last = conn.execute(
                    select(func.count(), func.coalesce(func.max(KeyImageRow.position), 0)).where(
                        KeyImageRow.study_uid == study_uid
                    )
                ).one()
                if count >= MAX_KEY_IMAGES:
                    raise TooManyKeyImages(study_uid)
                conn.execute(
                    insert(KeyImageRow),
                    {
                        "study_uid": study_uid,
                        "sop_uid": sop_uid,
                        "frame": frame,
                        "position": int(last) + 1,
                        "chosen_by": by[:64],
                        "chosen_at": utcnow(),
                    },
                )
        except IntegrityError:
            return False  # chosen at the same moment in another tab
        except SQLAlchemyError as exc:
            raise self._fail("add key image", exc) from exc
        return True

    def remove_key_image(self, study_uid: str, sop_uid: str, frame: int) -> bool:
        try:
            with self._writer.begin() as conn:
                result = conn.execute(
                    delete(KeyImageRow).where(
                        KeyImageRow.study_uid == study_uid,
                        KeyImageRow.sop_uid == sop_uid,
                        KeyImageRow.frame == frame,
                    )
                )
                return result.rowcount > 0
        except SQLAlchemyError as exc:
            raise self._fail("remove key image", exc) from exc
