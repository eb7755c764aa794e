"""The DICOM JSON Model (PS3.18 Annex F.2): data sets and index rows as JSON objects.

Text is decoded before it gets here (with the character-set repair of
:mod:`pacs.charset`), so every object declares ``ISO_IR 192``. Large binary
values are not inlined: the caller's ``bulk`` function turns the element's path
(``7FE00010``, or ``00880200/0/7FE00010`` inside a sequence) into a BulkDataURI.
"""

from __future__ import annotations

import base64
import logging
import math
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag
from pydicom.valuerep import PersonName

log = logging.getLogger(__name__)

UTF8 = "ISO_IR 192"
CHARSET_TAG = BaseTag(0x00080005)
#: Binary values longer than this become BulkDataURIs instead of InlineBinary.
INLINE_BINARY_LIMIT = 1024
#: Pixel data is always bulk data, whatever its size.
PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
UNDEFINED_LENGTH = 0xFFFFFFFF

BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
INTEGER_VRS = frozenset({"SL", "SS", "UL", "US", "SV", "UV"})
FLOAT_VRS = frozenset({"FL", "FD"})
# Free text keeps its leading spaces; other strings are padded values.
FREE_TEXT_VRS = frozenset({"ST", "LT", "UT"})

BulkUri = Callable[[str], str]
Json = dict[str, Any]


def tag_hex(tag: int) -> str:
    return f"{int(tag):08X}"


def _resolve_vr(vr: str | None, tag: BaseTag) -> str:
    if not vr:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            return "UN"
    if " or " in vr:
        # Still ambiguous (no context to decide): the first is the usual encoding.
        return vr.split(" or ")[0]
    return vr


def _text(value: Any, vr: str) -> str | None:
    if value is None:
        return None
    text = unicodedata.normalize("NFC", str(value))
    text = text.rstrip(" \x00") if vr in FREE_TEXT_VRS else text.strip(" \x00")
    return text


def _person_name(value: Any) -> Json | None:
    if value is None:
        return None
    text = unicodedata.normalize("NFC", str(value)).strip(" \x00")
    if not text:
        return None
    groups = text.split("=")
    out: Json = {}
    for key, group in zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=False):
        if group:
            out[key] = group
    return out or None


def _number(value: Any, vr: str) -> Any:
    if value is None or value == "":
        return None
    try:
        if vr == "IS":
            number = float(value)
            return int(number) if number.is_integer() else number
        if vr == "DS" or vr in FLOAT_VRS:
            number = float(value)
            if not math.isfinite(number):
                return None  # JSON has no NaN or infinity
            return int(number) if vr == "DS" and number.is_integer() else number
        if vr in INTEGER_VRS:
            return int(value)
    except (TypeError, ValueError):
        # A malformed IS/DS (e.g. "1A") has no JSON number: the value is left empty
        # (null) so that strict clients can still read the rest of the object.
        return None
    return value


def _values(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, MultiValue | list | tuple):
        return list(value)
    if isinstance(value, str) and value == "":
        return []
    return [value]


def _element(vr: str, value: Any) -> Json:
    """One element whose value has been decoded by pydicom."""
    entry: Json = {"vr": vr}
    if vr in BINARY_VRS:
        if value:
            entry["InlineBinary"] = base64.b64encode(bytes(value)).decode("ascii")
        return entry
    if vr == "PN":
        names = [_person_name(v) for v in _values(value)]
        if any(n is not None for n in names):
            entry["Value"] = names
        return entry
    if vr == "AT":
        tags = [tag_hex(Tag(v)) for v in _values(value)]
        if tags:
            entry["Value"] = tags
        return entry
    if vr in ("IS", "DS") or vr in INTEGER_VRS or vr in FLOAT_VRS:
        numbers = [_number(v, vr) for v in _values(value)]
        if any(n is not None for n in numbers):
            entry["Value"] = numbers
        return entry
    texts = [_text(v, vr) for v in _values(value)]
    texts = [t if t != "" else None for t in texts]
    if any(t is not None for t in texts):
        entry["Value"] = texts
    return entry


