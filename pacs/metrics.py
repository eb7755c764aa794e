"""Prometheus metrics: what the archive, the DICOM services and the web did, and how fast.

Every worker process counts in its own memory-mapped files (prometheus_client's
multi-process mode) under ``data_dir/metrics``, so the ``/metrics`` page served by
any worker reports the whole node. :func:`enable` must run in the supervisor
before workers fork; without it (tests, CLI) the counters simply live in the one
process.

The rest of pacs calls the small functions below and never prometheus_client.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

_ENV = "PROMETHEUS_MULTIPROC_DIR"
_directory: Path | None = None
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def enable(directory: Path) -> None:
    """Switch to multi-process mode with a fresh directory (supervisor, before forking).

    prometheus_client takes this one setting from the environment and picks its
    kind of value store when it is first imported (here, with this module): so
    the environment is written, the value store picked again, and the metrics
    made anew, before any worker counts anything.
    """
    global _directory, _m
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ[_ENV] = str(directory)
    _directory = directory
    values.ValueClass = values.get_value_class()
    # Multi-process exposition reads the files, not a registry: keep these out of it.
    for metric in vars(_m).values():
        with contextlib.suppress(KeyError):  # already out (a second enable)
            REGISTRY.unregister(metric)
    _m = _Metrics(None)


def worker_exited(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters stay counted)."""
    if _directory is not None:
        multiprocess.mark_process_dead(pid, str(_directory))


def _node_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(_directory))
    return registry


def exposition() -> tuple[bytes, str]:
    """The whole node's metrics in the Prometheus text format, and its content type.

    Counters and histograms come from every worker of this node; the gauges of
    :func:`set_state_source` describe the whole archive (every node reports the
    same values: aggregate them with ``max``, not ``sum``).
    """
    if _directory is not None:
        body = generate_latest(_node_registry())
    else:
        body = generate_latest(REGISTRY)
    if _state.source is not None:
        registry = CollectorRegistry()
        registry.register(_StateCollector())
        body += generate_latest(registry)
    return body, "text/plain; version=0.0.4; charset=utf-8"


def serve_node(host: str, port: int) -> None:
    """Serve this node's counters on ``host:port`` from a thread (the supervisor of a
    DICOM-only node, whose workers have no web server). Call after :func:`enable`."""
    from prometheus_client import start_http_server

    start_http_server(port, addr=host, registry=_node_registry())


# ---------------------------------------------------------------- scrape-time gauges


@dataclass(frozen=True)
class ArchiveState:
    """What the archive holds and owes, read from the database when /metrics is scraped."""

    patients: int
    studies: int
    series: int
    instances: int
    used_bytes: int
    #: max_storage_bytes, 0 when there is no quota
    quota_bytes: int = 0
    #: free space of the storage volume, None when the backend cannot tell (S3)
    free_bytes: int | None = None
    #: (kind, state) -> number of jobs
    jobs: Mapping[tuple[str, str], int] = field(default_factory=dict)
    #: kind -> seconds the oldest due queued job has waited
    jobs_oldest_due_s: Mapping[str, float] = field(default_factory=dict)
    #: remote AE title -> Unix time of its last association (never seen: absent)
    last_contact: Mapping[str, float] = field(default_factory=dict)


class _StateHolder:
    def __init__(self) -> None:
        self.source: Callable[[], ArchiveState] | None = None
        self.max_age_s = 5.0
        self.lock = threading.Lock()
        self.cached: ArchiveState | None = None
        self.cached_at = -1e9


_state = _StateHolder()


def set_state_source(source: Callable[[], ArchiveState], *, max_age_s: float = 5.0) -> None:
    """Report ``source()`` as gauges on every scrape (at most one database read per
    ``max_age_s``, however often or by how many scrapers)."""
    with _state.lock:
        _state.source = source
        _state.max_age_s = max_age_s
        _state.cached = None
        _state.cached_at = -1e9


def _current_state() -> ArchiveState | None:
    with _state.lock:
        source = _state.source
        if source is None:
            return None
        now = time.monotonic()
        if _state.cached is not None and now - _state.cached_at < _state.max_age_s:
            return _state.cached
        try:
            _state.cached = source()
        except Exception as exc:  # a scrape must answer even when the database does not
            log.warning("metrics: cannot read the archive state: %s", exc)
            _state.cached = None
        _state.cached_at = now
        return _state.cached


