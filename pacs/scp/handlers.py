"""DICOM service handlers: thin adapters from pynetdicom events to the archive.

Each handler extracts its inputs and the caller, calls the archive, and maps
our errors to a DIMSE status through the table in :mod:`pacs.errors`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.events import Event
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    Verification,
)

from pacs import activity, metrics
from pacs.archive import Archive, Source
from pacs.audit import Actor
from pacs.charset import apply_text_codec
from pacs.errors import InvalidQuery, NotAuthorized, PacsError
from pacs.scp import audit as dicom_audit
from pacs.scp import receive
from pacs.scp.identifiers import (
    PATIENT_ROOT,
    STUDY_ROOT,
    build_response,
    response_keywords,
    retrieve_selectors,
    to_query,
)
from pacs.scp.move_guard import refuse_moves
from pacs.scp.peers import Peers
from pacs.scp.receive import Spooled, StoreRequest
from pacs.scp.sending import StoredInstance, storage_contexts
from pacs.storage.index import InstanceRef

log = logging.getLogger(__name__)

SUCCESS = 0x0000
PENDING = 0xFF00
CANCEL = 0xFE00
# PS3.4 C.4.2.1.5: more sub-operations than a C-MOVE response can count.
MAX_SUBOPERATIONS = 65535
_PATIENT_ROOT = {
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet,
}


@dataclass
class ScpContext:
    archive: Archive
    peers: Peers
    ae_title: str


def _caller(event: Event) -> tuple[str, str]:
    return _requestor(event.assoc)


def _requestor(assoc: Any) -> tuple[str, str]:
    requestor = assoc.requestor
    return requestor.ae_title.strip(), f"{requestor.address}:{requestor.port}"


def failure(status: int, reason: str) -> Dataset:
    ds = Dataset()
    ds.Status = status
    # ErrorComment is LO: at most 64 characters.
    ds.ErrorComment = reason[:64]
    return ds


def _refusal(exc: PacsError) -> Dataset:
    return failure(exc.dicom_status, exc.reason)


def _model(event: Event) -> str:
    uid = event.request.AffectedSOPClassUID
    return PATIENT_ROOT if uid in _PATIENT_ROOT else STUDY_ROOT


# ---------------------------------------------------------------- association


def handle_established(event: Event, ctx: ScpContext) -> None:
    ae, addr = _caller(event)
    log.info("association from %s (%s)", ae, addr)
    metrics.association("accepted")
    ctx.peers.seen(ae)
    if not ctx.peers.allows(ae, "retrieve"):
        refuse_moves(event.assoc, NotAuthorized.dicom_status, f"{ae} may not retrieve here")


def handle_rejected(event: Event, ctx: ScpContext) -> None:
    ae, addr = _caller(event)
    primitive = getattr(event.assoc.requestor, "primitive", None)
    called = str(getattr(primitive, "called_ae_title", "") or "").strip()
    if ctx.peers.get(ae) is None and not ctx.peers.accept_unknown:
        reason = f"calling AE {ae!r} is not enrolled (pacs ae add)"
    elif called != ctx.ae_title:
        reason = f"called AE {called!r} is not ours ({ctx.ae_title!r})"
    else:
        reason = "association refused"
    log.warning("refused association from %s: %s", addr, reason)
    metrics.association("rejected")
    ctx.archive.audit.record(
        "dicom.association",
        Actor("ae", ae, addr),
        outcome="failure",
        details={"reason": reason, "called": called},
    )


def handle_ended(event: Event, ctx: ScpContext) -> None:
    """Released or aborted: write what the association did to the audit trail."""
    dicom_audit.flush(event.assoc, ctx.archive)


def handle_aborted(event: Event, ctx: ScpContext) -> None:
    ae, addr = _caller(event)
    log.warning("association from %s (%s) aborted", ae, addr)
    _discard_partial(event)
    handle_ended(event, ctx)


def handle_connection_closed(event: Event, ctx: ScpContext) -> None:
    _discard_partial(event)


def _discard_partial(event: Event) -> None:
    """Delete the spooled part of a C-STORE that will never complete.

    pynetdicom spools a data set being received to a temporary file and only
    removes it after the C-STORE handler ran; a transfer cut short leaves it.
    """
    receive.discard(event.assoc, "the association ended")
    message = getattr(getattr(event.assoc, "dimse", None), "message", None)
    spooled = getattr(message, "_data_set_file", None)
    if spooled is None:
        return
    with contextlib.suppress(OSError):
        spooled.close()
    with contextlib.suppress(OSError):
        os.unlink(spooled.name)
    message._data_set_file = None
    log.info("discarded a partially received C-STORE (%s)", spooled.name)


def handle_echo(event: Event, ctx: ScpContext) -> int:
    metrics.dicom_request("echo", "success", 0.0)
    return SUCCESS


# ---------------------------------------------------------------- C-STORE


def handle_store(event: Event, ctx: ScpContext) -> int | Dataset:
    """pynetdicom's C-STORE event (when :mod:`pacs.scp.receive` leaves one to it)."""
    return _store(ctx, event.assoc, event.request.AffectedSOPInstanceUID, event.dataset_path)


