"""Core statements on the driver's cursor (pacs.storage.rawsql), on SQLite.

The index's contract suite runs the same path on PostgreSQL (the second and later
instances of every series go through it).
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from pacs.storage import rawsql
from pacs.storage.database import make_engine, writer

METADATA = MetaData()
ROWS = Table(
    "rows",
    METADATA,
    Column("id", Integer, primary_key=True),
    Column("name", String(16), unique=True),
    Column("hits", Integer),
    Column("at", DateTime(timezone=True)),
)
WHEN = datetime(2026, 11, 23, 7, 5, 9, 123456, tzinfo=UTC)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'index.sqlite'}", pool_size=2)
    METADATA.create_all(engine)
    yield engine
    engine.dispose()


def _insert(engine: Engine) -> rawsql.RawStatement:
    return rawsql.RawStatement(insert(ROWS).returning(ROWS.c.id), engine, ("name", "hits", "at"))


def _writer_lock_is_free(engine: Engine) -> bool:
    fd = os.open(f"{engine.url.database}-writers", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_rows_written_raw_read_back_as_sqlalchemy_wrote_them(engine: Engine) -> None:
    with writer(engine).begin() as conn:
        conn.execute(insert(ROWS), {"name": "core", "hits": 1, "at": WHEN})
    with rawsql.transaction(engine, write=True) as cur:
        row = cur.execute(_insert(engine), {"name": "raw", "hits": 1, "at": WHEN}).first()
    assert row is not None and row[0] == 2
    with engine.connect() as conn:
        # SQLite keeps timestamps as text: the raw path must store the same text.
        stored = dict(conn.execute(text("SELECT name, at FROM rows")).all())
        typed = conn.execute(select(ROWS.c.at).where(ROWS.c.name == "raw")).scalar_one()
    assert stored["raw"] == stored["core"]
    assert typed.replace(tzinfo=UTC) == WHEN


def test_literals_of_the_statement_are_bound_with_the_callers_values(engine: Engine) -> None:
    with rawsql.transaction(engine, write=True) as cur:
        cur.execute(_insert(engine), {"name": "a", "hits": 5, "at": WHEN})
    bump = rawsql.RawStatement(
        update(ROWS)
        .where(ROWS.c.name == bindparam("b_name"))
        .values(hits=ROWS.c.hits + 1, at=bindparam("b_at")),
        engine,
    )
    with rawsql.transaction(engine, write=True) as cur:
        assert cur.execute(bump, {"b_name": "a", "b_at": WHEN}).rowcount == 1
        assert cur.execute(bump, {"b_name": "nobody", "b_at": WHEN}).rowcount == 0
    with engine.connect() as conn:
        assert conn.execute(select(ROWS.c.hits)).scalar_one() == 6


def test_a_constraint_violation_is_sqlalchemys_and_rolls_everything_back(
    engine: Engine,
) -> None:
    stmt = _insert(engine)
    with rawsql.transaction(engine, write=True) as cur:
        cur.execute(stmt, {"name": "taken", "hits": 0, "at": WHEN})
    with pytest.raises(IntegrityError), rawsql.transaction(engine, write=True) as cur:
        cur.execute(stmt, {"name": "new", "hits": 0, "at": WHEN})
        cur.execute(stmt, {"name": "taken", "hits": 0, "at": WHEN})
    assert _writer_lock_is_free(engine)
    with engine.connect() as conn:
        assert conn.execute(select(ROWS.c.name)).scalars().all() == ["taken"]


def test_an_error_in_the_block_rolls_back_and_lets_the_next_writer_in(engine: Engine) -> None:
    with pytest.raises(RuntimeError), rawsql.transaction(engine, write=True) as cur:
        cur.execute(_insert(engine), {"name": "lost", "hits": 0, "at": WHEN})
        assert not _writer_lock_is_free(engine)
        raise RuntimeError("caller gave up")
    assert _writer_lock_is_free(engine)
    with engine.connect() as conn:
        assert conn.execute(select(ROWS.c.id)).first() is None


def test_reads_do_not_wait_for_a_writer(engine: Engine) -> None:
    with rawsql.transaction(engine, write=True) as cur:
        cur.execute(_insert(engine), {"name": "a", "hits": 0, "at": WHEN})
    lookup = rawsql.RawStatement(select(ROWS.c.hits).where(ROWS.c.name == bindparam("n")), engine)
    found: list[tuple[object, ...] | None] = []
    with rawsql.transaction(engine, write=True):  # a writer mid-transaction
        reader = threading.Thread(target=lambda: found.append(_read(engine, lookup)))
        reader.start()
        reader.join(5)
        assert not reader.is_alive(), "a read waited for the writer"
    assert found == [(0,)]


def _read(engine: Engine, stmt: rawsql.RawStatement) -> tuple[object, ...] | None:
    with rawsql.transaction(engine, write=False) as cur:
        return cur.execute(stmt, {"n": "a"}).first()


def test_writers_of_two_threads_queue_and_both_commit(engine: Engine) -> None:
    stmt = _insert(engine)
    inside = threading.Event()
    release = threading.Event()

    def slow() -> None:
        with rawsql.transaction(engine, write=True) as cur:
            cur.execute(stmt, {"name": "first", "hits": 0, "at": WHEN})
            inside.set()
            release.wait(5)

    first = threading.Thread(target=slow)
    first.start()
    assert inside.wait(5)
    second = threading.Thread(target=lambda: _write(engine, stmt, "second"))
    second.start()
    second.join(0.3)
    assert second.is_alive(), "the second writer did not wait for the first"
    release.set()
    first.join(5)
    second.join(5)
    with engine.connect() as conn:
        assert conn.execute(select(ROWS.c.name).order_by(ROWS.c.id)).scalars().all() == [
            "first",
            "second",
        ]


def _write(engine: Engine, stmt: rawsql.RawStatement, name: str) -> None:
    with rawsql.transaction(engine, write=True) as cur:
        cur.execute(stmt, {"name": name, "hits": 0, "at": WHEN})


def _connection_of(engine: Engine) -> int:
    with rawsql.transaction(engine, write=False) as cur:
        return id(cur._cursor.connection)


def test_connections_are_kept_between_transactions_and_closed_on_dispose(
    engine: Engine,
) -> None:
    first = _connection_of(engine)
    assert _connection_of(engine) == first
    kept = rawsql._kept(engine)
    [(pooled, _used)] = kept.idle
    dbapi = pooled.dbapi_connection
    engine.dispose()
    assert kept.idle == []
    with pytest.raises(sqlite3.ProgrammingError):  # closed
        dbapi.execute("SELECT 1")
    assert _connection_of(engine) != first or kept.idle  # a new one works


def test_a_broken_transaction_does_not_keep_its_connection(engine: Engine) -> None:
    stmt = _insert(engine)
    with rawsql.transaction(engine, write=True) as cur:
        cur.execute(stmt, {"name": "x", "hits": 0, "at": WHEN})
    kept = rawsql._kept(engine)
    assert len(kept.idle) == 1
    with pytest.raises(IntegrityError), rawsql.transaction(engine, write=True) as cur:
        cur.execute(stmt, {"name": "x", "hits": 0, "at": WHEN})
    # A constraint error leaves a healthy connection: kept, and usable.
    assert len(kept.idle) == 1
    assert (
        _read(
            engine,
            rawsql.RawStatement(select(ROWS.c.hits).where(ROWS.c.name == bindparam("n")), engine),
        )
        is None
    )


def _child_uses_its_own(engine: Engine, parents: int, out: Any) -> None:
    out.put(_connection_of(engine) != parents)


def test_a_forked_child_never_uses_the_parents_connections(engine: Engine) -> None:
    parents = _connection_of(engine)
    ctx = multiprocessing.get_context("fork")
    out = ctx.SimpleQueue()
    child = ctx.Process(target=_child_uses_its_own, args=(engine, parents, out))
    child.start()
    child.join(30)
    assert child.exitcode == 0 and out.get() is True
    assert _connection_of(engine) == parents  # still the parent's own
