"""Remote consultation tables: partner hospitals, what is shared with them, pushes with
per-instance confirmation, routing rules, and consultation requests.

- A **partner** is another hospital: a DICOM node (AE title, host, port) and/or a
  DICOMweb service (URL plus the token we present, kept *sealed*: encrypted by
  :mod:`pacs.consult.sealing`, never in plain text), optionally running pacs
  itself (``pacs_url``: consultation requests then travel pacs-to-pacs). The token
  the partner presents to us is an ordinary API token (``inbound_token_id``).
- A **share** says a study may be seen by a partner: its AE (when the AE's scope
  is "shared", see :class:`pacs.storage.models.RemoteAE`) and its token.
- A **push** sends a study (or some series) to a partner; its **items** are the
  instances, each confirmed in the database the moment the partner acknowledged
  it, so a push taken over after a crash sends only what was not confirmed.
- A **rule** routes what arrives (calling AE, modality, description) to a partner.
- A **consultation** asks a partner for an opinion on a study; the same ``uid``
  names it on both sides. A partner without pacs gets a share link
  (``share_links``) to the study instead.

Studies are named by Study Instance UID (a ``pacs reindex`` renumbers study rows).
Only plain dataclasses leave this module; database failures raise
:class:`pacs.errors.StorageUnavailable`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
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
from pacs.storage.database import aware, unavailable, utcnow, writer
from pacs.storage.models import UI, Base, Study

log = logging.getLogger(__name__)

TRANSPORTS = ("dicom", "dicomweb")
COMPRESSIONS = ("none", "jpegls", "j2k")
URGENCIES = ("routine", "urgent", "emergency")
#: a consultation only moves forward through these (failed/cancelled end it)
STATUS_ORDER = ("requested", "sent", "viewed", "answered")
END_STATUSES = ("failed", "cancelled")
PUSH_ACTIVE = ("queued", "sending", "retrying")


def _ts(nullable: bool = False) -> Any:
    return mapped_column(DateTime(timezone=True), nullable=nullable)


# ---------------------------------------------------------------- tables


class PartnerRow(Base):
    __tablename__ = "consult_partners"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(255), default="")
    ae_title: Mapped[str] = mapped_column(String(16), default="", index=True)
    host: Mapped[str] = mapped_column(String(255), default="")
    port: Mapped[int] = mapped_column(Integer, default=0)
    dicomweb_url: Mapped[str] = mapped_column(String(255), default="")
    #: the partner's pacs (web root), when it runs pacs: requests go pacs-to-pacs
    pacs_url: Mapped[str] = mapped_column(String(255), default="")
    #: the token we present to the partner, encrypted (pacs.consult.sealing); "" if none
    token_sealed: Mapped[str] = mapped_column(Text, default="")
    #: its first characters, to recognise it in lists
    token_hint: Mapped[str] = mapped_column(String(16), default="")
    transport: Mapped[str] = mapped_column(String(16), default="dicom")
    compression: Mapped[str] = mapped_column(String(16), default="none")
    #: bytes per second on the wire to this partner; 0: no cap
    bandwidth_bps: Mapped[int] = mapped_column(BigInteger, default=0)
    #: the API token the partner presents to us
    inbound_token_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_tokens.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = _ts()
    updated_at: Mapped[datetime] = _ts()


class ShareRow(Base):
    __tablename__ = "consult_shares"
    __table_args__ = (UniqueConstraint("partner_id", "study_uid", name="uq_consult_shares_grant"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    partner_id: Mapped[int] = mapped_column(
        ForeignKey("consult_partners.id", ondelete="CASCADE"), index=True
    )
    study_uid: Mapped[str] = mapped_column(String(UI), index=True)
    #: why: "push:12", "consult:3", "received", "manual:<user>"
    reason: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = _ts()


class PushRow(Base):
    __tablename__ = "consult_pushes"
    __table_args__ = (
        Index("ix_consult_pushes_partner_state", "partner_id", "state"),
        # A routing rule makes one push per study (manual pushes have no rule: NULLs
        # never collide).
        UniqueConstraint("rule_id", "study_uid", name="uq_consult_pushes_rule_study"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    partner_id: Mapped[int] = mapped_column(
        ForeignKey("consult_partners.id", ondelete="CASCADE"), index=True
    )
    study_uid: Mapped[str] = mapped_column(String(UI), index=True)
    #: backslash-joined Series Instance UIDs; "" for the whole study
    series_uids: Mapped[str] = mapped_column(Text, default="")
    #: "manual", "route", "consult", "answer"
    origin: Mapped[str] = mapped_column(String(16), default="manual")
    rule_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    consult_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    transport: Mapped[str] = mapped_column(String(16), default="dicom")
    compression: Mapped[str] = mapped_column(String(16), default="none")
    #: queued, sending, retrying, done, failed, cancelled
    state: Mapped[str] = mapped_column(String(16), default="queued")
    #: who sends it now ("job:<id>"), and since when it last showed life (updated_at)
    owner: Mapped[str] = mapped_column(String(64), default="")
    #: bumped whenever items are added: a push finishes only at the revision it saw
    revision: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    sent: Mapped[int] = mapped_column(Integer, default=0)
    refused: Mapped[int] = mapped_column(Integer, default=0)
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    #: archived bytes of the confirmed instances, and what they took on the wire
    bytes_sent: Mapped[int] = mapped_column(BigInteger, default=0)
    wire_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    #: the partner's own count of the pushed instances after the push (C-FIND / QIDO)
    verified_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = _ts()
    updated_at: Mapped[datetime] = _ts()
    started_at: Mapped[datetime | None] = _ts(nullable=True)
    finished_at: Mapped[datetime | None] = _ts(nullable=True)


class PushItemRow(Base):
    __tablename__ = "consult_push_items"
    __table_args__ = (
        UniqueConstraint("push_id", "sop_uid", name="uq_consult_push_items_sop"),
        Index("ix_consult_push_items_push_state", "push_id", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    push_id: Mapped[int] = mapped_column(ForeignKey("consult_pushes.id", ondelete="CASCADE"))
    sop_uid: Mapped[str] = mapped_column(String(UI))
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    #: pending, sent (confirmed by the partner), refused (the partner said no for good)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    wire_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    #: send as archived even when compression is on (the partner refused it compressed)
    no_compress: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str] = mapped_column(String(255), default="")
    confirmed_at: Mapped[datetime | None] = _ts(nullable=True)


class RuleRow(Base):
    __tablename__ = "consult_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), default="")
    partner_id: Mapped[int] = mapped_column(
        ForeignKey("consult_partners.id", ondelete="CASCADE"), index=True
    )
    #: conditions; "" matches anything
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    modality: Mapped[str] = mapped_column(String(16), default="")
    description_contains: Mapped[str] = mapped_column(String(64), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = _ts()


class ConsultationRow(Base):
    __tablename__ = "consult_requests"
    __table_args__ = (Index("ix_consult_requests_direction_created", "direction", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: the same on both sides
    uid: Mapped[str] = mapped_column(String(64), unique=True)
    #: "outgoing" (we ask) or "incoming" (we are asked)
    direction: Mapped[str] = mapped_column(String(16))
    partner_id: Mapped[int | None] = mapped_column(
        ForeignKey("consult_partners.id", ondelete="SET NULL"), nullable=True, index=True
    )
    study_uid: Mapped[str] = mapped_column(String(UI), index=True)
    patient_name: Mapped[str] = mapped_column(String(324), default="")
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    study_description: Mapped[str] = mapped_column(String(64), default="")
    message: Mapped[str] = mapped_column(Text, default="")
    urgency: Mapped[str] = mapped_column(String(16), default="routine")
    status: Mapped[str] = mapped_column(String(16), default="requested")
    requested_by: Mapped[str] = mapped_column(String(64), default="")
    #: the requester as the other side shows it ("BS. Lan, BV huyện X")
    requested_by_name: Mapped[str] = mapped_column(String(128), default="")
    answer_text: Mapped[str] = mapped_column(Text, default="")
    answer_sr_uid: Mapped[str] = mapped_column(String(UI), default="")
    answered_by: Mapped[str] = mapped_column(String(128), default="")
    key_images: Mapped[str] = mapped_column(Text, default="")
    #: the share link a partner without pacs opens (share_links.id; pacs/viewer/share*.py):
    #: its token, expiry, revocation and opens are the share link's
    share_link_id: Mapped[int | None] = mapped_column(
        ForeignKey("share_links.id", ondelete="SET NULL"), nullable=True, index=True
    )
    push_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = _ts()
    updated_at: Mapped[datetime] = _ts()
    sent_at: Mapped[datetime | None] = _ts(nullable=True)
    viewed_at: Mapped[datetime | None] = _ts(nullable=True)
    answered_at: Mapped[datetime | None] = _ts(nullable=True)


# ---------------------------------------------------------------- values


@dataclass(frozen=True)
class Partner:
    id: int
    name: str
    description: str
    ae_title: str
    host: str
    port: int
    dicomweb_url: str
    pacs_url: str
    token_sealed: str
    token_hint: str
    transport: str
    compression: str
    bandwidth_bps: int
    inbound_token_id: int | None
    created_at: datetime
    updated_at: datetime

    @property
    def has_dicom(self) -> bool:
        return bool(self.ae_title and self.host and self.port)

    @property
    def has_dicomweb(self) -> bool:
        return bool(self.dicomweb_url)


@dataclass(frozen=True)
class Push:
    id: int
    partner_id: int
    study_uid: str
    series_uids: tuple[str, ...]
    origin: str
    rule_id: int | None
    consult_id: int | None
    transport: str
    compression: str
    state: str
    owner: str
    revision: int
    total: int
    sent: int
    refused: int
    bytes_total: int
    bytes_sent: int
    wire_bytes: int
    verified_count: int | None
    attempts: int
    last_error: str
    created_by: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def active(self) -> bool:
        return self.state in PUSH_ACTIVE


@dataclass(frozen=True)
class PushItem:
    id: int
    sop_uid: str
    size_bytes: int
    no_compress: bool


@dataclass(frozen=True)
class Rule:
    id: int
    name: str
    partner_id: int
    calling_ae: str
    modality: str
    description_contains: str
    enabled: bool
    created_by: str
    created_at: datetime


@dataclass(frozen=True)
class Consultation:
    id: int
    uid: str
    direction: str
    partner_id: int | None
    study_uid: str
    patient_name: str
    patient_id: str
    study_description: str
    message: str
    urgency: str
    status: str
    requested_by: str
    requested_by_name: str
    answer_text: str
    answer_sr_uid: str
    answered_by: str
    key_images: tuple[str, ...]
    share_link_id: int | None
    push_id: int | None
    last_error: str
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    viewed_at: datetime | None
    answered_at: datetime | None


class NameTaken(Exception):
    """Another partner already has that name."""


class DuplicatePush(Exception):
    """A routing rule already has a push for that study."""


def _values(row: Any, cls: type) -> Any:
    data = dict(row._mapping)
    for key, value in data.items():
        if isinstance(value, datetime):
            data[key] = aware(value)
    return cls(**data)


_PARTNER_COLUMNS = [c for c in PartnerRow.__table__.c]
_PUSH_COLUMNS = [c for c in PushRow.__table__.c]
_RULE_COLUMNS = [c for c in RuleRow.__table__.c]
_CONSULT_COLUMNS = [c for c in ConsultationRow.__table__.c]


def _push(row: Any) -> Push:
    data = dict(row._mapping)
    data["series_uids"] = tuple(u for u in (data["series_uids"] or "").split("\\") if u)
    for key, value in data.items():
        if isinstance(value, datetime):
            data[key] = aware(value)
    return Push(**data)


def _consultation(row: Any) -> Consultation:
    data = dict(row._mapping)
    try:
        data["key_images"] = tuple(json.loads(data["key_images"] or "[]"))
    except ValueError:
        data["key_images"] = ()
    for key, value in data.items():
        if isinstance(value, datetime):
            data[key] = aware(value)
    return Consultation(**data)


class _Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = writer(engine)

    def _fail(self, what: str, exc: SQLAlchemyError) -> StorageUnavailable:
        return unavailable("consultation database", what, exc)

    def _read(self, what: str, stmt: Any, params: dict[str, Any] | None = None) -> list[Any]:
        try:
            with self.engine.connect() as conn:
                return list(conn.execute(stmt, params or {}))
        except SQLAlchemyError as exc:
            raise self._fail(what, exc) from exc


# ---------------------------------------------------------------- partners


class PartnerStore(_Store):
    """Partner hospitals. The sealed token is opaque here (never decrypted in storage)."""

    def add(self, name: str, **fields: Any) -> Partner:
        """Insert a partner. Raises NameTaken, StorageUnavailable."""
        now = utcnow()
        try:
            with self._writer.begin() as conn:
                pk = conn.execute(
                    insert(PartnerRow).returning(PartnerRow.id),
                    {"name": name, "created_at": now, "updated_at": now, **fields},
                ).scalar_one()
        except IntegrityError as exc:
            raise NameTaken(name) from exc
        except SQLAlchemyError as exc:
            raise self._fail("add partner", exc) from exc
        partner = self.get(pk)
        assert partner is not None
        return partner

    def update(self, partner_id: int, **fields: Any) -> bool:
        try:
            with self._writer.begin() as conn:
                return (
                    conn.execute(
                        update(PartnerRow)
                        .where(PartnerRow.id == partner_id)
                        .values(updated_at=utcnow(), **fields)
                    ).rowcount
                    > 0
                )
        except SQLAlchemyError as exc:
            raise self._fail("update partner", exc) from exc

    def get(self, partner_id: int) -> Partner | None:
        rows = self._read(
            "partner lookup", select(*_PARTNER_COLUMNS).where(PartnerRow.id == partner_id)
        )
        return _values(rows[0], Partner) if rows else None

    def by_name(self, name: str) -> Partner | None:
        rows = self._read(
            "partner lookup", select(*_PARTNER_COLUMNS).where(PartnerRow.name == name)
        )
        return _values(rows[0], Partner) if rows else None

    def by_ae(self, ae_title: str) -> list[Partner]:
        rows = self._read(
            "partner lookup", select(*_PARTNER_COLUMNS).where(PartnerRow.ae_title == ae_title)
        )
        return [_values(r, Partner) for r in rows]

    def by_inbound_token(self, token_id: int) -> Partner | None:
        rows = self._read(
            "partner lookup",
            select(*_PARTNER_COLUMNS).where(PartnerRow.inbound_token_id == token_id),
        )
        return _values(rows[0], Partner) if rows else None

    def all(self) -> list[Partner]:
        rows = self._read("partner list", select(*_PARTNER_COLUMNS).order_by(PartnerRow.name))
        return [_values(r, Partner) for r in rows]

    def remove(self, partner_id: int) -> bool:
        try:
            with self._writer.begin() as conn:
                # Pushes and requests keep their history (partner gone: SET NULL / CASCADE).
                return (
                    conn.execute(delete(PartnerRow).where(PartnerRow.id == partner_id)).rowcount > 0
                )
        except SQLAlchemyError as exc:
            raise self._fail("remove partner", exc) from exc


# ---------------------------------------------------------------- shares


class ShareStore(_Store):
    """Which studies each partner may see."""

    def share(self, partner_id: int, study_uid: str, reason: str) -> bool:
        """Share a study with a partner; False when it already was."""
        try:
            with self._writer.begin() as conn:
                conn.execute(
                    insert(ShareRow),
                    {
                        "partner_id": partner_id,
                        "study_uid": study_uid,
                        "reason": reason[:64],
                        "created_at": utcnow(),
                    },
                )
        except IntegrityError:
            return False
        except SQLAlchemyError as exc:
            raise self._fail("share study", exc) from exc
        return True

    def unshare(self, partner_id: int, study_uid: str) -> bool:
        try:
            with self._writer.begin() as conn:
                return (
                    conn.execute(
                        delete(ShareRow).where(
                            ShareRow.partner_id == partner_id, ShareRow.study_uid == study_uid
                        )
                    ).rowcount
                    > 0
                )
        except SQLAlchemyError as exc:
            raise self._fail("unshare study", exc) from exc

    def is_shared(self, partner_id: int, study_uid: str) -> bool:
        rows = self._read(
            "share lookup",
            select(ShareRow.id).where(
                ShareRow.partner_id == partner_id, ShareRow.study_uid == study_uid
            ),
        )
        return bool(rows)

    def study_uids(self, partner_id: int) -> list[str]:
        rows = self._read(
            "share lookup",
            select(ShareRow.study_uid)
            .where(ShareRow.partner_id == partner_id)
            .order_by(ShareRow.id),
        )
        return [r[0] for r in rows]

    def study_pks_for_ae(self, ae_title: str) -> list[int]:
        """Index keys of the archived studies shared with the partner(s) of an AE title."""
        stmt = (
            select(Study.id)
            .join(ShareRow, ShareRow.study_uid == Study.study_uid)
            .join(PartnerRow, PartnerRow.id == ShareRow.partner_id)
            .where(PartnerRow.ae_title == ae_title)
            .distinct()
        )
        return sorted(r[0] for r in self._read("share lookup", stmt))


# ---------------------------------------------------------------- pushes


class PushStore(_Store):
    """Pushes and their per-instance confirmations."""

    def create(
        self,
        partner_id: int,
        study_uid: str,
        *,
        series_uids: Sequence[str] = (),
        origin: str = "manual",
        rule_id: int | None = None,
        consult_id: int | None = None,
        transport: str = "dicom",
        compression: str = "none",
        created_by: str = "",
    ) -> Push:
        now = utcnow()
        try:
            with self._writer.begin() as conn:
                pk = conn.execute(
                    insert(PushRow).returning(PushRow.id),
                    {
                        "partner_id": partner_id,
                        "study_uid": study_uid,
                        "series_uids": "\\".join(series_uids),
                        "origin": origin,
                        "rule_id": rule_id,
                        "consult_id": consult_id,
                        "transport": transport,
                        "compression": compression,
                        "state": "queued",
                        "owner": "",
                        "revision": 0,
                        "total": 0,
                        "sent": 0,
                        "refused": 0,
                        "bytes_total": 0,
                        "bytes_sent": 0,
                        "wire_bytes": 0,
                        "attempts": 0,
                        "last_error": "",
                        "created_by": created_by[:64],
                        "created_at": now,
                        "updated_at": now,
                    },
                ).scalar_one()
        except IntegrityError as exc:
            raise DuplicatePush(f"rule {rule_id} already pushes study {study_uid}") from exc
        except SQLAlchemyError as exc:
            raise self._fail("create push", exc) from exc
        push = self.get(pk)
        assert push is not None
        return push

    def get(self, push_id: int) -> Push | None:
        rows = self._read("push lookup", select(*_PUSH_COLUMNS).where(PushRow.id == push_id))
        return _push(rows[0]) if rows else None

    def recent(
        self, *, limit: int = 50, partner_id: int | None = None, study_uid: str | None = None
    ) -> list[Push]:
        stmt = select(*_PUSH_COLUMNS).order_by(PushRow.id.desc()).limit(limit)
        if partner_id is not None:
            stmt = stmt.where(PushRow.partner_id == partner_id)
        if study_uid is not None:
            stmt = stmt.where(PushRow.study_uid == study_uid)
        return [_push(r) for r in self._read("push list", stmt)]

    def for_rule(self, rule_id: int, study_uid: str) -> Push | None:
        """The push a routing rule made for a study (one per rule and study)."""
        rows = self._read(
            "push lookup",
            select(*_PUSH_COLUMNS)
            .where(PushRow.rule_id == rule_id, PushRow.study_uid == study_uid)
            .order_by(PushRow.id)
            .limit(1),
        )
        return _push(rows[0]) if rows else None

    def set_series(self, push_id: int, series_uids: Sequence[str]) -> None:
        """Widen what a push covers (a routing rule's push when more series match)."""
        try:
            with self._writer.begin() as conn:
                conn.execute(
                    update(PushRow)
                    .where(PushRow.id == push_id)
                    .values(series_uids="\\".join(series_uids), updated_at=utcnow())
                )
        except SQLAlchemyError as exc:
            raise self._fail("update push", exc) from exc

    def add_items(self, push_id: int, refs: Iterable[tuple[str, int]]) -> int:
        """Add instances (SOP Instance UID, size) not yet part of the push; returns how
        many were new. New items bump the revision and, on a finished push, put it back
        in the queue (state ``queued``): the caller then enqueues a job for it."""
        wanted = dict(refs)
        if not wanted:
            return 0
        try:
            with self._writer.begin() as conn:
                known = set(
                    conn.execute(
                        select(PushItemRow.sop_uid).where(PushItemRow.push_id == push_id)
                    ).scalars()
                )
                new = [(uid, size) for uid, size in wanted.items() if uid not in known]
                if not new:
                    return 0
                conn.execute(
                    insert(PushItemRow),
                    [
                        {
                            "push_id": push_id,
                            "sop_uid": uid,
                            "size_bytes": size,
                            "state": "pending",
                            "wire_bytes": 0,
                            "no_compress": False,
                            "error": "",
                        }
                        for uid, size in new
                    ],
                )
                now = utcnow()
                conn.execute(
                    update(PushRow)
                    .where(PushRow.id == push_id)
                    .values(
                        revision=PushRow.revision + 1,
                        total=PushRow.total + len(new),
                        bytes_total=PushRow.bytes_total + sum(s for _, s in new),
                        updated_at=now,
                    )
                )
                conn.execute(
                    update(PushRow)
                    .where(PushRow.id == push_id, PushRow.state.in_(("done", "failed")))
                    .values(state="queued", finished_at=None, last_error="")
                )
                return len(new)
        except SQLAlchemyError as exc:
            raise self._fail("add push items", exc) from exc

    def begin(self, push_id: int, owner: str, *, stale_after_s: float) -> str:
        """Take the push for ``owner`` (a job). Returns ``"ok"``, ``"busy"`` (another live
        owner sends it, or another push to the same partner is being sent: one at a time
        per partner, so a bandwidth cap holds), ``"finished"`` or ``"gone"``."""
        now = utcnow()
        stale = now - timedelta(seconds=stale_after_s)
        try:
            with self._writer.begin() as conn:
                row = conn.execute(
                    select(PushRow.state, PushRow.owner, PushRow.updated_at, PushRow.partner_id)
                    .where(PushRow.id == push_id)
                    .with_for_update()
                ).first()
                if row is None:
                    return "gone"
                if row.state in ("done", "cancelled"):
                    return "finished"
                alive = aware(row.updated_at) > stale  # type: ignore[operator]
                if row.state == "sending" and row.owner != owner and alive:
                    return "busy"
                other = conn.execute(
                    select(PushRow.id)
                    .where(
                        PushRow.partner_id == row.partner_id,
                        PushRow.id != push_id,
                        PushRow.state == "sending",
                        PushRow.updated_at > stale,
                    )
                    .limit(1)
                ).first()
                if other is not None:
                    return "busy"
                conn.execute(
                    update(PushRow)
                    .where(PushRow.id == push_id)
                    .values(
                        state="sending",
                        owner=owner[:64],
                        attempts=PushRow.attempts + 1,
                        started_at=func.coalesce(PushRow.started_at, now),
                        finished_at=None,
                        updated_at=now,
                    )
                )
                return "ok"
        except SQLAlchemyError as exc:
            raise self._fail("begin push", exc) from exc

    def heartbeat(self, push_id: int, owner: str) -> bool:
        """Show ``owner`` is still sending; False when it should stop (the push was
        cancelled, or someone else took it over)."""
        try:
            with self._writer.begin() as conn:
                return (
                    conn.execute(
                        update(PushRow)
                        .where(
                            PushRow.id == push_id,
                            PushRow.owner == owner,
                            PushRow.state.in_(("sending", "retrying")),
                        )
                        .values(updated_at=utcnow())
                    ).rowcount
                    > 0
                )
        except SQLAlchemyError as exc:
            raise self._fail("push heartbeat", exc) from exc

    def pending(self, push_id: int) -> list[PushItem]:
        rows = self._read(
            "push items",
            select(
                PushItemRow.id, PushItemRow.sop_uid, PushItemRow.size_bytes, PushItemRow.no_compress
            )
            .where(PushItemRow.push_id == push_id, PushItemRow.state == "pending")
            .order_by(PushItemRow.id),
        )
        return [PushItem(r.id, r.sop_uid, r.size_bytes, bool(r.no_compress)) for r in rows]

    def confirmed_uids(self, push_id: int) -> list[str]:
        rows = self._read(
            "push items",
            select(PushItemRow.sop_uid).where(
                PushItemRow.push_id == push_id, PushItemRow.state == "sent"
            ),
        )
        return [r[0] for r in rows]

    def confirm(self, push_id: int, item_id: int, *, wire_bytes: int) -> None:
        """The partner acknowledged an instance: record it at once (this is what makes a
        resumed push skip it)."""
        now = utcnow()
        try:
            with self._writer.begin() as conn:
                size = conn.execute(
                    update(PushItemRow)
                    .where(PushItemRow.id == item_id, PushItemRow.state == "pending")
                    .values(state="sent", wire_bytes=wire_bytes, confirmed_at=now, error="")
                    .returning(PushItemRow.size_bytes)
                ).scalar()
                if size is None:
                    return
                conn.execute(
                    update(PushRow)
                    .where(PushRow.id == push_id)
                    .values(
                        sent=PushRow.sent + 1,
                        bytes_sent=PushRow.bytes_sent + size,
                        wire_bytes=PushRow.wire_bytes + wire_bytes,
                        updated_at=now,
                    )
                )
        except SQLAlchemyError as exc:
            raise self._fail("confirm push item", exc) from exc

    def refuse(self, push_id: int, item_id: int, error: str) -> None:
        """The partner refused an instance for good (it is not sent again)."""
        now = utcnow()
        try:
            with self._writer.begin() as conn:
                changed = conn.execute(
                    update(PushItemRow)
                    .where(PushItemRow.id == item_id, PushItemRow.state == "pending")
                    .values(state="refused", error=error[:255], confirmed_at=now)
                ).rowcount
                if changed:
                    conn.execute(
                        update(PushRow)
                        .where(PushRow.id == push_id)
                        .values(refused=PushRow.refused + 1, updated_at=now)
                    )
        except SQLAlchemyError as exc:
            raise self._fail("refuse push item", exc) from exc

    def no_compress(self, item_id: int) -> None:
        try:
            with self._writer.begin() as conn:
                conn.execute(
                    update(PushItemRow).where(PushItemRow.id == item_id).values(no_compress=True)
                )
        except SQLAlchemyError as exc:
            raise self._fail("update push item", exc) from exc

    def requeue_all(self, push_id: int, reason: str) -> int:
        """Verification found fewer instances at the partner than confirmed: send all again."""
        try:
            with self._writer.begin() as conn:
                count = conn.execute(
                    update(PushItemRow)
                    .where(PushItemRow.push_id == push_id, PushItemRow.state == "sent")
                    .values(state="pending", confirmed_at=None, wire_bytes=0)
                ).rowcount
                conn.execute(
                    update(PushRow)
                    .where(PushRow.id == push_id)
                    .values(
                        sent=0,
                        bytes_sent=0,
                        wire_bytes=0,
                        revision=PushRow.revision + 1,
                        last_error=reason[:4000],
                        updated_at=utcnow(),
                    )
                )
                return count
        except SQLAlchemyError as exc:
            raise self._fail("requeue push items", exc) from exc

    def note(self, push_id: int, owner: str, *, state: str, error: str = "") -> None:
        """Record a state (``retrying``, ``failed``) and why, if ``owner`` still has it."""
        values: dict[str, Any] = {
            "state": state,
            "last_error": error[:4000],
            "updated_at": utcnow(),
        }
        if state in ("failed", "cancelled"):
            values["finished_at"] = utcnow()
        try:
            with self._writer.begin() as conn:
                conn.execute(
                    update(PushRow)
                    .where(
                        PushRow.id == push_id,
                        PushRow.owner == owner,
                        PushRow.state != "cancelled",
                    )
                    .values(**values)
                )
        except SQLAlchemyError as exc:
            raise self._fail("update push", exc) from exc

    def finish(
        self, push_id: int, owner: str, revision: int, *, state: str, verified: int | None
    ) -> bool:
        """End the push, unless items were added since ``revision`` (then False: go on)."""
        now = utcnow()
        try:
            with self._writer.begin() as conn:
                return (
                    conn.execute(
                        update(PushRow)
                        .where(
                            PushRow.id == push_id,
                            PushRow.owner == owner,
                            PushRow.revision == revision,
                            PushRow.state == "sending",
                        )
                        .values(
                            state=state,
                            verified_count=verified,
                            finished_at=now,
                            updated_at=now,
                            last_error="" if state == "done" else PushRow.last_error,
                        )
                    ).rowcount
                    > 0
                )
        except SQLAlchemyError as exc:
            raise self._fail("finish push", exc) from exc

    def cancel(self, push_id: int) -> bool:
        now = utcnow()
        try:
            with self._writer.begin() as conn:
                return (
                    conn.execute(
                        update(PushRow)
                        .where(PushRow.id == push_id, PushRow.state.in_(PUSH_ACTIVE))
                        .values(state="cancelled", finished_at=now, updated_at=now)
                    ).rowcount
                    > 0
                )
        except SQLAlchemyError as exc:
            raise self._fail("cancel push", exc) from exc

    def reopen(self, push_id: int) -> bool:
        """Queue a failed push again (``pacs push retry``)."""
        try:
            with self._writer.begin() as conn:
                conn.execute(
                    update(PushItemRow)
                    .where(PushItemRow.push_id == push_id, PushItemRow.state == "refused")
                    .values(state="pending", error="", confirmed_at=None)
                )
                conn.execute(
                    update(PushRow)
                    .where(PushRow.id == push_id)
                    .values(refused=0, revision=PushRow.revision + 1)
                )
                return (
                    conn.execute(
                        update(PushRow)
                        .where(PushRow.id == push_id, PushRow.state.in_(("failed", "cancelled")))
                        .values(state="queued", finished_at=None, updated_at=utcnow())
                    ).rowcount
                    > 0
                )
        except SQLAlchemyError as exc:
            raise self._fail("reopen push", exc) from exc


# ---------------------------------------------------------------- rules


class RuleStore(_Store):
    def add(
        self,
        partner_id: int,
        *,
        name: str = "",
        calling_ae: str = "",
        modality: str = "",
        description_contains: str = "",
        created_by: str = "",
    ) -> Rule:
        try:
            with self._writer.begin() as conn:
                pk = conn.execute(
                    insert(RuleRow).returning(RuleRow.id),
                    {
                        "name": name[:64],
                        "partner_id": partner_id,
                        "calling_ae": calling_ae[:16],
                        "modality": modality[:16],
                        "description_contains": description_contains[:64],
                        "enabled": True,
                        "created_by": created_by[:64],
                        "created_at": utcnow(),
                    },
                ).scalar_one()
        except SQLAlchemyError as exc:
            raise self._fail("add rule", exc) from exc
        rule = self.get(pk)
        assert rule is not None
        return rule

    def get(self, rule_id: int) -> Rule | None:
        rows = self._read("rule lookup", select(*_RULE_COLUMNS).where(RuleRow.id == rule_id))
        return _values(rows[0], Rule) if rows else None

    def all(self, *, enabled_only: bool = False) -> list[Rule]:
        stmt = select(*_RULE_COLUMNS).order_by(RuleRow.id)
        if enabled_only:
            stmt = stmt.where(RuleRow.enabled.is_(True))
        return [_values(r, Rule) for r in self._read("rule list", stmt)]

    def set_enabled(self, rule_id: int, enabled: bool) -> bool:
        try:
            with self._writer.begin() as conn:
                return (
                    conn.execute(
                        update(RuleRow).where(RuleRow.id == rule_id).values(enabled=enabled)
                    ).rowcount
                    > 0
                )
        except SQLAlchemyError as exc:
            raise self._fail("update rule", exc) from exc

    def remove(self, rule_id: int) -> bool:
        try:
            with self._writer.begin() as conn:
                return conn.execute(delete(RuleRow).where(RuleRow.id == rule_id)).rowcount > 0
        except SQLAlchemyError as exc:
            raise self._fail("remove rule", exc) from exc


# ---------------------------------------------------------------- consultations


class ConsultationStore(_Store):
    """Consultation requests, outgoing and incoming."""

    def create(self, **fields: Any) -> Consultation:
        """Insert a request (idempotent on ``uid``: an existing one is returned as is)."""
        now = utcnow()
        values = {
            "status": "requested",
            "key_images": "",
            "answer_text": "",
            "answer_sr_uid": "",
            "answered_by": "",
            "last_error": "",
            "created_at": now,
            "updated_at": now,
            **fields,
        }
        try:
            with self._writer.begin() as conn:
                pk = conn.execute(
                    insert(ConsultationRow).returning(ConsultationRow.id), values
                ).scalar_one()
        except IntegrityError:
            existing = self.by_uid(str(fields.get("uid", "")))
            if existing is None:
                raise
            return existing
        except SQLAlchemyError as exc:
            raise self._fail("create consultation", exc) from exc
        created = self.get(pk)
        assert created is not None
        return created

    def get(self, consult_id: int) -> Consultation | None:
        return self._one(ConsultationRow.id == consult_id)

    def by_uid(self, uid: str) -> Consultation | None:
        return self._one(ConsultationRow.uid == uid)

    def by_share_link(self, link_id: int) -> Consultation | None:
        return self._one(ConsultationRow.share_link_id == link_id)

    def _one(self, condition: Any) -> Consultation | None:
        rows = self._read("consultation lookup", select(*_CONSULT_COLUMNS).where(condition))
        return _consultation(rows[0]) if rows else None

    def recent(
        self,
        *,
        direction: str | None = None,
        study_uid: str | None = None,
        limit: int = 100,
    ) -> list[Consultation]:
        stmt = select(*_CONSULT_COLUMNS).order_by(ConsultationRow.id.desc()).limit(limit)
        if direction is not None:
            stmt = stmt.where(ConsultationRow.direction == direction)
        if study_uid is not None:
            stmt = stmt.where(ConsultationRow.study_uid == study_uid)
        return [_consultation(r) for r in self._read("consultation list", stmt)]

    def statuses(self, study_uids: Sequence[str]) -> dict[str, list[tuple[str, str, str]]]:
        """Per study: (direction, status, urgency) of its consultations, newest first."""
        if not study_uids:
            return {}
        stmt = (
            select(
                ConsultationRow.study_uid,
                ConsultationRow.direction,
                ConsultationRow.status,
                ConsultationRow.urgency,
            )
            .where(ConsultationRow.study_uid.in_(list(study_uids)))
            .order_by(ConsultationRow.id.desc())
        )
        out: dict[str, list[tuple[str, str, str]]] = {}
        for uid, direction, status, urgency in self._read("consultation statuses", stmt):
            out.setdefault(uid, []).append((direction, status, urgency))
        return out

    def advance(self, consult_id: int, status: str, **fields: Any) -> bool:
        """Move a request forward to ``status`` (never back; ``failed``/``cancelled`` end
        it). Returns False when it already was there or beyond. ``fields`` are stored too."""
        now = utcnow()
        stamp = {"sent": "sent_at", "viewed": "viewed_at", "answered": "answered_at"}.get(status)
        if status in STATUS_ORDER:
            earlier = list(STATUS_ORDER[: STATUS_ORDER.index(status)])
        else:
            earlier = list(STATUS_ORDER)
        values = {"status": status, "updated_at": now, **fields}
        if stamp:
            values[stamp] = now
        try:
            with self._writer.begin() as conn:
                return (
                    conn.execute(
                        update(ConsultationRow)
                        .where(
                            ConsultationRow.id == consult_id, ConsultationRow.status.in_(earlier)
                        )
                        .values(**values)
                    ).rowcount
                    > 0
                )
        except SQLAlchemyError as exc:
            raise self._fail("update consultation", exc) from exc

    def update(self, consult_id: int, **fields: Any) -> None:
        try:
            with self._writer.begin() as conn:
                conn.execute(
                    update(ConsultationRow)
                    .where(ConsultationRow.id == consult_id)
                    .values(updated_at=utcnow(), **fields)
                )
        except SQLAlchemyError as exc:
            raise self._fail("update consultation", exc) from exc

    def counts(self) -> dict[tuple[str, str], int]:
        stmt = select(ConsultationRow.direction, ConsultationRow.status, func.count()).group_by(
            ConsultationRow.direction, ConsultationRow.status
        )
        return {(d, s): int(n) for d, s, n in self._read("consultation counts", stmt)}
