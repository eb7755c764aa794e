"""The audit trail: who did what to which patient's data, when and from where.

One row per action in the database (every node writes to the same table).
Never stores passwords, PINs or tokens: callers pass identifiers and counts,
and :func:`_clean_details` drops any detail whose key looks like a secret.
Recording must never break the action it records: a failure to write is
logged and counted, not raised.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import SQLAlchemyError

from pacs import metrics
from pacs.storage.audit_models import AuditEvent
from pacs.storage.database import writer

log = logging.getLogger(__name__)

_SECRET_WORDS = ("password", "passwd", "pin", "token", "secret", "key", "cookie", "hash")
_NODE = socket.gethostname()


@dataclass(frozen=True)
class Actor:
    """Who acted: a web user, a DICOM AE, an API token, a share link, or pacs itself."""

    kind: str  # "user", "ae", "token", "share", "system"
    name: str
    address: str = ""


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: datetime
    action: str
    outcome: str
    actor_kind: str
    actor: str
    address: str
    patient_id: str
    patient_name: str
    study_uid: str
    details: dict[str, Any]
    node: str


def _clean_details(details: Mapping[str, Any] | None) -> str:
    if not details:
        return ""
    kept = {
        k: v for k, v in details.items() if not any(word in k.lower() for word in _SECRET_WORDS)
    }
    return json.dumps(kept, ensure_ascii=False, default=str)[:4000]


class AuditLog:
    """Writes and reads audit rows on the archive's database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = writer(engine)

    def record(
        self,
        action: str,
        actor: Actor,
        *,
        outcome: str = "success",
        study_uid: str = "",
        patient_id: str = "",
        patient_name: str = "",
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Add one row. ``action`` is a dotted name such as ``login``, ``study.open``,
        ``share.create``, ``dicom.store``; see docs/audit.md for the list."""
        self.record_many(
            [
                {
                    "action": action,
                    "actor": actor,
                    "outcome": outcome,
                    "study_uid": study_uid,
                    "patient_id": patient_id,
                    "patient_name": patient_name,
                    "details": details,
                }
            ]
        )

    def record_many(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Add several rows in one transaction (e.g. one per study of an association)."""
        if not events:
            return
        now = datetime.now(UTC)
        rows = []
        for event in events:
            actor: Actor = event["actor"]
            rows.append(
                {
                    "at": now,
                    "action": str(event["action"])[:48],
                    "outcome": str(event.get("outcome", "success"))[:16],
                    "actor_kind": actor.kind[:16],
                    "actor": actor.name[:128],
                    "address": actor.address[:64],
                    "patient_id": str(event.get("patient_id") or "")[:64],
                    "patient_name": str(event.get("patient_name") or "")[:324],
                    "study_uid": str(event.get("study_uid") or "")[:64],
                    "details": _clean_details(event.get("details")),
                    "node": _NODE[:64],
                }
            )
        try:
            with self._writer.begin() as conn:
                conn.execute(insert(AuditEvent), rows)
        except SQLAlchemyError as exc:
            metrics.error("audit")
            log.error("could not write %d audit row(s): %s", len(rows), exc)

    def query(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        patient: str | None = None,
        study_uid: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = 200,
        offset: int = 0,
    ) -> list[AuditRow]:
        """Rows matching every given filter, newest first. ``action`` may end with
        ``*`` (``share.*``); ``patient`` matches the patient ID or name (substring)."""
        return list(
            self.iter_rows(
                actor=actor,
                action=action,
                patient=patient,
                study_uid=study_uid,
                since=since,
                until=until,
                limit=limit,
                offset=offset,
            )
        )

    def iter_rows(self, **filters: Any) -> Iterator[AuditRow]:
        stmt = select(AuditEvent).order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
        if filters.get("actor"):
            stmt = stmt.where(AuditEvent.actor == filters["actor"])
        action = filters.get("action")
        if action:
            if action.endswith("*"):
                stmt = stmt.where(AuditEvent.action.startswith(action[:-1], autoescape=True))
            else:
                stmt = stmt.where(AuditEvent.action == action)
        if filters.get("patient"):
            needle = f"%{filters['patient']}%"
            stmt = stmt.where(
                AuditEvent.patient_id.like(needle) | AuditEvent.patient_name.like(needle)
            )
        if filters.get("study_uid"):
            stmt = stmt.where(AuditEvent.study_uid == filters["study_uid"])
        if filters.get("since"):
            stmt = stmt.where(AuditEvent.at >= filters["since"])
        if filters.get("until"):
            stmt = stmt.where(AuditEvent.at < filters["until"])
        if filters.get("limit") is not None:
            stmt = stmt.limit(filters["limit"])
        if filters.get("offset"):
            stmt = stmt.offset(filters["offset"])
        with self.engine.connect() as conn:
            for row in conn.execute(stmt.with_only_columns(*AuditEvent.__table__.columns)):
                yield AuditRow(
                    id=row.id,
                    at=row.at,
                    action=row.action,
                    outcome=row.outcome,
                    actor_kind=row.actor_kind,
                    actor=row.actor,
                    address=row.address,
                    patient_id=row.patient_id,
                    patient_name=row.patient_name,
                    study_uid=row.study_uid,
                    details=json.loads(row.details) if row.details else {},
                    node=row.node,
                )
