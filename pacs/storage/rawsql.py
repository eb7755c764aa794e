"""Core statements compiled once and run on the driver's own cursor.

Ingest runs the same few statements for every instance received. Through a
SQLAlchemy ``Connection`` each costs about 20 µs of Python (execution context,
events, cache lookup, result wrapping) around 3 µs of SQLite, and on SQLite that
Python runs while the database's single write lock is held, so four modalities
sending at once queue behind it. :class:`RawStatement` compiles a statement for
the engine's dialect once, with the dialect's own parameter conversions (SQLite
keeps timestamps as text), and :func:`transaction` hands out a driver connection
kept for it, so the hot path pays only for the driver call.

Errors leave as SQLAlchemy's exception classes (``IntegrityError``…), as they
would through a ``Connection``, so callers handle both paths alike.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement

from pacs.storage.database import begin_write


class RawStatement:
    """One Core statement, compiled for one dialect, with its parameter conversions."""

    def __init__(
        self, stmt: ClauseElement, engine: Engine, column_keys: Sequence[str] | None = None
    ) -> None:
        dialect = engine.dialect
        compiled = stmt.compile(dialect=dialect, column_keys=list(column_keys or ()))
        self.sql: str = compiled.string
        #: literal values the statement carries (the ``1`` of ``n = n + 1``)
        self._defaults = {name: bind.effective_value for name, bind in compiled.binds.items()}
        self._convert: dict[str, Callable[[Any], Any]] = {}
        for name, bind in compiled.binds.items():
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                self._convert[name] = process
        self._order = tuple(compiled.positiontup or ()) if compiled.positional else None

    def parameters(self, values: Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
        """The driver's parameters for ``values`` (keyed by bind or column name)."""
        merged = {**self._defaults, **values}
        for name, process in self._convert.items():
            merged[name] = process(merged[name])
        if self._order is None:
            return merged
        return tuple(merged[name] for name in self._order)


class RawCursor:
    """A driver cursor inside one transaction, taking :class:`RawStatement` s."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor
        self._last = ""

    def execute(self, stmt: RawStatement, values: Mapping[str, Any]) -> RawCursor:
        self._last = stmt.sql
        self._cursor.execute(stmt.sql, stmt.parameters(values))
        return self

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)

    def first(self) -> tuple[Any, ...] | None:
        row = self._cursor.fetchone()
        return tuple(row) if row is not None else None


#: driver connections kept between transactions, per engine and process
KEEP_IDLE = 8
#: a kept connection idle longer than this is pinged before use (PostgreSQL)
PING_AFTER_S = 30.0


class _Kept:
    """Driver connections of one engine kept between hot-path transactions.

    SQLAlchemy's pool spent about 20 µs of Python on each checkout and return (and,
    with ``pool_pre_ping``, a round trip to PostgreSQL each time): three times per
    instance received. Connections here were made by that pool (so its connect
    hooks ran) and then detached from it; they are closed when the engine is
    disposed, and never shared with a forked child.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.lock = threading.Lock()
        self.idle: list[tuple[Any, float]] = []
        self.inherited: list[tuple[Any, float]] = []
        self.pid = os.getpid()
        event.listen(engine, "engine_disposed", lambda _engine: self.close_all())

    def take(self) -> Any:
        with self.lock:
            if self.pid != os.getpid():
                # The parent's: never used here, and never closed here either (closing
                # a database file in a forked child can upset the parent's handle).
                self.inherited.extend(self.idle)
                self.idle, self.pid = [], os.getpid()
            found = self.idle.pop() if self.idle else None
        if found is not None:
            pooled, used = found
            if self.engine.dialect.name == "sqlite" or time.monotonic() - used < PING_AFTER_S:
                return pooled
            if self._alive(pooled):
                return pooled
            _close(pooled)
        pooled = self.engine.raw_connection()
        pooled.detach()
        return pooled

    def give(self, pooled: Any, broken: bool) -> None:
        if not broken:
            with self.lock:
                if self.pid == os.getpid() and len(self.idle) < KEEP_IDLE:
                    self.idle.append((pooled, time.monotonic()))
                    return
        _close(pooled)

    def close_all(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, []
            ours = self.pid == os.getpid()
        if ours:
            for pooled, _used in idle:
                _close(pooled)

    def _alive(self, pooled: Any) -> bool:
        try:
            return bool(self.engine.dialect.do_ping(pooled.dbapi_connection))
        except Exception:  # any failure to ping means: make a new one
            return False


_KEPT_LOCK = threading.Lock()


def _kept(engine: Engine) -> _Kept:
    kept = engine.__dict__.get("_pacs_kept")
    if kept is None:
        with _KEPT_LOCK:
            kept = engine.__dict__.get("_pacs_kept")
            if kept is None:
                kept = _Kept(engine)
                engine.__dict__["_pacs_kept"] = kept
    return kept


def _close(pooled: Any) -> None:
    with suppress(Exception):  # a dead connection may not close cleanly
        pooled.close()


@contextmanager
def transaction(engine: Engine, *, write: bool) -> Iterator[RawCursor]:
    """A driver connection of ``engine`` in one transaction, committed when the block ends.

    ``write`` takes SQLite's write lock up front, as :func:`~pacs.storage.database.writer`
    does. Reads on SQLite run in autocommit. Driver errors are raised as SQLAlchemy
    exceptions; a connection the error shows to be dead is closed, not kept.
    """
    kept = _kept(engine)
    pooled = kept.take()
    dbapi = pooled.dbapi_connection
    cursor = None
    wrapper: RawCursor | None = None
    broken = False
    try:
        if write:
            begin_write(engine, dbapi)
        cursor = dbapi.cursor()
        wrapper = RawCursor(cursor)
        yield wrapper
        # An unread RETURNING row keeps SQLite's statement open, and COMMIT refuses.
        cursor.close()
        dbapi.commit()
    except engine.dialect.loaded_dbapi.Error as exc:
        broken = not _rollback(dbapi) or engine.dialect.is_disconnect(exc, dbapi, cursor)
        raise DBAPIError.instance(
            wrapper._last if wrapper else "BEGIN",
            None,
            exc,
            engine.dialect.loaded_dbapi.Error,
            dialect=engine.dialect,
        ) from exc
    except BaseException:
        broken = not _rollback(dbapi)
        raise
    finally:
        if cursor is not None:
            with suppress(Exception):
                cursor.close()
        kept.give(pooled, broken)


def _rollback(dbapi: Any) -> bool:
    """Roll back; False when the connection could not (it is broken)."""
    try:
        dbapi.rollback()
    except Exception:
        return False
    return True
