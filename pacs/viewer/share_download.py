"""Downloads: a study (or a share link's series) as a ZIP, and one image as DICOM or JPEG.

The ZIP holds the DICOM files as archived (de-identified copies for a
de-identified link), a plain JPEG of every image for people without a DICOM
viewer, and a README in Vietnamese and English. It is streamed as it is
built: nothing is spooled, and the first bytes leave at once.

Every download is one audit row (``study.download``, ``image.download``); the
frames the viewer fetches to display are not downloads and are not audited.
Callers need ``can_download`` (share links made without it get 403).
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, Response, request

from pacs.archive import Archive
from pacs.deidentify import DeidentifyError, DeidReport, deidentify_file
from pacs.errors import InvalidQuery, NotFound, PacsError
from pacs.storage.index import InstanceRef
from pacs.storage.matching import Level, Query
from pacs.viewer import admin_audit
from pacs.viewer.access import Forbidden, Principal, require_principal
from pacs.viewer.scoped import archive, scoped_instance, scoped_refs, study_row
from pacs.viewer.share_deid import DeidView, deid_view

log = logging.getLogger(__name__)

bp = Blueprint("share_download", __name__, url_prefix="/api")

#: JPEGs made per multi-frame instance (a long cine would make the ZIP huge)
MAX_JPEG_FRAMES = 100
JPEG_QUALITY = 90
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class CannotDeidentify(PacsError):
    """A de-identified caller asked for an object that cannot be de-identified: it is
    withheld, never served as it is."""

    http_status = 422
    dicom_status = 0xC000


def _downloader() -> Principal:
    principal = require_principal()
    if not principal.can_download:
        raise Forbidden("this link does not allow downloads")
    return principal


class _Sink(io.RawIOBase):
    """A write-only stream for zipfile that hands over what was written (no seeking)."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        block = bytes(data)
        self._chunks.append(block)
        self._position += len(block)
        return len(block)

    def tell(self) -> int:
        return self._position

    def seekable(self) -> bool:
        return False

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


def _safe(text: str, fallback: str) -> str:
    cleaned = _SAFE.sub("_", text).strip("_")[:40]
    return cleaned or fallback


def _series_folders(refs: list[InstanceRef], study_uid: str) -> dict[str, str]:
    """Series UID → folder name ``S002_CT`` (number and modality, never a name)."""
    rows = archive().search(
        Query(Level.SERIES, {"StudyInstanceUID": study_uid}),
        ["SeriesInstanceUID", "SeriesNumber", "Modality"],
    )
    info = {r["SeriesInstanceUID"]: r for r in rows}
    folders: dict[str, str] = {}
    for i, uid in enumerate(
        sorted({r.series_uid for r in refs}, key=lambda u: _series_key(info, u))
    ):
        row = info.get(uid, {})
        number = row.get("SeriesNumber")
        label = (
            f"S{int(number):03d}" if str(number or "").lstrip("-").isdigit() else f"X{i + 1:03d}"
        )
        folders[uid] = f"{label}_{_safe(str(row.get('Modality') or ''), 'OT')}"
    # Two series with one number and modality: keep them apart.
    seen: dict[str, int] = {}
    for uid, name in list(folders.items()):
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            folders[uid] = f"{name}_{seen[name]}"
    return folders


def _series_key(info: dict[str, Any], uid: str) -> tuple[int, str]:
    number = info.get(uid, {}).get("SeriesNumber")
    try:
        return int(number), uid
    except (TypeError, ValueError):
        return 1_000_000, uid


def _readme(row: dict[str, Any], deid: DeidView | None, notes: list[str]) -> str:
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["PACS — ảnh chẩn đoán / diagnostic images", ""]
    if deid is None:
        lines += [
            f"Bệnh nhân / Patient: {str(row.get('PatientName', '')).replace('^', ' ')}",
            f"Mã bệnh nhân / Patient ID: {row.get('PatientID', '')}",
            f"Ngày chụp / Study date: {row.get('StudyDate', '')}",
            f"Mô tả / Description: {row.get('StudyDescription', '')}",
        ]
    else:
        lines += [
            "Ảnh đã được ẩn danh (PS3.15 Basic Profile): tên, mã, ngày tháng đã thay đổi.",
            "De-identified (PS3.15 Basic Profile): names and IDs removed, dates shifted.",
        ]
    lines += [
        f"Tạo lúc / Made: {made}",
        "",
        "DICOM/  tệp DICOM gốc, mở bằng phần mềm xem DICOM / DICOM files, for a DICOM viewer",
        "JPEG/   ảnh JPEG để xem nhanh (không dùng để chẩn đoán) /",
        "        plain JPEG images for a quick look (not for diagnosis)",
    ]
    if notes:
        lines += ["", "Lưu ý / Notes:"] + [f"- {n}" for n in notes]
    return "\r\n".join(lines) + "\r\n"


def _dicom_bytes(
    store: Archive, ref: InstanceRef, deid: DeidView | None
) -> tuple[bytes, DeidReport | None]:
    with store.open(ref) as stream:
        if deid is None:
            return stream.read(), None
        return deidentify_file(stream, deid.pseudo)


def _jpegs(store: Archive, ref: InstanceRef) -> Iterator[tuple[int, bytes]]:
    from pacs.viewer import rendering

    frames = min(rendering.frame_count(store, ref), MAX_JPEG_FRAMES)
    for frame in range(frames):
        yield (
            frame + 1,
            rendering.render(
                store, ref, rendering.RenderRequest(frame=frame, quality=JPEG_QUALITY)
            ),
        )


