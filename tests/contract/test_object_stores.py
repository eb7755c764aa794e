"""The contract every object store passes: the filesystem store and S3 (moto, via minio).

An object store keeps bytes under keys that :func:`~pacs.storage.objects.instance_key`
makes, durably and atomically, and turns its vendor's errors into ours:
:class:`~pacs.storage.objects.ObjectNotFound` for a missing object and
:class:`~pacs.errors.StorageUnavailable` when it cannot be reached.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from pacs.errors import InvalidInstance, PacsError, StorageUnavailable
from pacs.storage.filesystem import FilesystemObjectStore
from pacs.storage.objects import ObjectNotFound, ObjectStore, instance_key
from pacs.storage.s3 import S3ObjectStore
from support import LOCALHOST, S3Endpoint, free_port

pytestmark = pytest.mark.contract

STORES = ("filesystem", "s3")
ROOT = "1.2.826.0.1.3680043.8.498"  # pydicom's UID root, as in the sample data


def key(study: int = 1, series: int = 1, sop: int = 1) -> str:
    return instance_key(
        f"{ROOT}.{study}", f"{ROOT}.{study}.{series}", f"{ROOT}.{study}.{series}.{sop}"
    )


def payload(size: int, seed: int = 0) -> bytes:
    """``size`` bytes that differ at every offset from another seed's (so mixes show)."""
    block = hashlib.sha256(str(seed).encode()).digest()
    return (block * (size // len(block) + 1))[:size]


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """An empty store of each kind: a folder, or a new bucket on the moto server."""
    if request.param == "filesystem":
        return FilesystemObjectStore(tmp_path / "objects")
    endpoint: S3Endpoint = request.getfixturevalue("s3_endpoint")
    return endpoint.store(request.getfixturevalue("s3_bucket"))


def read_all(store: ObjectStore, k: str) -> bytes:
    with store.open(k) as stream:
        return stream.read()


# ---------------------------------------------------------------- writing and reading


def test_put_bytes_then_open_returns_the_same_bytes(store: ObjectStore) -> None:
    data = payload(70_000)
    store.put_bytes(key(), data)
    assert read_all(store, key()) == data
    assert store.exists(key())


def test_put_file_without_consume_copies_and_keeps_the_source(
    store: ObjectStore, tmp_path: Path
) -> None:
    source = tmp_path / "incoming.dcm"
    source.write_bytes(data := payload(50_000, seed=1))
    store.put_file(key(), source, consume=False)
    assert read_all(store, key()) == data
    assert source.read_bytes() == data


def test_put_file_with_consume_stores_the_bytes(store: ObjectStore, tmp_path: Path) -> None:
    """The store may move the consumed file in; either way the object is complete."""
    spool = tmp_path / "spool"
    spool.mkdir()
    source = spool / "received.dcm"
    source.write_bytes(data := payload(50_000, seed=2))
    store.put_file(key(), source, consume=True)
    assert read_all(store, key()) == data
    assert not source.exists() or source.read_bytes() == data


def test_a_large_object_round_trips_intact(store: ObjectStore, tmp_path: Path) -> None:
    """Bigger than minio's 5 MiB part size, so S3 takes the multipart upload path."""
    source = tmp_path / "large.dcm"
    source.write_bytes(data := payload(6 * 1024 * 1024 + 123, seed=3))
    store.put_file(key(), source, consume=False)
    assert hashlib.sha256(read_all(store, key())).digest() == hashlib.sha256(data).digest()
    assert store.read_range(key(), len(data) - 10, 10) == data[-10:]


@pytest.mark.parametrize(
    ("start", "length"),
    [(0, 1), (0, 132), (128, 4), (1000, 4096), (69_990, 10), (69_990, 100), (5, 0)],
    ids=["first-byte", "preamble", "dicm", "middle", "tail", "past-the-end", "empty"],
)
def test_read_range_returns_the_slice(store: ObjectStore, start: int, length: int) -> None:
    data = payload(70_000, seed=4)
    store.put_bytes(key(), data)
    assert store.read_range(key(), start, length) == data[start : start + length]


def test_read_range_starting_at_or_after_the_end_is_empty(store: ObjectStore) -> None:
    data = payload(1000, seed=5)
    store.put_bytes(key(), data)
    assert store.read_range(key(), len(data), 10) == b""
    assert store.read_range(key(), len(data) + 500, 10) == b""


def test_local_path_is_none_or_a_file_with_the_object_bytes(store: ObjectStore) -> None:
    store.put_bytes(key(), data := payload(4096, seed=6))
    path = store.local_path(key())
    if store.name == "s3":
        assert path is None
    else:
        assert path is not None
        assert path.read_bytes() == data


def test_exists_tells_present_from_absent(store: ObjectStore) -> None:
    assert not store.exists(key())
    store.put_bytes(key(), b"x")
    assert store.exists(key())
    assert not store.exists(key(sop=2))


# ---------------------------------------------------------------- missing objects


def test_a_missing_object_raises_object_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        store.open(key())
    with pytest.raises(ObjectNotFound):
        store.read_range(key(), 0, 10)


def test_delete_removes_the_object_and_is_idempotent(store: ObjectStore) -> None:
    store.put_bytes(key(), b"a")
    store.put_bytes(key(sop=2), b"b")
    store.delete(key())
    store.delete(key())  # again: no error
    store.delete(key(study=9))  # never existed: no error
    assert not store.exists(key())
    with pytest.raises(ObjectNotFound):
        store.open(key())
    assert read_all(store, key(sop=2)) == b"b"


def test_a_series_emptied_by_delete_takes_new_objects(store: ObjectStore, tmp_path: Path) -> None:
    store.put_bytes(key(sop=1), b"first")
    store.delete(key(sop=1))  # the series' last object: its directory may go with it
    store.put_bytes(key(sop=2), b"second")
    spooled = tmp_path / "received.dcm"
    spooled.write_bytes(b"third")
    store.put_file(key(sop=3), spooled, consume=True)
    assert read_all(store, key(sop=2)) == b"second"
    assert read_all(store, key(sop=3)) == b"third"


def test_a_directory_removed_behind_the_store_is_made_again(tmp_path: Path) -> None:
    """Another worker's deletion removes a series directory this process has seen."""
    store = FilesystemObjectStore(tmp_path / "objects")
    store.put_bytes(key(sop=1), b"first")
    other = FilesystemObjectStore(tmp_path / "objects")  # another worker, same folder
    other.delete(key(sop=1))
    assert not (tmp_path / "objects" / key(sop=1)).parent.exists()
    spooled = tmp_path / "received.dcm"
    spooled.write_bytes(b"second")
    store.put_file(key(sop=2), spooled, consume=True)
    store.put_bytes(key(sop=3), b"third")
    assert read_all(store, key(sop=2)) == b"second"
    assert read_all(store, key(sop=3)) == b"third"


# ---------------------------------------------------------------- listing


def test_iter_objects_lists_exactly_the_stored_objects(store: ObjectStore, tmp_path: Path) -> None:
    expected = {}
    for study, series, sop in [(1, 1, 1), (1, 1, 2), (1, 2, 1), (2, 1, 1), (3, 5, 7)]:
        data = payload(100 * sop + study, seed=sop)
        store.put_bytes(key(study, series, sop), data)
        expected[key(study, series, sop)] = len(data)
    source = tmp_path / "file.dcm"
    source.write_bytes(b"z" * 333)
    store.put_file(key(4), source, consume=True)
    expected[key(4)] = 333
    store.delete(key(1, 1, 2))
    del expected[key(1, 1, 2)]

    listed = list(store.iter_objects())
    assert {info.key: info.size for info in listed} == expected
    assert len(listed) == len(expected)
    for info in listed:
        assert isinstance(info.modified, datetime)
        assert info.modified.tzinfo is not None


def test_an_empty_store_lists_nothing_and_reports_healthy(store: ObjectStore) -> None:
    assert list(store.iter_objects()) == []
    store.check()
    free = store.free_bytes()
    assert free is None or free > 0


# ---------------------------------------------------------------- atomic overwrite


def test_readers_see_the_old_or_the_new_object_never_a_mix(
    store: ObjectStore, tmp_path: Path
) -> None:
    """Overwrites race with readers: every read is one whole version."""
    versions = [payload(300_000, seed=10), payload(200_000, seed=11)]
    source = tmp_path / "version.dcm"
    store.put_bytes(key(), versions[0])
    done = threading.Event()
    seen: list[int] = []
    bad: list[str] = []

    def reader() -> None:
        while not done.is_set():
            try:
                data = read_all(store, key())
            except PacsError as exc:  # a vanished object would be a failure too
                bad.append(repr(exc))
                continue
            if data in versions:
                seen.append(versions.index(data))
            else:
                bad.append(f"{len(data)} bytes, neither version")

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for i in range(30):
            data = versions[(i + 1) % 2]
            if i % 3 == 0:
                source.write_bytes(data)
                store.put_file(key(), source, consume=i % 2 == 0)
            else:
                store.put_bytes(key(), data)
    finally:
        done.set()
        for thread in threads:
            thread.join(30)
    assert not bad, bad[:5]
    assert seen, "the readers never completed a read"
    assert read_all(store, key()) == versions[30 % 2]


# ---------------------------------------------------------------- keys


@pytest.mark.parametrize(
    "uids",
    [
        ("..", "1.2", "1.2.3"),
        ("1.2", "../../etc", "1.2.3"),
        ("1.2", "1.2", "1.2.3/../../x"),
        ("1.2.abc", "1.2", "1.2.3"),
        ("1..2", "1.2", "1.2.3"),
        (".1.2", "1.2", "1.2.3"),
        ("1.2.", "1.2", "1.2.3"),
        ("", "1.2", "1.2.3"),
        ("1.2", "1.2", "1" * 65),
        ("1.2", "1.2 ", "1.2.3"),
        ("/etc/passwd", "1.2", "1.2.3"),
        ("1.2", "1.2", "1.2.3\x00"),
    ],
    ids=lambda uids: repr(uids)[:40],
)
def test_instance_key_refuses_anything_but_valid_uids(uids: tuple[str, str, str]) -> None:
    with pytest.raises(InvalidInstance):
        instance_key(*uids)


#: keys made only of UID characters that instance_key still could not have made
DOT_SEGMENT_KEYS = ("1.2/./1.2.3.dcm", "./1.2/1.2.3.dcm", "1.2/1.2/..dcm")


@pytest.mark.parametrize(
    "raw_key",
    [
        "../../outside.dcm",
        "1.2/1.2/../../../outside.dcm",
        "/tmp/1.2/1.2.3.dcm",
        "1.2/1.2/1.2.3",
        "1.2/1.2/1.2.3.txt",
        "1.2/1.2.3.dcm",
        "1.2/1.2/1.2/1.2.3.dcm",
        "a.b/1.2/1.2.3.dcm",
        "1.2\\..\\..\\x/1.2/1.2.3.dcm",
        *DOT_SEGMENT_KEYS,
    ],
)
def test_stores_refuse_keys_instance_key_could_not_have_made(
    store: ObjectStore, tmp_path: Path, raw_key: str
) -> None:
    """Raw input never reaches a path or a bucket key, whatever the method."""
    source = tmp_path / "source.dcm"
    source.write_bytes(b"payload")
    attempts: list[Callable[[], Any]] = [
        lambda: store.put_bytes(raw_key, b"payload"),
        lambda: store.put_file(raw_key, source, consume=False),
        lambda: store.open(raw_key),
        lambda: store.read_range(raw_key, 0, 1),
        lambda: store.delete(raw_key),
        lambda: store.exists(raw_key),
    ]
    for attempt in attempts:
        with pytest.raises(PacsError):
            attempt()
    # A store without local files may answer None; one with files must not build a path.
    with suppress(PacsError):
        assert store.local_path(raw_key) is None
    assert list(store.iter_objects()) == []
    assert not (tmp_path.parent / "outside.dcm").exists()
    assert source.read_bytes() == b"payload"


# ---------------------------------------------------------------- S3 that cannot be reached


def _closed_port() -> int:
    """A loopback port nothing listens on: connections are refused at once."""
    return free_port()


@contextmanager
def _silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never answers (a hung S3 endpoint)."""
    server = socket.socket()
    server.bind((LOCALHOST, 0))
    server.listen(16)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        # Closing makes any client still waiting fail at once, so no thread lingers.
        server.close()
        for conn in accepted:
            conn.close()
        thread.join(5)


def _store_at(port: int, **kwargs: Any) -> S3ObjectStore:
    return S3ObjectStore(
        f"{LOCALHOST}:{port}",
        "pacs",
        "access",
        "secret",
        secure=False,
        region="us-east-1",
        **kwargs,
    )


def _within(seconds: float, call: Callable[[], Any]) -> BaseException | None:
    """Run ``call`` in a thread; the exception it raised, or AssertionError if it is still running
    after ``seconds`` (the thread is left to finish on its own)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if not outcome:
        return AssertionError(f"still waiting after {seconds} s")
    return outcome[0]


REFUSED_BUDGET_S = 5.0


def test_an_unreachable_s3_endpoint_is_storage_unavailable_quickly(tmp_path: Path) -> None:
    """Connection refused: every operation fails with StorageUnavailable within seconds."""
    port = _closed_port()
    store = _store_at(port, create_bucket=False)
    source = tmp_path / "f.dcm"
    source.write_bytes(b"data")
    attempts: dict[str, Callable[[], Any]] = {
        "start-up bucket check": lambda: _store_at(port),
        "put_bytes": lambda: store.put_bytes(key(), b"data"),
        "put_file": lambda: store.put_file(key(), source, consume=True),
        "open": lambda: store.open(key()),
        "read_range": lambda: store.read_range(key(), 0, 4),
        "exists": lambda: store.exists(key()),
        "delete": lambda: store.delete(key()),
        "iter_objects": lambda: list(store.iter_objects()),
        "check": store.check,
    }
    # In parallel: each waits out the client's retries, and they need not add up.
    with ThreadPoolExecutor(len(attempts)) as pool:
        futures = {name: pool.submit(_timed, call) for name, call in attempts.items()}
        outcomes = {name: future.result() for name, future in futures.items()}
    for name, (error, seconds) in outcomes.items():
        assert isinstance(error, StorageUnavailable), (name, error)
        assert seconds < REFUSED_BUDGET_S, (name, seconds)
    # A failed put must not have consumed the caller's file.
    assert source.read_bytes() == b"data"


def _timed(call: Callable[[], Any]) -> tuple[BaseException | None, float]:
    started = time.monotonic()
    try:
        call()
    except Exception as exc:
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


def test_a_hung_s3_endpoint_is_storage_unavailable_within_seconds() -> None:
    with _silent_server() as port:
        store = _store_at(port, create_bucket=False)
        outcome = _within(8.0, lambda: store.put_bytes(key(), b"data"))
    assert isinstance(outcome, StorageUnavailable), outcome


def test_a_store_rooted_at_a_relative_path_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = FilesystemObjectStore(Path("objects"))
    store.put_bytes(key(), b"data")
    assert (tmp_path / "objects" / key()).read_bytes() == b"data"
