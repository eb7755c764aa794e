"""Workers start accepting together (pacs.server.wait_for_siblings)."""

from __future__ import annotations

import gc
import multiprocessing
import socket
import time
from pathlib import Path

from pacs.config import load_settings
from pacs.server import WorkerSpec, wait_for_siblings

FORK = multiprocessing.get_context("fork")


def _spec(tmp_path: Path, number: int, ready: object, workers: int) -> WorkerSpec:
    settings = load_settings(environ={}, data_dir=tmp_path)
    return WorkerSpec(settings, socket.socket(), None, number, ready=ready, workers=workers)


def _late_sibling(ready: object, delay: float) -> None:
    time.sleep(delay)
    with ready.get_lock():  # type: ignore[attr-defined]
        ready.value += 1  # type: ignore[attr-defined]


def test_the_first_worker_ready_waits_for_the_others(tmp_path: Path) -> None:
    ready = FORK.Value("i", 0)
    sibling = FORK.Process(target=_late_sibling, args=(ready, 0.4))
    sibling.start()
    started = time.monotonic()
    assert wait_for_siblings(_spec(tmp_path, 0, ready, 2), timeout=10)
    waited = time.monotonic() - started
    sibling.join(5)
    assert waited >= 0.3, "the worker did not wait for its sibling"
    assert ready.value == 2


def test_a_replacement_worker_does_not_wait(tmp_path: Path) -> None:
    ready = FORK.Value("i", 2)  # both workers started long ago; one died since
    started = time.monotonic()
    assert wait_for_siblings(_spec(tmp_path, 1, ready, 2), timeout=10)
    assert time.monotonic() - started < 0.2


def test_a_sibling_that_never_comes_delays_accepting_only_so_long(tmp_path: Path) -> None:
    ready = FORK.Value("i", 0)
    started = time.monotonic()
    assert not wait_for_siblings(_spec(tmp_path, 0, ready, 2), timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 2


def test_settled_heap_is_left_out_of_later_collections() -> None:
    from pacs.worker import settle_heap

    kept = [[i] for i in range(1000)]  # containers the collector tracks
    try:
        settle_heap()
        assert gc.get_freeze_count() >= len(kept)
        oldest = {id(o) for o in gc.get_objects(generation=2)}
        assert not any(id(x) in oldest for x in kept), "start-up objects still collected"
    finally:
        gc.unfreeze()