class _StateCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = _current_state()
        yield GaugeMetricFamily(
            "pacs_index_up",
            "1 when the archive state could be read from the database at this scrape.",
            value=0 if state is None else 1,
        )
        if state is None:
            return
        for name, text, value in (
            ("pacs_patients", "Patients in the archive.", state.patients),
            ("pacs_studies", "Studies in the archive.", state.studies),
            ("pacs_series", "Series in the archive.", state.series),
            ("pacs_instances", "Instances in the archive.", state.instances),
            ("pacs_storage_used_bytes", "Bytes of archived objects (index sum).", state.used_bytes),
        ):
            yield GaugeMetricFamily(name, text, value=value)
        if state.quota_bytes:
            yield GaugeMetricFamily(
                "pacs_storage_quota_bytes",
                "max_storage_bytes: new objects are refused beyond it.",
                value=state.quota_bytes,
            )
        if state.free_bytes is not None:
            yield GaugeMetricFamily(
                "pacs_storage_free_bytes",
                "Free space of the object store's volume.",
                value=state.free_bytes,
            )
        jobs = GaugeMetricFamily(
            "pacs_jobs", "Jobs in the queue by kind and state.", labels=["kind", "state"]
        )
        for (kind, job_state), count in sorted(state.jobs.items()):
            jobs.add_metric([kind, job_state], count)
        yield jobs
        lag = GaugeMetricFamily(
            "pacs_jobs_oldest_due_seconds",
            "How long the oldest due queued job of each kind has waited.",
            labels=["kind"],
        )
        for kind, seconds in sorted(state.jobs_oldest_due_s.items()):
            lag.add_metric([kind], seconds)
        yield lag
        contact = GaugeMetricFamily(
            "pacs_remote_ae_last_contact_timestamp_seconds",
            "Unix time of each remote AE's last association (absent: never).",
            labels=["ae_title"],
        )
        for ae_title, at in sorted(state.last_contact.items()):
            contact.add_metric([ae_title], at)
        yield contact


class _Metrics:
    """Every counter and histogram pacs keeps (names and labels are the public interface)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.instances = Counter(
            "pacs_instances_received",
            "Objects handed to the archive, by how they came and what became of them.",
            ["source", "outcome"],
            registry=registry,
        )
        self.bytes = Counter(
            "pacs_bytes_stored",
            "Bytes of objects archived (new or replacing).",
            ["source"],
            registry=registry,
        )
        self.store_seconds = Histogram(
            "pacs_store_seconds",
            "Time to archive one object: parse, checksum, durable write, index commit.",
            buckets=_SECONDS,
            registry=registry,
        )
        self.dicom_requests = Counter(
            "pacs_dicom_requests",
            "DICOM requests served, by service and outcome.",
            ["service", "outcome"],
            registry=registry,
        )
        self.dicom_seconds = Histogram(
            "pacs_dicom_request_seconds",
            "Time to serve a DICOM request (a whole C-MOVE or C-GET included).",
            ["service"],
            buckets=_SECONDS,
            registry=registry,
        )
        self.associations = Counter(
            "pacs_dicom_associations",
            "Associations requested, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.suboperations = Counter(
            "pacs_dicom_suboperations",
            "Instances sent by C-MOVE and C-GET, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.http_requests = Counter(
            "pacs_http_requests",
            "HTTP requests served.",
            ["area", "method", "status"],
            registry=registry,
        )
        self.http_seconds = Histogram(
            "pacs_http_request_seconds",
            "Time to serve an HTTP request.",
            ["area"],
            buckets=_SECONDS,
            registry=registry,
        )
        self.errors = Counter(
            "pacs_errors",
            "Failures worth an operator's attention, by where.",
            ["where"],
            registry=registry,
        )


_m = _Metrics(REGISTRY)


def stored(source: str, outcome: str, seconds: float, size: int) -> None:
    _m.instances.labels(source, outcome).inc()
    if outcome in ("stored", "replaced"):
        _m.bytes.labels(source).inc(size)
        _m.store_seconds.observe(seconds)


def dicom_request(service: str, outcome: str, seconds: float) -> None:
    _m.dicom_requests.labels(service, outcome).inc()
    _m.dicom_seconds.labels(service).observe(seconds)


def association(outcome: str) -> None:
    _m.associations.labels(outcome).inc()


def suboperation(outcome: str) -> None:
    _m.suboperations.labels(outcome).inc()


def http_request(area: str, method: str, status: int, seconds: float) -> None:
    _m.http_requests.labels(area, method, str(status)).inc()
    _m.http_seconds.labels(area).observe(seconds)


def error(where: str) -> None:
    _m.errors.labels(where).inc()
