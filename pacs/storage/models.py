"""SQLAlchemy 2 models of the archive index: patient / study / series / instance.

Study rows carry a copy of their patient's attributes so a study-level query
(the worklist, C-FIND STUDY, QIDO /studies) reads one table; names also get a
folded key (see :func:`pacs.charset.fold`) for case- and diacritic-insensitive
search. Counters on study and series rows are kept up to date at ingest so that
queries never count instances.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

PN = 324  # three component groups of 64 characters plus separators
LO = 64
UI = 64


def folded_key(length: int) -> String:
    """A folded search key; byte order ("C") on PostgreSQL so prefix ranges use the index."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")  # type: ignore[return-value]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Patient(Base):
    __tablename__ = "patients"
    __table_args__ = (UniqueConstraint("patient_id", "issuer", name="uq_patients_id_issuer"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(LO), default="")
    issuer: Mapped[str] = mapped_column(String(LO), default="")
    name: Mapped[str] = mapped_column(String(PN), default="")
    name_key: Mapped[str] = mapped_column(folded_key(PN), default="", index=True)
    birth_date: Mapped[str] = mapped_column(String(8), default="")
    sex: Mapped[str] = mapped_column(String(16), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Study(Base):
    __tablename__ = "studies"
    __table_args__ = (
        Index("ix_studies_date_time", "study_date", "study_time"),
        Index("ix_studies_patient_pk", "patient_pk"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(UI), unique=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    # Copies of the patient's attributes, so study-level queries need no join.
    patient_id: Mapped[str] = mapped_column(String(LO), default="", index=True)
    patient_name: Mapped[str] = mapped_column(String(PN), default="")
    patient_name_key: Mapped[str] = mapped_column(folded_key(PN), default="", index=True)
    patient_birth_date: Mapped[str] = mapped_column(String(8), default="")
    patient_sex: Mapped[str] = mapped_column(String(16), default="")

    study_date: Mapped[str] = mapped_column(String(8), default="")
    study_time: Mapped[str] = mapped_column(String(16), default="")
    accession_number: Mapped[str] = mapped_column(String(LO), default="", index=True)
    study_id: Mapped[str] = mapped_column(String(16), default="")
    description: Mapped[str] = mapped_column(String(LO), default="")
    description_key: Mapped[str] = mapped_column(folded_key(LO), default="")
    referring_physician: Mapped[str] = mapped_column(String(PN), default="")
    referring_physician_key: Mapped[str] = mapped_column(folded_key(PN), default="")
    institution: Mapped[str] = mapped_column(String(LO), default="")
    # Specific Character Set of the first instance, as written by the modality.
    charset: Mapped[str] = mapped_column(String(LO), default="")
    # Backslash-joined, sorted, e.g. "CT\SR".
    modalities: Mapped[str] = mapped_column(String(LO), default="")
    num_series: Mapped[int] = mapped_column(Integer, default=0)
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_uid: Mapped[str] = mapped_column(String(UI), unique=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    modality: Mapped[str] = mapped_column(String(16), default="", index=True)
    series_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    description: Mapped[str] = mapped_column(String(LO), default="")
    body_part: Mapped[str] = mapped_column(String(LO), default="")
    series_date: Mapped[str] = mapped_column(String(8), default="")
    series_time: Mapped[str] = mapped_column(String(16), default="")
    station_name: Mapped[str] = mapped_column(String(LO), default="")
    source_ae: Mapped[str] = mapped_column(String(16), default="")
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Instance(Base):
    __tablename__ = "instances"
    __table_args__ = (Index("ix_instances_series_number", "series_pk", "instance_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_uid: Mapped[str] = mapped_column(String(UI), unique=True)
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.id"))
    sop_class_uid: Mapped[str] = mapped_column(String(UI), default="")
    transfer_syntax_uid: Mapped[str] = mapped_column(String(UI), default="")
    instance_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    columns: Mapped[int | None] = mapped_column(Integer, nullable=True)
    frames: Mapped[int | None] = mapped_column(Integer, nullable=True)
    bits_allocated: Mapped[int | None] = mapped_column(Integer, nullable=True)
    object_key: Mapped[str] = mapped_column(String(240))
    # Where the data set starts in the stored file, so sends skip the File Meta unparsed.
    dataset_offset: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    source_ae: Mapped[str] = mapped_column(String(16), default="")
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SearchToken(Base):
    """One folded word of a study's patient name, referring physician or description.

    Lets the worklist and fuzzy QIDO find ``nhung`` in ``Nguyễn^Thị Hồng Nhung``
    with an index range scan instead of a LIKE over every study.
    """

    __tablename__ = "search_tokens"
    __table_args__ = (Index("ix_search_tokens_lookup", "field", "token"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    # "patient", "referring" or "description"
    field: Mapped[str] = mapped_column(String(16))
    token: Mapped[str] = mapped_column(folded_key(LO))


class RemoteAE(Base):
    """A DICOM node we know, and what it may do."""

    __tablename__ = "remote_aes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ae_title: Mapped[str] = mapped_column(String(16), unique=True)
    host: Mapped[str] = mapped_column(String(255), default="")
    port: Mapped[int] = mapped_column(Integer, default=104)
    can_store: Mapped[bool] = mapped_column(Boolean, default=True)
    can_query: Mapped[bool] = mapped_column(Boolean, default=True)
    can_retrieve: Mapped[bool] = mapped_column(Boolean, default=True)
    is_destination: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str] = mapped_column(String(255), default="")
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # What it may query and retrieve: "all" studies, or only those "shared" with its
    # partner hospital (pacs/storage/consult_models.py; migration 0007_consult).
    study_scope: Mapped[str] = mapped_column(String(16), default="all", server_default="all")


class StoreIntent(Base):
    """An object being written: present from just before the put until the index commit.

    A row that outlives its writer (a crash between put and commit) tells recovery
    which object to check; see :meth:`pacs.archive.Archive.recover`.
    """

    __tablename__ = "store_intents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # No secondary index: the table holds only the stores in flight, and each index
    # cost every received instance an insert and a delete (migration 0008).
    object_key: Mapped[str] = mapped_column(String(240))
    sha256: Mapped[str] = mapped_column(String(64))
    node: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
