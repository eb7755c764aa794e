"""A small work queue in the index database, shared by every node.

Work that must happen once for the whole cluster (a send to a partner hospital,
a routing rule, a sweep of interrupted stores) is a row in ``jobs``. Any worker
process of any node may claim it; a claim is a *lease*: the claimer keeps it
alive with :meth:`JobQueue.heartbeat`, and a lease that runs out (its node died
or hung) is put back in the queue by :meth:`JobQueue.reclaim_expired`.

Claiming is safe under concurrency on both backends: on PostgreSQL with
``SELECT … FOR UPDATE SKIP LOCKED`` (claimers never wait for each other and
never take the same row), on SQLite inside one ``BEGIN IMMEDIATE`` transaction
(one claimer at a time; SQLite is the single-node default anyway).

A job's life::

    queued ──claim──▶ running ──complete──▶ done
      ▲                  │
      └──fail (retry)────┤ (backoff: run_after moves into the future)
      └──lease expired───┤
                         └──fail (no retry / attempts used up)──▶ dead

Every change to a claimed job is *fenced* by the claim (node and attempt
number): a node whose lease expired cannot complete or fail the job another
node has claimed since. Handlers should still be idempotent: a node that stops
heartbeating but finishes its work anyway means the job ran twice.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    DateTime,
    Engine,
    Index,
    Integer,
    String,
    Text,
    delete,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Mapped, mapped_column

from pacs.errors import StorageUnavailable
from pacs.storage.database import aware, unavailable, utcnow, writer
from pacs.storage.models import Base

log = logging.getLogger(__name__)

JobState = Literal["queued", "running", "done", "dead"]
STATES: tuple[JobState, ...] = ("queued", "running", "done", "dead")
_ACTIVE = "state IN ('queued', 'running')"
KIND_MAX = 64
DEDUPE_MAX = 128
ERROR_MAX = 4000


class JobRow(Base):
    """One unit of background work (see the module docstring for its states)."""

    __tablename__ = "jobs"
    __table_args__ = (
        # What claim() scans: queued jobs of some kinds that are due.
        Index("ix_jobs_state_kind_run_after", "state", "kind", "run_after"),
        # What reclaim_expired() and purge() scan.
        Index("ix_jobs_state_lease_until", "state", "lease_until"),
        Index("ix_jobs_state_finished_at", "state", "finished_at"),
        # At most one active job per dedupe key; finished ones do not count.
        Index(
            "uq_jobs_active_dedupe_key",
            "dedupe_key",
            unique=True,
            sqlite_where=text(_ACTIVE),
            postgresql_where=text(_ACTIVE),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(KIND_MAX))
    #: JSON object handed to the handler
    payload: Mapped[str] = mapped_column(Text, default="{}")
    state: Mapped[str] = mapped_column(String(16), default="queued")
    dedupe_key: Mapped[str | None] = mapped_column(String(DEDUPE_MAX), nullable=True)
    #: claims so far (the current one included)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    run_after: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: the node (``name:pid``) holding the current or last claim
    locked_by: Mapped[str] = mapped_column(String(64), default="")
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    #: JSON the handler returned
    result: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


@dataclass(frozen=True)
class Job:
    """A job as read from the queue; a claimed one carries its claim (node, attempt)."""

    id: int
    kind: str
    payload: dict[str, Any]
    state: str
    attempts: int
    max_attempts: int
    run_after: datetime
    locked_by: str
    lease_until: datetime | None
    last_error: str
    result: dict[str, Any] | None
    dedupe_key: str | None
    created_at: datetime
    finished_at: datetime | None


_COLUMNS = (
    JobRow.id,
    JobRow.kind,
    JobRow.payload,
    JobRow.state,
    JobRow.attempts,
    JobRow.max_attempts,
    JobRow.run_after,
    JobRow.locked_by,
    JobRow.lease_until,
    JobRow.last_error,
    JobRow.result,
    JobRow.dedupe_key,
    JobRow.created_at,
    JobRow.finished_at,
)


def _loads(value: str | None) -> Any:
    if not value:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return None


def _job(row: Any) -> Job:
    return Job(
        id=row.id,
        kind=row.kind,
        payload=_loads(row.payload) or {},
        state=row.state,
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        run_after=aware(row.run_after),  # type: ignore[arg-type]
        locked_by=row.locked_by,
        lease_until=aware(row.lease_until),
        last_error=row.last_error,
        result=_loads(row.result),
        dedupe_key=row.dedupe_key,
        created_at=aware(row.created_at),  # type: ignore[arg-type]
        finished_at=aware(row.finished_at),
    )


def _json(value: Mapping[str, Any] | None, what: str) -> str:
    try:
        return json.dumps(dict(value or {}), ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"job {what} must be a JSON object: {exc}") from exc


class JobQueue:
    """Enqueue, claim, complete and fail jobs; every method is one transaction.

    ``max_attempts`` is the default number of claims a job gets; a failure is
    retried after ``backoff_s``, doubled each attempt up to ``backoff_max_s``
    (± ``jitter`` of it, so jobs that failed together do not retry in lockstep).
    Methods raise :class:`StorageUnavailable` when the database fails.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        max_attempts: int = 5,
        backoff_s: float = 30.0,
        backoff_max_s: float = 3600.0,
        jitter: float = 0.1,
    ) -> None:
        self.engine = engine
        self._writer = writer(engine)
        self.max_attempts = max(1, max_attempts)
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.jitter = jitter
        self._listeners: list[Callable[[str], None]] = []

    # ------------------------------------------------------------ plumbing

    def _guard(self, what: str, exc: SQLAlchemyError) -> StorageUnavailable:
        return unavailable("job queue", what, exc)

    def add_listener(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(kind)`` after each enqueue in this process (wakes local runners)."""
        self._listeners.append(listener)

    def backoff(self, attempts: int) -> float:
        """Seconds before the next try of a job that failed its ``attempts``-th claim."""
        delay = min(self.backoff_max_s, self.backoff_s * 2 ** max(0, attempts - 1))
        if self.jitter:
            delay *= 1 + random.uniform(-self.jitter, self.jitter)
        return max(0.0, delay)

    # ------------------------------------------------------------ producing

    def enqueue(
        self,
        kind: str,
        payload: Mapping[str, Any] | None = None,
        *,
        run_after: datetime | None = None,
        dedupe_key: str | None = None,
        max_attempts: int | None = None,
    ) -> int:
        """Add a job and return its id.

        ``run_after`` delays it (a naive datetime is taken as UTC). With a
        ``dedupe_key``, while a job with the same key is queued or running, no
        new job is added and that job's id is returned instead. Raises
        ValueError for an empty or long kind or key, or a payload that is not
        a JSON object; StorageUnavailable when the database fails.
        """
        if not kind or len(kind) > KIND_MAX:
            raise ValueError(f"a job kind is 1–{KIND_MAX} characters")
        if dedupe_key is not None and not 0 < len(dedupe_key) <= DEDUPE_MAX:
            raise ValueError(f"a dedupe key is 1–{DEDUPE_MAX} characters")
        now = utcnow()
        due = now if run_after is None else (aware(run_after) or now)
        row = {
            "kind": kind,
            "payload": _json(payload, "payload"),
            "state": "queued",
            "dedupe_key": dedupe_key,
            "attempts": 0,
            "max_attempts": max(1, max_attempts or self.max_attempts),
            "run_after": due.astimezone(UTC),
            "locked_by": "",
            "last_error": "",
            "result": "",
            "created_at": now,
            "updated_at": now,
        }
        for _ in range(5):
            try:
                if dedupe_key is not None:
                    existing = self._active_id(dedupe_key)
                    if existing is not None:
                        return existing
                with self._writer.begin() as conn:
                    job_id = conn.execute(insert(JobRow).returning(JobRow.id), row).scalar_one()
            except IntegrityError:
                # Another node added the same key meanwhile: return theirs.
                if dedupe_key is None:
                    raise
                continue
            except SQLAlchemyError as exc:
                raise self._guard("enqueue", exc) from exc
            for listener in self._listeners:
                listener(kind)
            return job_id
        raise StorageUnavailable(f"could not enqueue {kind} under key {dedupe_key!r}")

    def _active_id(self, dedupe_key: str) -> int | None:
        with self.engine.connect() as conn:
            return conn.execute(
                select(JobRow.id).where(
                    JobRow.dedupe_key == dedupe_key, JobRow.state.in_(("queued", "running"))
                )
            ).scalar()

    # ------------------------------------------------------------ consuming

    def claim(
        self, kinds: Iterable[str], node: str, limit: int = 1, lease_s: float = 120.0
    ) -> list[Job]:
        """Take up to ``limit`` due queued jobs of ``kinds`` for ``node``, oldest due first.

        Each comes back ``running`` with its attempt counted and a lease of
        ``lease_s`` seconds. No two claimers ever get the same job.
        """
        wanted = sorted(set(kinds))
        if not wanted or limit < 1:
            return []
        try:
            # A read first: on SQLite the claim takes the database's write lock,
            # which an idle poll of every worker must not take for nothing.
            with self.engine.connect() as conn:
                due = conn.execute(
                    select(JobRow.id).where(self._due(wanted, utcnow())).limit(1)
                ).first()
            if due is None:
                return []
            with self._writer.begin() as conn:
                now = utcnow()
                ids = (
                    conn.execute(
                        select(JobRow.id)
                        .where(self._due(wanted, now))
                        .order_by(JobRow.run_after, JobRow.id)
                        .limit(limit)
                        # PostgreSQL: rows another claimer holds are skipped, not waited for.
                        .with_for_update(skip_locked=True)
                    )
                    .scalars()
                    .all()
                )
                if not ids:
                    return []
                rows = conn.execute(
                    update(JobRow)
                    .where(JobRow.id.in_(ids), JobRow.state == "queued")
                    .values(
                        state="running",
                        locked_by=node[:64],
                        lease_until=now + timedelta(seconds=lease_s),
                        attempts=JobRow.attempts + 1,
                        updated_at=now,
                    )
                    .returning(*_COLUMNS)
                ).all()
        except SQLAlchemyError as exc:
            raise self._guard("claim", exc) from exc
        return sorted((_job(r) for r in rows), key=lambda j: (j.run_after, j.id))

    @staticmethod
    def _due(kinds: Sequence[str], now: datetime) -> Any:
        return (JobRow.state == "queued") & JobRow.kind.in_(kinds) & (JobRow.run_after <= now)

    @staticmethod
    def _claimed(job: Job) -> Any:
        """The fence: the job is still running under this very claim."""
        return (
            (JobRow.id == job.id)
            & (JobRow.state == "running")
            & (JobRow.locked_by == job.locked_by)
            & (JobRow.attempts == job.attempts)
        )

    def heartbeat(self, job: Job, lease_s: float = 120.0) -> bool:
        """Extend the lease of a claimed job; False when the claim was lost."""
        now = utcnow()
        try:
            with self._writer.begin() as conn:
                count = conn.execute(
                    update(JobRow)
                    .where(self._claimed(job))
                    .values(lease_until=now + timedelta(seconds=lease_s), updated_at=now)
                ).rowcount
        except SQLAlchemyError as exc:
            raise self._guard("heartbeat", exc) from exc
        return count == 1

    def complete(self, job: Job, result: Mapping[str, Any] | None = None) -> bool:
        """Mark a claimed job done (with the handler's JSON result); False when the
        claim was lost (the lease expired and the job went back to the queue)."""
        now = utcnow()
        try:
            with self._writer.begin() as conn:
                count = conn.execute(
                    update(JobRow)
                    .where(self._claimed(job))
                    .values(
                        state="done",
                        result=_json(result, "result") if result is not None else "",
                        lease_until=None,
                        updated_at=now,
                        finished_at=now,
                    )
                ).rowcount
        except SQLAlchemyError as exc:
            raise self._guard("complete", exc) from exc
        if count != 1:
            log.warning(
                "job %d (%s): the claim of %s was lost before it completed",
                job.id,
                job.kind,
                job.locked_by,
            )
        return count == 1

    def fail(self, job: Job, error: str, *, retry: bool = True) -> str:
        """Record a failed attempt of a claimed job.

        With ``retry`` and attempts left, the job is queued again after the
        backoff; otherwise it is ``dead`` (an operator looks at it, see
        :meth:`retry`). Returns the new state, or ``"lost"`` when the claim was
        lost meanwhile.
        """
        now = utcnow()
        again = retry and job.attempts < job.max_attempts
        values: dict[str, Any] = {
            "last_error": error[:ERROR_MAX],
            "lease_until": None,
            "updated_at": now,
        }
        if again:
            values |= {
                "state": "queued",
                "run_after": now + timedelta(seconds=self.backoff(job.attempts)),
            }
        else:
            values |= {"state": "dead", "finished_at": now}
        try:
            with self._writer.begin() as conn:
                count = conn.execute(update(JobRow).where(self._claimed(job)).values(**values))
        except SQLAlchemyError as exc:
            raise self._guard("fail", exc) from exc
        if count.rowcount != 1:
            return "lost"
        return "queued" if again else "dead"

    def reclaim_expired(self) -> int:
        """Put running jobs whose lease ran out back in the queue (dead when their
        attempts are used up). Returns how many were reclaimed."""
        now = utcnow()
        expired = (JobRow.state == "running") & (JobRow.lease_until < now)
        try:
            with self.engine.connect() as conn:
                if conn.execute(select(JobRow.id).where(expired).limit(1)).first() is None:
                    return 0
            with self._writer.begin() as conn:
                message = (
                    literal("lease expired: node ")
                    + JobRow.locked_by
                    + literal(" stopped heartbeating")
                )
                dead = conn.execute(
                    update(JobRow)
                    .where(expired, JobRow.attempts >= JobRow.max_attempts)
                    .values(
                        state="dead",
                        last_error=message,
                        lease_until=None,
                        updated_at=now,
                        finished_at=now,
                    )
                ).rowcount
                requeued = conn.execute(
                    update(JobRow)
                    .where(expired)
                    .values(
                        state="queued",
                        last_error=message,
                        lease_until=None,
                        run_after=now,
                        updated_at=now,
                    )
                ).rowcount
        except SQLAlchemyError as exc:
            raise self._guard("reclaim", exc) from exc
        if dead or requeued:
            log.warning(
                "reclaimed %d job(s) whose node stopped heartbeating (%d now dead)",
                dead + requeued,
                dead,
            )
        return dead + requeued

    # ------------------------------------------------------------ operators

    def get(self, job_id: int) -> Job | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(*_COLUMNS).where(JobRow.id == job_id)).first()
        return _job(row) if row else None

    def recent(
        self, *, state: str | None = None, kind: str | None = None, limit: int = 50
    ) -> list[Job]:
        """Jobs, most recently changed first."""
        stmt = select(*_COLUMNS).order_by(JobRow.updated_at.desc(), JobRow.id.desc())
        if state is not None:
            stmt = stmt.where(JobRow.state == state)
        if kind is not None:
            stmt = stmt.where(JobRow.kind == kind)
        try:
            with self.engine.connect() as conn:
                return [_job(r) for r in conn.execute(stmt.limit(limit))]
        except SQLAlchemyError as exc:
            raise self._guard("list", exc) from exc

    def depth(self) -> dict[tuple[str, str], int]:
        """How many jobs there are per (kind, state)."""
        stmt = select(JobRow.kind, JobRow.state, func.count()).group_by(JobRow.kind, JobRow.state)
        try:
            with self.engine.connect() as conn:
                return {(kind, state): int(n) for kind, state, n in conn.execute(stmt)}
        except SQLAlchemyError as exc:
            raise self._guard("depth", exc) from exc

    def oldest_due(self) -> dict[str, float]:
        """Per kind, how long the oldest due queued job has waited (seconds)."""
        now = utcnow()
        stmt = (
            select(JobRow.kind, func.min(JobRow.run_after))
            .where(JobRow.state == "queued", JobRow.run_after <= now)
            .group_by(JobRow.kind)
        )
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(stmt).all()
        except SQLAlchemyError as exc:
            raise self._guard("depth", exc) from exc
        return {
            kind: max(0.0, (now - aware(due)).total_seconds())  # type: ignore[operator]
            for kind, due in rows
            if due is not None
        }

    def retry(self, job_id: int) -> bool:
        """Queue a dead job again, with its attempts reset; False unless it was dead."""
        now = utcnow()
        try:
            with self._writer.begin() as conn:
                count = conn.execute(
                    update(JobRow)
                    .where(JobRow.id == job_id, JobRow.state == "dead")
                    .values(
                        state="queued", attempts=0, run_after=now, updated_at=now, finished_at=None
                    )
                ).rowcount
        except IntegrityError:
            return False  # an active job with the same dedupe key exists
        except SQLAlchemyError as exc:
            raise self._guard("retry", exc) from exc
        return count == 1

    def purge(self, older_than: timedelta, states: Sequence[str] = ("done",)) -> int:
        """Delete finished jobs (``states``) that finished longer ago than ``older_than``."""
        cutoff = utcnow() - older_than
        try:
            with self._writer.begin() as conn:
                return conn.execute(
                    delete(JobRow).where(
                        JobRow.state.in_(list(states)), JobRow.finished_at < cutoff
                    )
                ).rowcount
        except SQLAlchemyError as exc:
            raise self._guard("purge", exc) from exc
