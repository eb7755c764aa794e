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
    "nav.shares": ("Liên kết chia sẻ", "Shared links"),
    "nav.audit": ("Nhật ký truy cập", "Audit trail"),
    "nav.dashboard": ("Vận hành", "Operations"),
    "nav.consult": ("Hội chẩn từ xa", "Consultations"),
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
    # ---------------------------------------------------------------- viewer: downloads, key images
    "v.download": ("Tải về", "Download"),
    "v.download_zip": ("Cả ca chụp (ZIP: DICOM + JPEG)", "The whole study (ZIP: DICOM + JPEG)"),
    "v.download_dicom": ("Ảnh này (tệp DICOM)", "This image (DICOM file)"),
    "v.download_jpeg": ("Ảnh này (JPEG)", "This image (JPEG)"),
    "v.download_help": (
        "Tệp DICOM mở bằng phần mềm xem DICOM; ảnh JPEG chỉ để xem nhanh, không dùng để chẩn đoán.",
        "DICOM files open in a DICOM viewer; JPEG images are for a quick look, not for diagnosis.",
    ),
    "v.key_image": ("Chọn làm ảnh chính cho phiếu kết quả", "Key image for the result sheet"),
    # ---------------------------------------------------------------- sharing
    "share.title": ("Ảnh chẩn đoán được chia sẻ", "Shared diagnostic images"),
    "share.button": ("Chia sẻ", "Share"),
    "share.dialog_title": ("Chia sẻ ca chụp", "Share the study"),
    "share.new_link": ("Tạo liên kết mới", "New link"),
    "share.days": ("Hiệu lực", "Valid for"),
    "share.n_days": ("{n} ngày", "{n} days"),
    "share.pin": ("Mã PIN (không bắt buộc)", "PIN (optional)"),
    "share.pin_placeholder": ("4–12 chữ số", "4–12 digits"),
    "share.label": ("Gửi cho", "For"),
    "share.label_placeholder": (
        "VD: BS. Hùng, BV Trung ương Huế",
        "e.g. Dr Hung, Hue Central Hospital",
    ),
    "share.download": ("Cho phép tải ảnh về", "Allow downloading the images"),
    "share.deidentify": (
        "Ẩn danh (xóa tên, mã, ngày sinh…)",
        "De-identified (no name, ID, birth date…)",
    ),
    "share.burned_in": (
        "Lưu ý: một số ảnh (siêu âm, ảnh chụp màn hình…) có thể có tên bệnh nhân in sẵn "
        "trong ảnh; phần này không thể xóa.",
        "Note: some images (ultrasound, screen captures…) may show the patient's name in the "
        "pixels; that cannot be removed.",
    ),
    "share.series": ("Loạt ảnh", "Series"),
    "share.all_series": ("Tất cả các loạt", "All series"),
    "share.no_series": ("Hãy chọn ít nhất một loạt ảnh.", "Choose at least one series."),
    "share.create": ("Tạo liên kết", "Create the link"),
    "share.copy_now": (
        "Hãy sao chép hoặc quét mã ngay: liên kết chỉ hiện một lần.",
        "Copy the link or scan the code now: it is shown only once.",
    ),
    "share.url": ("Địa chỉ liên kết", "Link address"),
    "share.copy": ("Sao chép", "Copy"),
    "share.links": ("Các liên kết của ca chụp", "Links of this study"),
    "share.with_account": (
        "Chia sẻ với tài khoản bác sĩ chỉ định",
        "Share with a referring doctor's account",
    ),
    "share.share_with": ("Chia sẻ", "Share"),
    "share.revoke": ("Thu hồi", "Revoke"),
    "share.revoked_msg": ("Đã thu hồi liên kết.", "The link was revoked."),
    "share.expires": ("Hết hạn", "Expires"),
    "share.until": ("Xem được đến {when}", "Available until {when}"),
    "share.status": ("Trạng thái", "Status"),
    "share.status.active": ("Đang hiệu lực", "Active"),
    "share.status.expired": ("Đã hết hạn", "Expired"),
    "share.status.revoked": ("Đã thu hồi", "Revoked"),
    "share.status.locked": ("Tạm khóa (sai PIN)", "Locked (wrong PINs)"),
    "share.options": ("Tùy chọn", "Options"),
    "share.opt.pin": ("PIN", "PIN"),
    "share.opt.download": ("tải về", "download"),
    "share.opt.deid": ("ẩn danh", "de-identified"),
    "share.opt.series": ("{n} loạt", "{n} series"),
    "share.opens": ("Lượt mở", "Opens"),
    "share.last_open": ("Mở gần nhất", "Last opened"),
    "share.by": ("Người chia sẻ", "Shared by"),
    "share.opened_times": (
        "Đã mở {n} lần, gần nhất {when} từ {from}",
        "Opened {n} times, last {when} from {from}",
    ),
    "share.never_opened": ("Chưa mở lần nào", "Never opened"),
    "share.leave": ("Kết thúc", "Close"),
    "share.ask_sender": (
        "Nếu cần xem lại, hãy liên hệ bác sĩ hoặc bệnh viện đã gửi liên kết.",
        "To see the images again, contact the doctor or hospital who sent the link.",
    ),
    "share.refused.unknown": (
        "Liên kết không đúng hoặc không còn tồn tại.",
        "This link is not valid or no longer exists.",
    ),
    "share.refused.expired": ("Liên kết đã hết hạn.", "This link has expired."),
    "share.refused.revoked": ("Liên kết đã bị thu hồi.", "This link has been revoked."),
    "share.refused.locked": (
        "Nhập sai mã PIN quá nhiều lần. Hãy thử lại sau {minutes} phút.",
        "Too many wrong PINs. Try again in {minutes} minutes.",
    ),
    "share.refused.session": (
        "Phiên xem ảnh đã kết thúc. Hãy mở lại liên kết.",
        "The viewing session has ended. Open the link again.",
    ),
    "share.refused.unavailable": (
        "Hệ thống đang bận hoặc gặp sự cố. Hãy thử lại sau ít phút.",
        "The system is busy or has a problem. Try again in a few minutes.",
    ),
    "share.refused.left": ("Bạn đã đóng phiên xem ảnh.", "You closed the viewing session."),
    "share.pin.title": ("Nhập mã PIN", "Enter the PIN"),
    "share.pin.label": ("Mã PIN", "PIN"),
    "share.pin.help": (
        "Mã PIN do người gửi liên kết cung cấp.",
        "The person who sent the link gives you the PIN.",
    ),
    "share.pin.submit": ("Xem ảnh", "View the images"),
    "share.pin.wrong": (
        "Mã PIN không đúng. Còn {left} lần thử.",
        "Wrong PIN. {left} attempts left.",
    ),
    "shareerr.bad_days": (
        "Thời hạn liên kết từ 1 đến {max} ngày.",
        "A link lasts from 1 to {max} days.",
    ),
    "shareerr.bad_pin": ("Mã PIN gồm 4 đến 12 chữ số.", "A PIN is 4 to 12 digits."),
    "shareerr.not_referring": (
        "Chỉ chia sẻ được với tài khoản bác sĩ chỉ định đang hoạt động.",
        "Studies are shared with active referring doctor accounts only.",
    ),
    "shares.title": ("Liên kết chia sẻ", "Shared links"),
    "shares.everyone": ("Của mọi người", "Everyone's"),
    "shares.mine": ("Của tôi", "Mine"),
    "shares.none": ("Chưa có liên kết nào.", "No links yet."),
    "shares.times_utc": ("Thời gian theo giờ UTC.", "Times are UTC."),
    # ---------------------------------------------------------------- result sheet
    "sheet.title": ("Phiếu kết quả chẩn đoán hình ảnh", "Imaging result sheet"),
    "sheet.short": ("Phiếu kết quả", "Result sheet"),
    "sheet.print": ("In", "Print"),
    "sheet.pdf": ("Tải PDF", "Download PDF"),
    "sheet.back_to_viewer": ("Quay lại xem ảnh", "Back to the viewer"),
    "sheet.add_link": (
        "Thêm mã QR để xem ảnh trên điện thoại",
        "Add a QR code to view the images on a phone",
    ),
    "sheet.make_link": ("Tạo liên kết và mã QR", "Create the link and QR code"),
    "sheet.link_once": (
        "Liên kết chỉ hiện trên trang này: hãy in hoặc tải PDF ngay.",
        "The link appears on this page only: print it or download the PDF now.",
    ),
    "sheet.no_key_images": (
        "Chưa chọn ảnh chính (nút ☆ trong trang xem ảnh).",
        "No key images chosen yet (the ☆ button in the viewer).",
    ),
    "sheet.too_many": (
        "Phiếu kết quả có tối đa {max} ảnh chính.",
        "A result sheet holds at most {max} key images.",
    ),
    "sheet.scan": (
        "Quét mã QR để xem toàn bộ ảnh trên điện thoại hoặc máy tính",
        "Scan the QR code to see all the images on a phone or computer",
    ),
    "sheet.expires": ("Xem được đến {when}", "Available until {when}"),
    "sheet.pin_line": ("Mã PIN: ________________", "PIN: ________________"),
    "sheet.no_link": (
        "Liên hệ khoa Chẩn đoán hình ảnh để được cấp liên kết xem ảnh.",
        "Ask the imaging department for a link to view the images.",
    ),
    "sheet.made": ("In lúc {when} · {by}", "Printed {when} · {by}"),
    # ---------------------------------------------------------------- audit
    "audit.title": ("Nhật ký truy cập", "Audit trail"),
    "audit.at": ("Thời gian (UTC)", "Time (UTC)"),
    "audit.action": ("Thao tác", "Action"),
    "audit.any_action": ("Mọi thao tác", "Any action"),
    "audit.outcome": ("Kết quả", "Outcome"),
    "audit.outcome.success": ("Thành công", "Success"),
    "audit.outcome.failure": ("Thất bại", "Failure"),
    "audit.user": ("Người dùng / AE", "User / AE"),
    "audit.address": ("Địa chỉ", "Address"),
    "audit.patient": ("Bệnh nhân", "Patient"),
    "audit.study": ("Ca chụp", "Study"),
    "audit.details": ("Chi tiết", "Details"),
    "audit.export": ("Xuất CSV", "Export CSV"),
    "audit.none": ("Không có dòng nào.", "No rows."),
    "audit.page": ("Trang {page}", "Page {page}"),
    "audit.times_utc": (
        "Thời gian theo giờ UTC. Lọc theo người dùng: đúng tên đăng nhập, AE title hoặc "
        "link-<số> của liên kết chia sẻ.",
        "Times are UTC. The user filter takes an exact username, AE title, or link-<n> for "
        "a share link.",
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
