"""Read-only figures about the archive for operators: arrivals per day, storage growth,
each sending AE's last store. One query each, on SQLite and PostgreSQL alike.

Days are calendar days in the operator's time zone, given as an offset from UTC in
minutes (Vietnam: +420), so "today" on the dashboard starts at local midnight.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, String, cast, func, literal, select
from sqlalchemy.exc import SQLAlchemyError

from pacs.storage.database import unavailable
from pacs.storage.models import Series, Study


@dataclass(frozen=True)
class DayCount:
    day: str  # YYYY-MM-DD, local
    modality: str
    studies: int


@dataclass(frozen=True)
class DayGrowth:
    day: str
    studies: int
    bytes: int


@dataclass(frozen=True)
class SourceActivity:
    ae_title: str
    last_received_at: datetime | None
    series: int


def _local_day(engine: Engine, column: Any, offset_minutes: int) -> Any:
    """SQL for the local calendar day (YYYY-MM-DD) of a UTC timestamp column."""
    if engine.dialect.name == "sqlite":
        # Stored as 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC.
        return func.strftime("%Y-%m-%d", column, f"{offset_minutes:+d} minutes")
    shifted = func.timezone("UTC", column) + func.make_interval(0, 0, 0, 0, 0, offset_minutes)
    return cast(func.to_char(shifted, "YYYY-MM-DD"), String)


def _window_start(days: int, offset_minutes: int) -> datetime:
    """UTC instant of local midnight ``days - 1`` days ago (the window includes today)."""
    local_now = datetime.now(UTC) + timedelta(minutes=offset_minutes)
    local_midnight = local_now.replace(hour=0, minute=0, second=0, microsecond=0)
    return local_midnight - timedelta(days=days - 1) - timedelta(minutes=offset_minutes)


def studies_per_day(engine: Engine, *, days: int = 30, offset_minutes: int = 0) -> list[DayCount]:
    """Studies that arrived each local day of the last ``days``, per modality of their
    series (a CT+SR study counts once under CT and once under SR)."""
    since = _window_start(days, offset_minutes)
    day = _local_day(engine, Study.created_at, offset_minutes).label("day")
    stmt = (
        select(day, Series.modality, func.count(func.distinct(Study.id)))
        .select_from(Study)
        .join(Series, Series.study_pk == Study.id)
        .where(Study.created_at >= since)
        .group_by(day, Series.modality)
        .order_by(day, Series.modality)
    )
    try:
        with engine.connect() as conn:
            return [DayCount(d, m or "?", int(n)) for d, m, n in conn.execute(stmt)]
    except SQLAlchemyError as exc:
        raise unavailable("index", "statistics", exc) from exc


def storage_growth(
    engine: Engine, *, days: int = 30, offset_minutes: int = 0
) -> tuple[int, list[DayGrowth]]:
    """Bytes archived before the window, and per local day of the window the studies
    that arrived and their bytes now (a study counts on the day it first arrived)."""
    since = _window_start(days, offset_minutes)
    day = _local_day(engine, Study.created_at, offset_minutes).label("day")
    per_day = (
        select(day, func.count(Study.id), func.coalesce(func.sum(Study.size_bytes), 0))
        .where(Study.created_at >= since)
        .group_by(day)
        .order_by(day)
    )
    before = select(func.coalesce(func.sum(Study.size_bytes), literal(0))).where(
        Study.created_at < since
    )
    try:
        with engine.connect() as conn:
            baseline = int(conn.execute(before).scalar() or 0)
            rows = [DayGrowth(d, int(n), int(b)) for d, n, b in conn.execute(per_day)]
    except SQLAlchemyError as exc:
        raise unavailable("index", "statistics", exc) from exc
    return baseline, rows


def source_activity(engine: Engine) -> list[SourceActivity]:
    """Per calling AE that stored series: when its latest series changed, and how many."""
    stmt = (
        select(Series.source_ae, func.max(Series.updated_at), func.count(Series.id))
        .where(Series.source_ae != "")
        .group_by(Series.source_ae)
        .order_by(Series.source_ae)
    )
    try:
        with engine.connect() as conn:
            rows = conn.execute(stmt).all()
    except SQLAlchemyError as exc:
        raise unavailable("index", "statistics", exc) from exc
    out = []
    for ae, at, n in rows:
        if at is not None and at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        out.append(SourceActivity(ae, at, int(n)))
    return out
