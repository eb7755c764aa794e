"""Pushing studies to partners as queued jobs that survive crashes and broken links.

A push is a row with one item per instance (:class:`pacs.storage.consult_models.PushStore`).
The job handler (:meth:`PushService.run`) sends the items still pending over one
link, and records each confirmation in the database as soon as the partner gives
it; a job taken over after a crash, a restart of either side or a broken link
therefore sends only what was not confirmed. Instances that arrive in the study
while it is being pushed join it. At the end the partner's own count of the
instances (C-FIND / QIDO-RS) is checked against what it confirmed.

One push per partner is sent at a time (a bandwidth cap then holds per partner,
and a slow line is not split between studies); the others wait their turn.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from pacs.archive import Archive
from pacs.config import Settings
from pacs.consult.bandwidth import TokenBucket
from pacs.consult.partners import Partners
from pacs.consult.peer import PeerClient
from pacs.consult.stow_link import StowLink
from pacs.consult.transport import Link, SendResult, TransientFailure
from pacs.errors import NotFound, PacsError
from pacs.jobs import JobFailed
from pacs.storage.consult_models import Partner, Push, PushItem, PushStore
from pacs.storage.index import InstanceRef
from pacs.storage.jobs import Job, JobQueue, utcnow

log = logging.getLogger(__name__)

PUSH_JOB = "consult.push"
#: a push's claim on its partner lapses this long after its owner last showed life
STALE_AFTER_S = 60.0
HEARTBEAT_S = 10.0
#: a short count is asked again after this long (pacs caches its AE registry for 2 s)
RECOUNT_AFTER_S = 2.5
#: how long a push waits before looking again when its partner is busy with another
BUSY_RETRY_S = 5.0
#: a push keeps trying for long (a partner may be offline for a day): backoff doubles
#: from job_backoff_s up to job_backoff_max_s between attempts
MAX_ATTEMPTS = 30


class _Stopped(Exception):
    """The push was cancelled (or taken over) while it was being sent."""


class PushService:
    """Creating pushes, queueing them, and running them (the ``consult.push`` job)."""

    def __init__(
        self, settings: Settings, archive: Archive, queue: JobQueue, partners: Partners
    ) -> None:
        self.settings = settings
        self.archive = archive
        self.queue = queue
        self.partners = partners
        self.store = PushStore(archive.index.engine)
        #: called with (push) when a push finished well (consultations hook in here)
        self.on_done: list[Any] = []

    # ------------------------------------------------------------ creating

    def refs_for(self, push: Push) -> list[InstanceRef]:
        """The instances the push covers now (its study, or its series)."""
        return self.archive.instances(
            study_uid=push.study_uid, series_uids=list(push.series_uids) or None
        )

    def create(
        self,
        partner: Partner,
        study_uid: str,
        *,
        series_uids: Sequence[str] = (),
        origin: str = "manual",
        created_by: str = "",
        consult_id: int | None = None,
        rule_id: int | None = None,
        share: bool = True,
    ) -> Push:
        """Queue a push of a study (or some of its series) to a partner. Raises NotFound
        when nothing of it is archived. The study is shared with the partner (it may then
        query and retrieve it) unless ``share`` is False."""
        refs = self.archive.instances(study_uid=study_uid, series_uids=list(series_uids) or None)
        if not refs:
            raise NotFound(f"nothing archived for study {study_uid}")
        push = self.store.create(
            partner.id,
            study_uid,
            series_uids=series_uids,
            origin=origin,
            rule_id=rule_id,
            consult_id=consult_id,
            transport=partner.transport,
            compression=partner.compression,
            created_by=created_by,
        )
        self.store.add_items(push.id, [(r.sop_uid, r.size_bytes) for r in refs])
        if share:
            self.partners.share(partner, study_uid, f"push:{push.id}")
        self.enqueue(push.id)
        log.info(
            "push #%d of study %s (%d instance(s)) to %s queued by %s",
            push.id,
            study_uid,
            len(refs),
            partner.name,
            created_by or origin,
        )
        return self.store.get(push.id) or push

    def enqueue(self, push_id: int, *, delay_s: float = 0.0) -> int:
        return self.queue.enqueue(
            PUSH_JOB,
            {"push_id": push_id},
            run_after=utcnow() + timedelta(seconds=delay_s) if delay_s else None,
            max_attempts=MAX_ATTEMPTS,
        )

    def retry(self, push_id: int) -> Push:
        """Queue a failed or cancelled push again (refused instances included)."""
        push = self.store.get(push_id)
        if push is None:
            raise NotFound(f"no push #{push_id}")
        self.store.reopen(push_id)
        self.enqueue(push_id)
        return self.store.get(push_id) or push

    # ------------------------------------------------------------ running

    def run(self, job: Job) -> dict[str, Any]:
        """The ``consult.push`` job: send what is pending, verify, finish."""
        push_id = int(job.payload.get("push_id", 0))
        owner = f"job:{job.id}"
        claim = self.store.begin(push_id, owner, stale_after_s=STALE_AFTER_S)
        if claim == "busy":
            # Another push to this partner (or another job on this push) is sending:
            # look again shortly, without using up this push's attempts.
            self.enqueue(push_id, delay_s=BUSY_RETRY_S)
            return {"push_id": push_id, "deferred": True}
        if claim != "ok":
            return {"push_id": push_id, "skipped": claim}
        push = self.store.get(push_id)
        assert push is not None
        try:
            partner = self.partners.get(push.partner_id)
        except NotFound:
            self.store.note(push_id, owner, state="failed", error="the partner was removed")
            raise JobFailed("the partner was removed", retry=False) from None
        stop = threading.Event()
        cancelled = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat,
            args=(push_id, owner, stop, cancelled),
            name="push-heartbeat",
            daemon=True,
        )
        beat.start()
        link: Link | None = None
        try:
            self._announce(partner, push)
            link = self._link(partner, push)
            finished = self._send_all(push_id, owner, link, cancelled)
        except _Stopped:
            log.info("push #%d to %s stopped: cancelled", push_id, partner.name)
            return {"push_id": push_id, "cancelled": True}
        except JobFailed as exc:
            again = exc.retry and job.attempts < job.max_attempts
            self.store.note(
                push_id, owner, state="retrying" if again else "failed", error=exc.reason
            )
            raise
        except (TransientFailure, PacsError) as exc:
            reason = str(getattr(exc, "reason", "") or exc)
            last = job.attempts >= job.max_attempts
            self.store.note(push_id, owner, state="failed" if last else "retrying", error=reason)
            log.warning(
                "push #%d to %s: attempt %d failed: %s", push_id, partner.name, job.attempts, reason
            )
            raise JobFailed(reason, retry=not last) from exc
        finally:
            stop.set()
            if link is not None:
                link.close()
        log.info(
            "push #%d to %s %s: %d/%d instance(s), %d byte(s) on the wire, partner counts %s",
            push_id,
            partner.name,
            finished.state,
            finished.sent,
            finished.total,
            finished.wire_bytes,
            finished.verified_count,
        )
        if finished.state == "done":
            for hook in self.on_done:
                hook(finished)
        return {
            "push_id": push_id,
            "state": finished.state,
            "sent": finished.sent,
            "total": finished.total,
            "refused": finished.refused,
            "verified": finished.verified_count,
        }

    def _heartbeat(
        self, push_id: int, owner: str, stop: threading.Event, cancelled: threading.Event
    ) -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                if not self.store.heartbeat(push_id, owner):
                    cancelled.set()
                    return
            except PacsError as exc:
                log.warning("push #%d heartbeat failed: %s", push_id, exc.reason)

    def _announce(self, partner: Partner, push: Push) -> None:
        """Tell a partner running pacs which study is coming, so that its token and AE
        may store into it and count it (its scope grows by what we send)."""
        if not partner.pacs_url:
            return
        PeerClient(partner, self.partners.secret(partner), self.settings).announce(push.study_uid)

    def _link(self, partner: Partner, push: Push) -> Link:
        bucket = TokenBucket(partner.bandwidth_bps) if partner.bandwidth_bps > 0 else None
        if push.transport == "dicomweb":
            return StowLink(
                self.settings,
                self.archive,
                partner,
                self.partners.secret(partner),
                compress=push.compression,
                bucket=bucket,
            )
        # pynetdicom only where pushes run (workers), not in every web process.
        from pacs.consult.dicom_link import DicomLink

        return DicomLink(
            self.settings, self.archive, partner, compress=push.compression, bucket=bucket
        )

    def _send_all(self, push_id: int, owner: str, link: Link, cancelled: threading.Event) -> Push:
        """Send until nothing is pending, verify, and finish at the revision verified."""
        while True:
            push = self.store.get(push_id)
            assert push is not None
            if push.state == "cancelled" or cancelled.is_set():
                raise _Stopped()
            revision = push.revision
            refs = {r.sop_uid: r for r in self.refs_for(push)}
            if self.store.add_items(push_id, [(r.sop_uid, r.size_bytes) for r in refs.values()]):
                continue  # the study grew meanwhile: take the new revision
            pending = self.store.pending(push_id)
            if pending:
                self._send(push_id, pending, refs, link, cancelled)
                continue
            push = self.store.get(push_id)
            assert push is not None
            if push.sent == 0 and push.refused == 0:
                verified = None
            else:
                verified = link.count(push.study_uid, push.series_uids)
            if verified is not None and verified < push.sent:
                # A partner may see what we announced a moment late (a registry cache):
                # ask once more before calling it a shortfall.
                time.sleep(RECOUNT_AFTER_S)
                verified = link.count(push.study_uid, push.series_uids)
            if verified is not None and verified < push.sent:
                raise TransientFailure(
                    f"the partner counts {verified} instance(s) of what it confirmed "
                    f"{push.sent}: checking again later"
                )
            state = "failed" if push.refused else "done"
            if self.store.finish(push_id, owner, revision, state=state, verified=verified):
                done = self.store.get(push_id)
                assert done is not None
                return done
            if (current := self.store.get(push_id)) is None or current.state == "cancelled":
                raise _Stopped()

    def _send(
        self,
        push_id: int,
        pending: list[PushItem],
        refs: dict[str, InstanceRef],
        link: Link,
        cancelled: threading.Event,
    ) -> None:
        batch: list[tuple[PushItem, InstanceRef]] = []
        for item in pending:
            ref = refs.get(item.sop_uid)
            if ref is None:
                self.store.refuse(push_id, item.id, "no longer archived")
            else:
                batch.append((item, ref))
        progressed = 0

        def confirm(item: PushItem, result: SendResult) -> None:
            nonlocal progressed
            if result.outcome == "sent":
                self.store.confirm(push_id, item.id, wire_bytes=result.wire_bytes)
                progressed += 1
            elif result.outcome == "retry_plain":
                log.info(
                    "push #%d: %s refused compressed, sending it as archived", push_id, item.sop_uid
                )
                self.store.no_compress(item.id)
                progressed += 1
            else:
                log.warning(
                    "push #%d: the partner refused %s: %s", push_id, item.sop_uid, result.detail
                )
                self.store.refuse(push_id, item.id, result.detail)
                progressed += 1
            # What the partner confirmed is recorded first: a cancel loses nothing.
            if cancelled.is_set():
                raise _Stopped()

        link.send(batch, confirm)
        if batch and not progressed:
            raise TransientFailure("the partner confirmed none of the instances sent")
