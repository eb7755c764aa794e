"""The audit trail on the web side: recording what web callers do, and the admin page.

:func:`record` writes one row for the current request's caller (user, share
link or partner token, with the client address) through the archive's
:class:`pacs.audit.AuditLog`; the views call it for sign-ins, searches, study
opens, downloads, sharing and user changes (the action names are listed in
``docs/audit.md``). Never pass passwords, PINs or tokens in ``details``.

The page ``/admin/audit`` (administrators only) filters the trail by user,
patient, action and dates; ``/admin/audit.csv`` exports the same selection.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Flask, Response, current_app, render_template, request

from pacs.audit import Actor, AuditLog
from pacs.viewer import i18n
from pacs.viewer.access import current_principal

log = logging.getLogger(__name__)

bp = Blueprint("admin_audit", __name__, template_folder="templates")

PAGE_SIZE = 100
#: the actions the filter offers (prefix filters end with *); see docs/audit.md
ACTION_CHOICES = (
    "login",
    "logout",
    "worklist.search",
    "study.*",
    "image.download",
    "share.*",
    "user.*",
    "ae.*",
    "audit.export",
    "dicom.*",
)
CSV_COLUMNS = (
    "at",
    "action",
    "outcome",
    "actor_kind",
    "actor",
    "address",
    "patient_id",
    "patient_name",
    "study_uid",
    "details",
    "node",
)


def audit_log() -> AuditLog:
    return current_app.extensions["pacs_archive"].audit


def client_address() -> str:
    return request.remote_addr or ""


def request_actor() -> Actor:
    """The caller of this request as an audit actor (nobody → kind "anonymous")."""
    principal = current_principal()
    address = client_address()
    if principal is None:
        return Actor("anonymous", "", address)
    return Actor(principal.kind, principal.name, address)


def record(
    action: str,
    *,
    actor: Actor | None = None,
    outcome: str = "success",
    study: Mapping[str, Any] | None = None,
    study_uid: str = "",
    patient_id: str = "",
    patient_name: str = "",
    details: Mapping[str, Any] | None = None,
) -> None:
    """One audit row for this request. ``study`` may be an index row (``StudyInstanceUID``,
    ``PatientID``, ``PatientName``) giving the study and patient. Never raises."""
    if study is not None:
        study_uid = study_uid or str(study.get("StudyInstanceUID") or "")
        patient_id = patient_id or str(study.get("PatientID") or "")
        patient_name = patient_name or str(study.get("PatientName") or "")
    try:
        audit_log().record(
            action,
            actor or request_actor(),
            outcome=outcome,
            study_uid=study_uid,
            patient_id=patient_id,
            patient_name=patient_name,
            details=details,
        )
    except Exception:  # auditing must never break what it records (AuditLog logs its own)
        log.exception("audit %s not recorded", action)


# ---------------------------------------------------------------- the page


def _day(raw: str) -> datetime | None:
    try:
        return datetime.strptime(raw.strip(), "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        return None


def _filters(args: Mapping[str, str]) -> dict[str, Any]:
    """AuditLog filters from the page's parameters (unparseable dates are ignored)."""
    until = _day(args.get("date_to", ""))
    action = args.get("action", "").strip()
    return {
        "actor": args.get("user", "").strip()[:128] or None,
        "patient": args.get("patient", "").strip()[:64] or None,
        "action": action[:48] or None,
        "study_uid": args.get("study_uid", "").strip()[:64] or None,
        "since": _day(args.get("date_from", "")),
        "until": until + timedelta(days=1) if until else None,
    }


def _row_json(row: Any) -> dict[str, Any]:
    return {
        "at": row.at.replace(tzinfo=row.at.tzinfo or UTC).isoformat(timespec="seconds"),
        "action": row.action,
        "outcome": row.outcome,
        "actor_kind": row.actor_kind,
        "actor": row.actor,
        "address": row.address,
        "patient_id": row.patient_id,
        "patient_name": row.patient_name,
        "study_uid": row.study_uid,
        "details": row.details,
        "node": row.node,
    }


def admin_only(view: Callable[..., Any]) -> Callable[..., Any]:
    """:func:`pacs.viewer.auth.login_required` ("admin"), looked up when called: auth
    imports this module (to record sign-ins), so this module cannot import auth."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from pacs.viewer.auth import login_required

        return login_required("admin")(view)(*args, **kwargs)

    return wrapper


@bp.get("/admin/audit")
@admin_only
def audit_page() -> Any:
    try:
        page_no = max(1, min(100_000, int(request.args.get("page", "1"))))
    except ValueError:
        page_no = 1
    filters = _filters(request.args)
    rows = audit_log().query(**filters, limit=PAGE_SIZE + 1, offset=(page_no - 1) * PAGE_SIZE)
    return render_template(
        "ui/audit.html",
        rows=[_row_json(r) for r in rows[:PAGE_SIZE]],
        more=len(rows) > PAGE_SIZE,
        page=page_no,
        args=request.args,
        actions=ACTION_CHOICES,
    )


def _csv_lines(rows: Iterator[Any]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    # A BOM so that Excel opens Vietnamese names as UTF-8.
    yield "\ufeff"
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        data = _row_json(row)
        data["details"] = "; ".join(f"{k}={v}" for k, v in data["details"].items())
        writer.writerow([data[c] for c in CSV_COLUMNS])
        if buffer.tell() > 64_000:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


@bp.get("/admin/audit.csv")
@admin_only
def audit_csv() -> Any:
    """The selection as CSV (UTF-8 with a BOM for spreadsheets), streamed."""
    filters = _filters(request.args)
    record("audit.export", details={k: str(v) for k, v in filters.items() if v is not None})
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    rows = audit_log().iter_rows(**filters, limit=None)
    return Response(
        _csv_lines(rows),
        mimetype="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="pacs-audit-{stamp}.csv"',
            "Cache-Control": "no-store",
        },
    )


def register(app: Flask) -> None:
    app.register_blueprint(bp)
    app.jinja_env.globals.setdefault("audit_outcome_label", _outcome_label)


def _outcome_label(outcome: str) -> str:
    return i18n.t(f"audit.outcome.{outcome}") if outcome in ("success", "failure") else outcome
