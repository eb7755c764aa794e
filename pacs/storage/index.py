"""The SQL index: what the archive holds, found without opening a file.

Only plain dataclasses and dicts leave this module. Every method is one unit of
work in its own transaction, so any thread may call any method.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from pacs.charset import fold
from pacs.dicomfile import InstanceHeader
from pacs.errors import InvalidQuery, NotFound, StorageUnavailable
from pacs.storage import rawsql
from pacs.storage.database import unavailable, utcnow, writer
from pacs.storage.matching import (
    Query,
    attributes_for,
    base_select,
    order_clauses,
    where_clauses,
)
from pacs.storage.models import (
    Instance,
    Patient,
    RemoteAE,
    SearchToken,
    Series,
    StoreIntent,
    Study,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InstanceRef:
    """Where an instance is and what it is, for retrieval."""

    sop_uid: str
    series_uid: str
    study_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    object_key: str
    size_bytes: int
    sha256: str
    dataset_offset: int
    instance_number: int | None
    rows: int | None = None
    columns: int | None = None
    frames: int | None = None
    bits_allocated: int | None = None


@dataclass(frozen=True)
class RecordOutcome:
    created_study: bool
    created_series: bool
    #: the instance this one replaced (same SOP Instance UID), if any
    replaced: InstanceRef | None


@dataclass(frozen=True)
class Intent:
    id: int
    object_key: str
    sha256: str
    node: str
    created_at: datetime


@dataclass(frozen=True)
class RemoteNode:
    ae_title: str
    host: str
    port: int
    can_store: bool
    can_query: bool
    can_retrieve: bool
    is_destination: bool
    description: str = ""
    last_seen_at: datetime | None = None
    #: "all" or "shared" (see RemoteAE.study_scope); None on an update keeps the stored one
    study_scope: str | None = None


_REF_COLUMNS = (
    Instance.sop_uid,
    Series.series_uid,
    Study.study_uid,
    Instance.sop_class_uid,
    Instance.transfer_syntax_uid,
    Instance.object_key,
    Instance.size_bytes,
    Instance.sha256,
    Instance.dataset_offset,
    Instance.instance_number,
    Instance.rows,
    Instance.columns,
    Instance.frames,
    Instance.bits_allocated,
)


@dataclass(frozen=True)
class Existing:
    """The archived instance found by the duplicate check."""

    pk: int
    series_pk: int
    size_bytes: int
    sha256: str
    object_key: str


class _StaleCache(Exception):
    """A cached primary key no longer names its row."""


_CACHE_SIZE = 20000

# Ingest runs these for every instance: built once, executed with parameters.
_SEL_EXISTING = select(
    Instance.id, Instance.series_pk, Instance.size_bytes, Instance.sha256, Instance.object_key
).where(Instance.sop_uid == bindparam("b_sop"))
_SEL_REFS = (
    select(*_REF_COLUMNS)
    .join(Series, Instance.series_pk == Series.id)
    .join(Study, Series.study_pk == Study.id)
)
_SEL_REF_BY_PK = _SEL_REFS.where(Instance.id == bindparam("b_pk"))
# One instance by UID: every rendered image, frame and file request starts here.
_SEL_REF_BY_UID = _SEL_REFS.where(Instance.sop_uid == bindparam("b_sop"))
_INS_INTENT = insert(StoreIntent).returning(StoreIntent.id)
_DEL_INTENT = delete(StoreIntent).where(StoreIntent.id == bindparam("b_id"))
_SEL_STUDY = select(Study.id).where(Study.study_uid == bindparam("b_uid"))
_SEL_SERIES = select(Series.id, Series.study_pk).where(Series.series_uid == bindparam("b_uid"))
_INS_INSTANCE = insert(Instance)
_INSTANCE_COLUMNS = (
    "sop_uid",
    "series_pk",
    "sop_class_uid",
    "transfer_syntax_uid",
    "instance_number",
    "rows",
    "columns",
    "frames",
    "bits_allocated",
    "object_key",
    "dataset_offset",
    "size_bytes",
    "sha256",
    "source_ae",
    "received_at",
)
_INTENT_COLUMNS = ("object_key", "sha256", "node", "created_at")
_UPD_SERIES_COUNTS = (
    update(Series)
    .where(Series.id == bindparam("b_pk"), Series.series_uid == bindparam("b_uid"))
    .values(
        num_instances=Series.num_instances + 1,
        size_bytes=Series.size_bytes + bindparam("b_size"),
        updated_at=bindparam("b_now"),
    )
)
_UPD_STUDY_COUNTS = (
    update(Study)
    .where(Study.id == bindparam("b_pk"), Study.study_uid == bindparam("b_uid"))
    .values(
        num_instances=Study.num_instances + 1,
        num_series=Study.num_series + bindparam("b_new_series"),
        size_bytes=Study.size_bytes + bindparam("b_size"),
        updated_at=bindparam("b_now"),
    )
)


def _instance_row(
    h: InstanceHeader,
    series_pk: int,
    object_key: str,
    size_bytes: int,
    sha256: str,
    source_ae: str,
    now: datetime,
) -> dict[str, Any]:
    return {
        "sop_uid": h.sop_instance_uid,
        "series_pk": series_pk,
        "sop_class_uid": h.sop_class_uid,
        "transfer_syntax_uid": h.transfer_syntax_uid,
        "instance_number": h.instance_number,
        "rows": h.rows,
        "columns": h.columns,
        "frames": h.frames,
        "bits_allocated": h.bits_allocated,
        "object_key": object_key,
        "dataset_offset": h.dataset_offset,
        "size_bytes": size_bytes,
        "sha256": sha256,
        "source_ae": source_ae,
        "received_at": now,
    }


def _counter_updates(
    h: InstanceHeader,
    series_pk: int,
    study_pk: int,
    size_bytes: int,
    created_series: bool,
    now: datetime,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The parameters of _UPD_SERIES_COUNTS and _UPD_STUDY_COUNTS for one new instance."""
    series = {"b_pk": series_pk, "b_uid": h.series_instance_uid, "b_size": size_bytes, "b_now": now}
    study = {
        "b_pk": study_pk,
        "b_uid": h.study_instance_uid,
        "b_size": size_bytes,
        "b_new_series": 1 if created_series else 0,
        "b_now": now,
    }
    return series, study


