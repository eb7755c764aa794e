"""What runs inside the processes ``pacs serve`` forks: preparation and the workers."""

from __future__ import annotations

import gc
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from pacs.archive import Archive
from pacs.bootstrap import build_archive
from pacs.config import Settings
from pacs.server import WorkerSpec, wait_for_siblings, worker_node, worker_spool

if TYPE_CHECKING:
    from pacs.jobs import JobRunner

log = logging.getLogger(__name__)


def prepare(settings: Settings, samples: Path | None, *, web: bool = True) -> None:
    """Schema, recovery after a crash, the sample studies on an empty archive, and a
    first administrator (its password printed once) when the web side has none."""
    node = settings.effective_node_name
    archive = build_archive(settings, node=f"{node}:prepare")
    # No worker of this node is alive yet: every intent under its name is from a dead
    # one. Other nodes' intents are theirs (swept once stale, see pacs/jobs.py).
    archive.recover(node_prefix=f"{node}:")
    shutil.rmtree(settings.data_dir / "tmp", ignore_errors=True)
    (settings.data_dir / "tmp").mkdir(parents=True, exist_ok=True)
    if samples is not None and archive.totals()["instances"] == 0:
        from pacs.importer import import_paths

        summary = import_paths(archive, [samples])
        log.info(
            "loaded the sample studies from %s: %d stored, %d refused",
            samples,
            summary.stored,
            len(summary.refused),
        )
    if web:
        from pacs.viewer.users import ensure_first_admin

        host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "localhost"
        ensure_first_admin(archive, url=f"http://{host}:{settings.http_port}/")
    archive.index.engine.dispose()


def settle_heap() -> None:
    """Collect once, then keep what the worker built at start-up out of every later
    collection.

    A worker starts with about 135 000 objects that live as long as it does (modules,
    SQLAlchemy's and pydicom's tables, the Flask app). Each full collection walked all
    of them: 90-130 ms with the GIL held, which stalls every association of the worker.
    One came during the first thousand instances of every ingest measured here.
    """
    gc.collect()
    gc.freeze()


@dataclass
class Periodic:
    name: str
    interval_s: float
    run: Callable[[], object]
    next_at: float = 0.0


class Background:
    """Periodic housekeeping in a worker, on one thread, off every request path."""

    def __init__(self) -> None:
        self.tasks: list[Periodic] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="background", daemon=True)

    def every(self, interval_s: float, name: str, fn: Callable[[], object]) -> None:
        self.tasks.append(Periodic(name, interval_s, fn, time.monotonic() + interval_s))

    def start(self) -> None:
        if self.tasks:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            now = time.monotonic()
            for task in self.tasks:
                if now < task.next_at:
                    continue
                try:
                    task.run()
                except Exception:
                    log.exception("background task %s failed", task.name)
                task.next_at = time.monotonic() + task.interval_s


def start_background(
    settings: Settings, archive: Archive, node: str
) -> tuple[Background, JobRunner]:
    """Every feature's background work (pacs.jobs.install) on two threads: the periodic
    tasks, and the job runner when this node runs jobs."""
    from pacs.jobs import JobRunner, WorkerServices, install, make_queue

    background = Background()
    queue = make_queue(archive, settings)
    runner = JobRunner(
        queue,
        node,
        poll_s=settings.job_poll_s,
        lease_s=settings.job_lease_s,
        threads=settings.job_threads,
    )
    services = WorkerServices(settings, archive, queue, runner, background, node)
    install(services)
    background.start()
    if settings.run_jobs:
        runner.start()
    log.debug("background work: %s", ", ".join(services.installed))
    return background, runner


def run_worker(spec: WorkerSpec) -> None:
    """A worker: the DICOM SCP and the web app on the shared sockets, until SIGTERM."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    settings = spec.settings
    pid = os.getpid()
    spool = worker_spool(settings, pid)
    spool.mkdir(parents=True, exist_ok=True)
    # pynetdicom spools received data sets through the tempfile module; keep
    # them next to the store so archiving them is a rename, not a copy.
    tempfile.tempdir = str(spool)
    node = worker_node(settings, pid)
    archive = build_archive(settings, node=node, migrate=False, spool_dir=spool)
    for dead in spec.orphans:
        archive.recover(node=worker_node(settings, dead))
        shutil.rmtree(worker_spool(settings, dead), ignore_errors=True)
    spec.orphans.clear()

    from pacs.scp.service import DicomService

    dicom = DicomService(settings, archive)
    web = None
    if spec.http is not None:
        from pacs.viewer.wsgi import WebService

        web = WebService(settings, archive)
    settle_heap()
    wait_for_siblings(spec)
    dicom.start(spec.dicom)
    if web is not None:
        assert spec.http is not None
        web.start(spec.http)
    background, runner = start_background(settings, archive, node)
    log.info("worker %d ready", spec.number)
    while not stop.wait(0.5):
        pass
    log.info("worker %d stopping", spec.number)
    background.stop()
    runner.stop(settings.shutdown_grace_s)
    if web is not None:
        web.stop_accepting()
    dicom.stop(settings.shutdown_grace_s)
    if web is not None:
        web.stop()
    archive.index.engine.dispose()
    shutil.rmtree(spool, ignore_errors=True)
    # Association threads that were aborted may still be unwinding; they hold
    # nothing that matters any more.
    os._exit(0)
