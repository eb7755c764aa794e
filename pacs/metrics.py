"""Prometheus metrics: what the archive, the DICOM services and the web did, and how fast.

Every worker process counts in its own memory-mapped files (prometheus_client's
multi-process mode) under ``data_dir/metrics``, so the ``/metrics`` page served by
any worker reports the whole node. :func:`enable` must run in the supervisor
before workers fork and before any metric exists; without it (tests, CLI) the
counters simply live in the one process.

The rest of pacs calls the small functions below and never prometheus_client.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

_ENV = "PROMETHEUS_MULTIPROC_DIR"
_directory: Path | None = None
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def enable(directory: Path) -> None:
    """Switch to multi-process mode with a fresh directory (supervisor, before forking).

    prometheus_client takes this one setting from the environment, and reads it
    when the first metric is created; hence the write here, before any import of
    a module that defines metrics is used.
    """
    global _directory
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ[_ENV] = str(directory)
    _directory = directory


def worker_exited(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters stay counted)."""
    if _directory is not None:
        multiprocess.mark_process_dead(pid, str(_directory))


def exposition() -> tuple[bytes, str]:
    """The whole node's metrics in the Prometheus text format, and its content type."""
    if _directory is not None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(_directory))
        return generate_latest(registry), "text/plain; version=0.0.4; charset=utf-8"
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), "text/plain; version=0.0.4; charset=utf-8"


INSTANCES = Counter(
    "pacs_instances_received",
    "Objects handed to the archive, by how they came and what became of them.",
    ["source", "outcome"],
)
BYTES = Counter("pacs_bytes_stored", "Bytes of objects archived (new or replacing).", ["source"])
STORE_SECONDS = Histogram(
    "pacs_store_seconds",
    "Time to archive one object: parse, checksum, durable write, index commit.",
    buckets=_SECONDS,
)
DICOM_REQUESTS = Counter(
    "pacs_dicom_requests",
    "DICOM requests served, by service and outcome.",
    ["service", "outcome"],
)
DICOM_SECONDS = Histogram(
    "pacs_dicom_request_seconds",
    "Time to serve a DICOM request (a whole C-MOVE or C-GET included).",
    ["service"],
    buckets=_SECONDS,
)
ASSOCIATIONS = Counter(
    "pacs_dicom_associations", "Associations requested, by outcome.", ["outcome"]
)
SUBOPERATIONS = Counter(
    "pacs_dicom_suboperations", "Instances sent by C-MOVE and C-GET, by outcome.", ["outcome"]
)
HTTP_REQUESTS = Counter("pacs_http_requests", "HTTP requests served.", ["area", "method", "status"])
HTTP_SECONDS = Histogram(
    "pacs_http_request_seconds", "Time to serve an HTTP request.", ["area"], buckets=_SECONDS
)
ERRORS = Counter("pacs_errors", "Failures worth an operator's attention, by where.", ["where"])


def stored(source: str, outcome: str, seconds: float, size: int) -> None:
    INSTANCES.labels(source, outcome).inc()
    if outcome in ("stored", "replaced"):
        BYTES.labels(source).inc(size)
        STORE_SECONDS.observe(seconds)


def dicom_request(service: str, outcome: str, seconds: float) -> None:
    DICOM_REQUESTS.labels(service, outcome).inc()
    DICOM_SECONDS.labels(service).observe(seconds)


def association(outcome: str) -> None:
    ASSOCIATIONS.labels(outcome).inc()


def suboperation(outcome: str) -> None:
    SUBOPERATIONS.labels(outcome).inc()


def http_request(area: str, method: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(area, method, str(status)).inc()
    HTTP_SECONDS.labels(area).observe(seconds)


def error(where: str) -> None:
    ERRORS.labels(where).inc()
