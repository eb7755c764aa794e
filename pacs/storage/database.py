"""Engines and schema migrations for the index (SQLite embedded, PostgreSQL in production)."""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from pacs.errors import ConfigError, StorageUnavailable

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported only where migrations run: worker processes never need it.

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


def utcnow() -> datetime:
    """Now, in UTC: every timestamp the index keeps."""
    return datetime.now(UTC)


def aware(value: datetime | None) -> datetime | None:
    """A timestamp read back from the index, with its zone (SQLite drops it; all are UTC)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def unavailable(store: str, what: str, exc: SQLAlchemyError) -> StorageUnavailable:
    """The error for a database failure in ``store`` during ``what``, logged with its cause
    (the message the caller sees names no SQL)."""
    log.error("%s: %s failed: %s", store, what, exc)
    return StorageUnavailable(f"{store} unavailable during {what}: {type(exc).__name__}")


class _QueuedWriterConnection(sqlite3.Connection):
    """A SQLite connection whose write transactions queue on a file lock first.

    SQLite's busy handler polls a taken write lock with sleeps of 1, 2, 5, 10…
    ms. Four modalities storing at once through two workers spent as long
    asleep there as storing (a BEGIN in three took over a millisecond, one in
    a hundred 19 ms), long after the lock was free. ``flock`` queues the
    writers of every thread and process in the kernel, which wakes the next
    one as the lock is released. SQLite's own lock still guards the data:
    the file lock only orders pacs's writers, and anything else writing the
    database falls back on the busy timeout.
    """

    #: the lock file (set on the subclass :func:`_queued_writer_factory` makes)
    lock_path: str = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock_fd = -1
        self._lock_pid = 0
        self._locked = False

    def begin_immediate(self) -> None:
        """``BEGIN IMMEDIATE``, once this connection's turn to write has come."""
        if self._lock_pid != os.getpid():
            # A descriptor inherited across fork would share its lock with the parent.
            self._lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._lock_pid = os.getpid()
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        self._locked = True
        try:
            self.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._unlock()
            raise

    def _unlock(self) -> None:
        if self._locked:
            self._locked = False
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._unlock()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._unlock()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._unlock()
            if self._lock_pid == os.getpid():
                os.close(self._lock_fd)
            self._lock_pid = 0


def _queued_writer_factory(database: str) -> type[_QueuedWriterConnection]:
    return type(
        "QueuedWriterConnection", (_QueuedWriterConnection,), {"lock_path": f"{database}-writers"}
    )


