"""Consultation requests: asking a partner for an opinion, and answering one.

A request moves ``requested → sent → viewed → answered`` (never back; ``failed``
ends it). Two ways to reach the partner:

- **pacs to pacs** (the partner has a ``pacs_url``): the study is pushed; once the
  partner confirmed every instance, a ``consult.notify`` job creates the request
  on the partner's pacs (``sent``). The partner's radiologist opens it there
  (``viewed`` travels back) and answers: the answer is a Basic Text SR in a new
  series of the study, stored in the partner's archive, pushed back to us like any
  push, and then reported (``answered``, with the text).
- **share link** (partners without pacs): a share link (``pacs/viewer/share*.py``,
  made by the web side) shows the study in our viewer; the answer form next to it
  stores the answer here directly. The link's expiry, revocation and opens are the
  share link's own; its first open marks the request ``viewed``.

The same ``uid`` names a request on both sides. Every peer call is idempotent,
so the notify job may repeat it.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from pacs.archive import Archive, Source
from pacs.audit import Actor
from pacs.config import Settings
from pacs.consult.answers import Answer, build_sr
from pacs.consult.partners import Partners
from pacs.consult.peer import PeerClient
from pacs.consult.push import PushService
from pacs.consult.transport import TransientFailure
from pacs.errors import InvalidQuery, NotAuthorized, NotFound, PacsError
from pacs.jobs import JobFailed
from pacs.storage.consult_models import (
    URGENCIES,
    Consultation,
    ConsultationStore,
    Partner,
    Push,
)
from pacs.storage.index import InstanceRef
from pacs.storage.jobs import Job, JobQueue, utcnow
from pacs.storage.matching import Level, Query
from pacs.storage.objects import is_valid_uid
from pacs.storage.sharing_models import SharingStore

log = logging.getLogger(__name__)

NOTIFY_JOB = "consult.notify"
#: how long a share link made for a consultation lasts
LINK_DAYS = 7
MESSAGE_MAX = 4000
ANSWER_MAX = 20000
MAX_KEY_IMAGES = 8


class Conflict(PacsError):
    """The call came too early (the answer's SR has not arrived yet): retry later."""

    http_status = 409


def _text(value: Any, limit: int) -> str:
    return str(value or "").strip()[:limit]


class ConsultService:
    """Requests we make, requests made of us, and the jobs that carry them across."""

    def __init__(
        self,
        settings: Settings,
        archive: Archive,
        queue: JobQueue,
        partners: Partners,
        pushes: PushService,
    ) -> None:
        self.settings = settings
        self.archive = archive
        self.queue = queue
        self.partners = partners
        self.pushes = pushes
        self.store = ConsultationStore(archive.index.engine)
        pushes.on_done.append(self._push_done)

    # ------------------------------------------------------------ asking

    def study_facts(self, study_uid: str, scope: list[int] | None = None) -> dict[str, Any]:
        """Patient and description of an archived study; NotFound if it is not (in scope)."""
        if not is_valid_uid(study_uid):
            raise NotFound(f"no study {study_uid[:80]}")
        rows = self.archive.search(
            Query(Level.STUDY, {"StudyInstanceUID": study_uid}, study_scope=scope),
            ["StudyInstanceUID", "PatientName", "PatientID", "StudyDescription"],
        )
        if not rows:
            raise NotFound(f"no study {study_uid}")
        return rows[0]

    def request(
        self,
        study_uid: str,
        partner: Partner | None,
        *,
        message: str,
        urgency: str,
        user: str,
        user_name: str = "",
        scope: list[int] | None = None,
        make_link: Callable[[], int] | None = None,
    ) -> Consultation:
        """Ask ``partner`` for an opinion: pacs to pacs when it runs pacs, else through a
        share link that ``make_link`` makes (once the request is known to be valid) and
        whose id it returns.

        Raises InvalidQuery (urgency, message, no way to reach the partner), NotFound
        (study)."""
        if urgency not in URGENCIES:
            raise InvalidQuery(f"urgency must be one of {', '.join(URGENCIES)}")
        message = _text(message, MESSAGE_MAX)
        if not message:
            raise InvalidQuery("write what you would like the partner to look at")
        facts = self.study_facts(study_uid, scope)
        fields: dict[str, Any] = {
            "uid": uuid.uuid4().hex,
            "direction": "outgoing",
            "partner_id": partner.id if partner else None,
            "study_uid": study_uid,
            "patient_name": str(facts.get("PatientName", ""))[:324],
            "patient_id": str(facts.get("PatientID", ""))[:64],
            "study_description": str(facts.get("StudyDescription", ""))[:64],
            "message": message,
            "urgency": urgency,
            "requested_by": user[:64],
            "requested_by_name": (user_name or user)[:128],
        }
        if partner is not None and partner.pacs_url:
            consultation = self.store.create(**fields)
            push = self.pushes.create(
                partner, study_uid, origin="consult", consult_id=consultation.id, created_by=user
            )
            self.store.update(consultation.id, push_id=push.id)
        else:
            if make_link is None:
                raise InvalidQuery("this partner does not run pacs: ask through a share link")
            consultation = self.store.create(**fields, share_link_id=make_link())
            # The link is handed over by the requester: that is the sending.
            self.store.advance(consultation.id, "sent")
        self._audit("consult.request", user, consultation, partner=partner.name if partner else "")
        log.info(
            "consultation %s on study %s asked of %s by %s (%s)",
            consultation.uid,
            study_uid,
            partner.name if partner else "a link",
            user,
            urgency,
        )
        return self.store.get(consultation.id) or consultation

    def _push_done(self, push: Push) -> None:
        """A push finished: if it carried a request or an answer, tell the partner."""
        if push.consult_id is None:
            return
        event = {"consult": "deliver", "answer": "answered"}.get(push.origin)
        if event is not None:
            self.enqueue_notify(push.consult_id, event)

    def enqueue_notify(self, consult_id: int, event: str) -> None:
        self.queue.enqueue(
            NOTIFY_JOB,
            {"consult_id": consult_id, "event": event},
            dedupe_key=f"consult:{consult_id}:{event}",
            max_attempts=30,
        )

    # ------------------------------------------------------------ the notify job

    def notify(self, job: Job) -> dict[str, Any]:
        """``consult.notify``: carry a request or a status change to the partner's pacs."""
        consult_id = int(job.payload.get("consult_id", 0))
        event = str(job.payload.get("event", ""))
        consultation = self.store.get(consult_id)
        if consultation is None or consultation.partner_id is None:
            return {"skipped": "gone"}
        partner = self.partners.get(consultation.partner_id)
        client = PeerClient(partner, self.partners.secret(partner), self.settings)
        try:
            if event == "deliver":
                client.deliver(self.wire(consultation))
                self.store.advance(consult_id, "sent")
            elif event == "viewed":
                client.status(consultation.uid, {"status": "viewed"})
            elif event == "answered":
                client.status(
                    consultation.uid,
                    {
                        "status": "answered",
                        "answer_text": consultation.answer_text,
                        "answer_sr_uid": consultation.answer_sr_uid,
                        "answered_by": consultation.answered_by,
                        "key_images": list(consultation.key_images),
                    },
                )
            else:
                raise JobFailed(f"unknown consultation event {event!r}", retry=False)
        except TransientFailure as exc:
            self.store.update(consult_id, last_error=str(exc)[:4000])
            raise JobFailed(str(exc)) from exc
        except JobFailed as exc:
            if not exc.retry and event == "deliver":
                self.store.advance(consult_id, "failed", last_error=exc.reason[:4000])
            raise
        self.store.update(consult_id, last_error="")
        return {"consult": consultation.uid, "event": event}

    @staticmethod
    def wire(c: Consultation) -> dict[str, Any]:
        """A request as it travels to the partner."""
        return {
            "uid": c.uid,
            "study_uid": c.study_uid,
            "patient_name": c.patient_name,
            "patient_id": c.patient_id,
            "study_description": c.study_description,
            "message": c.message,
            "urgency": c.urgency,
            "requested_by_name": c.requested_by_name,
        }

    # ------------------------------------------------------------ being asked

    def receive(self, partner: Partner, body: dict[str, Any]) -> Consultation:
        """A partner's request arrives (pacs to pacs). Idempotent on its uid.
        Raises InvalidQuery for a malformed one."""
        uid = _text(body.get("uid"), 64)
        study_uid = _text(body.get("study_uid"), 64)
        urgency = _text(body.get("urgency"), 16) or "routine"
        if not uid or not uid.replace("-", "").isalnum():
            raise InvalidQuery("a request needs its uid")
        if not is_valid_uid(study_uid):
            raise InvalidQuery("a request needs a valid study_uid")
        if urgency not in URGENCIES:
            raise InvalidQuery(f"urgency must be one of {', '.join(URGENCIES)}")
        existing = self.store.by_uid(uid)
        if existing is not None:
            if existing.partner_id != partner.id or existing.direction != "incoming":
                raise InvalidQuery("that uid names another request")
            return existing
        # The requester may see its own study here (to count it, to get the answer),
        # never one of ours it merely names.
        if not self.partners.accept_incoming(partner, study_uid, f"consult:{uid}"):
            raise NotAuthorized("that study is archived here and not shared with you")
        consultation = self.store.create(
            uid=uid,
            direction="incoming",
            partner_id=partner.id,
            study_uid=study_uid,
            patient_name=_text(body.get("patient_name"), 324),
            patient_id=_text(body.get("patient_id"), 64),
            study_description=_text(body.get("study_description"), 64),
            message=_text(body.get("message"), MESSAGE_MAX),
            urgency=urgency,
            requested_by_name=_text(body.get("requested_by_name"), 128),
            status="sent",
            sent_at=utcnow(),
        )
        self._audit("consult.receive", partner.name, consultation, kind="token")
        log.info(
            "consultation %s on study %s received from %s (%s)",
            uid,
            study_uid,
            partner.name,
            urgency,
        )
        return consultation

    def mark_viewed(self, consultation: Consultation, by: str) -> bool:
        """The partner's doctor (or the link's visitor) opened it. True when this is news."""
        if not self.store.advance(consultation.id, "viewed"):
            return False
        self._audit("consult.view", by, consultation)
        if consultation.direction == "incoming":
            self.enqueue_notify(consultation.id, "viewed")
        return True

    def answer(
        self,
        consultation: Consultation,
        text: str,
        *,
        key_images: list[str],
        author: str,
        institution: str = "",
        scope: list[int] | None = None,
    ) -> Consultation:
        """Answer a request made of us (or through our link): an SR in the study, here,
        then (pacs to pacs) pushed to the requester. Raises InvalidQuery, NotFound."""
        if consultation.status in ("answered", "failed", "cancelled"):
            raise InvalidQuery(f"this request is {consultation.status} already")
        linked = consultation.direction == "outgoing" and consultation.share_link_id is not None
        if consultation.direction != "incoming" and not linked:
            raise InvalidQuery("only the partner answers a request")
        text = _text(text, ANSWER_MAX)
        if not text:
            raise InvalidQuery("an answer needs some text")
        if len(key_images) > MAX_KEY_IMAGES:
            raise InvalidQuery(f"at most {MAX_KEY_IMAGES} key images")
        refs = self.archive.instances(study_uid=consultation.study_uid, study_scope=scope)
        if not refs:
            raise NotFound("the study has not arrived here (yet)")
        by_uid = {r.sop_uid: r for r in refs}
        unknown = [uid for uid in key_images if uid not in by_uid]
        if unknown:
            raise InvalidQuery(f"{unknown[0][:80]} is not an image of this study")
        keys: list[InstanceRef] = [by_uid[uid] for uid in dict.fromkeys(key_images)]
        partner = self.partners.get(consultation.partner_id) if consultation.partner_id else None
        sr_uid, series_uid = self._store_answer(
            refs[0], Answer(text, author, institution or self.settings.ae_title, keys), author
        )
        self.store.advance(
            consultation.id,
            "answered",
            answer_text=text,
            answer_sr_uid=sr_uid,
            answered_by=author[:128],
            key_images=json.dumps([r.sop_uid for r in keys]),
        )
        self._audit("consult.answer", author, consultation, sr=sr_uid)
        if consultation.direction == "incoming" and partner is not None:
            self.pushes.create(
                partner,
                consultation.study_uid,
                series_uids=[series_uid],
                origin="answer",
                consult_id=consultation.id,
                created_by=author,
                share=False,
            )
        log.info("consultation %s answered by %s (SR %s)", consultation.uid, author, sr_uid)
        answered = self.store.get(consultation.id)
        assert answered is not None
        return answered

    def _store_answer(self, study_ref: InstanceRef, answer: Answer, author: str) -> tuple[str, str]:
        with self.archive.readable_path(study_ref) as source:
            ds = build_sr(source, answer)
        with self.archive.spooled() as path:
            ds.save_as(path, enforce_file_format=True)
            self.archive.store_file(path, source=Source("consult", user=author[:64]))
        return str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID)

    # ------------------------------------------------------------ the requester's side

    def status_from_partner(self, partner: Partner, uid: str, body: dict[str, Any]) -> Consultation:
        """The partner reports ``viewed`` or ``answered`` on a request we made.
        Raises NotFound (not ours), InvalidQuery, Conflict (the SR has not arrived)."""
        consultation = self.store.by_uid(uid)
        if (
            consultation is None
            or consultation.direction != "outgoing"
            or consultation.partner_id != partner.id
        ):
            raise NotFound("no such request")
        status = _text(body.get("status"), 16)
        if status == "viewed":
            if self.store.advance(consultation.id, "viewed"):
                self._audit("consult.viewed", partner.name, consultation, kind="token")
        elif status == "answered":
            sr_uid = _text(body.get("answer_sr_uid"), 64)
            if sr_uid and self.archive.index.get_instance(sr_uid) is None:
                raise Conflict("the answer has not arrived in the study yet")
            keys = [str(k)[:64] for k in body.get("key_images") or [] if is_valid_uid(str(k))]
            if self.store.advance(
                consultation.id,
                "answered",
                answer_text=_text(body.get("answer_text"), ANSWER_MAX),
                answer_sr_uid=sr_uid,
                answered_by=_text(body.get("answered_by"), 128),
                key_images=json.dumps(keys[:MAX_KEY_IMAGES]),
            ):
                self._audit("consult.answered", partner.name, consultation, kind="token")
        else:
            raise InvalidQuery("status must be viewed or answered")
        updated = self.store.get(consultation.id)
        assert updated is not None
        return updated

    # ------------------------------------------------------------ share links

    def note_link_views(self, consultations: Sequence[Consultation]) -> None:
        """Requests sent as share links read ``viewed`` once their link was opened
        (through ``/c/…`` or the share link's own ``/s/…``)."""
        waiting = [c for c in consultations if c.share_link_id is not None and c.status == "sent"]
        if not waiting:
            return
        links = SharingStore(self.archive.index.engine)
        for c in waiting:
            link = links.get(c.share_link_id)  # type: ignore[arg-type]
            if link is not None and link.open_count > 0:
                self.mark_viewed(c, f"link-{link.id}")

    # ------------------------------------------------------------ audit

    def _audit(
        self, action: str, who: str, c: Consultation, *, kind: str = "user", **details: Any
    ) -> None:
        self.archive.audit.record(
            action,
            Actor(kind, who),
            study_uid=c.study_uid,
            patient_id=c.patient_id,
            patient_name=c.patient_name,
            details={"consultation": c.uid, "urgency": c.urgency, **details},
        )
