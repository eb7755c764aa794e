"""Refusing a C-MOVE before pynetdicom contacts the move destination.

pynetdicom's Q/R SCP asks the handler for the destination, then opens the
sub-association, and only then reads the handler's statuses: a refusal of the
caller itself (it may not retrieve) would come after a pointless association
to the destination, and become "destination unknown" (0xA801) when that node
is down. The guard answers such a request at once with the right status.
"""

from __future__ import annotations

import logging
from typing import Any

from pynetdicom.dimse_primitives import C_MOVE
from pynetdicom.service_class import QueryRetrieveServiceClass

from pacs import metrics

log = logging.getLogger(__name__)

_REFUSAL = "_pacs_move_refusal"


def refuse_moves(assoc: Any, status: int, reason: str) -> None:
    """Every C-MOVE on ``assoc`` is answered with ``status`` (set when it is established)."""
    setattr(assoc, _REFUSAL, (status, reason))


_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    original = QueryRetrieveServiceClass._move_scp

    def _move_scp(self: QueryRetrieveServiceClass, req: C_MOVE, context: Any) -> None:
        refusal = getattr(self.assoc, _REFUSAL, None)
        if refusal is None:
            return original(self, req, context)
        status, reason = refusal
        requestor = self.assoc.requestor
        log.warning(
            "refused C-MOVE from %s (%s:%s): %s",
            requestor.ae_title.strip(),
            requestor.address,
            requestor.port,
            reason,
        )
        metrics.dicom_request("move", "refused", 0.0)
        rsp = C_MOVE()
        rsp.MessageIDBeingRespondedTo = req.MessageID
        rsp.AffectedSOPClassUID = req.AffectedSOPClassUID
        rsp.Status = status
        rsp.ErrorComment = reason[:64]
        self.dimse.send_msg(rsp, int(context.context_id))
        return None

    QueryRetrieveServiceClass._move_scp = _move_scp  # type: ignore[method-assign]
    _installed = True
