"""Attribute matching for C-FIND, QIDO-RS and the worklist, as SQL conditions.

Implements PS3.4 C.2.2.2: single value, universal (empty), wildcard (``*``,
``?``), range (DA, TM, DT) and list-of-UID matching, plus our person-name rule:
PN values match case- and diacritic-insensitively through their folded keys.
With ``fuzzy`` (QIDO ``fuzzymatching=true``, the web worklist) every word of a
name or description must start a word of the stored value, in any order.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    func,
    literal,
    or_,
    select,
    true,
)
from sqlalchemy.orm import InstrumentedAttribute

from pacs.charset import fold
from pacs.errors import InvalidQuery
from pacs.storage.models import Instance, Patient, SearchToken, Series, Study


class Level(enum.StrEnum):
    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


_DEPTH = {Level.PATIENT: 0, Level.STUDY: 1, Level.SERIES: 2, Level.IMAGE: 3}


class Kind(enum.Enum):
    UID = "uid"
    STRING = "string"  # SH, LO, CS, AE: case-sensitive
    TEXT = "text"  # descriptions: standard matching, or word-prefix when fuzzy
    PN = "pn"
    DATE = "date"
    TIME = "time"
    NUMBER = "number"  # IS
    MODALITIES = "modalities"  # ModalitiesInStudy: any listed modality present
    RETURN_ONLY = "return"  # computed; a value in a query is ignored


@dataclass(frozen=True)
class Attr:
    keyword: str
    level: Level
    kind: Kind
    column: ColumnElement | InstrumentedAttribute | None
    #: folded column for PN and fuzzy TEXT matching
    key_column: ColumnElement | InstrumentedAttribute | None = None
    #: search_tokens.field for word-prefix (fuzzy) matching
    token_field: str | None = None


def _study_attrs() -> list[Attr]:
    return [
        Attr("PatientID", Level.PATIENT, Kind.STRING, Study.patient_id),
        Attr(
            "PatientName",
            Level.PATIENT,
            Kind.PN,
            Study.patient_name,
            Study.patient_name_key,
            "patient",
        ),
        Attr("PatientBirthDate", Level.PATIENT, Kind.DATE, Study.patient_birth_date),
        Attr("PatientSex", Level.PATIENT, Kind.STRING, Study.patient_sex),
        Attr("StudyInstanceUID", Level.STUDY, Kind.UID, Study.study_uid),
        Attr("StudyDate", Level.STUDY, Kind.DATE, Study.study_date),
        Attr("StudyTime", Level.STUDY, Kind.TIME, Study.study_time),
        Attr("AccessionNumber", Level.STUDY, Kind.STRING, Study.accession_number),
        Attr("StudyID", Level.STUDY, Kind.STRING, Study.study_id),
        Attr(
            "StudyDescription",
            Level.STUDY,
            Kind.TEXT,
            Study.description,
            Study.description_key,
            "description",
        ),
        Attr(
            "ReferringPhysicianName",
            Level.STUDY,
            Kind.PN,
            Study.referring_physician,
            Study.referring_physician_key,
            "referring",
        ),
        Attr("InstitutionName", Level.STUDY, Kind.STRING, Study.institution),
        Attr("ModalitiesInStudy", Level.STUDY, Kind.MODALITIES, Study.modalities),
        Attr("NumberOfStudyRelatedSeries", Level.STUDY, Kind.RETURN_ONLY, Study.num_series),
        Attr("NumberOfStudyRelatedInstances", Level.STUDY, Kind.RETURN_ONLY, Study.num_instances),
    ]


def _series_attrs() -> list[Attr]:
    return [
        Attr("SeriesInstanceUID", Level.SERIES, Kind.UID, Series.series_uid),
        Attr("Modality", Level.SERIES, Kind.STRING, Series.modality),
        Attr("SeriesNumber", Level.SERIES, Kind.NUMBER, Series.series_number),
        Attr("SeriesDescription", Level.SERIES, Kind.TEXT, Series.description),
        Attr("BodyPartExamined", Level.SERIES, Kind.STRING, Series.body_part),
        Attr("SeriesDate", Level.SERIES, Kind.DATE, Series.series_date),
        Attr("SeriesTime", Level.SERIES, Kind.TIME, Series.series_time),
        Attr("StationName", Level.SERIES, Kind.STRING, Series.station_name),
        Attr(
            "NumberOfSeriesRelatedInstances", Level.SERIES, Kind.RETURN_ONLY, Series.num_instances
        ),
    ]


def _instance_attrs() -> list[Attr]:
    return [
        Attr("SOPInstanceUID", Level.IMAGE, Kind.UID, Instance.sop_uid),
        Attr("SOPClassUID", Level.IMAGE, Kind.UID, Instance.sop_class_uid),
        Attr("InstanceNumber", Level.IMAGE, Kind.NUMBER, Instance.instance_number),
        Attr("Rows", Level.IMAGE, Kind.NUMBER, Instance.rows),
        Attr("Columns", Level.IMAGE, Kind.NUMBER, Instance.columns),
        Attr("NumberOfFrames", Level.IMAGE, Kind.NUMBER, Instance.frames),
        Attr("BitsAllocated", Level.IMAGE, Kind.NUMBER, Instance.bits_allocated),
        Attr("AvailableTransferSyntaxUID", Level.IMAGE, Kind.UID, Instance.transfer_syntax_uid),
    ]


def _patient_attrs() -> list[Attr]:
    studies = select(func.count(Study.id)).where(Study.patient_pk == Patient.id)
    series = select(func.coalesce(func.sum(Study.num_series), 0)).where(
        Study.patient_pk == Patient.id
    )
    instances = select(func.coalesce(func.sum(Study.num_instances), 0)).where(
        Study.patient_pk == Patient.id
    )
    return [
        Attr("PatientID", Level.PATIENT, Kind.STRING, Patient.patient_id),
        Attr("IssuerOfPatientID", Level.PATIENT, Kind.STRING, Patient.issuer),
        Attr("PatientName", Level.PATIENT, Kind.PN, Patient.name, Patient.name_key),
        Attr("PatientBirthDate", Level.PATIENT, Kind.DATE, Patient.birth_date),
        Attr("PatientSex", Level.PATIENT, Kind.STRING, Patient.sex),
        Attr(
            "NumberOfPatientRelatedStudies",
            Level.PATIENT,
            Kind.RETURN_ONLY,
            studies.scalar_subquery(),
        ),
        Attr(
            "NumberOfPatientRelatedSeries",
            Level.PATIENT,
            Kind.RETURN_ONLY,
            series.scalar_subquery(),
        ),
        Attr(
            "NumberOfPatientRelatedInstances",
            Level.PATIENT,
            Kind.RETURN_ONLY,
            instances.scalar_subquery(),
        ),
    ]


_PATIENT_ROOT_PATIENT = {a.keyword: a for a in _patient_attrs()}
_HIERARCHY = {a.keyword: a for a in _study_attrs() + _series_attrs() + _instance_attrs()}


def attributes_for(level: Level) -> dict[str, Attr]:
    """Every attribute a query at ``level`` can match on or return."""
    if level is Level.PATIENT:
        return dict(_PATIENT_ROOT_PATIENT)
    depth = _DEPTH[level]
    return {k: a for k, a in _HIERARCHY.items() if _DEPTH[a.level] <= depth}


@dataclass
class Query:
    """A search at one level: DICOM keyword → matching value (already strings)."""

    level: Level
    criteria: dict[str, str] = field(default_factory=dict)
    fuzzy: bool = False
    limit: int | None = None
    offset: int = 0
    #: (keyword, descending) pairs; defaults to newest studies first
    order_by: Sequence[tuple[str, bool]] = ()
    #: restrict to these study primary keys (share links, partner scopes)
    study_scope: Sequence[int] | None = None


# ---------------------------------------------------------------- value matching


def _has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def _like_pattern(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _glob_pattern(value: str) -> str:
    # GLOB's only other special characters are brackets; wrap them to be literal.
    return "".join("[" + c + "]" if c in "[]" else c for c in value)


def _prefix_bounds(prefix: str) -> tuple[str, str]:
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _wildcard(
    column: ColumnElement, value: str, *, case_sensitive: bool, dialect: str
) -> ColumnElement:
    """PS3.4 C.2.2.2.4: ``*`` any sequence, ``?`` one character."""
    stem = value.rstrip("*")
    if stem and not _has_wildcard(stem):
        # A trailing * only: an index range scan.
        low, high = _prefix_bounds(stem)
        return and_(column >= low, column < high)
    if not value.strip("*"):
        return true()
    if case_sensitive and dialect == "sqlite":
        return column.op("GLOB")(_glob_pattern(value))
    return column.like(_like_pattern(value), escape="\\")


def _split_range(value: str) -> tuple[str, str] | None:
    if "-" not in value:
        return None
    low, _, high = value.partition("-")
    return low.strip(), high.strip()


def _digits_only(value: str, what: str) -> str:
    cleaned = value.replace(":", "").replace(".", "") if what == "date" else value.replace(":", "")
    allowed = set("0123456789.") if what == "time" else set("0123456789")
    if not cleaned or not set(cleaned) <= allowed:
        raise InvalidQuery(f"invalid {what} value {value!r}")
    return cleaned


def _date_condition(column: ColumnElement, value: str) -> ColumnElement:
    """PS3.4 C.2.2.2.5: ``d``, ``d1-d2``, ``d1-``, ``-d2``."""
    bounds = _split_range(value)
    if bounds is None:
        return column == _digits_only(value, "date")
    low, high = bounds
    conds = [column != ""]
    if low:
        conds.append(column >= _digits_only(low, "date"))
    if high:
        conds.append(column <= _digits_only(high, "date"))
    if not low and not high:
        raise InvalidQuery(f"invalid date range {value!r}")
    return and_(*conds)


def _time_bound(value: str, *, upper: bool) -> str:
    digits = _digits_only(value, "time")
    whole, _, frac = digits.partition(".")
    if len(whole) > 6 or len(whole) % 2:
        raise InvalidQuery(f"invalid time value {value!r}")
    fill = "9" if upper else "0"
    return whole.ljust(6, fill) + "." + frac.ljust(6, fill)


def _time_condition(column: ColumnElement, value: str) -> ColumnElement:
    bounds = _split_range(value)
    if bounds is None:
        low = high = value
    else:
        low, high = bounds
        if not low and not high:
            raise InvalidQuery(f"invalid time range {value!r}")
    # Stored times are HHMMSS[.ffffff]; comparing strings works once both sides are
    # padded, and a query "10" means the whole hour 10:00:00–10:59:59.999999.
    conds = [column != ""]
    if low:
        conds.append(column >= _time_bound(low, upper=False).rstrip("0").rstrip("."))
    if high:
        conds.append(column <= _time_bound(high, upper=True))
    return and_(*conds)


def _number_condition(column: ColumnElement, value: str) -> ColumnElement:
    values = [v.strip() for v in value.replace(",", "\\").split("\\") if v.strip()]
    try:
        numbers = [int(v) for v in values]
    except ValueError as exc:
        raise InvalidQuery(f"invalid number {value!r}") from exc
    return column.in_(numbers) if len(numbers) > 1 else column == numbers[0]


def _uid_condition(column: ColumnElement, value: str) -> ColumnElement:
    """PS3.4 C.2.2.2.2 list of UID matching (QIDO also allows commas)."""
    uids = [u.strip() for u in value.replace(",", "\\").split("\\") if u.strip()]
    if not uids:
        return true()
    if any(_has_wildcard(u) for u in uids):
        raise InvalidQuery(f"wildcards are not allowed in UIDs: {value!r}")
    return column.in_(uids) if len(uids) > 1 else column == uids[0]


def _modalities_condition(column: ColumnElement, value: str) -> ColumnElement:
    wanted = [m.strip() for m in value.replace(",", "\\").split("\\") if m.strip()]
    padded = literal("\\") + column + literal("\\")
    return or_(*(padded.like(f"%\\\\{_like_pattern(m)}\\\\%", escape="\\") for m in wanted))


def _pn_condition(attr: Attr, value: str, dialect: str) -> ColumnElement:
    key = fold(value)
    column = attr.key_column
    assert column is not None
    if not key:
        return true()
    if not _has_wildcard(key):
        return column == key
    condition = _wildcard(column, key, case_sensitive=False, dialect=dialect)
    if not key.isascii() and "=" not in key:
        # An ideographic or phonetic spelling: it may be in the second or third group.
        condition = or_(condition, column.like("%=" + _like_pattern(key), escape="\\"))
    return condition


def _words(value: str) -> list[str]:
    return [
        w for w in fold(value).replace("=", " ").replace("*", " ").replace("?", " ").split() if w
    ]


def _token_condition(attr: Attr, value: str) -> ColumnElement:
    """Every word of ``value`` starts some word of the stored value (any order)."""
    conds = []
    for word in _words(value):
        low, high = _prefix_bounds(word)
        conds.append(
            Study.id.in_(
                select(SearchToken.study_pk).where(
                    SearchToken.field == attr.token_field,
                    SearchToken.token >= low,
                    SearchToken.token < high,
                )
            )
        )
    return and_(*conds) if conds else true()


def _fuzzy_text_condition(attr: Attr, value: str) -> ColumnElement:
    column = attr.key_column if attr.key_column is not None else attr.column
    assert column is not None
    conds = []
    for word in _words(value):
        spaced = literal(" ") + func.lower(column)
        conds.append(spaced.like("% " + _like_pattern(word) + "%", escape="\\"))
    return and_(*conds) if conds else true()


def condition_for(attr: Attr, value: str, *, fuzzy: bool, dialect: str) -> ColumnElement | None:
    """The SQL condition for one matching key, or None when it does not constrain."""
    value = value.strip()
    if not value or value == "*" or attr.kind is Kind.RETURN_ONLY or attr.column is None:
        return None
    column = attr.column
    if attr.kind is Kind.UID:
        return _uid_condition(column, value)
    if attr.kind is Kind.DATE:
        return _date_condition(column, value)
    if attr.kind is Kind.TIME:
        return _time_condition(column, value)
    if attr.kind is Kind.NUMBER:
        return _number_condition(column, value)
    if attr.kind is Kind.MODALITIES:
        return _modalities_condition(column, value)
    if fuzzy and attr.kind in (Kind.PN, Kind.TEXT):
        if attr.token_field is not None:
            return _token_condition(attr, value)
        return _fuzzy_text_condition(attr, value)
    if attr.kind is Kind.PN:
        return _pn_condition(attr, value, dialect)
    if _has_wildcard(value):
        return _wildcard(column, value, case_sensitive=True, dialect=dialect)
    if attr.kind is Kind.STRING and "\\" in value:
        return column.in_([v for v in value.split("\\") if v])
    return column == value


# ---------------------------------------------------------------- statements


def base_select(level: Level, columns: Sequence[ColumnElement]) -> Select:
    """SELECT the given columns FROM the tables a query at ``level`` spans."""
    stmt = select(*columns)
    if level is Level.PATIENT:
        return stmt.select_from(Patient)
    if level is Level.STUDY:
        return stmt.select_from(Study)
    if level is Level.SERIES:
        return stmt.select_from(Series).join(Study, Series.study_pk == Study.id)
    return (
        stmt.select_from(Instance)
        .join(Series, Instance.series_pk == Series.id)
        .join(Study, Series.study_pk == Study.id)
    )


def where_clauses(query: Query, dialect: str) -> list[ColumnElement]:
    attrs = attributes_for(query.level)
    clauses = []
    for keyword, value in query.criteria.items():
        attr = attrs.get(keyword)
        if attr is None:
            # PS3.4 C.2.2.1.2: a key the SCP does not support is not matched on.
            continue
        cond = condition_for(attr, value, fuzzy=query.fuzzy, dialect=dialect)
        if cond is not None:
            clauses.append(cond)
    if query.study_scope is not None:
        if query.level is Level.PATIENT:
            clauses.append(
                Patient.id.in_(
                    select(Study.patient_pk).where(Study.id.in_(list(query.study_scope)))
                )
            )
        else:
            clauses.append(Study.id.in_(list(query.study_scope)))
    return clauses


def order_clauses(query: Query) -> list[ColumnElement]:
    attrs = attributes_for(query.level)
    order = []
    for keyword, descending in query.order_by:
        attr = attrs.get(keyword)
        if attr is None or attr.column is None:
            raise InvalidQuery(f"cannot sort by {keyword}")
        # NULLS LAST on both backends: SQLite and PostgreSQL disagree by default.
        column = attr.column
        order.append(column.desc().nulls_last() if descending else column.asc().nulls_last())
    # A stable tie-breaker so pages never overlap.
    tiebreak = {
        Level.PATIENT: Patient.id,
        Level.STUDY: Study.id,
        Level.SERIES: Series.id,
        Level.IMAGE: Instance.id,
    }[query.level]
    if not order and query.level is Level.STUDY:
        order = [Study.study_date.desc(), Study.study_time.desc()]
    if not order and query.level is Level.SERIES:
        order = [Series.series_number.asc().nulls_last()]
    if not order and query.level is Level.IMAGE:
        order = [Instance.instance_number.asc().nulls_last()]
    return [*order, tiebreak.asc()]
