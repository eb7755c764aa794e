"""Vietnamese and English: the one catalogue of user-visible strings, and which one to use.

The language is the user's remembered choice (a ``pacs_lang`` cookie, also kept
on the account), else the browser's Accept-Language, else Vietnamese. Pages get
``t(key)``; the scripts get the whole catalogue of the current language in the
page (see :func:`catalog`), so both sides say the same thing.
"""

from __future__ import annotations

from flask import g, request

LANGUAGES = ("vi", "en")
DEFAULT = "vi"
COOKIE = "pacs_lang"
LANGUAGE_NAMES = {"vi": "Tiếng Việt", "en": "English"}

# key: (Vietnamese, English)
_STRINGS: dict[str, tuple[str, str]] = {
    # ---------------------------------------------------------------- common
    "app.name": ("PACS", "PACS"),
    "app.tagline": ("Lưu trữ và xem ảnh chẩn đoán", "Medical image archive and viewer"),
    "nav.worklist": ("Danh sách ca chụp", "Worklist"),
    "nav.users": ("Người dùng", "Users"),
    "nav.account": ("Tài khoản", "Account"),
    "nav.signout": ("Đăng xuất", "Sign out"),
    "nav.language": ("Ngôn ngữ", "Language"),
    "common.save": ("Lưu", "Save"),
    "common.cancel": ("Hủy", "Cancel"),
    "common.close": ("Đóng", "Close"),
    "common.yes": ("Có", "Yes"),
    "common.no": ("Không", "No"),
    "common.loading": ("Đang tải…", "Loading…"),
    "common.error": ("Lỗi", "Error"),
    "common.back": ("Quay lại", "Back"),
    "common.search": ("Tìm", "Search"),
    "common.clear": ("Xóa bộ lọc", "Clear"),
    "common.never": ("chưa bao giờ", "never"),
    "common.none": ("Không có", "None"),
    "error.network": ("Không kết nối được máy chủ", "Cannot reach the server"),
    "error.forbidden": ("Bạn không có quyền làm việc này", "You are not allowed to do this"),
    "error.not_found": ("Không tìm thấy", "Not found"),
    "error.csrf": (
        "Phiên làm việc đã hết hạn. Hãy tải lại trang và thử lại.",
        "Your session expired. Reload the page and try again.",
    ),
    "error.session_expired": (
        "Phiên đăng nhập đã kết thúc. Vui lòng đăng nhập lại.",
        "You have been signed out. Please sign in again.",
    ),
    # ---------------------------------------------------------------- roles
    "role.admin": ("Quản trị", "Administrator"),
    "role.radiologist": ("Bác sĩ chẩn đoán hình ảnh", "Radiologist"),
    "role.referring": ("Bác sĩ chỉ định", "Referring doctor"),
    # ---------------------------------------------------------------- sign-in
    "login.title": ("Đăng nhập", "Sign in"),
    "login.username": ("Tên đăng nhập", "Username"),
    "login.password": ("Mật khẩu", "Password"),
    "login.submit": ("Đăng nhập", "Sign in"),
    "login.bad_credentials": (
        "Sai tên đăng nhập hoặc mật khẩu.",
        "Wrong username or password.",
    ),
    "login.locked": (
        "Đăng nhập sai quá nhiều lần. Hãy thử lại sau {minutes} phút "
        "hoặc nhờ quản trị viên mở khóa.",
        "Too many failed sign-ins. Try again in {minutes} minutes or ask an administrator.",
    ),
    "login.signed_out": ("Bạn đã đăng xuất.", "You are signed out."),
    # ---------------------------------------------------------------- account
    "account.title": ("Tài khoản của tôi", "My account"),
    "account.role": ("Vai trò", "Role"),
    "account.change_password": ("Đổi mật khẩu", "Change password"),
    "account.current_password": ("Mật khẩu hiện tại", "Current password"),
    "account.new_password": ("Mật khẩu mới", "New password"),
    "account.confirm_password": ("Nhập lại mật khẩu mới", "Repeat the new password"),
    "account.password_changed": (
        "Đã đổi mật khẩu. Vui lòng đăng nhập lại bằng mật khẩu mới.",
        "Password changed. Please sign in with the new password.",
    ),
    "account.mismatch": ("Hai mật khẩu mới không giống nhau.", "The new passwords differ."),
    "account.end_sessions": ("Đăng xuất khỏi mọi thiết bị", "Sign out on every device"),
    "account.end_sessions_help": (
        "Kết thúc mọi phiên đăng nhập của bạn, kể cả trên điện thoại.",
        "Ends all your sessions, including on phones.",
    ),
    # ---------------------------------------------------------------- account errors
    "accounterr.bad_username": (
        "Tên đăng nhập dài 2–64 ký tự: chữ a–z, số, '.', '_', '-', '@'.",
        "A username is 2–64 characters: letters a–z, digits, '.', '_', '-', '@'.",
    ),
    "accounterr.weak_password": (
        "Mật khẩu cần ít nhất 8 ký tự.",
        "A password needs at least 8 characters.",
    ),
    "accounterr.taken": ("Tên đăng nhập này đã có.", "That username is taken."),
    "accounterr.bad_role": ("Vai trò không hợp lệ.", "Unknown role."),
    "accounterr.unknown_user": ("Không có người dùng này.", "No such user."),
    "accounterr.last_admin": (
        "Không thể khóa hoặc hạ quyền quản trị viên cuối cùng.",
        "The last administrator cannot be disabled or demoted.",
    ),
    "accounterr.bad_current_password": (
        "Mật khẩu hiện tại không đúng.",
        "The current password is wrong.",
    ),
    # ---------------------------------------------------------------- users admin
    "users.title": ("Quản lý người dùng", "Users"),
    "users.add": ("Thêm người dùng", "Add a user"),
    "users.username": ("Tên đăng nhập", "Username"),
    "users.name": ("Họ tên", "Full name"),
    "users.role": ("Vai trò", "Role"),
    "users.state": ("Trạng thái", "State"),
    "users.active": ("Đang hoạt động", "Active"),
    "users.disabled": ("Đã khóa", "Disabled"),
    "users.last_login": ("Đăng nhập gần nhất", "Last sign-in"),
    "users.actions": ("Thao tác", "Actions"),
    "users.disable": ("Khóa", "Disable"),
    "users.enable": ("Mở khóa", "Enable"),
    "users.set_role": ("Đổi vai trò", "Change role"),
    "users.reset_password": ("Đặt lại mật khẩu", "Reset password"),
    "users.initial_password": ("Mật khẩu ban đầu", "Initial password"),
    "users.created": ("Đã tạo người dùng {name}.", "User {name} created."),
    "users.updated": ("Đã cập nhật {name}.", "{name} updated."),
    "users.password_reset": (
        "Mật khẩu của {name} (chỉ hiện một lần, hãy ghi lại):",
        "Password of {name} (shown once, note it down):",
    ),
    # ---------------------------------------------------------------- worklist
    "wl.title": ("Danh sách ca chụp", "Worklist"),
    "wl.patient_name": ("Họ tên bệnh nhân", "Patient name"),
    "wl.patient_id": ("Mã bệnh nhân", "Patient ID"),
    "wl.accession": ("Số phiếu chụp", "Accession"),
    "wl.date_from": ("Từ ngày", "From"),
    "wl.date_to": ("Đến ngày", "To"),
    "wl.today": ("Hôm nay", "Today"),
    "wl.yesterday": ("Hôm qua", "Yesterday"),
    "wl.last7": ("7 ngày qua", "Last 7 days"),
    "wl.any_date": ("Mọi ngày", "Any date"),
    "wl.modality": ("Thiết bị", "Modality"),
    "wl.any_modality": ("Tất cả", "All"),
    "wl.description": ("Mô tả", "Description"),
    "wl.referring": ("Bác sĩ chỉ định", "Referring physician"),
    "wl.birth_date": ("Ngày sinh", "Birth date"),
    "wl.sex": ("Giới", "Sex"),
    "wl.study_date": ("Ngày chụp", "Study date"),
    "wl.series": ("Loạt", "Series"),
    "wl.images": ("Ảnh", "Images"),
    "wl.status": ("Trạng thái", "Status"),
    "wl.opened": ("Đã xem", "Opened"),
    "wl.new": ("Mới", "New"),
    "wl.results": ("{total} ca chụp", "{total} studies"),
    "wl.no_results": ("Không tìm thấy ca chụp nào.", "No studies found."),
    "wl.page": ("Trang {page}/{pages}", "Page {page} of {pages}"),
    "wl.prev": ("Trang trước", "Previous"),
    "wl.next": ("Trang sau", "Next"),
    "wl.page_size": ("Số dòng", "Rows"),
    "wl.open": ("Mở", "Open"),
    "wl.assign": ("Giao ca", "Assign"),
    "wl.assign_title": (
        "Giao ca chụp cho bác sĩ chỉ định",
        "Assign the study to a referring doctor",
    ),
    "wl.assigned_to": ("Đã giao cho", "Assigned to"),
    "wl.assign_add": ("Giao", "Assign"),
    "wl.unassign": ("Bỏ giao", "Remove"),
    "wl.no_referring": (
        "Chưa có tài khoản bác sĩ chỉ định nào.",
        "There is no referring doctor account yet.",
    ),
    "wl.search_ms": ("{ms} ms", "{ms} ms"),
    "wl.more_filters": ("Thêm bộ lọc", "More filters"),
    "sex.F": ("Nữ", "F"),
    "sex.M": ("Nam", "M"),
    "sex.O": ("Khác", "O"),
    # ---------------------------------------------------------------- viewer
    "v.title": ("Xem ảnh", "Viewer"),
    "v.series": ("Loạt ảnh", "Series"),
    "v.this_study": ("Ca chụp này", "This study"),
    "v.priors": ("Ca chụp trước", "Prior studies"),
    "v.no_priors": ("Không có ca chụp trước.", "No prior studies."),
    "v.layout": ("Bố cục", "Layout"),
    "v.tool": ("Công cụ", "Tool"),
    "v.tool.wl": ("Cửa sổ (W/L)", "Window/level"),
    "v.tool.pan": ("Di chuyển", "Pan"),
    "v.tool.zoom": ("Phóng to", "Zoom"),
    "v.tool.scroll": ("Cuộn lát cắt", "Scroll"),
    "v.tool.length": ("Đo chiều dài", "Length"),
    "v.tool.angle": ("Đo góc", "Angle"),
    "v.tool.rect": ("Vùng chữ nhật", "Rectangle ROI"),
    "v.tool.ellipse": ("Vùng elip", "Ellipse ROI"),
    "v.presets": ("Cửa sổ mẫu", "Window presets"),
    "v.preset.file": ("Theo tệp", "From file"),
    "v.preset.brain": ("Não", "Brain"),
    "v.preset.subdural": ("Dưới màng cứng", "Subdural"),
    "v.preset.lung": ("Phổi", "Lung"),
    "v.preset.mediastinum": ("Trung thất", "Mediastinum"),
    "v.preset.abdomen": ("Bụng", "Abdomen"),
    "v.preset.bone": ("Xương", "Bone"),
    "v.preset.liver": ("Gan", "Liver"),
    "v.preset.full": ("Toàn dải", "Full range"),
    "v.invert": ("Đảo màu", "Invert"),
    "v.reset": ("Đặt lại", "Reset"),
    "v.fit": ("Vừa khung", "Fit"),
    "v.one_to_one": ("1:1", "1:1"),
    "v.rotate_left": ("Xoay trái", "Rotate left"),
    "v.rotate_right": ("Xoay phải", "Rotate right"),
    "v.flip_h": ("Lật ngang", "Flip horizontally"),
    "v.flip_v": ("Lật dọc", "Flip vertically"),
    "v.cine": ("Chạy ảnh động", "Cine"),
    "v.fps": ("ảnh/giây", "fps"),
    "v.tags": ("Thẻ DICOM", "DICOM tags"),
    "v.tags_filter": ("Lọc thẻ…", "Filter tags…"),
    "v.fullscreen": ("Toàn màn hình", "Full screen"),
    "v.help": ("Phím tắt", "Shortcuts"),
    "v.clear_measurements": ("Xóa các phép đo", "Clear measurements"),
    "v.slice": ("Ảnh", "Im"),
    "v.frame": ("Khung", "Fr"),
    "v.zoom": ("Phóng", "Zoom"),
    "v.thickness": ("Độ dày", "Thick"),
    "v.location": ("Vị trí", "Loc"),
    "v.decode_error": ("Không giải mã được ảnh này", "This image cannot be decoded"),
    "v.load_error": ("Không tải được ảnh", "The image could not be loaded"),
    "v.no_image": ("Chọn một loạt ảnh ở bên trái", "Pick a series on the left"),
    "v.not_image": ("Loạt này không có ảnh để hiển thị", "This series has no images to show"),
    "v.loaded": ("Đã tải {n}/{total}", "Loaded {n}/{total}"),
    "v.mean": ("TB", "Mean"),
    "v.sd": ("ĐLC", "SD"),
    "v.area": ("Diện tích", "Area"),
    "v.no_calibration": ("(chưa hiệu chuẩn, đơn vị px)", "(uncalibrated, px)"),
    "v.mm": ("mm", "mm"),
    "v.overlays": ("Lớp phủ", "Overlays"),
    "v.quality": ("Chất lượng ảnh", "Image quality"),
    "v.quality.full": ("16 bit", "16-bit"),
    "v.quality.fast": ("JPEG", "JPEG"),
    "v.shortcuts": (
        "Cuộn chuột, ↑ ↓, PageUp/PageDown: đổi lát cắt · Home/End: ảnh đầu/cuối\n"
        "Kéo chuột trái: công cụ đang chọn · chuột phải: W/L · chuột giữa hoặc Shift: "
        "di chuyển · Ctrl: phóng\n"
        "W: W/L · P: di chuyển · Z: phóng · S: cuộn · L: chiều dài · A: góc · "
        "R: chữ nhật · E: elip\n"
        "1–9: cửa sổ mẫu · I: đảo màu · F: vừa khung · 0: đặt lại · O: lớp phủ\n"
        "Space: chạy ảnh động · T: thẻ DICOM · Del: xóa phép đo · Enter: toàn màn hình\n"
        "Nhấp đúp: phóng to một khung · Điện thoại: vuốt để cuộn, chụm hai ngón để phóng",
        "Wheel, ↑ ↓, PageUp/PageDown: change slice · Home/End: first/last image\n"
        "Left drag: active tool · right drag: W/L · middle drag or Shift: pan · Ctrl: zoom\n"
        "W: W/L · P: pan · Z: zoom · S: scroll · L: length · A: angle · R: rectangle · "
        "E: ellipse\n"
        "1–9: presets · I: invert · F: fit · 0: reset · O: overlays\n"
        "Space: cine · T: DICOM tags · Del: clear measurements · Enter: full screen\n"
        "Double-click: maximise a viewport · Phones: swipe to scroll, pinch to zoom",
    ),
}

