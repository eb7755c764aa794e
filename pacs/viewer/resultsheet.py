"""The printable result sheet, and the key images chosen for it.

What the patient takes home instead of film: an A4 page with the patient and
study details, up to four key images chosen by the radiologist, and the QR
code of a share link. It is an HTML page with print styles (the browser prints
it) and a PDF made here with reportlab.

The share link's token exists only in the answer that created it, so the QR
code is made at that moment: the sheet page creates the link (``POST``) and
shows the sheet with it; its PDF button posts the token back (never in an
address), and the PDF is made only if that token opens a live link of this
very study.

Key images are stored per study (Study Instance UID + SOP Instance UID +
frame, at most four); radiologists and administrators choose them in the
viewer.
"""

from __future__ import annotations

import io
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, render_template, request

from pacs.errors import InvalidQuery, NotFound, PacsError
from pacs.storage.matching import Level, Query
from pacs.storage.objects import is_valid_uid
from pacs.storage.sharing_models import MAX_KEY_IMAGES, KeyImage, ShareLink, TooManyKeyImages
from pacs.viewer import admin_audit, i18n
from pacs.viewer.access import Forbidden
from pacs.viewer.auth import current_user, login_required, user_principal
from pacs.viewer.scoped import archive, scoped_instance, study_row
from pacs.viewer.share import sharing

log = logging.getLogger(__name__)

bp = Blueprint("resultsheet", __name__, template_folder="templates")

EDITOR_ROLES = ("admin", "radiologist")
#: TrueType fonts with Vietnamese letters, tried in order (the setting comes first).
#: DejaVu Sans ships with pacs (pacs/viewer/fonts, Bitstream Vera licence), so a
#: server without fonts installed still prints names with their diacritics.
FONT_CANDIDATES = (
    str(Path(__file__).parent / "fonts" / "DejaVuSans.ttf"),
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
)
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class KeyImageLimit(PacsError):
    http_status = 409
    dicom_status = 0xA700


# ---------------------------------------------------------------- formatting


def format_name(pn: str) -> str:
    """``Lê^Quang Vinh^^BS.`` → ``BS. Lê Quang Vinh`` (as the pages show names)."""
    groups = []
    for group in str(pn or "").split("="):
        parts = (group.split("^") + [""] * 5)[:5]
        family, given, middle, prefix, suffix = (p.strip() for p in parts)
        groups.append(" ".join(p for p in (prefix, family, given, middle, suffix) if p))
    return " = ".join(g for g in groups if g)


def format_date(da: str) -> str:
    da = str(da or "")
    if len(da) != 8 or not da.isdigit():
        return da
    y, m, d = da[:4], da[4:6], da[6:]
    if i18n.current_language() == "vi":
        return f"{d}/{m}/{y}"
    return f"{int(d)} {MONTHS[int(m) - 1] if 1 <= int(m) <= 12 else m} {y}"


def format_time(tm: str) -> str:
    tm = str(tm or "")
    return f"{tm[:2]}:{tm[2:4]}" if len(tm) >= 4 and tm[:4].isdigit() else ""


def format_when(value: datetime) -> str:
    local = value.astimezone()
    if i18n.current_language() == "vi":
        return local.strftime("%d/%m/%Y %H:%M")
    return local.strftime("%d %b %Y %H:%M")


# ---------------------------------------------------------------- key images


def _editor() -> tuple[Any, Any]:
    user, principal = user_principal()
    if principal.role not in EDITOR_ROLES:
        raise Forbidden(f"this needs one of the roles: {', '.join(EDITOR_ROLES)}")
    return user, principal


def _key_json(key: KeyImage) -> dict[str, Any]:
    return {
        "sop_uid": key.sop_uid,
        "frame": key.frame,
        "position": key.position,
        "chosen_by": key.chosen_by,
        "chosen_at": key.chosen_at.isoformat(timespec="seconds"),
    }


