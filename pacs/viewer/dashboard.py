"""The operations dashboard for administrators: arrivals, storage, modalities, the job
queue, and deleting a study. Also feeds the archive-state gauges of ``/metrics``.

    GET    /admin/ops                            the page (admin)
    GET    /admin/ops/api/summary?days=30&offset=420   what the page draws (admin)
    DELETE /admin/ops/api/studies/<study_uid>    delete a study, audited (admin, CSRF)
    POST   /admin/ops/api/jobs/<id>/retry        queue a dead job again (admin, CSRF)

The charts are drawn by ``static/js/dashboard.js`` (plain SVG, nothing fetched
from elsewhere). Registered with ``dashboard.register(app, archive)``.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, render_template, request

from pacs import metrics, ops
from pacs.archive import Archive
from pacs.audit import Actor
from pacs.errors import InvalidQuery, NotFound
from pacs.jobs import make_queue
from pacs.storage.jobs import JobQueue
from pacs.viewer import i18n
from pacs.viewer.access import require_principal
from pacs.viewer.auth import login_required
from pacs.viewer.ui import boot

log = logging.getLogger(__name__)

bp = Blueprint("ops", __name__, template_folder="templates", url_prefix="/admin/ops")
QUEUE_EXTENSION = "pacs_job_queue"
MAX_DAYS = 366

# key: (Vietnamese, English)
STRINGS: dict[str, tuple[str, str]] = {
    "ops.title": ("Vận hành hệ thống", "Operations"),
    "ops.nav": ("Vận hành", "Operations"),
    "ops.refresh": ("Làm mới", "Refresh"),
    "ops.updated": ("Cập nhật lúc {time}", "Updated at {time}"),
    "ops.days": ("Số ngày", "Days"),
    "ops.studies": ("Ca chụp", "Studies"),
    "ops.instances": ("Ảnh", "Instances"),
    "ops.patients": ("Bệnh nhân", "Patients"),
    "ops.storage_used": ("Dung lượng đã dùng", "Storage used"),
    "ops.storage_quota": ("Hạn mức", "Quota"),
    "ops.storage_free": ("Còn trống", "Free"),
    "ops.no_quota": ("không giới hạn", "no quota"),
    "ops.per_day": ("Ca chụp mỗi ngày theo loại máy", "Studies per day by modality"),
    "ops.growth": ("Dung lượng lưu trữ theo thời gian", "Storage growth"),
    "ops.modalities": ("Máy chụp và nút DICOM", "Modalities and DICOM nodes"),
    "ops.ae_title": ("AE title", "AE title"),
    "ops.address": ("Địa chỉ", "Address"),
    "ops.description": ("Mô tả", "Description"),
    "ops.last_contact": ("Liên lạc gần nhất", "Last contact"),
    "ops.last_store": ("Lần gửi ảnh gần nhất", "Last store"),
    "ops.series": ("Loạt ảnh", "Series"),
    "ops.not_enrolled": ("chưa đăng ký", "not enrolled"),
    "ops.queue": ("Hàng đợi công việc", "Job queue"),
    "ops.kind": ("Loại công việc", "Kind"),
    "ops.queued": ("Đang chờ", "Queued"),
    "ops.running": ("Đang chạy", "Running"),
    "ops.done": ("Xong", "Done"),
    "ops.dead": ("Thất bại", "Failed"),
    "ops.oldest_due": ("Chờ lâu nhất", "Oldest due"),
    "ops.queue_empty": ("Hàng đợi trống.", "The queue is empty."),
    "ops.failed_jobs": ("Công việc thất bại", "Failed jobs"),
    "ops.retry": ("Chạy lại", "Retry"),
    "ops.attempts": ("Số lần thử", "Attempts"),
    "ops.error": ("Lỗi", "Error"),
    "ops.no_data": ("Chưa có dữ liệu trong khoảng này.", "No data in this period."),
    "ops.ago_s": ("{n} giây trước", "{n} s ago"),
    "ops.ago_m": ("{n} phút trước", "{n} min ago"),
    "ops.ago_h": ("{n} giờ trước", "{n} h ago"),
    "ops.ago_d": ("{n} ngày trước", "{n} days ago"),
    "ops.delete_title": ("Xóa ca chụp", "Delete a study"),
    "ops.delete_help": (
        "Xóa vĩnh viễn một ca chụp (chỉ mục và tệp ảnh). Thao tác được ghi vào nhật ký.",
        "Delete a study for good (index and image files). The deletion is audited.",
    ),
    "ops.study_uid": ("Study Instance UID", "Study Instance UID"),
    "ops.delete": ("Xóa ca chụp", "Delete study"),
    "ops.delete_confirm": (
        "Xóa vĩnh viễn ca chụp {uid}? Không thể hoàn tác.",
        "Delete study {uid} for good? This cannot be undone.",
    ),
    "ops.deleted": (
        "Đã xóa ca chụp {uid}: {n} ảnh.",
        "Deleted study {uid}: {n} instance(s).",
    ),
}


def text(key: str, **values: object) -> str:
    """One of this page's strings in the current language."""
    vi, en = STRINGS[key]
    template = en if i18n.current_language() == "en" else vi
    return template.format(**values) if values else template