# Orientation letters stay the DICOM ones (A/P/L/R/H/F) in both languages: radiologists
# read them that way, and translated letters would clash (Trái/Trước both start with T).
for _k in ("A", "P", "L", "R", "H", "F"):
    _STRINGS[f"v.orient.{_k}"] = (_k, _k)


def translate(key: str, lang: str, **values: object) -> str:
    """The string for ``key`` in ``lang`` (English, then the key itself, if missing)."""
    pair = _STRINGS.get(key)
    text = key if pair is None else pair[0] if lang == "vi" else pair[1]
    return text.format(**values) if values else text


def catalog(lang: str) -> dict[str, str]:
    """Every string in ``lang``: handed to the page scripts."""
    i = 0 if lang == "vi" else 1
    return {k: v[i] for k, v in _STRINGS.items()}


def known_keys() -> set[str]:
    return set(_STRINGS)


def negotiate(cookie: str | None, accept: object, user_choice: str = "") -> str:
    """Remembered choice (cookie, then account), else the browser's preference, else Vietnamese."""
    if cookie in LANGUAGES:
        return cookie  # type: ignore[return-value]
    if user_choice in LANGUAGES:
        return user_choice
    best = accept.best_match(LANGUAGES) if accept is not None else None  # type: ignore[attr-defined]
    return best or DEFAULT


def current_language() -> str:
    """The language of this request (cached on ``g``)."""
    if "pacs_lang" not in g:
        user = g.get("pacs_user")
        g.pacs_lang = negotiate(
            request.cookies.get(COOKIE),
            request.accept_languages,
            getattr(user, "language", "") or "",
        )
    return g.pacs_lang


def t(key: str, **values: object) -> str:
    """Translate into the current request's language (for templates and views)."""
    return translate(key, current_language(), **values)