@bp.get("/api/studies/<study_uid>/key-images")
def list_key_images(study_uid: str) -> Any:
    _, principal = user_principal()
    study_row(principal, study_uid)
    keys = sharing().store.key_images(study_uid)
    return jsonify(key_images=[_key_json(k) for k in keys], max=MAX_KEY_IMAGES)


def _key_target(principal: Any, study_uid: str, data: Any) -> tuple[dict[str, Any], str, int]:
    row = study_row(principal, study_uid)
    sop_uid = str(data.get("sop_uid", ""))
    try:
        frame = int(data.get("frame", 1))
    except (TypeError, ValueError) as exc:
        raise InvalidQuery("frame must be a whole number") from exc
    if not is_valid_uid(sop_uid) or frame < 1:
        raise InvalidQuery("give sop_uid and a frame from 1")
    ref = scoped_instance(principal, sop_uid)
    if ref.study_uid != study_uid:
        raise NotFound(f"no instance {sop_uid} in this study")
    return row, sop_uid, frame


@bp.post("/api/studies/<study_uid>/key-images")
def add_key_image(study_uid: str) -> Any:
    """Choose ``{"sop_uid", "frame"}`` as a key image (at most four per study)."""
    user, principal = _editor()
    row, sop_uid, frame = _key_target(principal, study_uid, request.get_json(silent=True) or {})
    try:
        added = sharing().store.add_key_image(study_uid, sop_uid, frame, by=user.username)
    except TooManyKeyImages as exc:
        raise KeyImageLimit(i18n.t("sheet.too_many", max=MAX_KEY_IMAGES)) from exc
    if added:
        admin_audit.record(
            "study.key_image", study=row, details={"sop": sop_uid, "frame": frame, "chosen": True}
        )
    keys = sharing().store.key_images(study_uid)
    return jsonify(key_images=[_key_json(k) for k in keys], max=MAX_KEY_IMAGES), (
        201 if added else 200
    )


@bp.delete("/api/studies/<study_uid>/key-images")
def remove_key_image(study_uid: str) -> Any:
    """Un-choose ``?sop_uid=…&frame=…``."""
    _, principal = _editor()
    row, sop_uid, frame = _key_target(principal, study_uid, request.args)
    if sharing().store.remove_key_image(study_uid, sop_uid, frame):
        admin_audit.record(
            "study.key_image", study=row, details={"sop": sop_uid, "frame": frame, "chosen": False}
        )
    keys = sharing().store.key_images(study_uid)
    return jsonify(key_images=[_key_json(k) for k in keys], max=MAX_KEY_IMAGES)


# ---------------------------------------------------------------- the sheet


