"""SQLite writers queue on a file lock (pacs.storage.database._QueuedWriterConnection)."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import threading
import time
from pathlib import Path

from sqlalchemy import text

from pacs.storage.database import make_engine, writer


def _url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'index.sqlite'}"


def _create(url: str) -> None:
    engine = make_engine(url)
    with writer(engine).begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS t (n INTEGER)"))
    engine.dispose()


def _insert(url: str, n: int) -> None:
    engine = make_engine(url, pool_size=1)
    with writer(engine).begin() as conn:
        conn.execute(text("INSERT INTO t (n) VALUES (:n)"), {"n": n})
    engine.dispose()


def test_a_writer_waits_for_the_lock_holder_and_starts_when_it_lets_go(tmp_path: Path) -> None:
    url = _url(tmp_path)
    _create(url)
    lock_path = tmp_path / "index.sqlite-writers"
    assert lock_path.exists()
    fd = os.open(lock_path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another process's writer, mid-transaction
    done = threading.Event()
    thread = threading.Thread(target=lambda: (_insert(url, 1), done.set()))
    thread.start()
    try:
        assert not done.wait(0.5), "the writer did not wait for its turn"
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    assert done.wait(10), "the writer did not start once the lock was free"
    thread.join()
    engine = make_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM t")).scalars().all() == [1]
    engine.dispose()


def _assert_unlocked(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "index.sqlite-writers", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if a writer still holds it
    finally:
        os.close(fd)


def test_commit_rollback_and_a_closed_connection_each_let_the_next_writer_in(
    tmp_path: Path,
) -> None:
    url = _url(tmp_path)
    _create(url)
    engine = make_engine(url, pool_size=1)
    with writer(engine).begin() as conn:
        conn.execute(text("INSERT INTO t (n) VALUES (1)"))
    _assert_unlocked(tmp_path)
    try:
        with writer(engine).begin() as conn:
            conn.execute(text("INSERT INTO t (n) VALUES (2)"))
            raise RuntimeError("rolled back")
    except RuntimeError:
        pass
    _assert_unlocked(tmp_path)
    conn = writer(engine).connect()
    conn.begin()
    conn.execute(text("INSERT INTO t (n) VALUES (3)"))
    conn.invalidate()  # the pool closes the DBAPI connection mid-transaction
    conn.close()
    _assert_unlocked(tmp_path)
    with engine.connect() as check:
        assert check.execute(text("SELECT n FROM t ORDER BY n")).scalars().all() == [1]
    engine.dispose()


def test_writers_in_several_processes_and_threads_all_commit(tmp_path: Path) -> None:
    url = _url(tmp_path)
    _create(url)
    # Fork after the parent used the engine: children must not share its lock.
    _insert(url, 0)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_many, args=(url, k)) for k in range(3)]
    started = time.monotonic()
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    assert time.monotonic() - started < 60
    engine = make_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 1 + 3 * 4 * 25
    engine.dispose()


def _many(url: str, k: int) -> None:
    engine = make_engine(url, sqlite_synchronous="NORMAL", pool_size=4)

    def run(t: int) -> None:
        for i in range(25):
            with writer(engine).begin() as conn:
                conn.execute(text("INSERT INTO t (n) VALUES (:n)"), {"n": k * 1000 + t * 100 + i})

    threads = [threading.Thread(target=run, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    engine.dispose()
