"""DICOMweb tables: partner API tokens and their scopes, allowed CORS origins, and the
per-series metadata that WADO-RS serves without opening every file.

Tokens are stored as SHA-256 hashes only; the secret is shown once at creation.
A token sees every study (``all_studies``) or what its scope rows grant. Scopes
name studies by Study Instance UID (a ``pacs reindex`` renumbers study rows, and a
grant may name a study that has not arrived yet), and carry a ``kind`` and a
``granted_by`` so that later features (remote consultation) can add and remove
their own grants, with their own expiry, without touching the token.

Series metadata rows are derived data: the DICOM JSON of every instance of a
series (gzip'd) plus a frame index, tagged with the ``series.updated_at`` and
``series.num_instances`` they were built from. A row is stale when those differ
from the series row (the index bumps both on every store and delete).

Only plain dataclasses leave this module; database failures raise
:class:`pacs.errors.StorageUnavailable`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Mapped, mapped_column

from pacs.errors import StorageUnavailable
from pacs.storage.database import aware, unavailable, utcnow, writer
from pacs.storage.models import UI, Base, Series, Study

log = logging.getLogger(__name__)

#: scope kinds understood today; rows of other kinds grant nothing (deny by default)
SCOPE_STUDY = "study"


# ---------------------------------------------------------------- tables


class ApiTokenRow(Base):
    """A bearer token for a partner system (only the hash of its secret is kept)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    #: SHA-256 (hex) of the whole token string
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: the first characters of the secret, to recognise a token in lists and logs
    token_prefix: Mapped[str] = mapped_column(String(16), default="")
    all_studies: Mapped[bool] = mapped_column(Boolean, default=False)
    can_write: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str] = mapped_column(String(255), default="")
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ApiTokenScopeRow(Base):
    """One grant of a token: today a study (by UID); other kinds may follow."""

    __tablename__ = "api_token_scopes"
    __table_args__ = (
        UniqueConstraint("token_id", "kind", "value", name="uq_api_token_scopes_grant"),
        Index("ix_api_token_scopes_kind_value", "kind", "value"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_id: Mapped[int] = mapped_column(
        ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True
    )
    #: "study" (value = Study Instance UID); later features add their own kinds
    kind: Mapped[str] = mapped_column(String(16), default=SCOPE_STUDY)
    value: Mapped[str] = mapped_column(String(UI))
    #: who or what added it: "cli", "admin:<user>", later "consultation:<id>"
    granted_by: Mapped[str] = mapped_column(String(64), default="")
    granted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class CorsOriginRow(Base):
    """A browser origin allowed to call DICOMweb (e.g. an OHIF deployment)."""

    __tablename__ = "dicomweb_cors_origins"

    origin: Mapped[str] = mapped_column(String(255), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SeriesMetadataRow(Base):
    """Precomputed WADO-RS metadata of one series (derived; rebuilt when stale)."""

    __tablename__ = "series_metadata"

    series_pk: Mapped[int] = mapped_column(
        ForeignKey("series.id", ondelete="CASCADE"), primary_key=True
    )
    #: series.updated_at / num_instances this row was built from (None: never built)
    source_updated_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    #: gzip'd DICOM JSON array, BulkDataURIs relative to a placeholder base
    data: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    #: gzip'd JSON: per SOP Instance UID its sha256 and frame layout
    frames: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    built_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    build_ms: Mapped[int] = mapped_column(Integer, default=0)
    #: why the last build failed ("" when it did not)
    error: Mapped[str] = mapped_column(String(255), default="")
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


# ---------------------------------------------------------------- values


@dataclass(frozen=True)
class TokenScope:
    kind: str
    value: str
    granted_by: str
    granted_at: datetime
    expires_at: datetime | None


@dataclass(frozen=True)
class ApiToken:
    id: int
    name: str
    token_prefix: str
    all_studies: bool
    can_write: bool
    description: str
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    scopes: tuple[TokenScope, ...] = ()

    def is_active(self, now: datetime | None = None) -> bool:
        now = now or utcnow()
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > now

    def study_uids(self, now: datetime | None = None) -> list[str]:
        """Study Instance UIDs granted by unexpired study scopes."""
        now = now or utcnow()
        return [
            s.value
            for s in self.scopes
            if s.kind == SCOPE_STUDY and (s.expires_at is None or s.expires_at > now)
        ]


@dataclass(frozen=True)
class SeriesState:
    """What the index says about a series now (to judge a metadata row's freshness)."""

    pk: int
    series_uid: str
    study_pk: int
    study_uid: str
    updated_at: datetime
    num_instances: int


@dataclass(frozen=True)
class SeriesMetadata:
    series_pk: int
    source_updated_at: datetime | None
    num_instances: int
    data: bytes | None
    frames: bytes | None
    built_at: datetime | None
    error: str

    def fresh_for(self, state: SeriesState) -> bool:
        return (
            self.data is not None
            and self.source_updated_at is not None
            and self.source_updated_at == aware(state.updated_at)
            and self.num_instances == state.num_instances
        )


class TokenNameTaken(Exception):
    """An active token already has that name."""


_TOKEN_COLUMNS = (
    ApiTokenRow.id,
    ApiTokenRow.name,
    ApiTokenRow.token_prefix,
    ApiTokenRow.all_studies,
    ApiTokenRow.can_write,
    ApiTokenRow.description,
    ApiTokenRow.created_by,
    ApiTokenRow.created_at,
    ApiTokenRow.expires_at,
    ApiTokenRow.revoked_at,
    ApiTokenRow.last_used_at,
)


# Every partner request looks its token up: build these statements once.
_SEL_TOKEN_BY_HASH = select(*_TOKEN_COLUMNS).where(ApiTokenRow.token_hash == bindparam("b_hash"))
_SEL_SCOPES = (
    select(
        ApiTokenScopeRow.token_id,
        ApiTokenScopeRow.kind,
        ApiTokenScopeRow.value,
        ApiTokenScopeRow.granted_by,
        ApiTokenScopeRow.granted_at,
        ApiTokenScopeRow.expires_at,
    )
    .where(ApiTokenScopeRow.token_id.in_(bindparam("b_ids", expanding=True)))
    .order_by(ApiTokenScopeRow.id)
)


class _Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = writer(engine)

    def _fail(self, what: str, exc: SQLAlchemyError) -> StorageUnavailable:
        return unavailable("DICOMweb database", what, exc)


# ---------------------------------------------------------------- tokens


class TokenStore(_Store):
    """API tokens and their scopes. Each method is one short transaction."""

    def create(
        self,
        name: str,
        *,
        token_hash: str,
        token_prefix: str,
        all_studies: bool,
        can_write: bool,
        study_uids: Sequence[str] = (),
        created_by: str = "",
        expires_at: datetime | None = None,
        description: str = "",
        granted_by: str = "",
    ) -> ApiToken:
        """Insert a token (and its study scopes). Raises TokenNameTaken, StorageUnavailable."""
        now = utcnow()
        try:
            with self._writer.begin() as conn:
                taken = conn.execute(
                    select(ApiTokenRow.id).where(
                        ApiTokenRow.name == name,
                        ApiTokenRow.revoked_at.is_(None),
                        or_(ApiTokenRow.expires_at.is_(None), ApiTokenRow.expires_at > now),
                    )
                ).first()
                if taken is not None:
                    raise TokenNameTaken(name)
                pk = conn.execute(
                    insert(ApiTokenRow).returning(ApiTokenRow.id),
                    {
                        "name": name,
                        "token_hash": token_hash,
                        "token_prefix": token_prefix,
                        "all_studies": all_studies,
                        "can_write": can_write,
                        "description": description,
                        "created_by": created_by,
                        "created_at": now,
                        "expires_at": expires_at,
                    },
                ).scalar_one()
                uids = list(dict.fromkeys(study_uids))
                if uids:
                    conn.execute(
                        insert(ApiTokenScopeRow),
                        [
                            {
                                "token_id": pk,
                                "kind": SCOPE_STUDY,
                                "value": uid,
                                "granted_by": granted_by or created_by,
                                "granted_at": now,
                            }
                            for uid in uids
                        ],
                    )
        except SQLAlchemyError as exc:
            raise self._fail("create token", exc) from exc
        token = self.get(pk)
        assert token is not None
        return token

    def get(self, token_id: int) -> ApiToken | None:
        tokens = self._load(ApiTokenRow.id == token_id)
        return tokens[0] if tokens else None

    def by_hash(self, token_hash: str) -> ApiToken | None:
        """The token whose secret hashes to ``token_hash`` (active or not).

        Runs on every partner request: statements are built once (module level).
        """
        tokens = self._run(_SEL_TOKEN_BY_HASH, {"b_hash": token_hash})
        return tokens[0] if tokens else None

    def by_name(self, name: str) -> list[ApiToken]:
        return self._load(ApiTokenRow.name == name)

    def list_tokens(self, *, include_revoked: bool = True) -> list[ApiToken]:
        cond = None if include_revoked else ApiTokenRow.revoked_at.is_(None)
        return self._load(cond)

    def _load(self, condition: object) -> list[ApiToken]:
        stmt = select(*_TOKEN_COLUMNS).order_by(ApiTokenRow.id)
        if condition is not None:
            stmt = stmt.where(condition)  # type: ignore[arg-type]
        return self._run(stmt, {})

    def _run(self, stmt: Any, params: dict[str, Any]) -> list[ApiToken]:
        try:
            with self.engine.connect() as conn:
                rows = list(conn.execute(stmt, params))
                scoped = [r.id for r in rows if not r.all_studies]
                scopes: dict[int, list[TokenScope]] = {}
                if scoped:
                    for s in conn.execute(_SEL_SCOPES, {"b_ids": scoped}):
                        scopes.setdefault(s.token_id, []).append(
                            TokenScope(
                                s.kind,
                                s.value,
                                s.granted_by,
                                aware(s.granted_at),  # type: ignore[arg-type]
                                aware(s.expires_at),
                            )
                        )
        except SQLAlchemyError as exc:
            raise self._fail("token lookup", exc) from exc
        return [
            ApiToken(
                id=r.id,
                name=r.name,
                token_prefix=r.token_prefix,
                all_studies=bool(r.all_studies),
                can_write=bool(r.can_write),
                description=r.description,
                created_by=r.created_by,
                created_at=aware(r.created_at),  # type: ignore[arg-type]
                expires_at=aware(r.expires_at),
                revoked_at=aware(r.revoked_at),
                last_used_at=aware(r.last_used_at),
                scopes=tuple(scopes.get(r.id, ())),
            )
            for r in rows
        ]

    def revoke(self, token_id: int) -> bool:
        """Revoke a token at once (on every worker: the next request is refused)."""
        try:
            with self._writer.begin() as conn:
                result = conn.execute(
                    update(ApiTokenRow)
                    .where(ApiTokenRow.id == token_id, ApiTokenRow.revoked_at.is_(None))
                    .values(revoked_at=utcnow())
                )
                return result.rowcount > 0
        except SQLAlchemyError as exc:
            raise self._fail("revoke token", exc) from exc

    def add_scope(
        self,
        token_id: int,
        value: str,
        *,
        kind: str = SCOPE_STUDY,
        granted_by: str = "",
        expires_at: datetime | None = None,
    ) -> bool:
        """Grant one more study (or other kind); False when it was already granted."""
        try:
            with self._writer.begin() as conn:
                conn.execute(
                    insert(ApiTokenScopeRow),
                    {
                        "token_id": token_id,
                        "kind": kind,
                        "value": value,
                        "granted_by": granted_by,
                        "granted_at": utcnow(),
                        "expires_at": expires_at,
                    },
                )
        except IntegrityError:
            return False
        except SQLAlchemyError as exc:
            raise self._fail("add token scope", exc) from exc
        return True

    def remove_scopes(
        self, token_id: int, *, kind: str | None = None, granted_by: str | None = None
    ) -> int:
        """Withdraw grants (e.g. everything a finished consultation granted)."""
        stmt = delete(ApiTokenScopeRow).where(ApiTokenScopeRow.token_id == token_id)
        if kind is not None:
            stmt = stmt.where(ApiTokenScopeRow.kind == kind)
        if granted_by is not None:
            stmt = stmt.where(ApiTokenScopeRow.granted_by == granted_by)
        try:
            with self._writer.begin() as conn:
                return conn.execute(stmt).rowcount
        except SQLAlchemyError as exc:
            raise self._fail("remove token scopes", exc) from exc

    def study_pks(self, study_uids: Iterable[str]) -> frozenset[int]:
        """Primary keys of the archived studies among ``study_uids``."""
        uids = list(study_uids)
        if not uids:
            return frozenset()
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(select(Study.id).where(Study.study_uid.in_(uids)))
                return frozenset(r[0] for r in rows)
        except SQLAlchemyError as exc:
            raise self._fail("token scope lookup", exc) from exc

    def archived_study_uids(self, study_uids: Iterable[str]) -> set[str]:
        """Which of ``study_uids`` are archived now."""
        uids = list(study_uids)
        if not uids:
            return set()
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(select(Study.study_uid).where(Study.study_uid.in_(uids)))
                return {r[0] for r in rows}
        except SQLAlchemyError as exc:
            raise self._fail("study lookup", exc) from exc

    def touch(
        self,
        token: ApiToken,
        *,
        at_most_every: timedelta = timedelta(minutes=5),
    ) -> None:
        """Record use, at most every few minutes: a write per request would serialise
        every request on SQLite's write lock."""
        now = utcnow()
        if token.last_used_at is not None and token.last_used_at > now - at_most_every:
            return
        token_id = token.id
        try:
            with self._writer.begin() as conn:
                conn.execute(
                    update(ApiTokenRow)
                    .where(
                        ApiTokenRow.id == token_id,
                        or_(
                            ApiTokenRow.last_used_at.is_(None),
                            ApiTokenRow.last_used_at < now - at_most_every,
                        ),
                    )
                    .values(last_used_at=now)
                )
        except SQLAlchemyError as exc:
            log.warning("could not record use of token %d: %s", token_id, exc)


# ---------------------------------------------------------------- CORS


class CorsStore(_Store):
    """The browser origins allowed to call DICOMweb."""

    def origins(self) -> list[str]:
        try:
            with self.engine.connect() as conn:
                return [
                    r[0]
                    for r in conn.execute(
                        select(CorsOriginRow.origin).order_by(CorsOriginRow.origin)
                    )
                ]
        except SQLAlchemyError as exc:
            raise self._fail("CORS origins lookup", exc) from exc

    def add(self, origin: str) -> bool:
        try:
            with self._writer.begin() as conn:
                conn.execute(insert(CorsOriginRow), {"origin": origin, "created_at": utcnow()})
        except IntegrityError:
            return False
        except SQLAlchemyError as exc:
            raise self._fail("add CORS origin", exc) from exc
        return True

    def remove(self, origin: str) -> bool:
        try:
            with self._writer.begin() as conn:
                return (
                    conn.execute(
                        delete(CorsOriginRow).where(CorsOriginRow.origin == origin)
                    ).rowcount
                    > 0
                )
        except SQLAlchemyError as exc:
            raise self._fail("remove CORS origin", exc) from exc


# ---------------------------------------------------------------- series metadata

_STATE_COLUMNS = (
    Series.id,
    Series.series_uid,
    Series.study_pk,
    Study.study_uid,
    Series.updated_at,
    Series.num_instances,
)


def _state(row: object) -> SeriesState:
    values = list(row)  # type: ignore[call-overload]
    return SeriesState(*values)


class SeriesMetadataStore(_Store):
    """Rows of precomputed series metadata, and the claims that share building them."""

    def series_state(
        self, *, series_uid: str | None = None, study_uid: str | None = None
    ) -> list[SeriesState]:
        """The series (one, or all of a study) as the index sees them now."""
        stmt = select(*_STATE_COLUMNS).join(Study, Series.study_pk == Study.id)
        if series_uid is not None:
            stmt = stmt.where(Series.series_uid == series_uid)
        if study_uid is not None:
            stmt = stmt.where(Study.study_uid == study_uid)
        stmt = stmt.order_by(Series.series_number, Series.id)
        try:
            with self.engine.connect() as conn:
                return [_state(r) for r in conn.execute(stmt)]
        except SQLAlchemyError as exc:
            raise self._fail("series lookup", exc) from exc

    def get(self, series_pk: int) -> SeriesMetadata | None:
        return self.get_many([series_pk]).get(series_pk)

    def get_many(self, series_pks: Sequence[int]) -> dict[int, SeriesMetadata]:
        if not series_pks:
            return {}
        m = SeriesMetadataRow
        stmt = select(
            m.series_pk, m.source_updated_at, m.num_instances, m.data, m.frames, m.built_at, m.error
        ).where(m.series_pk.in_(list(series_pks)))
        try:
            with self.engine.connect() as conn:
                return {
                    r[0]: SeriesMetadata(
                        r[0], aware(r[1]), r[2], r[3], r[4], aware(r[5]), r[6] or ""
                    )
                    for r in conn.execute(stmt)
                }
        except SQLAlchemyError as exc:
            raise self._fail("metadata lookup", exc) from exc

    def stale_series(
        self, *, quiet_before: datetime, claim_expired_before: datetime, limit: int
    ) -> list[SeriesState]:
        """Series whose metadata is missing or older than the series, quiet since
        ``quiet_before``, that nobody is building (or whose builder's claim expired).

        A failed build is not retried until the series changes (its row then has
        an ``error`` and the series' state), so unreadable series cost nothing.
        """
        m = SeriesMetadataRow
        stmt = (
            select(*_STATE_COLUMNS)
            .select_from(Series)
            .join(Study, Series.study_pk == Study.id)
            .outerjoin(m, m.series_pk == Series.id)
            .where(
                Series.updated_at < quiet_before,
                Series.num_instances > 0,
                or_(
                    m.series_pk.is_(None),
                    m.source_updated_at.is_(None),
                    m.source_updated_at != Series.updated_at,
                    m.num_instances != Series.num_instances,
                ),
                or_(m.claimed_at.is_(None), m.claimed_at < claim_expired_before),
            )
            .order_by(Series.updated_at.desc())
            .limit(limit)
        )
        try:
            with self.engine.connect() as conn:
                return [_state(r) for r in conn.execute(stmt)]
        except SQLAlchemyError as exc:
            raise self._fail("stale metadata lookup", exc) from exc

    def claim(self, series_pk: int, node: str, *, claim_expired_before: datetime) -> bool:
        """Take the right to build this series' metadata; False if another node has it."""
        now = utcnow()
        m = SeriesMetadataRow
        try:
            with self._writer.begin() as conn:
                claimed = conn.execute(
                    update(m)
                    .where(
                        m.series_pk == series_pk,
                        or_(m.claimed_at.is_(None), m.claimed_at < claim_expired_before),
                    )
                    .values(claimed_by=node[:64], claimed_at=now)
                ).rowcount
                if claimed:
                    return True
                exists = conn.execute(select(m.series_pk).where(m.series_pk == series_pk)).first()
                if exists is not None:
                    return False
                conn.execute(
                    insert(m),
                    {
                        "series_pk": series_pk,
                        "source_updated_at": None,
                        "num_instances": 0,
                        "data": None,
                        "frames": None,
                        "built_at": None,
                        "build_ms": 0,
                        "error": "",
                        "claimed_by": node[:64],
                        "claimed_at": now,
                    },
                )
                return True
        except IntegrityError:
            return False
        except SQLAlchemyError as exc:
            raise self._fail("claim metadata build", exc) from exc

    def save(
        self,
        state: SeriesState,
        *,
        data: bytes | None,
        frames: bytes | None,
        build_ms: int,
        error: str = "",
    ) -> None:
        """Store a build made from ``state`` and release any claim on the series.

        A series deleted in the meantime is silently skipped.
        """
        m = SeriesMetadataRow
        values = {
            "source_updated_at": state.updated_at,
            "num_instances": state.num_instances,
            "data": data,
            "frames": frames,
            "built_at": utcnow(),
            "build_ms": build_ms,
            "error": error[:255],
            "claimed_by": None,
            "claimed_at": None,
        }
        try:
            with self._writer.begin() as conn:
                updated = conn.execute(
                    update(m).where(m.series_pk == state.pk).values(**values)
                ).rowcount
                if not updated:
                    alive = conn.execute(select(Series.id).where(Series.id == state.pk)).first()
                    if alive is not None:
                        conn.execute(insert(m), {"series_pk": state.pk, **values})
        except IntegrityError:
            # Someone else saved the same series at the same moment; theirs is as good.
            return
        except SQLAlchemyError as exc:
            raise self._fail("save metadata", exc) from exc

    def release(self, series_pk: int) -> None:
        m = SeriesMetadataRow
        try:
            with self._writer.begin() as conn:
                conn.execute(
                    update(m)
                    .where(m.series_pk == series_pk)
                    .values(claimed_by=None, claimed_at=None)
                )
        except SQLAlchemyError as exc:
            log.warning("could not release metadata claim on series %d: %s", series_pk, exc)

    def counts(self) -> dict[str, int]:
        """How many series have fresh metadata, and how many stale or missing."""
        m = SeriesMetadataRow
        fresh = and_(
            m.source_updated_at == Series.updated_at,
            m.num_instances == Series.num_instances,
            m.data.is_not(None),
        )
        try:
            with self.engine.connect() as conn:
                total = conn.execute(select(func.count(Series.id))).scalar_one()
                ok = conn.execute(
                    select(func.count(Series.id)).join(m, m.series_pk == Series.id).where(fresh)
                ).scalar_one()
        except SQLAlchemyError as exc:
            raise self._fail("metadata counts", exc) from exc
        return {"series": int(total), "fresh": int(ok), "stale_or_missing": int(total - ok)}