def _facts(row: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) pairs of the sheet, in the current language."""
    sex = str(row.get("PatientSex") or "")
    when = f"{format_date(row.get('StudyDate', ''))} {format_time(row.get('StudyTime', ''))}"
    return [
        (i18n.t("wl.patient_name"), format_name(row.get("PatientName", ""))),
        (i18n.t("wl.patient_id"), str(row.get("PatientID") or "")),
        (
            i18n.t("wl.birth_date"),
            " · ".join(
                x
                for x in (
                    format_date(row.get("PatientBirthDate", "")),
                    i18n.t(f"sex.{sex}") if sex in ("F", "M", "O") else "",
                )
                if x
            ),
        ),
        (i18n.t("wl.study_date"), when.strip()),
        (i18n.t("wl.modality"), str(row.get("ModalitiesInStudy") or "").replace("\\", ", ")),
        (i18n.t("wl.description"), str(row.get("StudyDescription") or "")),
        (i18n.t("wl.accession"), str(row.get("AccessionNumber") or "")),
        (i18n.t("wl.referring"), format_name(row.get("ReferringPhysicianName", ""))),
    ]


def _key_entries(principal: Any, study_uid: str) -> list[dict[str, Any]]:
    """The key images with what the sheet prints under them (series and image numbers)."""
    keys = sharing().store.key_images(study_uid)
    if not keys:
        return []
    series_rows = archive().search(
        Query(Level.SERIES, {"StudyInstanceUID": study_uid}),
        ["SeriesInstanceUID", "SeriesNumber", "SeriesDescription"],
    )
    series = {r["SeriesInstanceUID"]: r for r in series_rows}
    entries = []
    for key in keys[:MAX_KEY_IMAGES]:
        try:
            ref = scoped_instance(principal, key.sop_uid)
        except NotFound:
            continue  # deleted since it was chosen
        info = series.get(ref.series_uid, {})
        caption = " · ".join(
            x
            for x in (
                f"{i18n.t('v.series')} {info.get('SeriesNumber') or ''}".strip(),
                f"{i18n.t('wl.images')} {ref.instance_number or ''}".strip(),
                f"{i18n.t('v.frame')} {key.frame}" if (ref.frames or 1) > 1 else "",
            )
            if x
        )
        entries.append({"ref": ref, "frame": key.frame, "sop_uid": key.sop_uid, "caption": caption})
    return entries


def _study_for_sheet(principal: Any, study_uid: str) -> dict[str, Any]:
    row = study_row(principal, study_uid)
    extra = archive().search(
        Query(Level.STUDY, {"StudyInstanceUID": study_uid}, study_scope=principal.scope()),
        ["StudyInstanceUID", "InstitutionName", "ReferringPhysicianName", "ModalitiesInStudy"],
    )
    return {**row, **(extra[0] if extra else {})}


def _render_sheet(
    principal: Any,
    study_uid: str,
    *,
    link: ShareLink | None = None,
    token: str = "",
    error: str = "",
    status: int = 200,
) -> Any:
    from pacs.viewer.share_api import qr_svg, share_url

    row = _study_for_sheet(principal, study_uid)
    url = share_url(token) if token else ""
    user = current_user()
    admin_audit.record(
        "study.result_sheet",
        study=row,
        details={"format": "html", "link": link.id if link else None},
    )
    return render_template(
        "ui/resultsheet.html",
        study_uid=study_uid,
        institution=str(row.get("InstitutionName") or ""),
        facts=_facts(row),
        keys=_key_entries(principal, study_uid),
        link=link,
        url=url,
        token=token,
        qr=qr_svg(url, scale=3) if url else "",
        expires=format_when(link.expires_at) if link else "",
        made=format_when(datetime.now(UTC)),
        by=(user.display_name or user.username) if user else "",
        default_days=sharing().policy.default_days,
        max_days=sharing().policy.max_days,
        error=error,
    ), status


@bp.get("/studies/<study_uid>/sheet")
@login_required(*EDITOR_ROLES)
def sheet_page(study_uid: str) -> Any:
    """The sheet without a link yet, and the form that makes one for its QR code."""
    _, principal = _editor()
    return _render_sheet(principal, study_uid)


@bp.post("/studies/<study_uid>/sheet")
@login_required(*EDITOR_ROLES)
def sheet_with_link(study_uid: str) -> Any:
    """Make a share link (form: days, pin, download, deidentify, label) and show the sheet
    with its QR code. The link's address is in this page only: print it now."""
    from pacs.viewer.share_api import create_link_for

    user, principal = _editor()
    try:
        link, token, _ = create_link_for(user, principal, study_uid, request.form)
    except InvalidQuery as exc:
        return _render_sheet(principal, study_uid, error=exc.reason, status=400)
    return _render_sheet(principal, study_uid, link=link, token=token)


