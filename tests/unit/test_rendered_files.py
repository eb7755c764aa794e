"""The shared on-disk store of rendered images (pacs.viewer.rendered_files)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pacs.viewer import rendered_files
from pacs.viewer.rendered_files import RenderedFiles

STUDY = "1.2.840.113619.2.55.3"


def test_an_image_kept_by_one_process_is_found_by_another(tmp_path: Path) -> None:
    one = RenderedFiles(tmp_path, 1 << 20)
    other = RenderedFiles(tmp_path, 1 << 20)
    key = ("render", "1.2.3", "ab" * 32, ("jpeg", 90))
    assert other.get(STUDY, key) is None
    one.put(STUDY, key, b"JPEG bytes")
    assert other.get(STUDY, key) == b"JPEG bytes"
    assert other.get(STUDY, ("render", "1.2.3", "cd" * 32, ("jpeg", 90))) is None
    assert other.get("1.2.999", key) is None
    assert [p.name.startswith(".part-") for p in (tmp_path / STUDY).iterdir()] == [False]


def test_keys_change_with_the_render_version(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    files = RenderedFiles(tmp_path, 1 << 20)
    files.put(STUDY, "key", b"old renderer")
    monkeypatch.setattr(rendered_files, "RENDER_VERSION", "next")
    assert files.get(STUDY, "key") is None


def test_study_uids_that_are_not_uids_are_never_paths(tmp_path: Path) -> None:
    files = RenderedFiles(tmp_path / "cache", 1 << 20)
    for bad in ("", "..", "../../etc", "1.2/3", "1.2.3\x00"):
        files.put(bad, "key", b"x")
        assert files.get(bad, "key") is None
        files.forget_study(bad)
    assert list((tmp_path / "cache").iterdir()) == []
    assert tmp_path.exists()


def test_sweep_keeps_the_newest_files_within_budget(tmp_path: Path) -> None:
    files = RenderedFiles(tmp_path, 10_000)
    for n in range(20):
        files.put(STUDY, n, bytes(1000))
        path = files._path(STUDY, n)
        assert path is not None
        os.utime(path, (time.time() - 1000 + n, time.time() - 1000 + n))
    kept = files.sweep()
    assert kept <= 10_000
    assert files.get(STUDY, 19) is not None
    assert files.get(STUDY, 0) is None


def test_sweep_drops_studies_no_longer_archived(tmp_path: Path) -> None:
    archived = {STUDY}
    files = RenderedFiles(tmp_path, 1 << 20, lambda uid: uid in archived)
    files.put(STUDY, "a", b"kept")
    files.put("1.2.3.4", "b", b"deleted patient")
    files.sweep()
    assert files.get(STUDY, "a") == b"kept"
    assert not (tmp_path / "1.2.3.4").exists()


def test_forget_study_removes_its_folder(tmp_path: Path) -> None:
    files = RenderedFiles(tmp_path, 1 << 20)
    files.put(STUDY, "a", b"x")
    files.forget_study(STUDY)
    assert files.get(STUDY, "a") is None


def test_a_read_only_folder_costs_only_the_cache(tmp_path: Path) -> None:
    files = RenderedFiles(tmp_path, 1 << 20)
    (tmp_path / STUDY).write_text("a file where the study folder should be")
    files.put(STUDY, "a", b"x")  # no exception
    assert files.get(STUDY, "a") is None
