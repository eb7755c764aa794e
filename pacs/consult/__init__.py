"""Remote consultation: partner hospitals, pushing studies to them, routing rules,
and consultation requests that come back with the partner's opinion.

Modules, one concern each (all Flask-free; the web side is ``pacs.viewer.consult*``):

- :mod:`.partners` — the partner registry, the tokens both ways, what is shared;
  :mod:`.sealing` — partner secrets encrypted at rest;
- :mod:`.push` — pushes as queued jobs with per-instance confirmation;
  :mod:`.dicom_link` (C-STORE, C-FIND count) and :mod:`.stow_link` (STOW-RS, QIDO-RS
  count) send them; :mod:`.compression` (lossless on the way) and
  :mod:`.bandwidth` (a cap per partner) shape what goes on the wire;
- :mod:`.routing` — rules evaluated at ingest;
- :mod:`.consultations` — requests, answers (:mod:`.answers`: a Basic Text SR) and
  the pacs-to-pacs calls (:mod:`.peer`, over :mod:`.httpclient`);
- :mod:`.worker` — what a worker process runs (``install(services)``).

:class:`Consult` wires them for one process.
"""

from __future__ import annotations

from dataclasses import dataclass

from pacs.archive import Archive
from pacs.config import Settings
from pacs.consult.consultations import NOTIFY_JOB, ConsultService
from pacs.consult.partners import Partners
from pacs.consult.push import PUSH_JOB, PushService
from pacs.consult.routing import ROUTE_JOB, Router
from pacs.storage.jobs import JobQueue

__all__ = ["NOTIFY_JOB", "PUSH_JOB", "ROUTE_JOB", "Consult"]


@dataclass
class Consult:
    """Everything consultation needs in one process, built from the settings."""

    settings: Settings
    archive: Archive
    queue: JobQueue
    partners: Partners
    pushes: PushService
    router: Router
    requests: ConsultService

    @classmethod
    def build(cls, settings: Settings, archive: Archive, queue: JobQueue | None = None) -> Consult:
        if queue is None:
            from pacs.jobs import make_queue

            queue = make_queue(archive, settings)
        partners = Partners(settings, archive)
        pushes = PushService(settings, archive, queue, partners)
        router = Router(archive, queue, partners, pushes, settle_s=settings.consult_route_settle_s)
        requests = ConsultService(settings, archive, queue, partners, pushes)
        return cls(settings, archive, queue, partners, pushes, router, requests)
