"""Calls to a partner's pacs (its ``/consult/api/peer`` endpoints), with our token.

Small JSON requests that carry a consultation across: the study that is coming,
the request itself, and its status changes (viewed, answered). Every call is
idempotent on the other side, so a job may repeat it after a failure.
"""

from __future__ import annotations

import logging
from typing import Any

from pacs.config import Settings
from pacs.consult.httpclient import PartnerUnreachable, join, request
from pacs.consult.transport import TransientFailure
from pacs.jobs import JobFailed
from pacs.storage.consult_models import Partner

log = logging.getLogger(__name__)

PEER_ROOT = "consult/api/peer"


class PeerClient:
    def __init__(self, partner: Partner, token: str | None, settings: Settings) -> None:
        if not partner.pacs_url:
            raise JobFailed(f"partner {partner.name} does not run pacs (no pacs URL)", retry=False)
        self.partner = partner
        self.token = token
        self.timeout = settings.network_timeout_s

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = join(self.partner.pacs_url, f"{PEER_ROOT}/{path}")
        try:
            answer = request(
                url, method=method, token=self.token, json_body=body, timeout=self.timeout
            )
        except PartnerUnreachable as exc:
            raise TransientFailure(str(exc)) from exc
        if 200 <= answer.status < 300:
            return answer.json()
        what = f"{method} {PEER_ROOT}/{path.split('/')[0]} at {self.partner.name}"
        if answer.status in (400, 422):
            # The partner will never accept this call as it is: stop retrying.
            raise JobFailed(f"{what} refused: {answer.reason}", retry=False)
        raise TransientFailure(f"{what} answered {answer.status}: {answer.reason}")

    def ping(self) -> Any:
        return self._call("GET", "ping")

    def announce(self, study_uid: str) -> None:
        """The study we are about to send: the partner lets our token and AE see it."""
        self._call("POST", "studies", {"study_uid": study_uid})

    def deliver(self, request_body: dict[str, Any]) -> Any:
        """Create the consultation request on the partner's side."""
        return self._call("POST", "requests", request_body)

    def status(self, uid: str, body: dict[str, Any]) -> Any:
        """Report a status change of a request the partner made of us."""
        return self._call("POST", f"requests/{uid}/status", body)
