"""Accept headers and media types of PS3.18 (section 8.7): what a client asks for, and
which transfer syntax goes with which image media type.

Clients write these headers loosely (OHIF sends ``type=application/octet-stream``
unquoted; others quote, add ``q`` values or list several ranges), so parsing is
lenient: parameters are ``;``-separated, values may be quoted, names are matched
case-insensitively.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pydicom.uid import UID

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
NATIVE_SYNTAXES = frozenset({EXPLICIT_LE, IMPLICIT_LE})

# PS3.18 Table 8.7.3-5: the media type of a frame in a compressed transfer syntax.
FRAME_MEDIA_TYPES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.100": "video/mpeg",
    "1.2.840.10008.1.2.4.101": "video/mpeg",
    "1.2.840.10008.1.2.4.102": "video/mp4",
    "1.2.840.10008.1.2.4.103": "video/mp4",
    "1.2.840.10008.1.2.4.104": "video/mp4",
    "1.2.840.10008.1.2.4.105": "video/mp4",
    "1.2.840.10008.1.2.4.106": "video/mp4",
}
# Older names clients still send.
MEDIA_TYPE_ALIASES = {"image/x-jls": "image/jls", "image/x-dicom-rle": "image/dicom-rle"}


@dataclass(frozen=True)
class MediaRange:
    """One entry of an Accept header: ``multipart/related; type="..."; transfer-syntax=...``."""

    media_type: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    @property
    def is_multipart(self) -> bool:
        return self.media_type in ("multipart/related", "multipart/*")

    @property
    def part_type(self) -> str:
        """The media type of the parts (``type`` parameter), or the type itself."""
        if self.is_multipart:
            return _canonical(self.params.get("type", "*/*"))
        return self.media_type

    @property
    def transfer_syntax(self) -> str | None:
        value = self.params.get("transfer-syntax")
        return value.strip() if value else None

    def part_matches(self, media_type: str) -> bool:
        """True when a part of ``media_type`` is acceptable under this range."""
        return _matches(self.part_type, media_type)


def _canonical(media_type: str) -> str:
    media_type = media_type.strip().strip('"').lower()
    return MEDIA_TYPE_ALIASES.get(media_type, media_type)


def _matches(pattern: str, media_type: str) -> bool:
    if pattern in ("*/*", "*"):
        return True
    if pattern.endswith("/*"):
        return media_type.split("/", 1)[0] == pattern[:-2]
    return pattern == media_type


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes."""
    out, current, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    return out


def parse_media_type(text: str) -> MediaRange:
    """``type/subtype; name=value...`` (a Content-Type or one Accept entry)."""
    pieces = _split(text, ";")
    media_type = _canonical(pieces[0]) or "*/*"
    params: dict[str, str] = {}
    q = 1.0
    for piece in pieces[1:]:
        name, _, value = piece.partition("=")
        name = name.strip().lower()
        value = value.strip().strip('"').strip()
        if not name:
            continue
        if name == "q":
            try:
                q = max(0.0, min(1.0, float(value)))
            except ValueError:
                q = 1.0
            continue
        params[name] = value
    return MediaRange(media_type, params, q)


def parse_accept(header: str | None) -> list[MediaRange]:
    """The ranges of an Accept header, most preferred first (``*/*`` when absent)."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges = [parse_media_type(p) for p in _split(header, ",") if p.strip()]
    ranges = [r for r in ranges if r.q > 0]
    # Stable: equal q values keep the client's order.
    return sorted(ranges, key=lambda r: -r.q)


def accept_with_query(header: str | None, accept_param: Sequence[str]) -> list[MediaRange]:
    """PS3.18 8.3.3.1: an ``accept`` query parameter overrides the Accept header."""
    if accept_param:
        return parse_accept(",".join(accept_param))
    return parse_accept(header)


def is_compressed(transfer_syntax: str) -> bool:
    uid = UID(transfer_syntax)
    if uid.is_transfer_syntax:
        return bool(uid.is_compressed)
    # Unknown to pydicom: every syntax defined since is an encapsulated one.
    return transfer_syntax not in (EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE, DEFLATED_LE)


def frame_media_type(transfer_syntax: str) -> str:
    """The media type of one stored frame in ``transfer_syntax`` (PS3.18 Table 8.7.3-5)."""
    if transfer_syntax in FRAME_MEDIA_TYPES:
        return FRAME_MEDIA_TYPES[transfer_syntax]
    return "application/octet-stream"


def frame_content_type(transfer_syntax: str, media_type: str | None = None) -> str:
    """Content-Type of a frame part, always naming its transfer syntax.

    Viewers (cornerstone's WADO-RS loader) read the ``transfer-syntax``
    parameter of each part to pick a decoder, so it is always there.
    """
    media_type = media_type or frame_media_type(transfer_syntax)
    return f"{media_type}; transfer-syntax={transfer_syntax}"