def _zip_stream(
    store: Archive,
    refs: list[InstanceRef],
    folders: dict[str, str],
    row: dict[str, Any],
    deid: DeidView | None,
) -> Iterator[bytes]:
    sink = _Sink()
    notes: list[str] = []
    burned: set[str] = set()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        counters: dict[str, int] = {}
        for ref in refs:
            folder = folders[ref.series_uid]
            counters[folder] = counters.get(folder, 0) + 1
            name = f"I{counters[folder]:04d}"
            try:
                data, report = _dicom_bytes(store, ref, deid)
            except Exception as exc:  # one unreadable object must not end the whole ZIP
                log.warning("ZIP: instance %s skipped: %s", ref.sop_uid, exc)
                notes.append(f"{folder}/{name}: không đọc được / unreadable")
                continue
            if report is not None and report.burned_in != "no":
                burned.add(folder)
            zf.writestr(f"DICOM/{folder}/{name}.dcm", data)
            yield sink.take()
            if not ref.rows:
                continue
            try:
                for frame, jpeg in _jpegs(store, ref):
                    suffix = f"_F{frame:03d}" if (ref.frames or 1) > 1 else ""
                    info = zipfile.ZipInfo(f"JPEG/{folder}/{name}{suffix}.jpg")
                    info.compress_type = zipfile.ZIP_STORED
                    zf.writestr(info, jpeg)
                    yield sink.take()
            except PacsError as exc:
                notes.append(f"{folder}/{name}: không tạo được JPEG / no JPEG ({exc.reason})")
            except Exception as exc:  # as above: keep going
                log.warning("ZIP: JPEG of %s failed: %s", ref.sop_uid, exc)
                notes.append(f"{folder}/{name}: không tạo được JPEG / no JPEG")
            if (ref.frames or 1) > MAX_JPEG_FRAMES:
                notes.append(
                    f"{folder}/{name}: JPEG cho {MAX_JPEG_FRAMES} khung đầu / "
                    f"JPEG of the first {MAX_JPEG_FRAMES} frames"
                )
        for folder in sorted(burned):
            notes.append(
                f"{folder}: ảnh có thể chứa chữ in sẵn (tên bệnh nhân) / "
                "pixels may show burned-in text (patient's name)"
            )
        zf.writestr("README.txt", _readme(row, deid, notes))
    yield sink.take()


def _ordered(refs: list[InstanceRef], folders: dict[str, str]) -> list[InstanceRef]:
    return sorted(refs, key=lambda r: (folders[r.series_uid], r.instance_number or 0, r.sop_uid))


@bp.get("/studies/<study_uid>/download.zip")
def download_study(study_uid: str) -> Response:
    """The study (as the caller may see it) as a ZIP of DICOM files and JPEGs."""
    principal = _downloader()
    deid = deid_view(principal)
    real = deid.real(study_uid) if deid is not None else study_uid
    row = study_row(principal, real)
    refs = scoped_refs(principal, study_uid=real)
    if not refs:
        raise NotFound("no images to download")
    folders = _series_folders(refs, real)
    refs = _ordered(refs, folders)
    admin_audit.record(
        "study.download",
        study=row,
        details={"format": "zip", "instances": len(refs), "deidentified": deid is not None},
    )
    date = str(row.get("StudyDate") or "")
    if deid is not None:
        date = deid.pseudo.shift_date(date) if date else ""
    filename = f"study-{_safe(date, 'images')}.zip"
    return Response(
        _zip_stream(archive(), refs, folders, row, deid),
        mimetype="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "private, no-store",
        },
    )


@bp.get("/instances/<sop_uid>/download")
def download_image(sop_uid: str) -> Response:
    """One image: ``?format=dicom`` (the file) or ``jpeg`` (``&frame=n``, from 1)."""
    principal = _downloader()
    deid = deid_view(principal)
    ref = scoped_instance(principal, deid.real(sop_uid) if deid is not None else sop_uid)
    fmt = request.args.get("format", "dicom")
    if fmt not in ("dicom", "jpeg"):
        raise InvalidQuery("format must be dicom or jpeg")
    row = study_row(principal, ref.study_uid)
    if fmt == "dicom":
        try:
            data, _ = _dicom_bytes(archive(), ref, deid)
        except DeidentifyError as exc:
            raise CannotDeidentify(str(exc)) from exc
        mimetype, ext, frame = "application/dicom", "dcm", None
    else:
        from pacs.viewer import rendering

        try:
            frame = int(request.args.get("frame", "1"))
        except ValueError as exc:
            raise InvalidQuery("frame must be a whole number") from exc
        if frame < 1:
            raise InvalidQuery("frames are numbered from 1")
        data = rendering.render(
            archive(), ref, rendering.RenderRequest(frame=frame - 1, quality=JPEG_QUALITY)
        )
        mimetype, ext = "image/jpeg", "jpg"
    admin_audit.record(
        "image.download",
        study=row,
        details={
            "format": fmt,
            "sop": ref.sop_uid,
            "frame": frame,
            "deidentified": deid is not None,
        },
    )
    return Response(
        data,
        mimetype=mimetype,
        headers={
            "Content-Disposition": f'attachment; filename="image.{ext}"',
            "Cache-Control": "private, no-store",
        },
    )


def register(app: Flask) -> None:
    app.register_blueprint(bp)
