"""A full archive refuses new objects up front, with the status that tells a modality to
retry later (C-STORE 0xA700, Refused: Out of Resources; HTTP 507 from STOW-RS), and
writes nothing: no object, no index row, no store intent, nothing left in the spool.

- Filesystem store: the volume's free space is below ``min_free_bytes``.
- S3 store: the index already holds ``max_storage_bytes`` (S3 cannot tell its free
  space); deleting a study makes room again.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from sqlalchemy import func, select

from pacs.archive import Archive
from pacs.bootstrap import build_archive
from pacs.config import Settings
from pacs.storage.models import Instance, StoreIntent
from pacs.viewer import dashboard
from pacs.viewer.app import create_app
from pacs.viewer.users import Accounts
from support import S3Endpoint, unique_bucket
from support.corpus import REPO_ROOT

pytestmark = pytest.mark.integration

MR = sorted((REPO_ROOT / "sample_dicom" / "mr_brain").glob("*.dcm"))
OUT_OF_RESOURCES = 0xA700
PASSWORD = "kho-luu-tru-day-1"


def _count(archive: Archive, model: Any) -> int:
    with archive.index.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def pacs_cli(server: Any, *command: str) -> subprocess.CompletedProcess[str]:
    """``python -m pacs GROUP SUB --config … --data-dir … ARGS`` on a server's data."""
    group, sub, *args = command
    options = ["--config", str(server.config_path), "--data-dir", str(server.data_dir)]
    return subprocess.run(
        [sys.executable, "-m", "pacs", group, sub, *options, *args],
        cwd=server.workdir,
        env=server.environ(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _wait_for_empty_spool(server: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while server.spool_files():
        assert time.monotonic() < deadline, f"left in the spool: {server.spool_files()}"
        time.sleep(0.05)


def test_a_full_volume_refuses_stores_with_out_of_resources(
    pacs_server: Callable[..., Any], raw_store: Callable[..., list]
) -> None:
    # No volume has an exabyte free: the floor is always above the free space.
    server = pacs_server(settings={"min_free_bytes": 1 << 60}, web=False)
    results = raw_store(server.host, server.dicom_port, MR[:4])
    assert [r.status for r in results] == [OUT_OF_RESOURCES] * 4, results
    assert all("full" in r.error_comment for r in results)

    assert server.object_files() == []
    _wait_for_empty_spool(server)
    archive = build_archive(Settings(data_dir=server.data_dir))
    assert _count(archive, Instance) == 0
    assert _count(archive, StoreIntent) == 0
    archive.index.engine.dispose()
    assert "storage nearly full" in server.log_text()


def _stored_size(path: Path) -> int:
    """What pacs will keep for a file sent by C-STORE: the data set under a new File Meta
    of about the same size; the file's own size is close enough for a quota margin."""
    return path.stat().st_size


def test_an_s3_quota_refuses_stores_beyond_it_until_a_study_is_deleted(
    pacs_server: Callable[..., Any],
    raw_store: Callable[..., list],
    s3_endpoint: S3Endpoint,
    tmp_path: Path,
) -> None:
    fits = 5
    quota = int(sum(_stored_size(p) for p in MR[:fits]) + _stored_size(MR[0]) * 0.5)
    bucket = unique_bucket()
    settings = {**s3_endpoint.settings(bucket), "max_storage_bytes": quota}
    server = pacs_server(settings=settings, web=False)

    results = raw_store(server.host, server.dicom_port, MR[:8])
    assert [r.status for r in results] == [0x0000] * fits + [OUT_OF_RESOURCES] * 3, results
    assert all("quota" in r.error_comment for r in results[fits:])

    archive = build_archive(Settings(data_dir=server.data_dir, **settings))
    keys = sorted(o.key for o in archive.objects.iter_objects())
    assert len(keys) == fits  # nothing of the refused ones reached the bucket
    assert sorted(r.object_key for r in archive.instances()) == keys
    assert _count(archive, StoreIntent) == 0
    assert archive.index.used_bytes() <= quota
    _wait_for_empty_spool(server)

    # An administrator deletes a study: within the quota's refresh time, stores work again.
    study = str(pydicom.dcmread(MR[0], stop_before_pixels=True).StudyInstanceUID)
    deleted = pacs_cli(server, "study", "delete", study, "--yes")
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert f"deleted study {study}: {fits} instance(s)" in deleted.stdout
    assert list(archive.objects.iter_objects()) == []
    deadline = time.monotonic() + 15
    while raw_store(server.host, server.dicom_port, MR[:1])[0].status != 0x0000:
        assert time.monotonic() < deadline, "still refused after the study was deleted"
        time.sleep(0.5)
    archive.index.engine.dispose()


def _multipart(files: list[Path]) -> tuple[bytes, str]:
    boundary = f"pacs-{uuid.uuid4().hex}"
    body = b""
    for path in files:
        body += (
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + path.read_bytes()
            + b"\r\n"
        )
    body += f"--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def test_stow_rs_answers_507_when_storage_is_full(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", min_free_bytes=1 << 60, secret_key="t")
    archive = build_archive(settings)
    Accounts(archive.index.engine).create("quantri", PASSWORD, role="admin")
    app = create_app(settings, archive)
    dashboard.register(app, archive)
    client = app.test_client()
    token = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/login").text)
    assert token is not None
    signed_in = client.post(
        "/login", data={"username": "quantri", "password": PASSWORD, "csrf_token": token[1]}
    )
    assert signed_in.status_code == 302
    csrf = client.get("/api/session").json["csrf"]  # type: ignore[index]

    body, content_type = _multipart(MR[:2])
    response = client.post(
        "/dicomweb/studies",
        data=body,
        headers={
            "Content-Type": content_type,
            "X-CSRF-Token": csrf,
            "Accept": "application/dicom+json",
        },
    )
    failed = response.json["00081198"]["Value"]  # type: ignore[index]
    assert [item["00081197"]["Value"][0] for item in failed] == [OUT_OF_RESOURCES] * 2
    assert list(archive.objects.iter_objects()) == []
    assert _count(archive, Instance) == 0 and _count(archive, StoreIntent) == 0
    assert list((settings.data_dir / "tmp").rglob("*.dcm")) == []
    assert response.status_code == 507, response.text
    archive.index.engine.dispose()
