"""Running background work in the worker processes: the job runner, and where features plug in.

Two kinds of background work exist:

- **Jobs** (:mod:`pacs.storage.jobs`): rows in the shared queue, each run once by
  whichever worker of whichever node claims it. A feature registers a handler
  for its kind (``services.handle("send.partner", send_to_partner)``) and
  enqueues jobs (``services.queue.enqueue("send.partner", {...})``).
  :meth:`WorkerServices.schedule` makes a cluster-wide periodic job (one run
  per period for the whole cluster, not per worker).
- **Pollers**: a function each worker calls every few seconds
  (``services.every(5, "series metadata", builder.run_once)``), for work that
  shares itself out by its own means.

:func:`install` is the one list of what every worker runs; a new feature adds
one line there.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from pacs.archive import Archive
from pacs.config import Settings
from pacs.errors import PacsError
from pacs.storage.jobs import Job, JobQueue, utcnow

log = logging.getLogger(__name__)

#: What a handler gets: the claimed job. It returns a small JSON-able result (or None);
#: raising marks the attempt failed (retried with backoff), :class:`JobFailed` with
#: ``retry=False`` makes the job dead at once.
Handler = Callable[[Job], Mapping[str, Any] | None]

RECOVER_INTENTS = "archive.recover_intents"
PURGE_JOBS = "jobs.purge"
PROBE = "ops.probe"


class JobFailed(Exception):
    """A handler's way to say why it failed, and whether trying again can help."""

    def __init__(self, reason: str, *, retry: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry


def make_queue(archive: Archive, settings: Settings) -> JobQueue:
    """The job queue on the archive's database, with the retry settings."""
    return JobQueue(
        archive.index.engine,
        max_attempts=settings.job_max_attempts,
        backoff_s=settings.job_backoff_s,
        backoff_max_s=settings.job_backoff_max_s,
    )


@dataclass
class _Kind:
    handler: Handler
    lease_s: float


class JobRunner:
    """Threads in a worker process that claim and run jobs of the registered kinds.

    Each thread runs one job at a time (``threads`` of them, so one long job, a
    push of a large study, does not hold up the others); while a handler runs,
    a heartbeat keeps its lease alive. Every few seconds the runner also puts
    back jobs whose node stopped heartbeating
    (:meth:`JobQueue.reclaim_expired`), so a dead node's work is picked up by
    the living.
    """

    def __init__(
        self,
        queue: JobQueue,
        node: str,
        *,
        poll_s: float = 2.0,
        lease_s: float = 120.0,
        reclaim_every_s: float = 5.0,
        threads: int = 2,
    ) -> None:
        self.queue = queue
        self.node = node
        self.poll_s = poll_s
        self.lease_s = lease_s
        self.reclaim_every_s = reclaim_every_s
        self.threads = max(1, threads)
        self.kinds: dict[str, _Kind] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._reclaim_lock = threading.Lock()
        self._reclaimed_at = 0.0
        queue.add_listener(lambda kind: self._wake.set() if kind in self.kinds else None)

    def register(self, kind: str, handler: Handler, *, lease_s: float | None = None) -> None:
        """Run jobs of ``kind`` with ``handler`` (a lease of ``lease_s``, default the runner's)."""
        self.kinds[kind] = _Kind(handler, lease_s or self.lease_s)

    # ------------------------------------------------------------ running

    def run_pending(self, max_jobs: int | None = None) -> int:
        """Claim and run due jobs until none is left (or ``max_jobs`` ran); returns how many.

        Called by the thread; tests and commands may call it directly.
        """
        ran = 0
        while max_jobs is None or ran < max_jobs:
            if self._stop.is_set():
                break
            jobs = self.queue.claim(list(self.kinds), self.node, limit=1, lease_s=self._lease())
            if not jobs:
                break
            self.run(jobs[0])
            ran += 1
        return ran

    def _lease(self) -> float:
        return max((k.lease_s for k in self.kinds.values()), default=self.lease_s)

    def run(self, job: Job) -> str:
        """Run one claimed job to its end; returns its new state."""
        kind = self.kinds[job.kind]
        done = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat,
            args=(job, kind.lease_s, done),
            name="job-heartbeat",
            daemon=True,
        )
        beat.start()
        started = time.monotonic()
        try:
            result = kind.handler(job)
        except JobFailed as exc:
            state = self.queue.fail(job, exc.reason, retry=exc.retry)
            self._log_failure(job, exc.reason, state)
            return state
        except Exception as exc:  # a handler's bug must not stop the runner
            reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
            log.exception("job %d (%s) raised", job.id, job.kind)
            state = self.queue.fail(job, reason)
            self._log_failure(job, reason, state)
            return state
        finally:
            done.set()
            beat.join()
        ok = self.queue.complete(job, result)
        log.debug("job %d (%s) done in %.3f s", job.id, job.kind, time.monotonic() - started)
        return "done" if ok else "lost"

    def _log_failure(self, job: Job, reason: str, state: str) -> None:
        if state == "dead":
            log.error(
                "job %d (%s) failed for good after %d attempt(s): %s",
                job.id,
                job.kind,
                job.attempts,
                reason,
            )
        else:
            log.warning(
                "job %d (%s) attempt %d failed (%s): %s",
                job.id,
                job.kind,
                job.attempts,
                state,
                reason,
            )

    def _heartbeat(self, job: Job, lease_s: float, done: threading.Event) -> None:
        # The claim leased the job for the longest lease of any kind (the claimer did
        # not know which kind it would get): the first beat, at once, sets its own.
        # Otherwise a node dying in its first seconds held a push for the default 120 s.
        interval = max(0.05, lease_s / 3)
        while True:
            try:
                if not self.queue.heartbeat(job, lease_s):
                    log.warning("job %d (%s): lease lost while running", job.id, job.kind)
                    return
            except PacsError as exc:
                log.warning("job %d heartbeat failed: %s", job.id, exc.reason)
            if done.wait(interval):
                return

    def _reclaim(self) -> None:
        with self._reclaim_lock:
            now = time.monotonic()
            if now - self._reclaimed_at < self.reclaim_every_s:
                return
            self._reclaimed_at = now
        self.queue.reclaim_expired()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._reclaim()
                self.run_pending()
            except PacsError as exc:
                log.warning("job runner: %s", exc.reason)
            except Exception:
                log.exception("job runner failed; going on")
            if self._wake.wait(self.poll_s):
                self._wake.clear()

    def start(self) -> None:
        if not self.kinds or self._threads:
            return
        for n in range(self.threads):
            thread = threading.Thread(target=self._loop, name=f"jobs-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop claiming; wait up to ``timeout_s`` for the jobs in progress."""
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class Periodic(Protocol):
    def every(self, interval_s: float, name: str, fn: Callable[[], object]) -> None: ...


@dataclass
class WorkerServices:
    """What a feature gets to plug its background work into a worker process."""

    settings: Settings
    archive: Archive
    queue: JobQueue
    runner: JobRunner
    background: Periodic
    #: this worker's name in leases and store intents (``node_name:pid``)
    node: str
    installed: list[str] = field(default_factory=list)

    def handle(self, kind: str, handler: Handler, *, lease_s: float | None = None) -> None:
        """Run jobs of ``kind`` in this worker (when ``run_jobs`` is on)."""
        self.runner.register(kind, handler, lease_s=lease_s)

    def every(self, interval_s: float, name: str, fn: Callable[[], object]) -> None:
        """Call ``fn`` every ``interval_s`` seconds in this worker."""
        self.background.every(interval_s, name, fn)

    def schedule(self, kind: str, every_s: float, payload: Mapping[str, Any] | None = None) -> None:
        """Run a job of ``kind`` about once every ``every_s`` seconds for the whole cluster.

        Every worker offers the next run; the dedupe key lets only one be queued,
        and it is due ``every_s`` after it was offered.
        """

        def offer() -> None:
            due = utcnow() + timedelta(seconds=every_s)
            self.queue.enqueue(kind, payload, run_after=due, dedupe_key=f"schedule:{kind}")

        self.background.every(every_s, f"schedule {kind}", offer)


# ---------------------------------------------------------------- what every worker runs


def install(services: WorkerServices) -> None:
    """Plug every feature's background work into a worker. Add new features here."""
    install_core(services)
    install_series_metadata(services)
    install_rendered_files(services)
    install_consult(services)


def install_core(services: WorkerServices) -> None:
    """Sweeping interrupted stores of dead nodes, purging old jobs, the probe."""
    settings = services.settings
    archive = services.archive
    queue = services.queue

    def recover_intents(job: Job) -> dict[str, Any]:
        return {"fixed": archive.recover(older_than_s=settings.stale_intent_s)}

    def purge_jobs(job: Job) -> dict[str, Any]:
        return {"purged": queue.purge(timedelta(days=settings.job_keep_days))}

    # A third of the staleness limit: an intent is swept at most 4/3 of it after its writer died.
    sweep_every = max(1.0, min(60.0, settings.stale_intent_s / 3))
    # While a sweep is queued or running no other is offered: a node that dies holding
    # one must give it back within a few periods, not after the default job lease.
    sweep_lease = min(settings.job_lease_s, max(10.0, 3 * sweep_every))
    services.handle(RECOVER_INTENTS, recover_intents, lease_s=sweep_lease)
    services.handle(PURGE_JOBS, purge_jobs)
    services.handle(PROBE, probe_handler(services.node))
    services.schedule(RECOVER_INTENTS, sweep_every)
    services.schedule(PURGE_JOBS, 3600.0)
    services.installed.append("core")


def probe_handler(node: str) -> Handler:
    """``ops.probe``: answers which worker ran it (``pacs jobs probe`` shows who works)."""

    def probe(job: Job) -> dict[str, Any]:
        pause = job.payload.get("sleep_s", 0)
        if isinstance(pause, int | float) and 0 < pause <= 5:
            time.sleep(pause)
        return {"node": node, "pid": os.getpid()}

    return probe


def install_series_metadata(services: WorkerServices) -> None:
    """DICOMweb: precompute series metadata once a series settles (its builder shares
    the work between nodes through its own claims, so every worker polls)."""
    try:
        from pacs.viewer.dicomweb.metadata import MetadataBuilder
    except ImportError:
        return
    from pacs import activity

    # Parsing a settled series again is seconds of CPU: it waits while the node serves.
    builder = MetadataBuilder(
        services.archive, node=services.node, pause=activity.yield_to_foreground
    )
    services.every(5.0, "series metadata", builder.run_once)
    services.installed.append("series metadata")


def install_rendered_files(services: WorkerServices) -> None:
    """The viewer's rendered images on disk: deleted studies out, size within budget."""
    try:
        from pacs.viewer import rendered_files
    except ImportError:
        return
    files = rendered_files.for_settings(services.settings, services.archive)
    if files is None:
        return
    services.every(rendered_files.SWEEP_EVERY_S, "rendered images", files.sweep)
    services.installed.append("rendered images")


def install_consult(services: WorkerServices) -> None:
    """Consultation: pushes to partners, routing rules, notifications (pacs/consult)."""
    # Imported here: pacs.consult imports this module.
    from pacs.consult import worker

    worker.install(services)