def receive_store(ctx: ScpContext, assoc: Any, request: StoreRequest, spooled: Spooled) -> Any:
    """A C-STORE taken by :mod:`pacs.scp.receive`, its data set already spooled."""
    return _store(
        ctx, assoc, request.sop_instance_uid, spooled.path, (spooled.sha256, spooled.size)
    )


def _store(
    ctx: ScpContext,
    assoc: Any,
    sop_instance_uid: str,
    path: Path,
    digest: tuple[str, int] | None = None,
) -> int | Dataset:
    """Archive the received data set; Success only once it is durable and indexed."""
    started = time.perf_counter()
    activity.touch()
    ae, addr = _requestor(assoc)
    if not ctx.peers.allows(ae, "store"):
        log.warning("refused C-STORE from %s (%s): not allowed to store", ae, addr)
        metrics.dicom_request("store", "refused", time.perf_counter() - started)
        return failure(NotAuthorized.dicom_status, f"{ae} may not store here")
    try:
        result = ctx.archive.store_file(
            path,
            source=Source("dicom", ae_title=ae, address=addr),
            consume=True,
            digest=digest,
        )
    except PacsError as exc:
        log.warning("C-STORE %s from %s failed: %s", sop_instance_uid, ae, exc.reason)
        metrics.dicom_request("store", "failure", time.perf_counter() - started)
        dicom_audit.note_refused_store(assoc, ae, addr, exc.reason)
        return _refusal(exc)
    metrics.dicom_request("store", "success", time.perf_counter() - started)
    dicom_audit.note_store(
        assoc,
        ae,
        addr,
        result.study_instance_uid,
        result.patient_id,
        result.patient_name,
        result.size_bytes,
    )
    return SUCCESS


# ---------------------------------------------------------------- C-FIND


def _timed(service: str, responses: Iterator[Any]) -> Iterator[Any]:
    """Count and time a generator-style handler by the status it ends with."""
    started = time.perf_counter()
    outcome = "success"
    try:
        activity.touch()
        for item in responses:
            activity.touch()
            status = item[0] if isinstance(item, tuple) and len(item) == 2 else None
            if isinstance(status, Dataset):
                outcome = "failure"
            elif status == CANCEL:
                outcome = "cancelled"
            yield item
    except Exception:
        outcome = "error"
        raise
    finally:
        metrics.dicom_request(service, outcome, time.perf_counter() - started)


def handle_find(event: Event, ctx: ScpContext) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    return _timed("find", _find(event, ctx))


def _find(event: Event, ctx: ScpContext) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    ae, addr = _caller(event)
    if not ctx.peers.allows(ae, "query"):
        log.warning("refused C-FIND from %s (%s): not allowed to query", ae, addr)
        yield failure(NotAuthorized.dicom_status, f"{ae} may not query here"), None
        return
    try:
        identifier = event.identifier
        # Workstations make the same charset mistakes as modalities (UTF-8 sent
        # without declaring it): repair before the names are decoded.
        apply_text_codec(identifier)
        query, requested = to_query(identifier, _model(event))
        # A partner hospital's AE sees only what was shared with it.
        query.study_scope = ctx.peers.study_scope(ae)
        rows = ctx.archive.search(query, response_keywords(query, requested))
    except PacsError as exc:
        log.warning("C-FIND from %s failed: %s", ae, exc.reason)
        yield _refusal(exc), None
        return
    except Exception as exc:  # an identifier pydicom cannot decode
        log.warning("C-FIND from %s: unreadable identifier: %s", ae, exc)
        yield failure(InvalidQuery.dicom_status, f"unreadable identifier: {exc}"), None
        return
    dicom_audit.note_query(event.assoc, ae, addr, query, len(rows), "success")
    charset = identifier.get("SpecificCharacterSet", "") or ""
    if not isinstance(charset, str):
        charset = "\\".join(charset)
    log.info("C-FIND %s from %s: %d match(es)", query.level.value, ae, len(rows))
    for row in rows:
        if event.is_cancelled:
            yield CANCEL, None
            return
        yield (
            PENDING,
            build_response(
                row, query, requested, request_charset=charset, retrieve_ae=ctx.ae_title
            ),
        )


# ---------------------------------------------------------------- C-MOVE / C-GET


