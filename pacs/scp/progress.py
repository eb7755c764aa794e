"""Pending C-MOVE and C-GET responses: a few per second, not one per instance.

PS3.4 C.4.2.3.1 and C.4.3.3.1 let the SCP send Pending responses while the
C-STORE sub-operations run ("optionally"); they report the Remaining, Completed,
Failed and Warning counts. pynetdicom sends one after every sub-operation. On a
250-slice study that is 250 more messages, each of which cost about 70 µs between
one C-STORE's response and the next request: measured, a tenth of the time per
instance. The requester only needs them to show progress and to know the
operation is alive, so the first goes out at once and then at most one every
:data:`PROGRESS_INTERVAL`. The final response is never held back: it is not
Pending.
"""

from __future__ import annotations

import time
from typing import Any

from pynetdicom.dimse_primitives import C_GET, C_MOVE

#: seconds between two Pending responses to the same C-MOVE or C-GET, at least
PROGRESS_INTERVAL = 0.5

PENDING = 0xFF00

_LAST_SENT = "_pacs_progress_sent"


def due(assoc: Any, primitive: Any, now: float | None = None) -> bool:
    """Whether ``primitive``, about to be sent on ``assoc``, should go out.

    False only for a Pending C-MOVE or C-GET response that follows the previous
    one to the same request by less than :data:`PROGRESS_INTERVAL`.
    """
    if not isinstance(primitive, C_MOVE | C_GET):
        return True
    request = primitive.MessageIDBeingRespondedTo
    if request is None:
        return True  # a request, not a response
    sent: dict[int, float] | None = getattr(assoc, _LAST_SENT, None)
    if sent is None:
        sent = {}
        setattr(assoc, _LAST_SENT, sent)
    if primitive.Status != PENDING:
        sent.pop(request, None)  # the final response: the next request starts afresh
        return True
    now = time.monotonic() if now is None else now
    last = sent.get(request)
    if last is not None and now - last < PROGRESS_INTERVAL:
        return False
    sent[request] = now
    return True
