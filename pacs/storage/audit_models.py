"""The audit table (see pacs/audit.py)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from pacs.storage.models import LO, PN, UI, Base


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_at", "at"),
        Index("ix_audit_events_actor_at", "actor", "at"),
        Index("ix_audit_events_action_at", "action", "at"),
        Index("ix_audit_events_patient_id", "patient_id"),
        Index("ix_audit_events_study_uid", "study_uid"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    action: Mapped[str] = mapped_column(String(48))
    outcome: Mapped[str] = mapped_column(String(16), default="success")
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(128))
    address: Mapped[str] = mapped_column(String(64), default="")
    patient_id: Mapped[str] = mapped_column(String(LO), default="")
    patient_name: Mapped[str] = mapped_column(String(PN), default="")
    study_uid: Mapped[str] = mapped_column(String(UI), default="")
    #: JSON of non-secret details (counts, query keys, series UIDs…)
    details: Mapped[str] = mapped_column(Text, default="")
    node: Mapped[str] = mapped_column(String(64), default="")
