"""Operations on the whole archive that the CLI and the admin pages share: deleting a
study (audited), and the state the dashboard and ``/metrics`` report."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pacs.archive import Archive
from pacs.audit import Actor
from pacs.errors import InvalidQuery, NotFound
from pacs.metrics import ArchiveState
from pacs.storage import stats
from pacs.storage.jobs import JobQueue
from pacs.storage.matching import Level, Query
from pacs.storage.objects import is_valid_uid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeletedStudy:
    study_uid: str
    patient_id: str
    patient_name: str
    instances: int
    bytes: int


def delete_study(archive: Archive, study_uid: str, actor: Actor) -> DeletedStudy:
    """Remove every instance of a study from the index and the object store, and write
    ``study.delete`` to the audit trail (a failure to delete is audited too).

    Raises InvalidQuery for a malformed UID, NotFound for an unknown study and
    StorageUnavailable when the index cannot be changed.
    """
    study_uid = study_uid.strip()
    if not is_valid_uid(study_uid):
        raise InvalidQuery(f"{study_uid[:80]!r} is not a valid Study Instance UID")
    rows = archive.search(
        Query(Level.STUDY, {"StudyInstanceUID": study_uid}, limit=1),
        ["PatientID", "PatientName"],
    )
    refs = archive.instances(study_uid=study_uid)
    if not rows and not refs:
        raise NotFound(f"no study {study_uid}")
    patient_id = str(rows[0].get("PatientID") or "") if rows else ""
    patient_name = str(rows[0].get("PatientName") or "") if rows else ""
    size = sum(r.size_bytes for r in refs)
    try:
        removed = archive.delete(refs)
    except Exception as exc:
        archive.audit.record(
            "study.delete",
            actor,
            outcome="failure",
            study_uid=study_uid,
            patient_id=patient_id,
            patient_name=patient_name,
            details={"reason": getattr(exc, "reason", type(exc).__name__)},
        )
        raise
    archive.audit.record(
        "study.delete",
        actor,
        study_uid=study_uid,
        patient_id=patient_id,
        patient_name=patient_name,
        details={"instances": removed, "bytes": size},
    )
    log.warning(
        "study %s (patient %s) deleted by %s: %d instance(s), %d bytes",
        study_uid,
        patient_id,
        actor.name,
        removed,
        size,
    )
    return DeletedStudy(study_uid, patient_id, patient_name, removed, size)


def archive_state(archive: Archive, queue: JobQueue) -> ArchiveState:
    """The archive's contents, storage, queue and remote AEs, read from the database
    (raises StorageUnavailable when it cannot be read)."""
    totals = archive.totals()
    last_contact = {
        node.ae_title: node.last_seen_at.timestamp()
        for node in archive.nodes()
        if node.last_seen_at is not None
    }
    return ArchiveState(
        patients=totals["patients"],
        studies=totals["studies"],
        series=totals["series"],
        instances=totals["instances"],
        used_bytes=totals["bytes"],
        quota_bytes=archive.settings.max_storage_bytes,
        free_bytes=archive.objects.free_bytes(),
        jobs=queue.depth(),
        jobs_oldest_due_s=queue.oldest_due(),
        last_contact=last_contact,
    )


def dashboard(
    archive: Archive, queue: JobQueue, *, days: int = 30, offset_minutes: int = 0
) -> dict[str, Any]:
    """Everything the admin dashboard draws, as JSON-able data."""
    engine = archive.index.engine
    state = archive_state(archive, queue)
    baseline, growth = stats.storage_growth(engine, days=days, offset_minutes=offset_minutes)
    per_day = stats.studies_per_day(engine, days=days, offset_minutes=offset_minutes)
    sources = {s.ae_title: s for s in stats.source_activity(engine)}
    nodes = archive.nodes()
    modalities = []
    for node in nodes:
        source = sources.pop(node.ae_title, None)
        modalities.append(
            {
                "ae_title": node.ae_title,
                "description": node.description,
                "address": f"{node.host}:{node.port}",
                "last_contact": node.last_seen_at.isoformat() if node.last_seen_at else None,
                "last_store": source.last_received_at.isoformat()
                if source and source.last_received_at
                else None,
                "series": source.series if source else 0,
                "enrolled": True,
            }
        )
    for source in sources.values():  # stored before being enrolled, or since removed
        modalities.append(
            {
                "ae_title": source.ae_title,
                "description": "",
                "address": "",
                "last_contact": None,
                "last_store": source.last_received_at.isoformat()
                if source.last_received_at
                else None,
                "series": source.series,
                "enrolled": False,
            }
        )
    kinds = sorted({kind for kind, _ in state.jobs})
    queue_rows = [
        {
            "kind": kind,
            **{s: state.jobs.get((kind, s), 0) for s in ("queued", "running", "done", "dead")},
            "oldest_due_s": round(state.jobs_oldest_due_s.get(kind, 0.0), 1),
        }
        for kind in kinds
    ]
    failures = [
        {
            "id": job.id,
            "kind": job.kind,
            "attempts": job.attempts,
            "error": job.last_error[:300],
            "at": job.finished_at.isoformat() if job.finished_at else None,
        }
        for job in queue.recent(state="dead", limit=20)
    ]
    return {
        "days": days,
        "totals": {
            "patients": state.patients,
            "studies": state.studies,
            "series": state.series,
            "instances": state.instances,
            "bytes": state.used_bytes,
        },
        "storage": {
            "used_bytes": state.used_bytes,
            "quota_bytes": state.quota_bytes or None,
            "free_bytes": state.free_bytes,
            "backend": archive.objects.name,
        },
        "studies_per_day": [
            {"day": d.day, "modality": d.modality, "studies": d.studies} for d in per_day
        ],
        "growth": {
            "baseline_bytes": baseline,
            "days": [{"day": g.day, "studies": g.studies, "bytes": g.bytes} for g in growth],
        },
        "modalities": modalities,
        "queue": queue_rows,
        "failed_jobs": failures,
    }
