"""Core statements on the driver's cursor (pacs.storage.rawsql), on SQLite.

The index's contract suite runs the same path on PostgreSQL (the second and later
instances of every series go through it).
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

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
