"""Core statements compiled once and run on the driver's own cursor.

Ingest runs the same few statements for every instance received. Through a
SQLAlchemy ``Connection`` each costs about 20 µs of Python (execution context,
events, cache lookup, result wrapping) around 3 µs of SQLite, and on SQLite that
Python runs while the database's single write lock is held, so four modalities
sending at once queue behind it. :class:`RawStatement` compiles a statement for
the engine's dialect once, with the dialect's own parameter conversions (SQLite
keeps timestamps as text), and :func:`transaction` hands out a pooled driver
connection, so the hot path pays only for the driver call.

Errors leave as SQLAlchemy's exception classes (``IntegrityError``…), as they
would through a ``Connection``, so callers handle both paths alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy import Engine
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


@contextmanager
def transaction(engine: Engine, *, write: bool) -> Iterator[RawCursor]:
    """A pooled driver connection in one transaction, committed when the block ends.

    ``write`` takes SQLite's write lock up front, as :func:`~pacs.storage.database.writer`
    does. Reads on SQLite run in autocommit. Driver errors are raised as SQLAlchemy
    exceptions; a connection the error shows to be dead is discarded from the pool.
    """
    pooled = engine.raw_connection()
    dbapi = pooled.dbapi_connection
    cursor = None
    wrapper: RawCursor | None = None
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
        _rollback(pooled)
        if engine.dialect.is_disconnect(exc, dbapi, cursor):
            pooled.invalidate(exc)
        raise DBAPIError.instance(
            wrapper._last if wrapper else "BEGIN",
            None,
            exc,
            engine.dialect.loaded_dbapi.Error,
            dialect=engine.dialect,
        ) from exc
    except BaseException:
        _rollback(pooled)
        raise
    finally:
        if cursor is not None:
            # A dead connection's cursor may not close; the pool discards it below.
            with suppress(Exception):
                cursor.close()
        pooled.close()


def _rollback(pooled: Any) -> None:
    # Already broken: the pool's reset on return deals with it.
    with suppress(Exception):
        pooled.dbapi_connection.rollback()