def _matches(event: Event, ctx: ScpContext, ae: str) -> list[InstanceRef]:
    """What a C-MOVE / C-GET selects, within what the caller ``ae`` may see (a study
    outside its scope matches nothing, like one that does not exist)."""
    selectors = retrieve_selectors(event.identifier, _model(event))
    return ctx.archive.instances(**selectors, study_scope=ctx.peers.study_scope(ae))


def _study_uids(refs: list[InstanceRef]) -> list[str]:
    return list(dict.fromkeys(ref.study_uid for ref in refs))


def _stored(ctx: ScpContext, ref: InstanceRef) -> StoredInstance:
    return StoredInstance(ref, lambda: ctx.archive.readable_path(ref))


def _suboperations(event: Event, ctx: ScpContext, refs: list[InstanceRef]) -> Iterator[Any]:
    """One pending C-STORE sub-operation per instance, until done or cancelled."""
    for ref in refs:
        if event.is_cancelled:
            yield CANCEL, None
            return
        yield PENDING, _stored(ctx, ref)


def handle_move(event: Event, ctx: ScpContext) -> Iterator[Any]:
    return _timed("move", _move(event, ctx))


def _move(event: Event, ctx: ScpContext) -> Iterator[Any]:
    ae, addr = _caller(event)
    destination = event.move_destination
    if isinstance(destination, bytes):
        destination = destination.decode("ascii", "replace")
    destination = destination.strip()
    node = ctx.peers.get(destination)
    if node is None or not ctx.peers.allows(destination, "destination"):
        log.warning(
            "refused C-MOVE from %s (%s): destination %r is not an enrolled move destination",
            ae,
            addr,
            destination,
        )
        yield None, None
        return
    refusal = None
    refs: list[InstanceRef] = []
    if not ctx.peers.allows(ae, "retrieve"):
        refusal = failure(NotAuthorized.dicom_status, f"{ae} may not retrieve here")
        log.warning("refused C-MOVE from %s (%s): not allowed to retrieve", ae, addr)
    else:
        try:
            refs = _matches(event, ctx, ae)
        except PacsError as exc:
            refusal = _refusal(exc)
            log.warning("C-MOVE from %s failed: %s", ae, exc.reason)
    if refusal is None and len(refs) > MAX_SUBOPERATIONS:
        refusal = failure(0xA701, f"{len(refs)} instances: more than one C-MOVE can count")
    # pynetdicom opens the sub-association before it reads a refusal from us, and
    # needs at least one context for that: Verification carries nothing.
    contexts = storage_contexts(refs) or [build_context(Verification)]
    yield node.host, node.port, {"contexts": contexts}
    if refusal is not None:
        # pynetdicom takes the failure as the final response once it has a count.
        yield 1
        yield refusal, None
        return
    log.info("C-MOVE from %s to %s: %d instance(s)", ae, destination, len(refs))
    dicom_audit.note_retrieve(
        event.assoc, ae, addr, "move", _study_uids(refs), len(refs), destination=destination
    )
    yield len(refs)
    yield from _suboperations(event, ctx, refs)


def handle_get(event: Event, ctx: ScpContext) -> Iterator[Any]:
    return _timed("get", _get(event, ctx))


def _get(event: Event, ctx: ScpContext) -> Iterator[Any]:
    ae, addr = _caller(event)
    if not ctx.peers.allows(ae, "retrieve"):
        log.warning("refused C-GET from %s (%s): not allowed to retrieve", ae, addr)
        yield 1
        yield failure(NotAuthorized.dicom_status, f"{ae} may not retrieve here"), None
        return
    try:
        refs = _matches(event, ctx, ae)
    except PacsError as exc:
        log.warning("C-GET from %s failed: %s", ae, exc.reason)
        yield 1
        yield _refusal(exc), None
        return
    log.info("C-GET from %s: %d instance(s)", ae, len(refs))
    dicom_audit.note_retrieve(event.assoc, ae, addr, "get", _study_uids(refs), len(refs))
    yield len(refs)
    yield from _suboperations(event, ctx, refs)


def bindings(ctx: ScpContext) -> list[tuple[Any, Any, list[Any]]]:
    """The event handlers of our SCP, bound to their dependencies."""
    return [
        (evt.EVT_ESTABLISHED, handle_established, [ctx]),
        (evt.EVT_REJECTED, handle_rejected, [ctx]),
        (evt.EVT_RELEASED, handle_ended, [ctx]),
        (evt.EVT_ABORTED, handle_aborted, [ctx]),
        (evt.EVT_CONN_CLOSE, handle_connection_closed, [ctx]),
        (evt.EVT_C_ECHO, handle_echo, [ctx]),
        (evt.EVT_C_STORE, handle_store, [ctx]),
        (evt.EVT_C_FIND, handle_find, [ctx]),
        (evt.EVT_C_MOVE, handle_move, [ctx]),
        (evt.EVT_C_GET, handle_get, [ctx]),
    ]