@bp.post("/studies/<study_uid>/sheet.pdf")
@login_required(*EDITOR_ROLES)
def sheet_pdf(study_uid: str) -> Any:
    """The sheet as an A4 PDF; with the QR code when the form carries a live link's token."""
    from pacs.viewer.share_api import share_url

    _, principal = _editor()
    row = _study_for_sheet(principal, study_uid)
    token = request.form.get("token", "")
    link = sharing().find(token) if token else None
    if link is not None and (link.study_uid != study_uid or link.status() != "active"):
        link = None
    user = current_user()
    pdf = build_pdf(
        institution=str(row.get("InstitutionName") or ""),
        facts=_facts(row),
        keys=_key_entries(principal, study_uid),
        url=share_url(token) if link else "",
        link=link,
        by=(user.display_name or user.username) if user else "",
    )
    admin_audit.record(
        "study.result_sheet",
        study=row,
        details={"format": "pdf", "link": link.id if link else None},
    )
    stamp = str(row.get("StudyDate") or "")
    return Response(
        pdf,
        mimetype="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="result-{stamp or "study"}.pdf"',
            "Cache-Control": "private, no-store",
        },
    )


# ---------------------------------------------------------------- PDF


def _font() -> tuple[str, str]:
    """(regular, bold) reportlab font names; a Unicode TrueType font when one is found."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    settings = current_app.config["PACS_SETTINGS"]
    configured = settings.result_sheet_font
    for candidate in (configured, *FONT_CANDIDATES):
        if not candidate or not Path(candidate).is_file():
            continue
        bold = candidate.replace("Sans.ttf", "Sans-Bold.ttf").replace("Regular", "Bold")
        try:
            if "PacsSheet" not in pdfmetrics.getRegisteredFontNames():
                pdfmetrics.registerFont(TTFont("PacsSheet", candidate))
                pdfmetrics.registerFont(
                    TTFont("PacsSheet-Bold", bold if Path(bold).is_file() else candidate)
                )
            return "PacsSheet", "PacsSheet-Bold"
        except Exception as exc:  # a broken font file: try the next one
            log.warning("result sheet font %s unusable: %s", candidate, exc)
    log.warning("no Unicode font found for PDF result sheets; Vietnamese marks are dropped")
    return "Helvetica", "Helvetica-Bold"


def _plain(text: str, font: str) -> str:
    """Text the font can show: the built-in PDF fonts know Latin-1 only."""
    if font.startswith("PacsSheet"):
        return text
    import unicodedata

    folded = unicodedata.normalize("NFKD", text.replace("đ", "d").replace("Đ", "D"))
    return (
        "".join(c for c in folded if not unicodedata.combining(c))
        .encode("latin-1", "replace")
        .decode("latin-1")
    )


def _draw_qr(canvas: Any, text: str, x: float, y: float, size: float) -> None:
    import segno

    qr = segno.make_qr(text, error="m")
    matrix = [list(row) for row in qr.matrix]
    modules = len(matrix)
    cell = size / modules
    canvas.setFillColorRGB(0, 0, 0)
    for r, line in enumerate(matrix):
        for c, dark in enumerate(line):
            if dark:
                canvas.rect(x + c * cell, y + size - (r + 1) * cell, cell, cell, stroke=0, fill=1)


def build_pdf(
    *,
    institution: str,
    facts: list[tuple[str, str]],
    keys: list[dict[str, Any]],
    url: str,
    link: ShareLink | None,
    by: str,
) -> bytes:
    """The A4 sheet: header, patient and study, up to four key images, the QR code."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas as pdfcanvas

    from pacs.viewer import rendering

    regular, bold = _font()
    out = io.BytesIO()
    c = pdfcanvas.Canvas(out, pagesize=A4, pageCompression=1)
    c.setTitle(_plain(i18n.t("sheet.title"), regular))
    width, height = A4
    margin = 15 * mm
    y = height - margin
    if institution:
        c.setFont(bold, 11)
        c.drawString(margin, y - 4 * mm, _plain(institution, bold))
        y -= 7 * mm
    c.setFont(bold, 15)
    c.drawString(margin, y - 6 * mm, _plain(i18n.t("sheet.title"), bold))
    y -= 10 * mm
    c.setLineWidth(0.6)
    c.line(margin, y, width - margin, y)
    y -= 6 * mm
    col = (width - 2 * margin) / 2
    for i, (label, value) in enumerate(facts):
        cx = margin + (i % 2) * col
        if i % 2 == 0 and i:
            y -= 10 * mm
        c.setFont(regular, 7.5)
        c.setFillColorRGB(0.35, 0.35, 0.35)
        c.drawString(cx, y, _plain(label, regular))
        c.setFillColorRGB(0, 0, 0)
        c.setFont(bold if i == 0 else regular, 11 if i == 0 else 10)
        c.drawString(cx, y - 4.5 * mm, _plain(value, regular)[:60])
    y -= 12 * mm
    # Key images: a 2×2 grid above the footer.
    footer = 48 * mm
    grid_top = y
    grid_h = grid_top - margin - footer
    cell_w, cell_h = (width - 2 * margin - 6 * mm) / 2, (grid_h - 6 * mm) / 2
    for i, key in enumerate(keys[:4]):
        cx = margin + (i % 2) * (cell_w + 6 * mm)
        cy = grid_top - (i // 2 + 1) * cell_h - (i // 2) * 6 * mm
        c.setFillColorRGB(0, 0, 0)
        c.rect(cx, cy, cell_w, cell_h, stroke=0, fill=1)
        try:
            jpeg = rendering.render(
                archive(),
                key["ref"],
                rendering.RenderRequest(frame=key["frame"] - 1, size=(1024, 1024), quality=88),
            )
            image = ImageReader(io.BytesIO(jpeg))
            iw, ih = image.getSize()
            scale = min((cell_w - 2) / iw, (cell_h - 6 * mm) / ih)
            dw, dh = iw * scale, ih * scale
            c.drawImage(
                image, cx + (cell_w - dw) / 2, cy + 5 * mm + (cell_h - 5 * mm - dh) / 2, dw, dh
            )
        except Exception as exc:  # an undecodable image leaves its box empty, the sheet prints
            log.warning("result sheet: key image %s not drawn: %s", key["sop_uid"], exc)
        c.setFillColorRGB(1, 1, 1)
        c.setFont(regular, 8)
        c.drawString(cx + 2 * mm, cy + 1.8 * mm, _plain(key["caption"], regular))
    c.setFillColorRGB(0, 0, 0)
    if not keys:
        c.setFont(regular, 10)
        c.drawString(margin, grid_top - 10 * mm, _plain(i18n.t("sheet.no_key_images"), regular))
    # Footer: the QR code and how to use it.
    qr_size = 38 * mm
    base = margin
    c.line(margin, base + footer - 4 * mm, width - margin, base + footer - 4 * mm)
    text_x = margin
    if url:
        _draw_qr(c, url, width - margin - qr_size, base, qr_size)
        lines = [
            (bold, 11, i18n.t("sheet.scan")),
            (regular, 8, url),
            (
                regular,
                9,
                i18n.t("sheet.expires", when=format_when(link.expires_at)) if link else "",
            ),
            (regular, 9, i18n.t("sheet.pin_line") if link and link.has_pin else ""),
        ]
    else:
        lines = [(regular, 9, i18n.t("sheet.no_link"))]
    ty = base + footer - 12 * mm
    for font, size, text in lines:
        if not text:
            continue
        c.setFont(font, size)
        c.drawString(text_x, ty, _plain(text, font)[:110])
        ty -= size * 0.5 * mm + 3 * mm
    c.setFont(regular, 8)
    c.setFillColorRGB(0.35, 0.35, 0.35)
    c.drawString(
        text_x,
        base,
        _plain(i18n.t("sheet.made", when=format_when(datetime.now(UTC)), by=by), regular),
    )
    c.showPage()
    c.save()
    return out.getvalue()


def register(app: Flask) -> None:
    app.register_blueprint(bp)
