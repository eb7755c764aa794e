"""A real ``pacs serve --samples`` and Debian's headless Chromium, for the viewer's browser tests.

The server is a subprocess on free loopback ports with its own data directory;
its users are created beforehand with ``pacs user add`` (the click group, in
process). Besides the sample studies it holds one study whose patient name is
an HTML injection attempt and one whose pixel data cannot be decoded.
Chromium is ``/usr/bin/chromium`` driven by Playwright with a fresh profile;
under ``CI=true`` a missing Chromium or Playwright fails instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from click.testing import CliRunner
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, generate_uid

from support import LOCALHOST, free_port, launch, stop_process, wait_for_port

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_dicom"
PASSWORD = "mật khẩu thử 2024"
XSS_NAME = "<img src=x onerror=alert(1)>"


def _copy_as_new_study(source: Path, target: Path, **changes: Any) -> None:
    ds = pydicom.dcmread(source)
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    ds.save_as(target, enforce_file_format=True)


def _undecodable(source: Path, target: Path) -> None:
    ds = pydicom.dcmread(source)
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientName, ds.PatientID, ds.AccessionNumber = "BROKEN^PIXELS", "BROKEN1", "BRK0001"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xe0 not a JPEG stream \xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.save_as(target, enforce_file_format=True)


@dataclass
class ViewerServer:
    base_url: str
    data_dir: Path
    log_path: Path
    #: every user's password (admin, rad, ref)
    password: str = PASSWORD
    #: the patient name of the study generated to try HTML injection
    xss_name: str = XSS_NAME

    def url(self, path: str) -> str:
        return self.base_url + path


def _samples_with_extras(root: Path) -> Path:
    """A samples folder: the project's sample studies plus the generated ones."""
    folder = root / "samples"
    folder.mkdir()
    for study in ("ct_head", "mr_brain", "cr_chest", "us_cine"):
        # Copied, not linked: the importer does not follow directory links.
        shutil.copytree(SAMPLES / study, folder / study)
    extra = folder / "generated"
    extra.mkdir()
    mr = sorted((SAMPLES / "mr_brain").glob("*.dcm"))[0]
    _copy_as_new_study(
        mr,
        extra / "xss.dcm",
        PatientName=XSS_NAME,
        PatientID="XSS1",
        AccessionNumber="XSS0001",
        StudyDescription="<script>alert(2)</script>",
        StudyDate="20220101",
    )
    _undecodable(mr, extra / "broken.dcm")
    _copy_as_new_study(
        SAMPLES / "cr_chest" / "CR_PA.dcm",
        extra / "prior.dcm",
        StudyDate="20230105",
        StudyDescription="X-quang ngực cũ",
        AccessionNumber="CR2301050001",
    )
    return folder


def _add_users(data_dir: Path, env: dict[str, str]) -> None:
    from pacs.cli_users import user

    runner = CliRunner(env={k: None for k in os.environ if k.startswith("PACS_")})
    for name, role in (("admin", "admin"), ("rad", "radiologist"), ("ref", "referring")):
        result = runner.invoke(
            user,
            ["add", name, "--data-dir", str(data_dir), "--role", role, "--password-stdin"],
            input=PASSWORD + "\n",
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output


@pytest.fixture(scope="session")
def viewer_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ViewerServer]:
    """``pacs serve --samples …`` with one worker, stopped (SIGTERM) after the session."""
    root = tmp_path_factory.mktemp("browser")
    data_dir = root / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACS_")}
    _add_users(data_dir, env)
    samples = _samples_with_extras(root)
    http_port = free_port()
    log_path = root / "server.log"
    argv = [
        sys.executable, "-m", "pacs", "serve",
        "--data-dir", str(data_dir),
        "--host", LOCALHOST,
        "--dicom-port", str(free_port()),
        "--http-port", str(http_port),
        "--workers", "1",
        "--samples", str(samples),
    ]  # fmt: skip
    with log_path.open("w") as log:
        process = subprocess.Popen(
            argv, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_for_port(LOCALHOST, http_port, 60, process=process, log=log_path)
        base = f"http://{LOCALHOST}:{http_port}"
        # The supervisor listens first; a worker answers once it has started.
        with urllib.request.urlopen(base + "/healthz", timeout=60) as response:
            assert response.status == 200
        yield ViewerServer(base, data_dir, log_path)
    finally:
        stop_process(process, timeout=30)


@pytest.fixture
def desktop(chromium: Any) -> Iterator[Any]:
    """A desktop browser that prefers Vietnamese."""
    context = launch(chromium, viewport={"width": 1280, "height": 800}, locale="vi-VN")
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def phone(chromium: Any) -> Iterator[Any]:
    """A phone-sized touch browser."""
    context = launch(
        chromium,
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        locale="vi-VN",
    )
    try:
        yield context
    finally:
        context.close()
