"""Where the archive flushes a received file before it enters the store (pacs/archive.py).

Either way the file is fsynced before it is installed; what changes is who waits for
it: the I/O pool while a lone sender's store parses (overlap), or the storing
thread itself when other senders keep the process busy (no hand-over).
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pacs import archive as archive_module
from pacs.archive import Archive, Source
from pacs.bootstrap import build_archive
from pacs.config import load_settings

SAMPLES = Path(__file__).resolve().parents[2] / "sample_dicom" / "ct_head"
SOURCE = Source("dicom", ae_title="CT")


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    # environ={}: the developer's PACS_* variables must not choose the test's storage
    yield build_archive(load_settings(environ={}, data_dir=tmp_path / "data"))


@pytest.fixture
def flushes(archive: Archive, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """("pool", path) for each flush on the I/O pool, ("put", synced) for each install."""
    seen: list[tuple[str, Any]] = []
    pool_flush = archive_module.fsync_path
    put_file = archive.objects.put_file

    def on_pool(path: Path) -> None:
        seen.append(("pool", path.name))
        pool_flush(path)

    def install(key: str, path: Path, *, consume: bool, synced: bool = False) -> None:
        seen.append(("put", synced))
        put_file(key, path, consume=consume, synced=synced)

    monkeypatch.setattr(archive_module, "fsync_path", on_pool)
    monkeypatch.setattr(archive.objects, "put_file", install)
    return seen


def _received(tmp_path: Path, count: int) -> list[Path]:
    """Copies of sample slices, as the receiver spools them (the archive moves them)."""
    files = sorted(SAMPLES.iterdir())[:count]
    spooled = []
    for n, source in enumerate(files):
        target = tmp_path / f"received-{n}.dcm"
        shutil.copyfile(source, target)
        spooled.append(target)
    return spooled


def test_a_lone_sender_has_the_pool_flush_while_it_parses(
    archive: Archive, flushes: list[tuple[str, Any]], tmp_path: Path
) -> None:
    for path in _received(tmp_path, 3):
        archive.store_file(path, source=SOURCE, consume=True)
    assert [kind for kind, _ in flushes] == ["pool", "put"] * 3
    # put_file is told the file is synced, so it does not flush it again.
    assert [value for kind, value in flushes if kind == "put"] == [True] * 3
    assert archive.totals()["instances"] == 3


def test_beside_other_senders_the_storing_thread_flushes_itself(
    archive: Archive, flushes: list[tuple[str, Any]], tmp_path: Path
) -> None:
    paths = _received(tmp_path, 6)
    turns = [threading.Event() for _ in paths]
    turns[0].set()

    def sender(mine: list[int]) -> None:
        # Two senders taking turns, as two modalities' associations in one worker.
        for n in mine:
            assert turns[n].wait(10)
            archive.store_file(paths[n], source=SOURCE, consume=True)
            if n + 1 < len(turns):
                turns[n + 1].set()

    threads = [threading.Thread(target=sender, args=(mine,)) for mine in ([0, 2, 4], [1, 3, 5])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # The first store had no one beside it; each later one followed another sender's.
    assert flushes[:2] == [("pool", paths[0].name), ("put", True)]
    assert flushes[2:] == [("put", False)] * 5  # put_file flushes before installing
    assert archive.totals()["instances"] == 6
    for ref in archive.index.instances():
        assert archive.objects.local_path(ref.object_key).exists()
