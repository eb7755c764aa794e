"""A real Orthanc as a DICOM peer: a partner PACS to send to, query and move from.

Orthanc runs from ``/usr/sbin/Orthanc`` with a configuration written per test
(free DICOM and HTTP ports, storage in a temporary folder, no plugins, REST API
only on loopback without authentication).
"""

from __future__ import annotations

import json as jsonlib
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .net import LOCALHOST, ServerDidNotStart, free_port, stop_process, wait_for_port
from .policy import require_tool

ORTHANC = Path("/usr/sbin/Orthanc")

#: How an Orthanc modality entry looks: AE title, host, port (see Orthanc's DicomModalities).
Modality = list[Any] | dict[str, Any]


class OrthancError(AssertionError):
    """A REST call to Orthanc answered with an HTTP error (status and body in the message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class OrthancPeer:
    """A running Orthanc: its AE title, ports and a tiny REST client."""

    aet: str
    dicom_port: int
    http_port: int
    directory: Path
    process: subprocess.Popen

    @property
    def host(self) -> str:
        return LOCALHOST

    @property
    def base_url(self) -> str:
        return f"http://{LOCALHOST}:{self.http_port}"

    def rest(
        self,
        path: str,
        method: str = "GET",
        json: Any = None,
        *,
        data: bytes | None = None,
        timeout: float = 60.0,
    ) -> Any:
        """Call the REST API: parsed JSON for JSON answers, else the raw bytes.

        ``json`` is sent as a JSON body, ``data`` as raw bytes (e.g. a DICOM file
        for ``POST /instances``). Raises :class:`OrthancError` on HTTP errors.
        """
        body = jsonlib.dumps(json).encode() if json is not None else data
        request = urllib.request.Request(self.base_url + path, data=body, method=method)
        if json is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                payload = response.read()
                content_type = response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            raise OrthancError(exc.code, f"{method} {path} → {exc.code}: {detail}") from None
        if "json" in content_type and payload:
            return jsonlib.loads(payload)
        return payload

    def upload(self, path: Path) -> Any:
        """Store a DICOM file in Orthanc through REST (``POST /instances``)."""
        return self.rest("/instances", "POST", data=path.read_bytes())

    def log_text(self) -> str:
        log = self.directory / "orthanc.log"
        return log.read_text(errors="replace") if log.exists() else ""


def orthanc_config(
    directory: Path,
    *,
    aet: str,
    dicom_port: int,
    http_port: int,
    modalities: Mapping[str, Modality],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The configuration ``orthanc_peer`` writes (exposed so tests can inspect it)."""
    config: dict[str, Any] = {
        "Name": f"pacs-test-{aet}",
        "StorageDirectory": str(directory / "storage"),
        "IndexDirectory": str(directory / "index"),
        "DicomAet": aet,
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "DicomServerEnabled": True,
        "HttpServerEnabled": True,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [],
        "DicomModalities": dict(modalities),
        # Tests talk to Orthanc from loopback under many AE titles.
        "DicomCheckCalledAet": False,
        "DicomCheckModalityHost": False,
        "StorageCompression": False,
        "ConcurrentJobs": 2,
    }
    config.update(extra or {})
    return config


@contextmanager
def orthanc_peer(
    directory: Path,
    *,
    aet: str = "ORTHANC",
    modalities: Mapping[str, Modality] | None = None,
    extra_config: Mapping[str, Any] | None = None,
    startup_timeout: float = 30.0,
) -> Iterator[OrthancPeer]:
    """Run Orthanc with its own ports and storage under ``directory``; stop it on exit.

    ``modalities`` become Orthanc's ``DicomModalities``, e.g.
    ``{"pacs": ["PACS", "127.0.0.1", 11112]}``; they can also be changed later with
    ``peer.rest("/modalities/pacs", "PUT", [...])``. ``extra_config`` entries are
    merged over the defaults (e.g. ``{"DicomAlwaysAllowFind": True}``).
    Yields once ``GET /system`` answers.
    """
    exe = require_tool(ORTHANC)
    directory.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = free_port(), free_port()
    config = orthanc_config(
        directory,
        aet=aet,
        dicom_port=dicom_port,
        http_port=http_port,
        modalities=modalities or {},
        extra=extra_config,
    )
    config_path = directory / "config.json"
    config_path.write_text(jsonlib.dumps(config, indent=2))
    log = directory / "orthanc.log"
    env = dict(os.environ, TCP_NODELAY="1")
    with log.open("ab") as log_fh:
        process = subprocess.Popen(
            [str(exe), str(config_path)],
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=directory,
            env=env,
        )
    peer = OrthancPeer(aet, dicom_port, http_port, directory, process)
    try:
        deadline = time.monotonic() + startup_timeout
        wait_for_port(LOCALHOST, http_port, startup_timeout, process=process, log=log)
        while True:
            try:
                peer.rest("/system", timeout=5)
                break
            except (OrthancError, OSError) as exc:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise ServerDidNotStart(f"Orthanc REST did not answer: {exc}") from exc
                time.sleep(0.05)
        wait_for_port(
            LOCALHOST,
            dicom_port,
            max(1.0, deadline - time.monotonic()),
            process=process,
            log=log,
        )
        yield peer
    finally:
        stop_process(process, timeout=15)