def dataset_to_json(
    ds: Dataset,
    *,
    bulk: BulkUri | None,
    path: str = "",
    inline_limit: int = INLINE_BINARY_LIMIT,
) -> Json:
    """``ds`` as a DICOM JSON object (tags in ascending order).

    Group lengths and group 0002 are left out. Binary values longer than
    ``inline_limit`` (and all pixel data) become ``BulkDataURI`` when ``bulk``
    is given, else they are omitted with their VR only. Deferred values are
    never read just to be replaced by a URI. A value pydicom cannot decode is
    returned with its VR only (logged).
    """
    out: Json = {}
    for tag in sorted(ds.keys()):
        if tag.element == 0 or tag.group in (0x0002, 0xFFFE):
            continue
        key = tag_hex(tag)
        if tag == CHARSET_TAG:
            out[key] = {"vr": "CS", "Value": [UTF8]}
            continue
        raw = ds.get_item(tag, keep_deferred=True)
        raw_vr = getattr(raw, "VR", None)
        vr = _resolve_vr(raw_vr, tag)
        length = getattr(raw, "length", None) if isinstance(raw, RawDataElement) else None
        if int(tag) in PIXEL_TAGS or (
            vr in BINARY_VRS
            and length is not None
            and (length == UNDEFINED_LENGTH or length > inline_limit)
        ):
            out[key] = _bulk_entry(vr, bulk, path + key)
            continue
        try:
            elem = ds[tag]
        except Exception as exc:  # a value pydicom cannot decode: keep the tag, drop it
            log.debug("cannot decode %s: %s", key, exc)
            out[key] = {"vr": vr}
            continue
        vr = _resolve_vr(elem.VR, tag)
        if vr == "SQ":
            items = []
            for i, item in enumerate(elem.value or []):
                items.append(
                    dataset_to_json(
                        item, bulk=bulk, path=f"{path}{key}/{i}/", inline_limit=inline_limit
                    )
                )
            out[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
            continue
        if vr in BINARY_VRS and elem.value is not None and len(elem.value) > inline_limit:
            out[key] = _bulk_entry(vr, bulk, path + key)
            continue
        try:
            out[key] = _element(vr, elem.value)
        except Exception as exc:
            log.debug("cannot convert %s (%s): %s", key, vr, exc)
            out[key] = {"vr": vr}
    if not path and tag_hex(CHARSET_TAG) not in out:
        out[tag_hex(CHARSET_TAG)] = {"vr": "CS", "Value": [UTF8]}
        out = dict(sorted(out.items()))
    return out


def _bulk_entry(vr: str, bulk: BulkUri | None, element_path: str) -> Json:
    if vr not in BINARY_VRS:
        vr = "OB"
    entry: Json = {"vr": vr}
    if bulk is not None:
        entry["BulkDataURI"] = bulk(element_path)
    return entry


# ---------------------------------------------------------------- index rows


def keyword_vr(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    if tag is None:
        return "UN"
    return _resolve_vr(None, BaseTag(tag))


def attribute(keyword: str, value: Any) -> tuple[str, Json]:
    """One attribute from an index row: (tag, JSON element)."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    vr = keyword_vr(keyword)
    if value is None or value == "":
        return tag_hex(tag), {"vr": vr}
    if vr == "CS" and isinstance(value, str) and "\\" in value:
        value = [v for v in value.split("\\") if v]
    elif vr == "PN" and isinstance(value, str):
        value = PersonName(value) if "\\" not in value else value.split("\\")
    return tag_hex(tag), _element(vr, value)


def row_to_json(row: Mapping[str, Any], extra: Mapping[str, Json] | None = None) -> Json:
    """A QIDO result: the row's attributes plus ``extra`` (tag → element), tags sorted."""
    out: Json = {}
    for keyword, value in row.items():
        try:
            key, entry = attribute(keyword, value)
        except KeyError:
            continue
        out[key] = entry
    if extra:
        out.update(extra)
    return dict(sorted(out.items()))
