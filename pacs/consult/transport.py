"""What a push needs from a way of sending (DICOM C-STORE or DICOMweb STOW-RS)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from pacs.storage.consult_models import PushItem
from pacs.storage.index import InstanceRef

#: sent: the partner confirmed it; refused: the partner said no for good;
#: retry_plain: refused as compressed, send it again as archived
Outcome = Literal["sent", "refused", "retry_plain"]


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    #: bytes this instance took on the wire
    wire_bytes: int = 0
    detail: str = ""


class TransientFailure(Exception):
    """The link failed (partner down, connection broken, busy): try again later.
    Instances not confirmed so far are sent again then."""


Confirm = Callable[[PushItem, SendResult], None]


class Link(Protocol):
    """An open connection to a partner for one push."""

    def send(self, batch: Sequence[tuple[PushItem, InstanceRef]], confirm: Confirm) -> None:
        """Send ``batch``, calling ``confirm`` for each instance as soon as the partner
        answered for it. Raises TransientFailure when the link fails."""
        ...

    def count(self, study_uid: str, series_uids: Sequence[str]) -> int | None:
        """The partner's count of the study's (or these series') instances; None when the
        partner cannot be asked (no query service)."""
        ...

    def close(self) -> None: ...