def _ref(row: Any) -> InstanceRef:
    return InstanceRef(*row)


def _tokens(text: str) -> set[str]:
    return {w[:64] for w in fold(text).replace("=", " ").split() if w}


class SqlIndex:
    """The index on SQLite or PostgreSQL through one SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = writer(engine)
        self.dialect = engine.dialect.name
        # UID → primary key of recently written studies and series; a hint only,
        # checked by the counter UPDATEs that follow (see _record).
        self._cache_lock = threading.Lock()
        self._study_cache: dict[str, int] = {}
        self._series_cache: dict[str, int] = {}
        # The statements every received instance runs, on the driver's cursor (rawsql).
        self._raw_existing = rawsql.RawStatement(_SEL_EXISTING, engine)
        self._raw_intent = rawsql.RawStatement(_INS_INTENT, engine, _INTENT_COLUMNS)
        self._raw_drop_intent = rawsql.RawStatement(_DEL_INTENT, engine)
        self._raw_instance = rawsql.RawStatement(_INS_INSTANCE, engine, _INSTANCE_COLUMNS)
        self._raw_series_counts = rawsql.RawStatement(_UPD_SERIES_COUNTS, engine)
        self._raw_study_counts = rawsql.RawStatement(_UPD_STUDY_COUNTS, engine)

    # ------------------------------------------------------------ plumbing

    def _write(self) -> Any:
        """A write transaction (BEGIN IMMEDIATE on SQLite)."""
        return self._writer.begin()

    def _guard(self, what: str, exc: SQLAlchemyError) -> StorageUnavailable:
        return unavailable("index", what, exc)

    def check(self) -> None:
        try:
            with self.engine.connect() as conn:
                conn.execute(select(1))
        except SQLAlchemyError as exc:
            raise self._guard("health check", exc) from exc

    # ------------------------------------------------------------ ingest

    def has_study(self, study_uid: str) -> bool:
        try:
            with self.engine.connect() as conn:
                return conn.execute(_SEL_STUDY, {"b_uid": study_uid}).first() is not None
        except SQLAlchemyError as exc:
            raise self._guard("lookup", exc) from exc

    def get_instance(self, sop_uid: str) -> InstanceRef | None:
        try:
            with self.engine.connect() as conn:
                row = conn.execute(_SEL_REF_BY_UID, {"b_sop": sop_uid}).first()
        except SQLAlchemyError as exc:
            raise self._guard("lookup", exc) from exc
        return _ref(row) if row else None

    def add_intent(self, object_key: str, sha256: str, node: str) -> int:
        values = {"object_key": object_key, "sha256": sha256, "node": node, "created_at": utcnow()}
        try:
            with rawsql.transaction(self.engine, write=True) as cur:
                row = cur.execute(self._raw_intent, values).first()
        except SQLAlchemyError as exc:
            raise self._guard("intent", exc) from exc
        assert row is not None
        return int(row[0])

    def drop_intent(self, intent_id: int) -> None:
        try:
            with self._write() as conn:
                conn.execute(_DEL_INTENT, {"b_id": intent_id})
        except SQLAlchemyError as exc:
            raise self._guard("intent cleanup", exc) from exc

    def stale_intents(self, older_than: datetime, node: str | None = None) -> list[Intent]:
        """Intents older than ``older_than`` (optionally of one node): writers that died."""
        stmt = select(
            StoreIntent.id,
            StoreIntent.object_key,
            StoreIntent.sha256,
            StoreIntent.node,
            StoreIntent.created_at,
        ).where(StoreIntent.created_at < older_than)
        if node is not None:
            stmt = stmt.where(StoreIntent.node == node)
        with self.engine.connect() as conn:
            return [Intent(*row) for row in conn.execute(stmt.order_by(StoreIntent.id))]

    def existing(self, sop_uid: str) -> Existing | None:
        """The archived instance under ``sop_uid``, if any (the duplicate check)."""
        try:
            with rawsql.transaction(self.engine, write=False) as cur:
                row = cur.execute(self._raw_existing, {"b_sop": sop_uid}).first()
        except SQLAlchemyError as exc:
            raise self._guard("lookup", exc) from exc
        return Existing(*row) if row else None

    def record_instance(
        self,
        header: InstanceHeader,
        *,
        object_key: str,
        size_bytes: int,
        sha256: str,
        source_ae: str,
        intent_id: int | None,
        existing: Existing | None = None,
    ) -> RecordOutcome:
        """Index one stored instance (new, or replacing the same SOP Instance UID).

        Creates the patient, study and series rows on first sight, keeps the
        counters, and removes the intent — all in one transaction. ``existing``
        is what the caller's duplicate check found; a concurrent writer that
        changed it in the meantime is detected and handled by a retry.
        """
        now = utcnow()
        use_cache = True
        for attempt in range(4):
            try:
                if use_cache and existing is None:
                    outcome = self._record_known_series(
                        header, object_key, size_bytes, sha256, source_ae, now, intent_id
                    )
                    if outcome is not None:
                        return outcome
                with self._write() as conn:
                    outcome = self._record(
                        conn,
                        header,
                        object_key,
                        size_bytes,
                        sha256,
                        source_ae,
                        now,
                        existing,
                        use_cache,
                    )
                    if intent_id is not None:
                        conn.execute(_DEL_INTENT, {"b_id": intent_id})
                    return outcome
            except (IntegrityError, _StaleCache):
                # Another writer created or removed rows in the meantime: look again.
                if attempt == 3:
                    raise
                self._forget()
                use_cache = False
                existing = self.existing(header.sop_instance_uid)
            except SQLAlchemyError as exc:
                raise self._guard("record", exc) from exc
        raise AssertionError("unreachable")

    def _record_known_series(
        self,
        h: InstanceHeader,
        object_key: str,
        size_bytes: int,
        sha256: str,
        source_ae: str,
        now: datetime,
        intent_id: int | None,
    ) -> RecordOutcome | None:
        """The common case on the driver's cursor: a new instance of a series this
        process wrote to recently. None when the series is not in the cache."""
        study_pk = self._study_cache.get(h.study_instance_uid)
        series_pk = self._series_cache.get(h.series_instance_uid)
        if study_pk is None or series_pk is None:
            return None
        with rawsql.transaction(self.engine, write=True) as cur:
            cur.execute(
                self._raw_instance,
                _instance_row(h, series_pk, object_key, size_bytes, sha256, source_ae, now),
            )
            series, study = _counter_updates(h, series_pk, study_pk, size_bytes, False, now)
            counted = cur.execute(self._raw_series_counts, series).rowcount
            counted += cur.execute(self._raw_study_counts, study).rowcount
            if counted != 2:
                raise _StaleCache()
            if intent_id is not None:
                cur.execute(self._raw_drop_intent, {"b_id": intent_id})
        return RecordOutcome(False, False, None)

    def _forget(self) -> None:
        with self._cache_lock:
            self._study_cache.clear()
            self._series_cache.clear()

    def _record(
        self,
        conn: Connection,
        h: InstanceHeader,
        object_key: str,
        size_bytes: int,
        sha256: str,
        source_ae: str,
        now: datetime,
        existing: Existing | None,
        use_cache: bool,
    ) -> RecordOutcome:
        replaced = None
        if existing is not None:
            old = conn.execute(_SEL_REF_BY_PK, {"b_pk": existing.pk}).first()
            if old is not None:
                replaced = _ref(old)
                self._remove_instance(
                    conn, existing.pk, existing.series_pk, existing.size_bytes, now
                )
                self._forget()
                use_cache = False

        study_pk, created_study = self._study_pk(conn, h, now, use_cache)
        if replaced is not None and not created_study:
            # A re-sent instance usually carries corrections (a name typed again
            # with its diacritics): the study takes the newest values.
            self._refresh_study(conn, study_pk, h, now)
        series_pk, created_series = self._series_pk(conn, h, study_pk, source_ae, now, use_cache)
        conn.execute(
            _INS_INSTANCE,
            _instance_row(h, series_pk, object_key, size_bytes, sha256, source_ae, now),
        )
        series, study = _counter_updates(h, series_pk, study_pk, size_bytes, created_series, now)
        counted = conn.execute(_UPD_SERIES_COUNTS, series).rowcount
        counted += conn.execute(_UPD_STUDY_COUNTS, study).rowcount
        if counted != 2:
            # A cached primary key whose row was deleted by another writer.
            raise _StaleCache()
        if created_series:
            self._refresh_modalities(conn, study_pk)
        with self._cache_lock:
            if len(self._study_cache) > _CACHE_SIZE:
                self._study_cache.clear()
            if len(self._series_cache) > _CACHE_SIZE:
                self._series_cache.clear()
            self._study_cache[h.study_instance_uid] = study_pk
            self._series_cache[h.series_instance_uid] = series_pk
        return RecordOutcome(created_study, created_series, replaced)

    def _patient_pk(self, conn: Connection, h: InstanceHeader, now: datetime) -> int:
        where = (Patient.patient_id == h.patient_id, Patient.issuer == h.issuer_of_patient_id)
        pk = conn.execute(select(Patient.id).where(*where)).scalar()
        if pk is not None:
            return pk
        return conn.execute(
            insert(Patient)
            .values(
                patient_id=h.patient_id,
                issuer=h.issuer_of_patient_id,
                name=h.patient_name,
                name_key=fold(h.patient_name),
                birth_date=h.patient_birth_date,
                sex=h.patient_sex,
                created_at=now,
            )
            .returning(Patient.id)
        ).scalar_one()

    def _study_pk(
        self, conn: Connection, h: InstanceHeader, now: datetime, use_cache: bool
    ) -> tuple[int, bool]:
        if use_cache:
            cached = self._study_cache.get(h.study_instance_uid)
            if cached is not None:
                return cached, False
        pk = conn.execute(_SEL_STUDY, {"b_uid": h.study_instance_uid}).scalar()
        if pk is not None:
            return pk, False
        patient_pk = self._patient_pk(conn, h, now)
        pk = conn.execute(
            insert(Study)
            .values(
                study_uid=h.study_instance_uid,
                patient_pk=patient_pk,
                **self._study_attributes(h),
                modalities="",
                num_series=0,
                num_instances=0,
                size_bytes=0,
                created_at=now,
                updated_at=now,
            )
            .returning(Study.id)
        ).scalar_one()
        self._insert_tokens(conn, pk, h)
        return pk, True

    def _refresh_study(
        self, conn: Connection, study_pk: int, h: InstanceHeader, now: datetime
    ) -> None:
        """Give an existing study (and its patient) the attributes of ``h``."""
        old_patient = conn.execute(
            select(Study.patient_pk).where(Study.id == study_pk)
        ).scalar_one()
        patient_pk = self._patient_pk(conn, h, now)
        conn.execute(
            update(Patient)
            .where(Patient.id == patient_pk)
            .values(
                name=h.patient_name,
                name_key=fold(h.patient_name),
                birth_date=h.patient_birth_date,
                sex=h.patient_sex,
            )
        )
        conn.execute(
            update(Study)
            .where(Study.id == study_pk)
            .values(
                patient_pk=patient_pk,
                **self._study_attributes(h),
                updated_at=now,
            )
        )
        conn.execute(delete(SearchToken).where(SearchToken.study_pk == study_pk))
        self._insert_tokens(conn, study_pk, h)
        # The patient's other studies carry copies of the corrected demographics.
        others = [
            pk
            for pk in conn.execute(
                select(Study.id).where(Study.patient_pk == patient_pk, Study.id != study_pk)
            ).scalars()
        ]
        if others:
            conn.execute(
                update(Study)
                .where(Study.id.in_(others))
                .values(
                    patient_name=h.patient_name,
                    patient_name_key=fold(h.patient_name),
                    patient_birth_date=h.patient_birth_date,
                    patient_sex=h.patient_sex,
                )
            )
            conn.execute(
                delete(SearchToken).where(
                    SearchToken.study_pk.in_(others), SearchToken.field == "patient"
                )
            )
            tokens = _tokens(h.patient_name)
            if tokens:
                conn.execute(
                    insert(SearchToken),
                    [
                        {"study_pk": pk, "field": "patient", "token": token}
                        for pk in others
                        for token in tokens
                    ],
                )
        if old_patient != patient_pk:
            remaining = conn.execute(
                select(func.count(Study.id)).where(Study.patient_pk == old_patient)
            ).scalar_one()
            if remaining == 0:
                conn.execute(delete(Patient).where(Patient.id == old_patient))

    @staticmethod
    def _study_attributes(h: InstanceHeader) -> dict[str, Any]:
        return {
            "patient_id": h.patient_id,
            "patient_name": h.patient_name,
            "patient_name_key": fold(h.patient_name),
            "patient_birth_date": h.patient_birth_date,
            "patient_sex": h.patient_sex,
            "study_date": h.study_date,
            "study_time": h.study_time,
            "accession_number": h.accession_number,
            "study_id": h.study_id,
            "description": h.study_description,
            "description_key": fold(h.study_description)[:64],
            "referring_physician": h.referring_physician,
            "referring_physician_key": fold(h.referring_physician),
            "institution": h.institution,
            "charset": h.specific_character_set,
        }

    @staticmethod
    def _insert_tokens(conn: Connection, study_pk: int, h: InstanceHeader) -> None:
        tokens = [
            {"study_pk": study_pk, "field": field_name, "token": token}
            for field_name, text in (
                ("patient", h.patient_name),
                ("referring", h.referring_physician),
                ("description", h.study_description),
            )
            for token in _tokens(text)
        ]
        if tokens:
            conn.execute(insert(SearchToken), tokens)

    def _series_pk(
        self,
        conn: Connection,
        h: InstanceHeader,
        study_pk: int,
        source_ae: str,
        now: datetime,
        use_cache: bool,
    ) -> tuple[int, bool]:
        if use_cache:
            cached = self._series_cache.get(h.series_instance_uid)
            if cached is not None:
                return cached, False
        row = conn.execute(_SEL_SERIES, {"b_uid": h.series_instance_uid}).first()
        if row is not None:
            if row.study_pk != study_pk:
                raise StorageUnavailable(
                    f"series {h.series_instance_uid} already belongs to another study"
                )
            return row.id, False
        pk = conn.execute(
            insert(Series)
            .values(
                series_uid=h.series_instance_uid,
                study_pk=study_pk,
                modality=h.modality,
                series_number=h.series_number,
                description=h.series_description,
                body_part=h.body_part,
                series_date=h.series_date,
                series_time=h.series_time,
                station_name=h.station_name,
                source_ae=source_ae,
                num_instances=0,
                size_bytes=0,
                created_at=now,
                updated_at=now,
            )
            .returning(Series.id)
        ).scalar_one()
        return pk, True

    def _refresh_modalities(self, conn: Connection, study_pk: int) -> None:
        mods = conn.execute(
            select(Series.modality).where(Series.study_pk == study_pk).distinct()
        ).scalars()
        joined = "\\".join(sorted(m for m in mods if m))[:64]
        conn.execute(update(Study).where(Study.id == study_pk).values(modalities=joined))

    def _remove_instance(
        self, conn: Connection, instance_pk: int, series_pk: int, size: int, now: datetime
    ) -> None:
        """Delete one instance row and cascade empty series/studies/patients."""
        conn.execute(delete(Instance).where(Instance.id == instance_pk))
        series_row = conn.execute(
            update(Series)
            .where(Series.id == series_pk)
            .values(num_instances=Series.num_instances - 1, size_bytes=Series.size_bytes - size)
            .returning(Series.num_instances, Series.study_pk)
        ).first()
        assert series_row is not None
        study_pk = series_row.study_pk
        series_gone = series_row.num_instances <= 0
        if series_gone:
            conn.execute(delete(Series).where(Series.id == series_pk))
        study_row = conn.execute(
            update(Study)
            .where(Study.id == study_pk)
            .values(
                num_instances=Study.num_instances - 1,
                num_series=Study.num_series - (1 if series_gone else 0),
                size_bytes=Study.size_bytes - size,
                updated_at=now,
            )
            .returning(Study.num_instances, Study.patient_pk)
        ).first()
        assert study_row is not None
        if study_row.num_instances <= 0:
            conn.execute(delete(SearchToken).where(SearchToken.study_pk == study_pk))
            conn.execute(delete(Study).where(Study.id == study_pk))
            remaining = conn.execute(
                select(func.count(Study.id)).where(Study.patient_pk == study_row.patient_pk)
            ).scalar_one()
            if remaining == 0:
                conn.execute(delete(Patient).where(Patient.id == study_row.patient_pk))
        elif series_gone:
            self._refresh_modalities(conn, study_pk)

    # ------------------------------------------------------------ removal

    def delete_instances(self, refs: Iterable[InstanceRef]) -> int:
        """Remove instances from the index (objects are the caller's business)."""
        count = 0
        now = utcnow()
        try:
            with self._write() as conn:
                for ref in refs:
                    row = conn.execute(
                        select(Instance.id, Instance.series_pk, Instance.size_bytes).where(
                            Instance.sop_uid == ref.sop_uid
                        )
                    ).first()
                    if row is None:
                        continue
                    self._remove_instance(conn, row.id, row.series_pk, row.size_bytes, now)
                    count += 1
        except SQLAlchemyError as exc:
            raise self._guard("delete", exc) from exc
        return count

    def wipe(self) -> None:
        """Empty the archive tables (reindex rebuilds them from the object store)."""
        with self._write() as conn:
            for table in (SearchToken, Instance, Series, Study, Patient, StoreIntent):
                conn.execute(delete(table))

    # ------------------------------------------------------------ retrieval

    def instances(
        self,
        *,
        study_uid: str | None = None,
        series_uids: Sequence[str] | None = None,
        sop_uids: Sequence[str] | None = None,
        patient_id: str | None = None,
        study_uids: Sequence[str] | None = None,
        study_scope: Sequence[int] | None = None,
    ) -> list[InstanceRef]:
        """Instances selected by any combination of UIDs, in series/instance order."""
        stmt = (
            select(*_REF_COLUMNS)
            .select_from(Instance)
            .join(Series, Instance.series_pk == Series.id)
            .join(Study, Series.study_pk == Study.id)
        )
        if study_uid is not None:
            stmt = stmt.where(Study.study_uid == study_uid)
        if study_uids is not None:
            stmt = stmt.where(Study.study_uid.in_(list(study_uids)))
        if series_uids is not None:
            stmt = stmt.where(Series.series_uid.in_(list(series_uids)))
        if sop_uids is not None:
            stmt = stmt.where(Instance.sop_uid.in_(list(sop_uids)))
        if patient_id is not None:
            stmt = stmt.where(Study.patient_id == patient_id)
        if study_scope is not None:
            stmt = stmt.where(Study.id.in_(list(study_scope)))
        stmt = stmt.order_by(
            Study.id,
            Series.series_number.asc().nulls_last(),
            Series.id,
            Instance.instance_number.asc().nulls_last(),
            Instance.id,
        )
        try:
            with self.engine.connect() as conn:
                return [_ref(r) for r in conn.execute(stmt)]
        except SQLAlchemyError as exc:
            raise self._guard("retrieve", exc) from exc

    def iter_object_keys(self) -> Iterator[tuple[str, str, int]]:
        """(object_key, sha256, size) of every indexed instance."""
        with self.engine.connect() as conn:
            result = conn.execution_options(yield_per=2000).execute(
                select(Instance.object_key, Instance.sha256, Instance.size_bytes)
            )
            yield from result

    # ------------------------------------------------------------ queries

    def search(self, query: Query, keywords: Sequence[str]) -> list[dict[str, Any]]:
        """Rows matching ``query``, each a dict of the requested keywords we know.

        Keywords the index does not keep are left out of the row; callers decide
        whether to return them empty (C-FIND) or omit them (QIDO).
        """
        attrs = attributes_for(query.level)
        known = [k for k in dict.fromkeys(keywords) if k in attrs and attrs[k].column is not None]
        columns = [attrs[k].column.label(k) for k in known]  # type: ignore[union-attr]
        stmt = base_select(query.level, columns).where(*where_clauses(query, self.dialect))
        stmt = stmt.order_by(*order_clauses(query))
        if query.limit is not None:
            stmt = stmt.limit(query.limit)
        if query.offset:
            stmt = stmt.offset(query.offset)
        try:
            with self.engine.connect() as conn:
                return [dict(row._mapping) for row in conn.execute(stmt)]
        except InvalidQuery:
            raise
        except SQLAlchemyError as exc:
            raise self._guard("query", exc) from exc

    def count(self, query: Query) -> int:
        stmt = base_select(query.level, [func.count()]).where(*where_clauses(query, self.dialect))
        try:
            with self.engine.connect() as conn:
                return int(conn.execute(stmt).scalar_one())
        except SQLAlchemyError as exc:
            raise self._guard("count", exc) from exc

    def sop_classes_in_studies(self, study_uids: Sequence[str]) -> dict[str, list[str]]:
        stmt = (
            select(Study.study_uid, Instance.sop_class_uid)
            .select_from(Instance)
            .join(Series, Instance.series_pk == Series.id)
            .join(Study, Series.study_pk == Study.id)
            .where(Study.study_uid.in_(list(study_uids)))
            .distinct()
        )
        out: dict[str, list[str]] = {}
        with self.engine.connect() as conn:
            for study_uid, sop_class in conn.execute(stmt):
                out.setdefault(study_uid, []).append(sop_class)
        return out

    def study_pks(self, study_uids: Sequence[str]) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(Study.study_uid, Study.id).where(Study.study_uid.in_(list(study_uids)))
            )
            return {uid: pk for uid, pk in rows}

    def used_bytes(self) -> int:
        """Bytes of every archived object, summed from the study counters (the quota)."""
        try:
            with self.engine.connect() as conn:
                used = conn.execute(select(func.coalesce(func.sum(Study.size_bytes), 0))).scalar()
        except SQLAlchemyError as exc:
            raise self._guard("usage", exc) from exc
        return int(used or 0)

    def totals(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(
                    func.count(Study.id),
                    func.coalesce(func.sum(Study.num_series), 0),
                    func.coalesce(func.sum(Study.num_instances), 0),
                    func.coalesce(func.sum(Study.size_bytes), 0),
                )
            ).one()
            patients = conn.execute(select(func.count(Patient.id))).scalar_one()
        return {
            "patients": int(patients),
            "studies": int(row[0]),
            "series": int(row[1]),
            "instances": int(row[2]),
            "bytes": int(row[3]),
        }

    # ------------------------------------------------------------ remote AEs

    _NODE_COLUMNS = (
        RemoteAE.ae_title,
        RemoteAE.host,
        RemoteAE.port,
        RemoteAE.can_store,
        RemoteAE.can_query,
        RemoteAE.can_retrieve,
        RemoteAE.is_destination,
        RemoteAE.description,
        RemoteAE.last_seen_at,
        RemoteAE.study_scope,
    )

    def list_nodes(self) -> list[RemoteNode]:
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(select(*self._NODE_COLUMNS).order_by(RemoteAE.ae_title))
                return [RemoteNode(*row) for row in rows]
        except SQLAlchemyError as exc:
            raise self._guard("AE lookup", exc) from exc

    def get_node(self, ae_title: str) -> RemoteNode | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(*self._NODE_COLUMNS).where(RemoteAE.ae_title == ae_title)
            ).first()
            return RemoteNode(*row) if row else None

    def upsert_node(self, node: RemoteNode) -> bool:
        """Add or update a node; returns True when it was new."""
        values = {
            "host": node.host,
            "port": node.port,
            "can_store": node.can_store,
            "can_query": node.can_query,
            "can_retrieve": node.can_retrieve,
            "is_destination": node.is_destination,
            "description": node.description,
        }
        if node.study_scope is not None:
            values["study_scope"] = node.study_scope
        with self._write() as conn:
            updated = conn.execute(
                update(RemoteAE).where(RemoteAE.ae_title == node.ae_title).values(**values)
            ).rowcount
            if updated:
                return False
            conn.execute(
                insert(RemoteAE).values(ae_title=node.ae_title, created_at=utcnow(), **values)
            )
            return True

    def remove_node(self, ae_title: str) -> None:
        with self._write() as conn:
            deleted = conn.execute(delete(RemoteAE).where(RemoteAE.ae_title == ae_title)).rowcount
        if not deleted:
            raise NotFound(f"no remote AE titled {ae_title!r}")

    def touch_node(self, ae_title: str) -> None:
        try:
            with self._write() as conn:
                conn.execute(
                    update(RemoteAE)
                    .where(RemoteAE.ae_title == ae_title)
                    .values(last_seen_at=utcnow())
                )
        except SQLAlchemyError as exc:
            log.warning("could not record last contact of %s: %s", ae_title, exc)
