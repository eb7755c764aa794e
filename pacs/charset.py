"""Text decoding with repair of the character-set mistakes Vietnamese modalities make,
and the folded search keys used to find names without case or diacritics.

Modalities in Vietnamese hospitals often write UTF-8 while declaring no character
set or ``ISO_IR 100``, and legacy PCs write Windows-1258 (tone marks as combining
characters) under ``ISO_IR 100``. The stored bytes are never touched: we only
choose a better codec when we decode for the index or for display.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset

TEXT_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC"})

# Declared sets under which we look for mis-declared UTF-8 or Windows-1258 bytes.
_REPAIRABLE_DECLARED = frozenset({"", "ISO_IR 6", "ISO_IR 100", "ISO 2022 IR 6", "ISO 2022 IR 100"})

# Windows-1258 bytes whose meaning differs from Latin-1: tone marks (combining),
# and the letters Ă ă Đ đ Ơ ơ Ư ư.
_CP1258_TONE_BYTES = frozenset({0xCC, 0xEC, 0xD2, 0xDE, 0xF2})
_CP1258_LETTER_BYTES = frozenset({0xC3, 0xE3, 0xD0, 0xF0, 0xD5, 0xF5, 0xDD, 0xFD})
_VIETNAMESE_VOWELS = frozenset("aăâeêioôơuưyAĂÂEÊIOÔƠUƯY")


def _is_utf8_multibyte(data: bytes) -> bool:
    """True when ``data`` is valid UTF-8 and uses at least one multi-byte sequence."""
    if data.isascii():
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _looks_like_cp1258(data: bytes) -> bool:
    """True when ``data`` reads as Vietnamese in Windows-1258 and oddly in Latin-1.

    Every tone-mark byte must follow a vowel (that is where Vietnamese puts it),
    and every combining mark must compose away under NFC; Latin-1 text such as
    ``Ìsola`` fails the first test, so it keeps its declared decoding.
    """
    if not any(b in _CP1258_TONE_BYTES or b in _CP1258_LETTER_BYTES for b in data):
        return False
    try:
        text = data.decode("cp1258")
    except UnicodeDecodeError:
        return False
    for i, byte in enumerate(data):
        if byte in _CP1258_TONE_BYTES and (i == 0 or text[i - 1] not in _VIETNAMESE_VOWELS):
            return False
    composed = unicodedata.normalize("NFC", text)
    return not any(unicodedata.combining(c) for c in composed)


def _declared_terms(ds: Dataset) -> list[str]:
    elem = ds.get_item(0x00080005)
    if elem is None or not elem.value:
        return [""]
    raw = elem.value
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "replace")
    if isinstance(raw, str):
        return [t.strip() for t in raw.split("\\")]
    return [str(t).strip() for t in raw]


def _raw_text_values(ds: Dataset) -> Iterable[bytes]:
    """Undecoded bytes of the top-level text elements (private tags skipped)."""
    # items() hands out raw elements without decoding them (or reading deferred ones).
    for tag, elem in ds.items():
        if tag.is_private or (tag.group in (0x0002, 0x0008) and tag.element == 0x0005):
            continue
        value = getattr(elem, "value", None)
        if not isinstance(value, bytes):
            continue
        vr = elem.VR
        if vr is None:
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                continue
        if vr in TEXT_VRS:
            yield value


def detect_text_codec(ds: Dataset) -> str | None:
    """The Python codec that really decodes ``ds``'s text, when it is not the declared one.

    Returns ``"utf_8"`` or ``"cp1258"`` for a repairable mistake, else ``None``
    (trust the declared Specific Character Set). Must be called before the text
    elements have been decoded by pydicom.
    """
    terms = _declared_terms(ds)
    if len(terms) > 1 or terms[0] not in _REPAIRABLE_DECLARED:
        return None
    data = b" ".join(_raw_text_values(ds))
    if data.isascii():
        return None
    if _is_utf8_multibyte(data):
        return "utf_8"
    if _looks_like_cp1258(data):
        return "cp1258"
    return None


def apply_text_codec(ds: Dataset) -> str | None:
    """Make pydicom decode ``ds``'s text with the detected codec; returns it or ``None``.

    Only the in-memory decoding changes; ``ds`` keeps its Specific Character Set
    element, and the file is untouched.
    """
    codec = detect_text_codec(ds)
    if codec is not None:
        is_implicit, is_little = ds.original_encoding
        ds.set_original_encoding(is_implicit, is_little, [codec])
    return codec


def python_codecs(specific_character_set: str | list[str] | None) -> list[str]:
    """Python codecs for a DICOM Specific Character Set value."""
    return convert_encodings(specific_character_set or "")


def clean_text(value: object) -> str:
    """A decoded DICOM value as display text: NFC, without padding."""
    if value is None:
        return ""
    text = str(value)
    return unicodedata.normalize("NFC", text).strip(" \x00")


def fold(text: str) -> str:
    """Case- and diacritic-insensitive search key: ``Nguyễn^Thị`` → ``nguyen thi``.

    Person-name component separators (``^``) become spaces; ``*`` and ``?`` are
    kept so that a folded query keeps its wildcards.
    """
    decomposed = unicodedata.normalize("NFKD", text)
    # Only Latin diacritics go; Japanese voicing marks (U+3099) change the word.
    stripped = "".join(c for c in decomposed if not "\u0300" <= c <= "\u036f")
    # Đ/đ are letters of their own, not D plus a mark, so NFKD leaves them alone.
    stripped = stripped.replace("đ", "d").replace("Đ", "D")
    lowered = unicodedata.normalize("NFC", stripped.casefold()).replace("^", " ")
    return " ".join(lowered.split())
