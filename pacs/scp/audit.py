"""The DICOM side of the audit trail: what each association stored, queried and retrieved.

Handlers note what they do on the association; when it ends (released or
aborted) the notes become audit rows — one per study stored or retrieved, one
per query — in a single write, so auditing costs nothing per instance.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pacs.archive import Archive
from pacs.audit import Actor
from pacs.storage.matching import Level, Query

log = logging.getLogger(__name__)

_ATTRIBUTE = "_pacs_audit"


@dataclass
class _StudyNote:
    patient_id: str = ""
    patient_name: str = ""
    instances: int = 0
    bytes: int = 0
    failures: int = 0


@dataclass
class AssociationNotes:
    actor: Actor
    stored: dict[str, _StudyNote] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    queries: list[dict[str, Any]] = field(default_factory=list)
    retrieves: list[dict[str, Any]] = field(default_factory=list)


def notes(assoc: Any, ae_title: str, address: str) -> AssociationNotes:
    """The notes kept on an association (created on first use)."""
    found = getattr(assoc, _ATTRIBUTE, None)
    if found is None:
        found = AssociationNotes(Actor("ae", ae_title, address))
        setattr(assoc, _ATTRIBUTE, found)
    return found


def note_store(
    assoc: Any, ae: str, addr: str, study_uid: str, patient_id: str, patient_name: str, size: int
) -> None:
    study = notes(assoc, ae, addr).stored.setdefault(
        study_uid, _StudyNote(patient_id, patient_name)
    )
    study.instances += 1
    study.bytes += size


def note_refused_store(assoc: Any, ae: str, addr: str, reason: str) -> None:
    refused = notes(assoc, ae, addr).refused
    if len(refused) < 20:
        refused.append(reason[:200])


def note_query(assoc: Any, ae: str, addr: str, query: Query, matches: int, outcome: str) -> None:
    notes(assoc, ae, addr).queries.append(
        {
            "level": query.level.value,
            "criteria": dict(query.criteria),
            "matches": matches,
            "outcome": outcome,
        }
    )


def note_retrieve(
    assoc: Any,
    ae: str,
    addr: str,
    service: str,
    study_uids: list[str],
    instances: int,
    destination: str = "",
    outcome: str = "success",
) -> None:
    notes(assoc, ae, addr).retrieves.append(
        {
            "service": service,
            "studies": study_uids,
            "instances": instances,
            "destination": destination,
            "outcome": outcome,
        }
    )


def flush(assoc: Any, archive: Archive) -> None:
    """Write the association's notes as audit rows (called when it ends)."""
    found: AssociationNotes | None = getattr(assoc, _ATTRIBUTE, None)
    if found is None:
        return
    setattr(assoc, _ATTRIBUTE, None)
    events: list[dict[str, Any]] = []
    for study_uid, study in found.stored.items():
        events.append(
            {
                "action": "dicom.store",
                "actor": found.actor,
                "study_uid": study_uid,
                "patient_id": study.patient_id,
                "patient_name": study.patient_name,
                "details": {"instances": study.instances, "bytes": study.bytes},
            }
        )
    if found.refused:
        events.append(
            {
                "action": "dicom.store",
                "actor": found.actor,
                "outcome": "failure",
                "details": {"refused": len(found.refused), "reasons": found.refused},
            }
        )
    for query in found.queries:
        events.append(
            {
                "action": "dicom.find",
                "actor": found.actor,
                "outcome": query.pop("outcome"),
                "patient_id": query["criteria"].get("PatientID", ""),
                "patient_name": query["criteria"].get("PatientName", ""),
                "study_uid": query["criteria"].get("StudyInstanceUID", "")[:64],
                "details": query,
            }
        )
    if found.retrieves:
        patients = _patients(archive, {u for r in found.retrieves for u in r["studies"]})
        for retrieve in found.retrieves:
            for study_uid in retrieve["studies"]:
                patient_id, patient_name = patients.get(study_uid, ("", ""))
                events.append(
                    {
                        "action": f"dicom.{retrieve['service']}",
                        "actor": found.actor,
                        "outcome": retrieve["outcome"],
                        "study_uid": study_uid,
                        "patient_id": patient_id,
                        "patient_name": patient_name,
                        "details": {
                            "destination": retrieve["destination"],
                            "instances": retrieve["instances"],
                        },
                    }
                )
    archive.audit.record_many(events)


def _patients(archive: Archive, study_uids: set[str]) -> dict[str, tuple[str, str]]:
    if not study_uids:
        return {}
    rows = archive.search(
        Query(Level.STUDY, {"StudyInstanceUID": "\\".join(sorted(study_uids))}),
        ["StudyInstanceUID", "PatientID", "PatientName"],
    )
    return {r["StudyInstanceUID"]: (r.get("PatientID", ""), r.get("PatientName", "")) for r in rows}
