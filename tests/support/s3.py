"""An S3 endpoint for tests: moto's server in its own process on a free port.

pacs talks to S3 through the ``minio`` client (see ``pacs.storage.s3``), so the
tests do too; moto only plays the server. Every test should use its own bucket
(:func:`unique_bucket`) so tests never see each other's objects.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .net import LOCALHOST, free_port, stop_process, wait_for_port
from .policy import unavailable


@dataclass(frozen=True)
class S3Endpoint:
    """Where the fake S3 listens, and the (fake) credentials it accepts."""

    host: str
    port: int
    access_key: str = "pacs-test-access"
    secret_key: str = "pacs-test-secret"
    region: str = "us-east-1"
    secure: bool = False

    @property
    def endpoint(self) -> str:
        """``host:port``, as the minio client and ``Settings.s3_endpoint`` want it."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def settings(self, bucket: str) -> dict[str, Any]:
        """``Settings`` overrides for an archive that stores in ``bucket`` here."""
        return {
            "storage": "s3",
            "s3_endpoint": self.endpoint,
            "s3_bucket": bucket,
            "s3_access_key": self.access_key,
            "s3_secret_key": self.secret_key,
            "s3_secure": self.secure,
            "s3_region": self.region,
        }

    def store(self, bucket: str | None = None, **kwargs: Any) -> Any:
        """An ``S3ObjectStore`` on a new (or the given) bucket of this endpoint."""
        from pacs.storage.s3 import S3ObjectStore

        return S3ObjectStore(
            self.endpoint,
            bucket or unique_bucket(),
            self.access_key,
            self.secret_key,
            secure=self.secure,
            region=self.region,
            **kwargs,
        )


def unique_bucket(prefix: str = "pacs-test") -> str:
    """A bucket name no other test uses (lowercase, DNS-safe, < 63 characters)."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


@contextmanager
def moto_server(startup_timeout: float = 30.0) -> Iterator[S3Endpoint]:
    """Run ``python -m moto.server`` on a free loopback port; stop it on exit."""
    try:
        import moto.server  # noqa: F401 - only checking that moto[server] is installed
    except ImportError:
        unavailable("moto[server] is not installed (pip install 'moto[server]')")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="pacs-test-moto-") as tmp:
        log = Path(tmp) / "moto.log"
        with log.open("ab") as log_fh:
            process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", LOCALHOST, "-p", str(port)],
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            wait_for_port(LOCALHOST, port, startup_timeout, process=process, log=log)
            yield S3Endpoint(LOCALHOST, port)
        finally:
            stop_process(process)
