"""``pacs backup DEST`` while pacs runs, and restoring what it wrote.

- SQLite + filesystem, during an ingest by ``storescu``: the index copy (SQLite's
  backup API) is consistent, every instance it lists is in the copied objects
  with its checksum (``pacs verify`` on the restored copy: nothing missing or
  corrupted; objects stored after the index copy may be extra, as orphans), and
  the session key comes along.
- PostgreSQL: ``pg_dump --format=custom``; ``pg_restore`` into an empty database
  gives back the same rows.
- Refusals: a destination that is not empty; ``--objects`` on an S3 store.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid

from pacs.archive import Source
from pacs.backup import pg_environment
from pacs.bootstrap import build_archive
from pacs.config import Settings
from pacs.storage.database import schema_heads
from support import PostgresCluster, S3Endpoint, require_tool, unique_bucket
from support.corpus import REPO_ROOT
from support.dcmtk import STORESCU, dcmtk_env

pytestmark = pytest.mark.integration

SAMPLES = REPO_ROOT / "sample_dicom"


def pacs(*args: str, config: Path | None = None, data_dir: Path | None = None) -> Any:
    command, *rest = args
    options = []
    if config is not None:
        options += ["--config", str(config)]
    if data_dir is not None:
        options += ["--data-dir", str(data_dir)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACS_")}
    return subprocess.run(
        [sys.executable, "-m", "pacs", command, *options, *rest],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def toml(values: dict[str, Any]) -> str:
    lines = ["[pacs]"]
    for key, value in values.items():
        text = str(value).lower() if isinstance(value, bool) else f'"{value}"'
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


def _copies(source: list[Path], out: Path, count: int) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    made = []
    for n in range(count):
        ds = pydicom.dcmread(source[n % len(source)])
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        path = out / f"{n:04d}.dcm"
        ds.save_as(path)
        made.append(path)
    return made


def test_an_online_backup_during_an_ingest_restores_consistently(
    pacs_server: Callable[..., Any], tmp_path: Path
) -> None:
    server = pacs_server(web=True)  # web: the session key exists
    ct = sorted((SAMPLES / "ct_head").glob("*.dcm"))
    first = storescu_all(server, ct[:40])
    assert first.returncode == 0, first.stdout
    # Enough that the ingest outlives the backup: 400 small slices used to, until the
    # C-STORE path got faster and they were all stored before the backup ended.
    files = _copies(ct, tmp_path / "more", 2000)
    ingest = subprocess.Popen(
        [
            str(require_tool(STORESCU)),
            "-xt",
            "-aet",
            "STORESCU",
            "-aec",
            server.ae_title,
            server.host,
            str(server.dicom_port),
            *map(str, files),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dcmtk_env(),
    )
    dest = tmp_path / "backup"
    try:
        # The backup must run alongside the ingest: wait until it is under way.
        watch = build_archive(Settings(data_dir=server.data_dir))
        deadline = time.monotonic() + 60
        while watch.totals()["instances"] < 60:
            assert ingest.poll() is None, "the ingest ended before the backup started"
            assert time.monotonic() < deadline, "the ingest did not get going"
            time.sleep(0.02)
        watch.index.engine.dispose()
        taken = pacs(
            "backup", str(dest), "--objects", config=server.config_path, data_dir=server.data_dir
        )
        still_running = ingest.poll() is None
    finally:
        ingest.wait(300)
    assert taken.returncode == 0, taken.stdout + taken.stderr
    assert still_running, "the ingest finished before the backup did: not an online backup"

    manifest = json.loads((dest / "backup.json").read_text())
    assert manifest["database"] == "sqlite" and manifest["objects_included"]
    assert manifest["files"]["index.sqlite"]["sha256"]
    assert "secret_key" not in json.dumps(manifest["settings"])
    assert (dest / "secret_key").read_text() == (server.data_dir / "secret_key").read_text()
    assert oct((dest).stat().st_mode & 0o777) == "0o700"

    # Restore into a new data folder and check the copy against itself.
    restored = tmp_path / "restored"
    restored.mkdir()
    shutil.copy(dest / "index.sqlite", restored / "index.sqlite")
    shutil.copytree(dest / "objects", restored / "objects")
    verify = pacs("verify", data_dir=restored)
    problems = [
        line for line in verify.stdout.splitlines() if line.startswith(("missing", "corrupted"))
    ]
    assert problems == [], verify.stdout
    archive = build_archive(Settings(data_dir=restored))
    assert archive.totals() == manifest["totals"]
    assert archive.totals()["instances"] >= 40
    archive.index.engine.dispose()


def storescu_all(server: Any, files: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(require_tool(STORESCU)),
            "-xt",
            "-aet",
            "STORESCU",
            "-aec",
            server.ae_title,
            server.host,
            str(server.dicom_port),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        env=dcmtk_env(),
        timeout=300,
        check=False,
    )


def _rows(archive: Any) -> list[tuple]:
    return sorted(
        (r.sop_uid, r.series_uid, r.study_uid, r.object_key, r.sha256, r.size_bytes)
        for r in archive.instances()
    )


def test_a_postgresql_index_is_dumped_and_restores(
    postgres: PostgresCluster, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    require_tool("pg_restore")
    url = postgres.create_database()
    values = {"database_url": url, **s3_endpoint.settings(unique_bucket())}
    archive = build_archive(Settings(data_dir=tmp_path / "data", **values))
    for path in sorted((SAMPLES / "mr_brain").glob("*.dcm"))[:6]:
        archive.store_file(path, source=Source("dicom", ae_title="MR_1_5T"))
    config = tmp_path / "pacs.toml"
    config.write_text(toml(values))

    dest = tmp_path / "backup"
    taken = pacs("backup", str(dest), config=config, data_dir=tmp_path / "data")
    assert taken.returncode == 0, taken.stdout + taken.stderr
    manifest = json.loads((dest / "backup.json").read_text())
    assert manifest["database"] == "postgresql" and manifest["totals"]["instances"] == 6
    assert manifest["schema_revisions"] == sorted(schema_heads())
    assert "database_url" not in manifest["settings"]

    copy_url = postgres.create_database()
    target = pg_environment(copy_url)
    restore = subprocess.run(
        [
            "pg_restore",
            "--no-owner",
            "--exit-on-error",
            "--dbname",
            target["PGDATABASE"],
            str(dest / "index.pgdump"),
        ],
        env={**os.environ, **target},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert restore.returncode == 0, restore.stderr
    restored = build_archive(
        Settings(data_dir=tmp_path / "restored", **{**values, "database_url": copy_url})
    )
    assert restored.totals() == archive.totals()
    assert _rows(restored) == _rows(archive)
    assert restored.verify().ok  # the same bucket: every object is there
    restored.index.engine.dispose()

    s3_objects = pacs(
        "backup", str(tmp_path / "other"), "--objects", config=config, data_dir=tmp_path / "data"
    )
    assert s3_objects.returncode == 1 and "replication" in s3_objects.stderr
    archive.index.engine.dispose()


def test_a_backup_never_overwrites(tmp_path: Path) -> None:
    archive = build_archive(Settings(data_dir=tmp_path / "data"))
    archive.store_file(SAMPLES / "cr_chest" / "CR_PA.dcm", source=Source("import"))
    archive.index.engine.dispose()
    dest = tmp_path / "backup"
    dest.mkdir()
    (dest / "earlier.txt").write_text("a previous backup")
    refused = pacs("backup", str(dest), data_dir=tmp_path / "data")
    assert refused.returncode == 1 and "not an empty folder" in refused.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["earlier.txt"]
