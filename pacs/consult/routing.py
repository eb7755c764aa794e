"""Routing rules: what arrives from some AE, of some modality, goes to a partner.

:meth:`Router.on_stored` runs in the storing thread after every committed
instance (``Archive.add_listener``), so it only compares the instance with the
rules (cached for a few seconds) and queues a ``consult.route`` job — at most one
per rule, study and *window* of ``settle_s`` seconds (its dedupe key names the
window), due a window after its own closes so the study has settled. A window's
job therefore never runs while instances of its window still arrive, and an
instance arriving later belongs to a later window and job: none is missed.

The job makes (or extends) the rule's single push for that study, so a study is
sent once however many windows its instances spread over: each instance exactly
once, through the push's per-instance confirmations.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from pacs.archive import Archive, StoredEvent
from pacs.consult.partners import Partners
from pacs.consult.push import PushService
from pacs.errors import NotFound
from pacs.storage.consult_models import DuplicatePush, Rule, RuleStore
from pacs.storage.jobs import Job, JobQueue
from pacs.storage.matching import Level, Query

log = logging.getLogger(__name__)

ROUTE_JOB = "consult.route"
RULES_TTL_S = 5.0
_MEMO = 4096


def matches(rule: Rule, calling_ae: str, modality: str, description: str) -> bool:
    """Whether an instance from ``calling_ae`` of ``modality`` in a study described
    ``description`` falls under ``rule`` (empty conditions match anything; the
    description matches case-insensitively as a substring)."""
    if not rule.enabled:
        return False
    if rule.calling_ae and rule.calling_ae.strip() != calling_ae.strip():
        return False
    if rule.modality and rule.modality.strip().upper() != modality.strip().upper():
        return False
    wanted = rule.description_contains.strip().casefold()
    return not wanted or wanted in description.casefold()


class Router:
    def __init__(
        self,
        archive: Archive,
        queue: JobQueue,
        partners: Partners,
        pushes: PushService,
        *,
        settle_s: float = 5.0,
    ) -> None:
        self.archive = archive
        self.queue = queue
        self.partners = partners
        self.pushes = pushes
        self.rules = RuleStore(archive.index.engine)
        self.settle_s = max(0.5, settle_s)
        self._lock = threading.Lock()
        self._cached: list[Rule] = []
        self._loaded_at = -1e9
        #: (rule, study, window) already queued by this process: skips the lookup
        self._queued: OrderedDict[tuple[int, str, int], None] = OrderedDict()

    # ------------------------------------------------------------ at ingest

    def _rules(self) -> list[Rule]:
        now = time.monotonic()
        with self._lock:
            if now - self._loaded_at > RULES_TTL_S:
                self._cached = self.rules.all(enabled_only=True)
                self._loaded_at = now
            return self._cached

    def on_stored(self, event: StoredEvent) -> None:
        """The archive listener: cheap, and never raises into the store."""
        try:
            rules = self._rules()
            if not rules:
                return
            header = event.header
            for rule in rules:
                if matches(rule, event.source.ae_title, header.modality, header.study_description):
                    self._enqueue(rule, header.study_instance_uid)
        except Exception:
            log.exception("routing of %s failed", event.ref.sop_uid)

    def _enqueue(self, rule: Rule, study_uid: str) -> None:
        window = int(time.time() // self.settle_s)
        memo = (rule.id, study_uid, window)
        with self._lock:
            if memo in self._queued:
                return
            self._queued[memo] = None
            while len(self._queued) > _MEMO:
                self._queued.popitem(last=False)
        due = datetime.fromtimestamp((window + 2) * self.settle_s, UTC)
        self.queue.enqueue(
            ROUTE_JOB,
            {"rule_id": rule.id, "study_uid": study_uid},
            run_after=due,
            dedupe_key=f"route:{rule.id}:{window}:{study_uid}"[:128],
        )

    # ------------------------------------------------------------ the job

    def run(self, job: Job) -> dict[str, Any]:
        """``consult.route``: make or extend the rule's push of the study."""
        rule = self.rules.get(int(job.payload.get("rule_id", 0)))
        study_uid = str(job.payload.get("study_uid", ""))
        if rule is None or not rule.enabled:
            return {"skipped": "rule gone or disabled"}
        try:
            partner = self.partners.get(rule.partner_id)
        except NotFound:
            return {"skipped": "partner gone"}
        series = self._series(rule, study_uid)
        if not series:
            return {"skipped": "nothing matches"}
        push = self.pushes.store.for_rule(rule.id, study_uid)
        if push is None:
            try:
                push = self.pushes.create(
                    partner,
                    study_uid,
                    series_uids=series if rule.modality else (),
                    origin="route",
                    rule_id=rule.id,
                    created_by=f"rule:{rule.name or rule.id}",
                )
                return {"push_id": push.id, "created": True}
            except NotFound:
                return {"skipped": "study gone"}
            except DuplicatePush:
                # Another node's job for an earlier window made it a moment ago.
                push = self.pushes.store.for_rule(rule.id, study_uid)
                if push is None:
                    raise
        if rule.modality and set(series) - set(push.series_uids):
            self.pushes.store.set_series(push.id, sorted(set(series) | set(push.series_uids)))
            push = self.pushes.store.get(push.id) or push
        added = self.pushes.store.add_items(
            push.id, [(r.sop_uid, r.size_bytes) for r in self.pushes.refs_for(push)]
        )
        if added:
            self.pushes.enqueue(push.id)
        return {"push_id": push.id, "added": added}

    def _series(self, rule: Rule, study_uid: str) -> list[str]:
        """The study's series the rule sends (those of its modality; all without one)."""
        criteria = {"StudyInstanceUID": study_uid}
        if rule.modality:
            criteria["Modality"] = rule.modality
        rows = self.archive.search(Query(Level.SERIES, criteria), ["SeriesInstanceUID"])
        return [str(r["SeriesInstanceUID"]) for r in rows]
