"""The consultation pages' strings, in Vietnamese and English.

A catalogue of its own, so the consultation pages embed only their strings: the
templates call ``ct(key)``, and so does ``static/js/consult_common.js`` with this
catalogue embedded in the page. Only the navigation label, which the base template
translates, is in :mod:`pacs.viewer.i18n`.
"""

from __future__ import annotations

from pacs.viewer import i18n

NAV_KEY = "nav.consult"

# key: (Vietnamese, English)
STRINGS: dict[str, tuple[str, str]] = {
    "title": ("Hội chẩn từ xa", "Remote consultation"),
    "tab.incoming": ("Được mời hội chẩn", "Asked of us"),
    "tab.outgoing": ("Đã gửi đi", "We asked"),
    "tab.pushes": ("Truyền ảnh", "Transfers"),
    "tab.partners": ("Bệnh viện đối tác", "Partner hospitals"),
    "tab.rules": ("Quy tắc tự động", "Routing rules"),
    "empty": ("Chưa có gì.", "Nothing yet."),
    "patient": ("Bệnh nhân", "Patient"),
    "study": ("Ca chụp", "Study"),
    "partner": ("Đối tác", "Partner"),
    "partner.none": ("Qua đường dẫn (đối tác không có PACS)", "By link (partner without pacs)"),
    "message": ("Nội dung cần hội chẩn", "What to look at"),
    "urgency": ("Mức độ", "Urgency"),
    "urgency.routine": ("Thường", "Routine"),
    "urgency.urgent": ("Khẩn", "Urgent"),
    "urgency.emergency": ("Cấp cứu", "Emergency"),
    "status": ("Trạng thái", "Status"),
    "status.requested": ("Đang gửi ảnh", "Sending images"),
    "status.sent": ("Đã gửi", "Sent"),
    "status.viewed": ("Đã xem", "Viewed"),
    "status.answered": ("Đã trả lời", "Answered"),
    "status.failed": ("Thất bại", "Failed"),
    "status.cancelled": ("Đã hủy", "Cancelled"),
    "requested_by": ("Người yêu cầu", "Asked by"),
    "created": ("Lúc", "When"),
    "open_images": ("Xem ảnh", "Open images"),
    "answer": ("Ý kiến hội chẩn", "Opinion"),
    "answer.write": ("Viết ý kiến hội chẩn", "Write the opinion"),
    "answer.send": ("Gửi ý kiến", "Send the opinion"),
    "answer.sent": ("Đã gửi ý kiến.", "The opinion was sent."),
    "answered_by": ("Người trả lời", "Answered by"),
    "key_images": ("Ảnh chính (tùy chọn)", "Key images (optional)"),
    "ask": ("Xin ý kiến hội chẩn", "Ask for an opinion"),
    "ask.short": ("Hội chẩn", "Consult"),
    "ask.send": ("Gửi yêu cầu", "Send the request"),
    "ask.link": (
        "Gửi đường dẫn này cho đối tác (chỉ hiện một lần, hết hạn sau 7 ngày):",
        "Give this link to the partner (shown once, valid for 7 days):",
    ),
    "ask.done": (
        "Đã tạo yêu cầu. Ảnh đang được gửi cho đối tác.",
        "Request made. The images are on their way to the partner.",
    ),
    "push": ("Gửi ảnh", "Send images"),
    "push.send": ("Gửi", "Send"),
    "push.progress": ("{sent}/{total} ảnh · {mb} MB", "{sent} of {total} images · {mb} MB"),
    "push.state.queued": ("Chờ gửi", "Queued"),
    "push.state.sending": ("Đang gửi", "Sending"),
    "push.state.retrying": ("Sẽ thử lại", "Will retry"),
    "push.state.done": ("Xong", "Done"),
    "push.state.failed": ("Thất bại", "Failed"),
    "push.state.cancelled": ("Đã hủy", "Cancelled"),
    "push.verified": ("Đối tác xác nhận {count} ảnh", "Partner counts {count} images"),
    "push.retry": ("Gửi lại", "Retry"),
    "push.cancel": ("Hủy", "Cancel"),
    "push.queued": ("Đã xếp hàng gửi.", "Queued for sending."),
    "partner.name": ("Tên", "Name"),
    "partner.ae": ("AE title", "AE title"),
    "partner.host": ("Máy chủ", "Host"),
    "partner.port": ("Cổng", "Port"),
    "partner.dicomweb": ("Địa chỉ DICOMweb", "DICOMweb URL"),
    "partner.pacs": ("Địa chỉ pacs của đối tác", "Partner's pacs URL"),
    "partner.token": ("Mã truy cập đối tác cấp", "Token the partner gave us"),
    "partner.transport": ("Cách gửi", "Send by"),
    "partner.compression": ("Nén không mất dữ liệu", "Lossless compression"),
    "partner.bandwidth": (
        "Giới hạn băng thông (KB/s, 0 = không)",
        "Bandwidth cap (KB/s, 0 = none)",
    ),
    "partner.scope": ("Đối tác được xem", "Partner may see"),
    "partner.scope.shared": ("Chỉ ca đã chia sẻ", "Only shared studies"),
    "partner.scope.all": ("Mọi ca", "Every study"),
    "partner.add": ("Thêm đối tác", "Add a partner"),
    "partner.save": ("Lưu", "Save"),
    "partner.remove": ("Xóa", "Remove"),
    "partner.remove_confirm": ("Xóa đối tác {name}?", "Remove partner {name}?"),
    "partner.test": ("Kiểm tra kết nối", "Test"),
    "partner.issue": ("Cấp mã truy cập", "Issue a token"),
    "partner.issued": (
        "Mã truy cập cho đối tác (chỉ hiện một lần): {token}",
        "Token for the partner (shown once): {token}",
    ),
    "rule.add": ("Thêm quy tắc", "Add a rule"),
    "rule.calling_ae": ("Từ AE", "From AE"),
    "rule.modality": ("Loại máy", "Modality"),
    "rule.description": ("Mô tả chứa", "Description contains"),
    "rule.any": ("(bất kỳ)", "(any)"),
    "rule.name": ("Tên quy tắc", "Rule name"),
    "link.title": ("Yêu cầu hội chẩn", "Consultation request"),
    "link.from": ("Từ {who}", "From {who}"),
    "link.invalid": (
        "Đường dẫn hội chẩn không hợp lệ hoặc đã hết hạn.",
        "This consultation link is not valid or has expired.",
    ),
    "badge.out": ("Hội chẩn: {status}", "Consultation: {status}"),
    "badge.in": ("Được mời hội chẩn: {status}", "Asked of us: {status}"),
}


def translate(key: str, lang: str, **values: object) -> str:
    pair = STRINGS.get(key)
    text = key if pair is None else pair[0] if lang == "vi" else pair[1]
    return text.format(**values) if values else text


def ct(key: str, **values: object) -> str:
    """A consultation string in the current request's language (templates)."""
    return translate(key, i18n.current_language(), **values)


def catalog(lang: str) -> dict[str, str]:
    i = 0 if lang == "vi" else 1
    return {k: v[i] for k, v in STRINGS.items()}
