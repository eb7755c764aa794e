"""The DICOM tag browser: every element of one instance's header as display text.

Text is decoded with the repaired character set (:func:`pacs.charset.apply_text_codec`),
so Vietnamese names written in UTF-8 under a wrong or missing declaration, or in
Windows-1258, read correctly. Pixel data is summarised, never sent.
"""

from __future__ import annotations

from typing import Any

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from pacs.archive import Archive
from pacs.charset import apply_text_codec, clean_text
from pacs.storage.index import InstanceRef

MAX_VALUE_CHARS = 512
MAX_ITEMS = 50
MAX_DEPTH = 5
BINARY_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN"})


def _tag(elem: DataElement) -> str:
    return f"{elem.tag.group:04X},{elem.tag.element:04X}"


def _value(elem: DataElement) -> str:
    if elem.VR in BINARY_VRS:
        raw = elem.value
        size = len(raw) if isinstance(raw, bytes | bytearray) else 0
        if isinstance(raw, bytes | bytearray) and size <= 16:
            return raw.hex(" ")
        return f"({size} bytes)"
    value = elem.value
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("latin-1", "replace")
    if type(value).__name__ == "MultiValue" or isinstance(value, list):
        text = "\\".join(clean_text(v) for v in value)
    else:
        text = clean_text(value)
    if len(text) > MAX_VALUE_CHARS:
        text = text[:MAX_VALUE_CHARS] + "…"
    return text


def _elements(ds: Dataset, depth: int) -> list[dict[str, Any]]:
    out = []
    tags = ds.keys()  # tags only: the elements are decoded one by one below
    for tag in tags:
        try:
            elem = ds[tag]
        except Exception as exc:  # a broken element shows as such; the others still list
            out.append(
                {
                    "tag": f"{tag.group:04X},{tag.element:04X}",
                    "keyword": "",
                    "name": "",
                    "vr": "",
                    "value": f"(unreadable: {exc.__class__.__name__})",
                }
            )
            continue
        entry: dict[str, Any] = {
            "tag": _tag(elem),
            "keyword": elem.keyword or "",
            "name": elem.name if not elem.tag.is_private else f"{elem.name} (private)",
            "vr": elem.VR or "",
        }
        if elem.tag == 0x7FE00010:
            entry["value"] = "(pixel data)"
        elif elem.VR == "SQ":
            items = list(elem.value or [])
            entry["value"] = f"{len(items)} item(s)"
            if depth < MAX_DEPTH:
                entry["items"] = [_elements(item, depth + 1) for item in items[:MAX_ITEMS]]
        else:
            try:
                entry["value"] = _value(elem)
            except Exception as exc:  # undecodable value: show that, not a 500
                entry["value"] = f"(unreadable: {exc.__class__.__name__})"
        out.append(entry)
    return out


def instance_tags(archive: Archive, ref: InstanceRef) -> dict[str, Any]:
    """``{"meta": [...], "dataset": [...], "charset_repaired": codec|None}`` for one instance.

    Raises pacs.errors.NotFound / StorageUnavailable from the archive.
    """
    with archive.readable_path(ref) as path:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    codec = apply_text_codec(ds)
    meta = _elements(ds.file_meta, 0) if getattr(ds, "file_meta", None) is not None else []
    elements = _elements(ds, 0)
    if ref.rows:
        elements.append(
            {
                "tag": "7FE0,0010",
                "keyword": "PixelData",
                "name": "Pixel Data",
                "vr": "",
                "value": f"({ref.rows}×{ref.columns}, {ref.frames or 1} frame(s); not shown)",
            }
        )
    return {"meta": meta, "dataset": elements, "charset_repaired": codec}
