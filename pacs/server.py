"""``pacs serve``: a supervisor process and N workers, each serving DICOM and HTTP.

The supervisor prepares the archive (schema, crash recovery, sample studies),
binds both listening sockets, and forks the workers, which all accept on those
sockets; Python's GIL makes one process use one core, so this is how several
modalities sending at once use all of them. A worker that dies is replaced,
after the supervisor has reconciled what it was writing.

SIGTERM or SIGINT: workers stop accepting, let open associations finish for
``shutdown_grace_s``, then refuse further stores (0xA700, "retry later") and
abort what is left. Nothing acknowledged is lost either way: a C-STORE is only
answered Success once the object is durable and indexed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from pacs.archive import Archive
from pacs.bootstrap import build_archive
from pacs.config import Settings

log = logging.getLogger(__name__)

HOST = socket.gethostname()
STALE_INTENT_S = 900.0


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s [%(processName)s] %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    # pynetdicom logs every PDU at INFO; our handlers log what matters.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("waitress").setLevel(logging.WARNING)


def bind_listener(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


# ---------------------------------------------------------------- worker


@dataclass
class WorkerSpec:
    settings: Settings
    dicom: socket.socket
    http: socket.socket | None
    number: int


def worker_node(pid: int) -> str:
    return f"{HOST}:{pid}"


def worker_spool(settings: Settings, pid: int) -> Path:
    return settings.data_dir / "tmp" / f"w{pid}"


def _worker_main(spec: WorkerSpec) -> None:
    """Entry point of a worker process (after fork)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    settings = spec.settings
    setup_logging(settings.log_level)
    pid = os.getpid()
    spool = worker_spool(settings, pid)
    spool.mkdir(parents=True, exist_ok=True)
    # pynetdicom spools received data sets through the tempfile module; keep
    # them next to the store so archiving them is a rename, not a copy.
    tempfile.tempdir = str(spool)
    archive = build_archive(settings, node=worker_node(pid), migrate=False, spool_dir=spool)

    from pacs.scp.service import DicomService
    from pacs.viewer.wsgi import WebService

    dicom = DicomService(settings, archive)
    dicom.start(spec.dicom)
    web = None
    if spec.http is not None:
        web = WebService(settings, archive)
        web.start(spec.http)
    log.info("worker %d ready", spec.number)
    while not stop.wait(0.5):
        pass
    log.info("worker %d stopping", spec.number)
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


# ---------------------------------------------------------------- supervisor


class Supervisor:
    def __init__(self, settings: Settings, archive: Archive) -> None:
        self.settings = settings
        self.archive = archive
        self.ctx = multiprocessing.get_context("fork")
        self.workers: dict[int, tuple[multiprocessing.process.BaseProcess, int]] = {}
        self.stopping = False
        self._started_at: dict[int, float] = {}
        self._quick_deaths: dict[int, int] = {}

    def _spawn(self, spec: WorkerSpec) -> None:
        proc = self.ctx.Process(
            target=_worker_main, args=(spec,), name=f"worker-{spec.number}", daemon=False
        )
        proc.start()
        assert proc.pid is not None
        self.workers[proc.pid] = (proc, spec.number)
        self._started_at[spec.number] = time.monotonic()

    def _respawn_delay(self, number: int) -> float:
        """Back off when a worker keeps dying right after it starts (a crash loop)."""
        if time.monotonic() - self._started_at.get(number, 0.0) > 30:
            self._quick_deaths[number] = 0
            return 0.0
        deaths = self._quick_deaths.get(number, 0) + 1
        self._quick_deaths[number] = deaths
        return min(0.5 * 2 ** (deaths - 1), 30.0)

    def _reap(self, pid: int, proc: multiprocessing.process.BaseProcess) -> None:
        """Clean up after a dead worker: its half-done stores and its spool."""
        self.archive.recover(node_prefix=worker_node(pid))
        shutil.rmtree(worker_spool(self.settings, pid), ignore_errors=True)

    def run(self, specs: list[WorkerSpec], on_ready: Callable[[], None] | None) -> int:
        for spec in specs:
            self._spawn(spec)
        by_number = {spec.number: spec for spec in specs}
        if on_ready:
            on_ready()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if not self.stopping:
                log.info("received %s: shutting down", signal.Signals(signum).name)
            self.stopping = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        last_sweep = time.monotonic()
        while not self.stopping:
            time.sleep(0.2)
            for pid, (proc, number) in list(self.workers.items()):
                if proc.is_alive():
                    continue
                del self.workers[pid]
                proc.join()
                if self.stopping:
                    continue
                log.error(
                    "worker %d (pid %d) died with exit code %s; restarting",
                    number,
                    pid,
                    proc.exitcode,
                )
                self._reap(pid, proc)
                self._spawn(by_number[number])
            if time.monotonic() - last_sweep > 60:
                last_sweep = time.monotonic()
                self.archive.recover(older_than_s=STALE_INTENT_S)
        return self._shutdown()

    def _shutdown(self) -> int:
        for proc, _ in self.workers.values():
            if proc.is_alive() and proc.pid:
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_grace_s + 15
        for pid, (proc, _) in list(self.workers.items()):
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                log.error("worker pid %d did not stop; killing it", pid)
                proc.kill()
                proc.join()
            self._reap(pid, proc)
        log.info("stopped")
        return 0


def prepare_archive(settings: Settings, samples: Path | None) -> Archive:
    """Schema, recovery after a crash, and the sample studies on an empty archive."""
    archive = build_archive(settings, node=f"{HOST}:supervisor")
    # No worker of ours is alive yet: every intent of this host is from a dead one.
    archive.recover(node_prefix=f"{HOST}:")
    shutil.rmtree(settings.data_dir / "tmp", ignore_errors=True)
    (settings.data_dir / "tmp").mkdir(parents=True, exist_ok=True)
    if samples is not None and archive.totals()["instances"] == 0:
        from pacs.importer import import_paths

        summary = import_paths(archive, [samples])
        log.info(
            "loaded sample studies from %s: %d stored, %d refused",
            samples,
            summary.stored,
            len(summary.refused),
        )
    return archive


def serve(
    settings: Settings,
    *,
    samples: Path | None = None,
    web: bool = True,
    on_ready: Callable[[], None] | None = None,
) -> int:
    setup_logging(settings.log_level)
    archive = prepare_archive(settings, samples)
    # Forked workers open their own connections; none may be shared with them.
    archive.index.engine.dispose()
    dicom = bind_listener(settings.host, settings.dicom_port)
    http = bind_listener(settings.host, settings.http_port) if web else None
    count = settings.workers or os.cpu_count() or 1
    specs = [WorkerSpec(settings, dicom, http, n) for n in range(count)]
    log.info(
        "pacs: DICOM AE %s on %s:%d%s, %d worker(s), data in %s",
        settings.ae_title,
        settings.host,
        settings.dicom_port,
        f", web on http://{settings.host}:{settings.http_port}/" if http else "",
        count,
        settings.data_dir,
    )
    return Supervisor(settings, archive).run(specs, on_ready)