def _catalog() -> dict[str, str]:
    index = 1 if i18n.current_language() == "en" else 0
    return {key: pair[index] for key, pair in STRINGS.items()}


def _archive() -> Archive:
    return current_app.extensions["pacs_archive"]


def _queue() -> JobQueue:
    return current_app.extensions[QUEUE_EXTENSION]


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name, "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidQuery(f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise InvalidQuery(f"{name} must be between {low} and {high}")
    return value


# ---------------------------------------------------------------- page and JSON


@bp.get("")
@login_required("admin")
def dashboard_page() -> Any:
    page = boot(page="ops")
    page["strings"] = {**page["strings"], **_catalog()}
    return render_template("ops/dashboard.html", boot=page, ot=text)


@bp.get("/api/summary")
def summary() -> Response:
    """What the dashboard draws: ``days`` (1–366, default 30) and the browser's
    ``offset`` from UTC in minutes (Vietnam: 420) for calendar days."""
    require_principal("admin")
    days = _int_arg("days", 30, 1, MAX_DAYS)
    offset = _int_arg("offset", 0, -14 * 60, 14 * 60)
    return jsonify(ops.dashboard(_archive(), _queue(), days=days, offset_minutes=offset))


@bp.delete("/api/studies/<study_uid>")
def delete_study(study_uid: str) -> Response:
    """Delete a study (admins only; audited as ``study.delete``)."""
    principal = require_principal("admin")
    actor = Actor("user", principal.name, request.remote_addr or "")
    deleted = ops.delete_study(_archive(), study_uid, actor)
    return jsonify(
        study_uid=deleted.study_uid,
        instances=deleted.instances,
        bytes=deleted.bytes,
        message=text("ops.deleted", uid=deleted.study_uid, n=deleted.instances),
    )


@bp.post("/api/jobs/<int:job_id>/retry")
def retry_job(job_id: int) -> Response:
    principal = require_principal("admin")
    if not _queue().retry(job_id):
        raise NotFound(f"job {job_id} is not a failed job")
    log.info("job %d queued again by %s", job_id, principal.name)
    return jsonify(id=job_id, state="queued")


@bp.after_request
def _security_headers(response: Response) -> Response:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'",
    )
    return response


def register(app: Flask, archive: Archive) -> None:
    """Add the dashboard, and report the archive's state on ``/metrics``."""
    if bp.name in app.blueprints:
        return
    queue = make_queue(archive, app.config["PACS_SETTINGS"])
    app.extensions[QUEUE_EXTENSION] = queue
    app.register_blueprint(bp)
    metrics.set_state_source(lambda: ops.archive_state(archive, queue))
