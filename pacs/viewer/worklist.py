"""The worklist search: request parameters → an archive :class:`Query` → rows for the page.

Names and descriptions match word by word, ignoring case and diacritics
(``nguyen thi`` finds ``Nguyễn^Thị Hồng Nhung``), through the archive's fuzzy
matching; IDs and accession numbers match by prefix; dates by range.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pacs.archive import Archive
from pacs.errors import InvalidQuery
from pacs.storage.matching import Level, Query

#: what the worklist shows of a study
KEYWORDS = (
    "StudyInstanceUID",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyDescription",
    "ReferringPhysicianName",
    "ModalitiesInStudy",
    "InstitutionName",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)

#: sortable column → index keywords
SORTS: dict[str, tuple[str, ...]] = {
    "date": ("StudyDate", "StudyTime"),
    "name": ("PatientName",),
    "id": ("PatientID",),
    "birth": ("PatientBirthDate",),
    "accession": ("AccessionNumber",),
    "modality": ("ModalitiesInStudy",),
    "description": ("StudyDescription",),
    "referring": ("ReferringPhysicianName",),
    "series": ("NumberOfStudyRelatedSeries",),
    "images": ("NumberOfStudyRelatedInstances",),
}

MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50
_DATE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")
_MODALITY = re.compile(r"^[A-Z0-9]{1,16}$")


@dataclass(frozen=True)
class Page:
    total: int
    page: int
    page_size: int
    rows: list[dict[str, Any]]


def _date(value: str, what: str) -> str:
    m = _DATE.match(value.strip())
    if not m:
        raise InvalidQuery(f"{what} must be a date (YYYY-MM-DD)")
    return "".join(m.groups())


def _prefix(value: str) -> str:
    """IDs typed in the worklist match as prefixes (``2400`` finds ``24003817``)."""
    value = value.strip()
    if not value:
        return ""
    return value if ("*" in value or "?" in value) else value + "*"


def _int(raw: str | None, default: int, low: int, high: int, what: str) -> int:
    if raw in (None, ""):
        return default
    try:
        value = int(raw)  # type: ignore[arg-type]
    except ValueError as exc:
        raise InvalidQuery(f"{what} must be a number") from exc
    return max(low, min(high, value))


def build_query(args: Mapping[str, str], scope: list[int] | None) -> tuple[Query, int, int]:
    """(query without paging, page, page size) from the worklist's request parameters.

    Parameters: ``name``, ``patient_id``, ``accession``, ``date_from``, ``date_to``
    (YYYY-MM-DD), ``modality`` (comma-separated), ``description``, ``referring``,
    ``sort`` (one of :data:`SORTS`), ``dir`` (asc/desc), ``page``, ``page_size``.
    Raises InvalidQuery for malformed values.
    """
    criteria: dict[str, str] = {}
    for param, keyword in (
        ("name", "PatientName"),
        ("description", "StudyDescription"),
        ("referring", "ReferringPhysicianName"),
    ):
        value = args.get(param, "").strip()
        if value:
            criteria[keyword] = value[:200]
    for param, keyword in (("patient_id", "PatientID"), ("accession", "AccessionNumber")):
        value = _prefix(args.get(param, "")[:64])
        if value:
            criteria[keyword] = value
    low = _date(args["date_from"], "date_from") if args.get("date_from") else ""
    high = _date(args["date_to"], "date_to") if args.get("date_to") else ""
    if low and high and low == high:
        criteria["StudyDate"] = low
    elif low or high:
        criteria["StudyDate"] = f"{low}-{high}"
    modalities = [m.strip().upper() for m in args.get("modality", "").split(",") if m.strip()]
    if modalities:
        if not all(_MODALITY.match(m) for m in modalities):
            raise InvalidQuery("modality must be codes like CT, MR")
        criteria["ModalitiesInStudy"] = "\\".join(modalities)
    sort = args.get("sort", "date")
    if sort not in SORTS:
        raise InvalidQuery(f"cannot sort by {sort!r}")
    descending = args.get("dir", "desc" if sort == "date" else "asc") != "asc"
    order = [(keyword, descending) for keyword in SORTS[sort]]
    if sort != "date":
        order += [("StudyDate", True), ("StudyTime", True)]
    page = _int(args.get("page"), 1, 1, 1_000_000, "page")
    size = _int(args.get("page_size"), DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE, "page_size")
    query = Query(Level.STUDY, criteria, fuzzy=True, order_by=order, study_scope=scope)
    return query, page, size


def search(archive: Archive, args: Mapping[str, str], scope: list[int] | None) -> Page:
    """One page of studies matching ``args`` within ``scope`` (see :func:`build_query`)."""
    query, page, size = build_query(args, scope)
    total = archive.count(query)
    pages = max(1, -(-total // size))
    page = min(page, pages)
    query.limit = size
    query.offset = (page - 1) * size
    rows = archive.search(query, KEYWORDS) if total else []
    return Page(total=total, page=page, page_size=size, rows=rows)


def study_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A study row as the pages use it (snake_case names, counts as numbers)."""
    return {
        "study_uid": row.get("StudyInstanceUID", ""),
        "patient_name": row.get("PatientName", ""),
        "patient_id": row.get("PatientID", ""),
        "birth_date": row.get("PatientBirthDate", ""),
        "sex": row.get("PatientSex", ""),
        "study_date": row.get("StudyDate", ""),
        "study_time": row.get("StudyTime", ""),
        "accession": row.get("AccessionNumber", ""),
        "description": row.get("StudyDescription", ""),
        "referring": row.get("ReferringPhysicianName", ""),
        "modalities": [m for m in (row.get("ModalitiesInStudy") or "").split("\\") if m],
        "institution": row.get("InstitutionName", ""),
        "num_series": int(row.get("NumberOfStudyRelatedSeries") or 0),
        "num_instances": int(row.get("NumberOfStudyRelatedInstances") or 0),
    }
