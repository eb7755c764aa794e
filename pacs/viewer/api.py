"""The JSON the pages use: worklist search, study and series details, tags, assignments.

Every endpoint resolves the caller first (:func:`require_principal`) and passes
its scope to the archive, so a referring doctor (or a share link) never learns
that a study outside their scope exists: such a study is simply "not found".
Pixel endpoints live in :mod:`pacs.viewer.frames`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request

from pacs.archive import Archive
from pacs.errors import InvalidQuery, NotFound
from pacs.storage.index import InstanceRef
from pacs.storage.matching import Level, Query
from pacs.viewer import admin_audit, frames, worklist
from pacs.viewer.access import Principal, require_principal
from pacs.viewer.auth import accounts, user_principal
from pacs.viewer.scoped import archive, scoped_instance, scoped_refs, study_row
from pacs.viewer.series_meta import SeriesMetadata, stack_order
from pacs.viewer.share_deid import deid_view
from pacs.viewer.tags import instance_tags
from pacs.viewer.users import AccountError

log = logging.getLogger(__name__)

bp = Blueprint("api", __name__, url_prefix="/api")
# The pixel endpoints live in frames.py; added once, when this module loads.
frames.register(bp)

SERIES_KEYWORDS = (
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "BodyPartExamined",
    "SeriesDate",
    "SeriesTime",
    "NumberOfSeriesRelatedInstances",
)
MAX_PRIORS = 50
_META = "pacs_series_metadata"
#: who may search the worklist: every kind of caller but a share link (one study, no list)
SEARCH_ROLES = ("admin", "radiologist", "referring", "partner")
#: worklist parameters worth keeping in the audit trail (what was looked for)
_AUDITED_SEARCH = (
    "name",
    "patient_id",
    "accession",
    "date_from",
    "date_to",
    "modality",
    "description",
    "referring",
)


def series_metadata() -> SeriesMetadata:
    return current_app.extensions[_META]


# ---------------------------------------------------------------- worklist


@bp.get("/studies")
def search_studies() -> Any:
    """One page of the worklist (parameters: see :func:`pacs.viewer.worklist.build_query`)."""
    principal = require_principal(*SEARCH_ROLES)
    started = time.perf_counter()
    page = worklist.search(archive(), request.args, principal.scope())
    items = [worklist.study_json(r) for r in page.rows]
    _audit_search(principal, page)
    user_id = principal.extra.get("user_id") if principal.kind == "user" else None
    if user_id is not None and items:
        opened = accounts().store.opened(int(user_id), [i["study_uid"] for i in items])
        for item in items:
            seen = opened.get(item["study_uid"])
            item["opened_at"] = seen.isoformat() if seen else None
    return jsonify(
        total=page.total,
        page=page.page,
        page_size=page.page_size,
        pages=max(1, -(-page.total // page.page_size)),
        items=items,
        elapsed_ms=round((time.perf_counter() - started) * 1000, 1),
    )


def _audit_search(principal: Principal, page: worklist.Page) -> None:
    """One row per search: what was looked for, how many matched, and the patient when
    the search named one (by ID, or a single matching patient)."""
    criteria = {k: request.args[k][:64] for k in _AUDITED_SEARCH if request.args.get(k)}
    patients = {(r.get("PatientID", ""), r.get("PatientName", "")) for r in page.rows}
    patient_id, patient_name = next(iter(patients)) if len(patients) == 1 else ("", "")
    admin_audit.record(
        "worklist.search",
        patient_id=patient_id or criteria.get("patient_id", ""),
        patient_name=patient_name or criteria.get("name", ""),
        study_uid=str(page.rows[0].get("StudyInstanceUID", "")) if len(page.rows) == 1 else "",
        details={"criteria": criteria, "matches": page.total, "page": page.page},
    )


# ---------------------------------------------------------------- one study


def _series_json(row: dict[str, Any], refs: list[InstanceRef]) -> dict[str, Any]:
    middle = refs[len(refs) // 2] if refs else None
    return {
        "series_uid": row.get("SeriesInstanceUID", ""),
        "modality": row.get("Modality", ""),
        "number": row.get("SeriesNumber"),
        "description": row.get("SeriesDescription", ""),
        "body_part": row.get("BodyPartExamined", ""),
        "date": row.get("SeriesDate", ""),
        "time": row.get("SeriesTime", ""),
        "num_instances": len(refs),
        "num_frames": sum(r.frames or 1 for r in refs),
        "first_sop_uid": refs[0].sop_uid if refs else None,
        "middle_sop_uid": middle.sop_uid if middle else None,
        "has_pixels": any(r.rows for r in refs),
        "multiframe": any((r.frames or 1) > 1 for r in refs),
    }


@bp.get("/studies/<study_uid>")
def study_detail(study_uid: str) -> Any:
    """The study, its series (in series-number order) and the patient's other studies.

    A share link sees no other study (no priors); a de-identified one sees
    pseudonymous UIDs and cleaned details (:mod:`pacs.viewer.share_deid`).
    """
    principal = require_principal()
    deid = deid_view(principal)
    if deid is not None:
        study_uid = deid.real(study_uid)
    row = study_row(principal, study_uid)
    refs = scoped_refs(principal, study_uid=study_uid)
    by_series: dict[str, list[InstanceRef]] = {}
    for ref in refs:
        by_series.setdefault(ref.series_uid, []).append(ref)
    series_rows = archive().search(
        Query(Level.SERIES, {"StudyInstanceUID": study_uid}, study_scope=principal.scope()),
        SERIES_KEYWORDS,
    )
    series = [
        _series_json(s, by_series[s["SeriesInstanceUID"]])
        for s in series_rows
        if s["SeriesInstanceUID"] in by_series
    ]
    priors = []
    patient_id = row.get("PatientID", "")
    if principal.kind == "share":
        patient_id = ""  # a link shows its study only
    if patient_id and not any(c in patient_id for c in "*?\\"):
        prior_rows = archive().search(
            Query(
                Level.STUDY,
                {"PatientID": patient_id},
                study_scope=principal.scope(),
                order_by=[("StudyDate", True), ("StudyTime", True)],
                limit=MAX_PRIORS + 1,
            ),
            worklist.KEYWORDS,
        )
        priors = [worklist.study_json(p) for p in prior_rows if p["StudyInstanceUID"] != study_uid][
            :MAX_PRIORS
        ]
    body: dict[str, Any] = {
        "study": worklist.study_json(row),
        "series": series,
        "priors": priors,
    }
    if principal.kind == "user" and principal.role in ("admin", "radiologist"):
        body["assignments"] = _assignments_json(study_uid)
    if deid is not None:
        body["study"] = deid.study(body["study"])
        body["series"] = [deid.series(s) for s in body["series"]]
    return jsonify(body)


@bp.post("/studies/<study_uid>/opened")
def mark_opened(study_uid: str) -> Any:
    """Record that the signed-in user opened the study (a prior shown in the viewer)."""
    user, principal = user_principal()
    row = study_row(principal, study_uid)
    accounts().store.mark_opened(user.id, study_uid)
    admin_audit.record("study.open", study=row, details={"as": "prior"})
    return jsonify(status="ok")


# ---------------------------------------------------------------- assignments


def _assignments_json(study_uid: str) -> list[dict[str, Any]]:
    return [
        {
            "username": a.username,
            "name": a.display_name,
            "kind": a.kind,
            "by": a.assigned_by,
            "at": a.created_at.isoformat(),
            "expires_at": a.expires_at.isoformat() if a.expires_at else None,
        }
        for a in accounts().store.assignments([study_uid])
    ]


@bp.get("/studies/<study_uid>/assignments")
def list_assignments(study_uid: str) -> Any:
    principal = require_principal("admin", "radiologist")
    study_row(principal, study_uid)
    return jsonify(assignments=_assignments_json(study_uid))


@bp.post("/studies/<study_uid>/assignments")
def add_assignment(study_uid: str) -> Any:
    """Let a referring doctor see the study: ``{"username": ...}``."""
    require_principal("admin", "radiologist")
    user, principal = user_principal()
    study_row(principal, study_uid)
    data = request.get_json(silent=True) or {}
    try:
        target = accounts().get(str(data.get("username", "")))
    except AccountError as exc:
        raise NotFound(exc.message) from exc
    if target.role != "referring":
        raise InvalidQuery("studies are assigned to referring doctors only")
    created = accounts().store.assign(target.id, study_uid, by_user_id=user.id)
    if created:
        log.info("study %s assigned to %s by %s", study_uid, target.username, user.username)
    return jsonify(assignments=_assignments_json(study_uid)), 201 if created else 200


@bp.delete("/studies/<study_uid>/assignments/<username>")
def remove_assignment(study_uid: str, username: str) -> Any:
    require_principal("admin", "radiologist")
    user, principal = user_principal()
    study_row(principal, study_uid)
    try:
        target = accounts().get(username)
    except AccountError as exc:
        raise NotFound(exc.message) from exc
    if accounts().store.unassign(target.id, study_uid):
        log.info("study %s unassigned from %s by %s", study_uid, target.username, user.username)
    return jsonify(assignments=_assignments_json(study_uid))


# ---------------------------------------------------------------- series and instances


@bp.get("/series/<series_uid>")
def series_detail(series_uid: str) -> Any:
    """Every instance of the series with its geometry, in stack order.

    Also asks the renderer to start decoding the series (the viewer is about to
    scroll through it).
    """
    principal = require_principal()
    deid = deid_view(principal)
    shown_uid = series_uid
    if deid is not None:
        series_uid = deid.real(series_uid)
    refs = scoped_refs(principal, series_uids=[series_uid])
    if not refs:
        raise NotFound(f"no series {series_uid}")
    frames.prefetch(archive(), refs)
    summaries = series_metadata().instances(refs)
    ordered, how = stack_order(summaries)
    study_uid = refs[0].study_uid
    if deid is not None:
        ordered = [deid.instance_summary(i) for i in ordered]
        study_uid = deid.shown(study_uid)
    return jsonify(
        series_uid=shown_uid,
        study_uid=study_uid,
        sorted_by=how,
        instances=ordered,
    )


@bp.get("/instances/<sop_uid>/tags")
def tags(sop_uid: str) -> Any:
    """The instance's header for the tag browser (pixel data summarised)."""
    principal = require_principal()
    deid = deid_view(principal)
    if deid is not None:
        ref = scoped_instance(principal, deid.real(sop_uid))
        return jsonify(deid.tags(archive(), ref))
    ref = scoped_instance(principal, sop_uid)
    return jsonify(instance_tags(archive(), ref))


def register(app: Flask, archive: Archive) -> None:
    app.extensions[_META] = SeriesMetadata(archive)
    app.register_blueprint(bp)