def make_engine(url: str, *, sqlite_synchronous: str = "FULL", pool_size: int = 8) -> Engine:
    """One engine per process; associations and requests share its pool.

    SQLite runs in WAL mode so readers never block the writer, and write
    transactions start with ``BEGIN IMMEDIATE`` (see :func:`writer`) so two
    writers queue instead of deadlocking on a lock upgrade; for a database
    file they queue on a file lock (:class:`_QueuedWriterConnection`).
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        connect_args: dict[str, Any] = {"check_same_thread": False, "timeout": 30}
        if path and path != ":memory:" and not path.startswith("file:"):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            connect_args["factory"] = _queued_writer_factory(path)
        engine = create_engine(
            url,
            connect_args=connect_args,
            pool_size=pool_size,
            max_overflow=pool_size * 2,
        )
        synchronous = sqlite_synchronous.upper()
        if synchronous not in {"FULL", "NORMAL"}:
            raise ConfigError(f"sqlite_synchronous must be FULL or NORMAL, not {synchronous}")

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # We emit BEGIN ourselves (below); pysqlite's implicit BEGIN cannot be IMMEDIATE.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA cache_size=-32000")
            cur.execute("PRAGMA temp_store=MEMORY")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            # Reads run in autocommit: every statement is atomic on its own, and a
            # BEGIN/ROLLBACK pair around each lookup doubled its cost. Writes take
            # the write lock up front (see writer()).
            if conn.get_execution_options().get("sqlite_immediate", False):
                begin_write(conn.engine, conn.connection.dbapi_connection)

        return engine
    if url.startswith(("postgresql", "postgres")):
        if url.startswith("postgres://"):
            url = "postgresql+psycopg://" + url[len("postgres://") :]
        elif url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://") :]
        return create_engine(
            url, pool_size=pool_size, max_overflow=pool_size * 2, pool_pre_ping=True
        )
    raise ConfigError(
        f"unsupported database URL {url.split(':', 1)[0]!r}: use sqlite or postgresql"
    )


def begin_write(engine: Engine, dbapi_conn: Any) -> None:
    """Start a write transaction on a driver connection of ``engine``: on SQLite
    ``BEGIN IMMEDIATE`` (after the writers' file lock), so two writers queue instead
    of deadlocking on a lock upgrade; PostgreSQL's driver begins by itself."""
    if engine.dialect.name != "sqlite":
        return
    if isinstance(dbapi_conn, _QueuedWriterConnection):
        dbapi_conn.begin_immediate()
    else:
        dbapi_conn.execute("BEGIN IMMEDIATE")


def writer(engine: Engine) -> Engine:
    """The same engine, with write transactions that take SQLite's write lock up front."""
    return engine.execution_options(sqlite_immediate=True)


def throwaway_engine(url: str) -> Engine:
    """An engine without a pool, for one-off commands and forked parents."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return create_engine(url, poolclass=NullPool)


def _alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def schema_heads() -> set[str]:
    from alembic.script import ScriptDirectory

    return set(ScriptDirectory.from_config(_alembic_config(None)).get_heads())  # type: ignore[arg-type]


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config(None))  # type: ignore[arg-type]
    return {rev.revision for rev in script.walk_revisions()}


def _applied_revisions(current: set[str]) -> set[str]:
    """Every revision up to the one the database is at."""
    from alembic.script import ScriptDirectory

    if not current:
        return set()
    script = ScriptDirectory.from_config(_alembic_config(None))  # type: ignore[arg-type]
    revisions = script.revision_map.iterate_revisions(tuple(sorted(current)), "base")
    return {rev.revision for rev in revisions}


# Releases before the consultation work shipped branched migrations: every revision
# after 0001_archive started from it, and 0005_sharing also needed 0002_accounts. The
# version table of a database they migrated holds several rows, which the linear chain
# of today cannot follow; _adopt_branched_history puts such a database on the chain.
_BRANCHED_DEPENDENCIES = {"0005_sharing": ("0002_accounts",)}


def _is_branched(current: set[str]) -> bool:
    return len(current) > 1


def _adopt_branched_history(engine: Engine) -> None:
    """Run the migrations a branched database skipped, then record the furthest revision.

    A release could apply 0004_audit before 0003_dicomweb existed; on the chain 0003
    comes first, so it runs now, out of order (each of those revisions only adds tables).
    """
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config(None))  # type: ignore[arg-type]
    chain = [rev.revision for rev in reversed(list(script.walk_revisions()))]
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"render_as_batch": conn.dialect.name == "sqlite"}
        )
        recorded = set(context.get_current_heads())
        if not _is_branched(recorded) or recorded - set(chain):
            return
        applied = recorded | {chain[0]}
        for revision in recorded:
            applied |= set(_BRANCHED_DEPENDENCIES.get(revision, ()))
        furthest = max(chain.index(revision) for revision in applied)
        with Operations.context(context):
            for revision in chain[:furthest]:
                if revision not in applied:
                    log.warning("applying migration %s, which this database skipped", revision)
                    script.get_revision(revision).module.upgrade()  # type: ignore[union-attr]
        conn.execute(text("DELETE FROM alembic_version"))
        conn.execute(
            text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": chain[furthest]}
        )
        conn.commit()
    log.warning(
        "index schema moved from branched revisions %s onto the linear chain at %s",
        sorted(recorded),
        chain[furthest],
    )


def current_revisions(engine: Engine) -> set[str]:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads())


def schema_is_current(engine: Engine) -> bool:
    """Whether every migration this version ships has been applied (and nothing newer)."""
    current = current_revisions(engine)
    if _is_branched(current):
        return False
    return not current - _known_revisions() and schema_heads() <= _applied_revisions(current)


def upgrade(engine: Engine) -> None:
    """Apply every pending migration."""
    from alembic import command

    try:
        _adopt_branched_history(engine)
        command.upgrade(_alembic_config(engine), "heads")
    except SQLAlchemyError as exc:
        raise StorageUnavailable(f"database migration failed: {exc}") from exc


def ensure_schema(engine: Engine, *, auto_migrate: bool) -> None:
    """Migrate, or refuse to run against a schema that is not current."""
    try:
        current = current_revisions(engine)
    except SQLAlchemyError as exc:
        raise StorageUnavailable(f"cannot reach the index database: {exc}") from exc
    heads = schema_heads()
    unknown = current - _known_revisions()
    if not unknown and not _is_branched(current) and heads <= _applied_revisions(current):
        return
    if unknown:
        raise StorageUnavailable(
            f"the index schema is at {sorted(unknown)}, which this version of pacs does not "
            "know: it was upgraded by a newer pacs; run that version (or restore a backup)"
        )
    if auto_migrate:
        log.info("migrating the index schema %s -> %s", sorted(current), sorted(heads))
        upgrade(engine)
        return
    raise StorageUnavailable(
        f"the index schema is at {sorted(current) or 'nothing'} but this version needs "
        f"{sorted(heads)}: run `pacs db upgrade`"
    )
