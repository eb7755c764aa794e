"""QIDO-RS (PS3.18 10.6): search studies, series and instances.

Matching is the archive's (the same as C-FIND: PS3.4 C.2.2.2 wildcards, ranges
and UID lists, plus case- and diacritic-insensitive person names, and
word-prefix matching with ``fuzzymatching=true``). Attributes are given by
keyword or tag (``PatientName=…`` or ``00100010=…``). Results are DICOM JSON
with the attributes of PS3.18 Table 10.6.3-3/4/5, plus ``includefield``.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from flask import Blueprint, Response, request
from pydicom.datadict import keyword_for_tag, tag_for_keyword

from pacs.errors import InvalidQuery, NotAcceptable, NotFound
from pacs.storage.matching import Level, Query, attributes_for
from pacs.viewer.access import Principal
from pacs.viewer.dicomweb.common import (
    DICOM_JSON,
    archive,
    base_url,
    check_uid,
    gate,
    query_values,
    settings,
    warning_header,
)
from pacs.viewer.dicomweb.dicomjson import Json, row_to_json, tag_hex
from pacs.viewer.dicomweb.negotiation import parse_accept

log = logging.getLogger(__name__)

bp = Blueprint("dicomweb_qido", __name__, url_prefix="/dicomweb")

# PS3.18 Table 10.6.3-3 (study), -4 (series), -5 (instance) attributes we keep.
STUDY_ATTRIBUTES = (
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "StudyDescription",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
SERIES_ATTRIBUTES = (
    "Modality",
    "SeriesDescription",
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDate",
    "SeriesTime",
    "BodyPartExamined",
    "NumberOfSeriesRelatedInstances",
)
INSTANCE_ATTRIBUTES = (
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceNumber",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
    "AvailableTransferSyntaxUID",
)
#: returned without being columns of the index
COMPUTED = ("SpecificCharacterSet", "RetrieveURL", "InstanceAvailability", "SOPClassesInStudy")
#: query parameters that are not attributes (PS3.18 8.3.4, 8.3.5)
RESERVED = {
    "limit",
    "offset",
    "fuzzymatching",
    "includefield",
    "emptyvaluematching",
    "accept",
    "charset",
}
TAG_RE = re.compile(r"^[0-9A-Fa-f]{8}$")


def _keyword(name: str) -> str | None:
    """A DICOM keyword for a parameter name given as keyword or tag, else None."""
    if TAG_RE.match(name):
        return keyword_for_tag(int(name, 16)) or None
    return name if tag_for_keyword(name) is not None else None


def _int_param(name: str, default: int | None) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise InvalidQuery(f"{name} must be a whole number, not {raw[:20]!r}") from exc
    if value < 0:
        raise InvalidQuery(f"{name} must not be negative")
    return value


def _json_media_type() -> str:
    """application/dicom+json, or application/json when only that is acceptable; else 406."""
    for r in parse_accept(request.headers.get("Accept")):
        if r.part_matches(DICOM_JSON) and not r.is_multipart:
            return DICOM_JSON
        if r.media_type == "application/json":
            return "application/json"
    raise NotAcceptable("search results are available as application/dicom+json only")


def _criteria(level: Level) -> tuple[dict[str, str], list[str]]:
    """Matching keys from the query string, and the keys we cannot match on."""
    known = attributes_for(level)
    criteria: dict[str, str] = {}
    unsupported: list[str] = []
    for name, values in request.args.lists():
        if name in RESERVED or name.startswith("_"):
            continue
        keyword = _keyword(name)
        if keyword is None:
            if "." in name and all(_keyword(p) for p in name.split(".")):
                unsupported.append(name)  # sequence matching (PS3.18 8.3.4.1)
                continue
            raise InvalidQuery(f"unknown query parameter {name[:64]!r}")
        if keyword == "Modality" and level is Level.STUDY:
            keyword = "ModalitiesInStudy"
        if keyword not in known or known[keyword].column is None:
            unsupported.append(keyword)
            continue
        text = "\\".join(v for v in values if v != "")
        if text:
            criteria[keyword] = text
    return criteria, unsupported


def _include(level: Level) -> tuple[list[str], bool]:
    """Keywords asked for with includefield, and whether ``all`` was asked."""
    keywords: list[str] = []
    everything = False
    for value in query_values("includefield"):
        if value.lower() == "all":
            everything = True
            continue
        keyword = _keyword(value)
        if keyword is None:
            raise InvalidQuery(f"includefield {value[:64]!r} is not a DICOM keyword or tag")
        keywords.append(keyword)
    return keywords, everything


def _restrict_series(principal: Principal, criteria: dict[str, str], level: Level) -> bool:
    """Apply a series-limited principal (share of chosen series); False if nothing can match."""
    if principal.series_uids is None or level is Level.STUDY:
        return True
    allowed = set(principal.series_uids)
    asked = criteria.get("SeriesInstanceUID")
    if asked:
        allowed &= {u.strip() for u in asked.replace(",", "\\").split("\\") if u.strip()}
    if not allowed:
        return False
    criteria["SeriesInstanceUID"] = "\\".join(sorted(allowed))
    return True


def _columns(level: Level, study: str | None, series: str | None) -> list[str]:
    if level is Level.STUDY:
        return list(STUDY_ATTRIBUTES)
    if level is Level.SERIES:
        parents = ["StudyInstanceUID"] if study else list(STUDY_ATTRIBUTES)
        return parents + list(SERIES_ATTRIBUTES)
    if series:
        parents = ["StudyInstanceUID", "SeriesInstanceUID"]
    elif study:
        parents = ["StudyInstanceUID", *SERIES_ATTRIBUTES]
    else:
        parents = [*STUDY_ATTRIBUTES, *SERIES_ATTRIBUTES]
    return parents + list(INSTANCE_ATTRIBUTES)


def _retrieve_url(level: Level, row: dict[str, Any], base: str) -> str:
    url = f"{base}/studies/{row['StudyInstanceUID']}"
    if level in (Level.SERIES, Level.IMAGE):
        url += f"/series/{row['SeriesInstanceUID']}"
    if level is Level.IMAGE:
        url += f"/instances/{row['SOPInstanceUID']}"
    return url


def search(level: Level, study: str | None = None, series: str | None = None) -> Response:
    principal = gate()
    media_type = _json_media_type()
    criteria, unsupported = _criteria(level)
    if study is not None:
        criteria["StudyInstanceUID"] = check_uid(study, "Study Instance UID")
    if series is not None:
        criteria["SeriesInstanceUID"] = check_uid(series, "Series Instance UID")
    if study is not None:
        _require_visible(principal, study, series)
    include, everything = _include(level)
    fuzzy_raw = request.args.get("fuzzymatching", "false").lower()
    if fuzzy_raw not in ("true", "false"):
        raise InvalidQuery("fuzzymatching must be true or false")
    max_results = settings().dicomweb_max_results
    limit = _int_param("limit", None)
    offset = _int_param("offset", 0) or 0
    warnings = []
    if unsupported:
        warnings.append(
            "The following attributes were not supported for matching and were ignored: "
            + ", ".join(dict.fromkeys(unsupported))
        )
    effective = max_results if limit is None or limit == 0 else min(limit, max_results)

    rows: list[dict[str, Any]] = []
    if _restrict_series(principal, criteria, level):
        keywords = _columns(level, study, series) + [k for k in include if k not in COMPUTED]
        if everything:
            keywords += [k for k, a in attributes_for(level).items() if a.column is not None]
        query = Query(
            level,
            criteria,
            fuzzy=fuzzy_raw == "true",
            limit=effective + 1,
            offset=offset,
            study_scope=principal.scope(),
        )
        rows = archive().search(query, list(dict.fromkeys(keywords)))
    if len(rows) > effective:
        rows = rows[:effective]
        if limit is None or limit == 0 or limit > max_results:
            warnings.append(
                "The number of results exceeded the maximum supported by the server. "
                "Additional results can be requested."
            )

    body = _results(level, rows, include, everything)
    response = Response(
        json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        content_type=media_type,
    )
    if warnings:
        response.headers["Warning"] = warning_header(warnings)
    return response


def _require_visible(principal: Principal, study: str, series: str | None) -> None:
    """Searches nested under a study (or series) the caller cannot see answer 404,
    like every other endpoint, rather than an empty list."""
    criteria = {"StudyInstanceUID": study}
    level = Level.STUDY
    if series is not None:
        criteria["SeriesInstanceUID"] = series
        level = Level.SERIES
        if principal.series_uids is not None and series not in principal.series_uids:
            raise NotFound("no such series")
    if archive().count(Query(level, criteria, study_scope=principal.scope())) == 0:
        raise NotFound("no such series" if series else "no such study")


def _results(
    level: Level, rows: list[dict[str, Any]], include: list[str], everything: bool
) -> list[Json]:
    base = base_url()
    sop_classes: dict[str, list[str]] = {}
    if level is Level.STUDY and ("SOPClassesInStudy" in include or everything) and rows:
        sop_classes = archive().index.sop_classes_in_studies([r["StudyInstanceUID"] for r in rows])
    out = []
    for row in rows:
        extra: Json = {
            tag_hex(0x00080005): {"vr": "CS", "Value": ["ISO_IR 192"]},
            tag_hex(0x00081190): {"vr": "UR", "Value": [_retrieve_url(level, row, base)]},
            tag_hex(0x00080056): {"vr": "CS", "Value": ["ONLINE"]},
        }
        if sop_classes:
            classes = sop_classes.get(row["StudyInstanceUID"], [])
            extra[tag_hex(0x00080062)] = (
                {"vr": "UI", "Value": sorted(classes)} if classes else {"vr": "UI"}
            )
        out.append(row_to_json(row, extra))
    return out


@bp.get("/studies")
def search_studies() -> Response:
    return search(Level.STUDY)


@bp.get("/series")
def search_series() -> Response:
    return search(Level.SERIES)


@bp.get("/studies/<study>/series")
def search_study_series(study: str) -> Response:
    return search(Level.SERIES, study=study)


@bp.get("/instances")
def search_instances() -> Response:
    return search(Level.IMAGE)


@bp.get("/studies/<study>/instances")
def search_study_instances(study: str) -> Response:
    return search(Level.IMAGE, study=study)


@bp.get("/studies/<study>/series/<series>/instances")
def search_series_instances(study: str, series: str) -> Response:
    return search(Level.IMAGE, study=study, series=series)
