"""What every worker process runs for consultation (one line in ``pacs.jobs.install``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pacs.consult import NOTIFY_JOB, PUSH_JOB, ROUTE_JOB, Consult

if TYPE_CHECKING:
    from pacs.jobs import WorkerServices


def install(services: WorkerServices) -> None:
    """The push, routing and notification jobs, and routing rules at ingest."""
    consult = Consult.build(services.settings, services.archive, services.queue)
    # A push heartbeats its job every third of its lease; a node that died holding
    # one gives it back a lease after its last heartbeat.
    services.handle(PUSH_JOB, consult.pushes.run, lease_s=services.settings.consult_push_lease_s)
    services.handle(ROUTE_JOB, consult.router.run)
    services.handle(NOTIFY_JOB, consult.requests.notify)
    services.archive.add_listener(consult.router.on_stored)
    services.installed.append("consultation")
