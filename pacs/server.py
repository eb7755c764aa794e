"""``pacs serve``: a small supervisor process and N workers, each serving DICOM and HTTP.

The supervisor binds both listening sockets and forks the workers, which all
accept on those sockets: Python's GIL makes one process use one core, so this is
how several modalities sending at once use all of them. The supervisor itself
imports nothing heavy (it would only double the memory every worker shares):
preparing the archive (schema, crash recovery, sample studies) runs in a
short-lived child first, and a worker that replaces a dead one first reconciles
what the dead one was writing.

SIGTERM or SIGINT: workers stop accepting, let open associations finish for
``shutdown_grace_s``, then refuse further stores (0xA700, "retry later") and
abort what is left. Nothing acknowledged is lost either way: a C-STORE is only
answered Success once the object is durable and indexed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

from pacs.config import Settings

log = logging.getLogger(__name__)

FORK = multiprocessing.get_context("fork")


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
    logging.getLogger("alembic").setLevel(logging.WARNING)


def bind_listener(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def worker_node(settings: Settings, pid: int) -> str:
    """The name a worker writes its store intents and job leases under (see
    Archive.recover): this node's name and the worker's pid."""
    return f"{settings.effective_node_name}:{pid}"


def worker_spool(settings: Settings, pid: int) -> Path:
    return settings.data_dir / "tmp" / f"w{pid}"


@dataclass
class WorkerSpec:
    settings: Settings
    dicom: socket.socket
    http: socket.socket | None
    number: int
    #: pids of dead workers whose unfinished stores this worker reconciles first
    orphans: list[int] = field(default_factory=list)
    #: how many workers are ready to accept (shared by all; see wait_for_siblings)
    ready: Any = None
    workers: int = 1


#: at start-up a worker waits at most this long for the others before accepting
STARTUP_WAIT_S = 15.0


def wait_for_siblings(spec: WorkerSpec, timeout: float = STARTUP_WAIT_S) -> bool:
    """Count this worker as ready, then wait until every worker is (or ``timeout``).

    The listening sockets are open before any worker runs, so whatever connects
    during start-up (a monitoring check, modalities retrying after a restart, a
    benchmark) queues, and the first worker ready took it all: four associations
    landed on one worker, one core idle. A worker that replaces a dead one finds
    the count complete and goes straight on. Returns whether all were ready.
    """
    if spec.ready is None:
        return True
    with spec.ready.get_lock():
        spec.ready.value += 1
    deadline = time.monotonic() + timeout
    while spec.ready.value < spec.workers:
        if time.monotonic() >= deadline:
            log.warning(
                "worker %d: %d of %d workers ready after %.0f s; accepting anyway",
                spec.number,
                spec.ready.value,
                spec.workers,
                timeout,
            )
            return False
        time.sleep(0.02)
    return True


def _prepare_main(settings: Settings, samples: Path | None, web: bool) -> None:
    """Child process: schema, recovery after a crash, sample studies."""
    from pacs.worker import prepare

    setup_logging(settings.log_level)
    try:
        prepare(settings, samples, web=web)
    except Exception as exc:
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        log.error("cannot prepare the archive: %s", reason)
        os._exit(2)
    os._exit(0)


def _worker_main(spec: WorkerSpec) -> None:
    from pacs.worker import run_worker

    setup_logging(spec.settings.log_level)
    run_worker(spec)


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.workers: dict[int, tuple[BaseProcess, int]] = {}
        self.stopping = False
        self._started_at: dict[int, float] = {}
        self._quick_deaths: dict[int, int] = {}

    def _spawn(self, spec: WorkerSpec) -> None:
        proc = FORK.Process(
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
        while not self.stopping:
            time.sleep(0.2)
            for pid, (proc, number) in list(self.workers.items()):
                if proc.is_alive():
                    continue
                del self.workers[pid]
                proc.join()
                from pacs import metrics

                metrics.worker_exited(pid)
                if self.stopping:
                    continue
                delay = self._respawn_delay(number)
                log.error(
                    "worker %d (pid %d) died with exit code %s; restarting%s",
                    number,
                    pid,
                    proc.exitcode,
                    f" in {delay:.1f} s" if delay else "",
                )
                deadline = time.monotonic() + delay
                while not self.stopping and time.monotonic() < deadline:
                    time.sleep(0.1)
                if not self.stopping:
                    spec = by_number[number]
                    spec.orphans = [*spec.orphans, pid]
                    self._spawn(spec)
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
        log.info("stopped")
        return 0


def serve(
    settings: Settings,
    *,
    samples: Path | None = None,
    web: bool = True,
    on_ready: Callable[[], None] | None = None,
) -> int:
    setup_logging(settings.log_level)
    preparer = FORK.Process(target=_prepare_main, args=(settings, samples, web), name="prepare")
    preparer.start()
    preparer.join()
    if preparer.exitcode != 0:
        return 2
    from pacs import activity, metrics

    # Before forking: every worker then counts into files of this one directory,
    # and sees when any of them last served someone.
    metrics.enable(settings.data_dir / "metrics")
    activity.share()
    if settings.metrics_port:
        metrics.serve_node(settings.host, settings.metrics_port)
    if web and not settings.is_sqlite and not settings.secret_key:
        log.warning(
            "secret_key is not set: sessions are signed with a key kept in %s, which other "
            "nodes sharing this database do not have; set secret_key (PACS_SECRET_KEY) to "
            "the same value on every node",
            settings.data_dir,
        )
    dicom = bind_listener(settings.host, settings.dicom_port)
    http = bind_listener(settings.host, settings.http_port) if web else None
    count = settings.workers or os.cpu_count() or 1
    ready = FORK.Value("i", 0)
    specs = [WorkerSpec(settings, dicom, http, n, ready=ready, workers=count) for n in range(count)]
    log.info(
        "pacs: node %s, DICOM AE %s on %s:%d%s, %d worker(s), data in %s",
        settings.effective_node_name,
        settings.ae_title,
        settings.host,
        settings.dicom_port,
        f", web on http://{settings.host}:{settings.http_port}/" if http else "",
        count,
        settings.data_dir,
    )
    return Supervisor(settings).run(specs, on_ready)
