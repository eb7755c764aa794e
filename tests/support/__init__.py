"""Helpers shared by the contract and integration tests.

Modules, one concern each:

- :mod:`.policy`   — skip on a laptop, fail in CI (``CI=true``) when a prerequisite is missing;
  :func:`require_tool`.
- :mod:`.corpus`   — the shared real-DICOM corpus (``PACS_TEST_DICOM``) and its manifests.
- :mod:`.net`      — :func:`free_port`, :func:`wait_for_port`, stopping server processes.
- :mod:`.dcmtk`    — DCMTK tools by absolute path: ``storescu``, ``findscu``, ``movescu``,
  ``getscu``, ``echoscu`` and a ``StoreSCP`` receiver.
- :mod:`.orthanc`  — an Orthanc peer with its own ports, storage and REST client.
- :mod:`.postgres` — a throwaway PostgreSQL cluster (runs as ``postgres`` when we are root).
- :mod:`.s3`       — moto's S3 server on a free port, used through the ``minio`` client.
- :mod:`.browser`  — Debian's Chromium through Playwright: :func:`launch` a fresh context.

The pytest fixtures that wrap these live in ``tests/conftest.py``.
"""

from .browser import CHROMIUM, CHROMIUM_ARGS, launch, playwright_chromium
from .corpus import (
    ENV_VAR as CORPUS_ENV_VAR,
)
from .corpus import (
    corpus_path,
    is_clean,
    load_manifest,
    load_vietnamese_manifest,
    manifest_by_path,
    require_corpus,
    same_sop_siblings,
    vietnamese_files,
)
from .dcmtk import (
    FindResult,
    GetResult,
    StoreSCP,
    StoreSCPEndpoint,
    ToolResult,
    echoscu,
    findscu,
    getscu,
    movescu,
    storescu,
)
from .net import LOCALHOST, free_port, port_is_open, stop_process, wait_for_port
from .orthanc import OrthancError, OrthancPeer, orthanc_peer
from .policy import in_ci, require_tool, unavailable
from .postgres import PostgresCluster
from .s3 import S3Endpoint, moto_server, unique_bucket

__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "CORPUS_ENV_VAR",
    "LOCALHOST",
    "FindResult",
    "GetResult",
    "OrthancError",
    "OrthancPeer",
    "PostgresCluster",
    "S3Endpoint",
    "StoreSCP",
    "StoreSCPEndpoint",
    "ToolResult",
    "corpus_path",
    "echoscu",
    "findscu",
    "free_port",
    "getscu",
    "in_ci",
    "is_clean",
    "launch",
    "load_manifest",
    "load_vietnamese_manifest",
    "manifest_by_path",
    "moto_server",
    "movescu",
    "orthanc_peer",
    "playwright_chromium",
    "port_is_open",
    "require_corpus",
    "require_tool",
    "same_sop_siblings",
    "stop_process",
    "storescu",
    "unavailable",
    "unique_bucket",
    "vietnamese_files",
    "wait_for_port",
]
