"""WADO-RS (PS3.18 10.4): instances, metadata and bulk data.

Instances stream as ``multipart/related; type="application/dicom"``: the stored
Part 10 bytes, unchanged, unless the Accept header names a transfer syntax that
is not the stored one (then converted, one instance at a time, through a spooled
file; never a whole study in memory). An absent ``transfer-syntax`` parameter,
or ``*``, means "as stored": every viewer we serve reads every syntax we store,
and byte-identical copies are what a partner archive wants.

Metadata comes from the per-series precomputed DICOM JSON
(:mod:`pacs.viewer.dicomweb.metadata`), built now if it is missing or stale.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, request

from pacs.archive import Archive
from pacs.dicomfile import read_instance
from pacs.errors import InvalidQuery, NotAcceptable, NotFound, PacsError
from pacs.storage.dicomweb_models import SeriesState
from pacs.storage.index import InstanceRef
from pacs.storage.matching import Level, Query
from pacs.viewer import admin_audit
from pacs.viewer.access import Forbidden, Principal
from pacs.viewer.dicomweb import multipart
from pacs.viewer.dicomweb.common import (
    DICOM_JSON,
    archive,
    base_url,
    check_uid,
    gate,
    one_ref,
    visible_refs,
)
from pacs.viewer.dicomweb.metadata import (
    SeriesMetadataService,
    instance_item,
    replace_base,
)
from pacs.viewer.dicomweb.negotiation import MediaRange, accept_with_query
from pacs.viewer.dicomweb.transcode import TranscodeError, can_produce, transcode

log = logging.getLogger(__name__)

bp = Blueprint("dicomweb_wado", __name__, url_prefix="/dicomweb")
METADATA_EXTENSION = "pacs_dicomweb_metadata"
CHUNK = 1 << 20


def metadata_service() -> SeriesMetadataService:
    return current_app.extensions[METADATA_EXTENSION]


def accept_ranges() -> list[MediaRange]:
    return accept_with_query(request.headers.get("Accept"), request.args.getlist("accept"))


# ---------------------------------------------------------------- instances


class DicomChoice:
    """One acceptable way to send an instance: a transfer syntax (None: as stored)."""

    def __init__(self, transfer_syntax: str | None, multipart_: bool) -> None:
        self.transfer_syntax = transfer_syntax
        self.multipart = multipart_

    def target(self, ref: InstanceRef) -> str | None:
        """The syntax to send ``ref`` in under this choice, or None if it cannot be made."""
        if self.transfer_syntax is None or self.transfer_syntax == ref.transfer_syntax_uid:
            return ref.transfer_syntax_uid
        if can_produce(
            ref.transfer_syntax_uid, self.transfer_syntax, has_pixels=ref.frames is not None
        ):
            return self.transfer_syntax
        return None


def dicom_choices(ranges: list[MediaRange]) -> list[DicomChoice]:
    """What the Accept header allows for DICOM instances (PS3.18 8.7.3.5.2)."""
    choices = []
    for r in ranges:
        if r.is_multipart and r.part_type in ("application/dicom", "application/*", "*/*"):
            ts = r.transfer_syntax
            choices.append(DicomChoice(None if ts in (None, "*") else ts, True))
        elif r.media_type == "application/dicom":
            ts = r.transfer_syntax
            choices.append(DicomChoice(None if ts in (None, "*") else ts, False))
        elif r.media_type in ("*/*", "application/*", "multipart/*"):
            choices.append(DicomChoice(None, True))
    return choices


def _plan(
    refs: list[InstanceRef], choices: list[DicomChoice]
) -> tuple[list[tuple[InstanceRef, str]], bool]:
    """Per instance the syntax to send it in (unsendable ones left out, logged), and
    whether the response is multipart (a bare ``application/dicom`` needs one instance)."""
    single_ok = len(refs) == 1
    plan = []
    multipart_ = True
    for ref in refs:
        for choice in choices:
            if not choice.multipart and not single_ok:
                continue
            target = choice.target(ref)
            if target is not None:
                plan.append((ref, target))
                multipart_ = choice.multipart
                break
        else:
            log.info(
                "WADO-RS: instance %s (stored as %s) cannot be sent as the client accepts",
                ref.sop_uid,
                ref.transfer_syntax_uid,
            )
    return plan, multipart_


def _part_type(ts: str) -> str:
    return f"application/dicom; transfer-syntax={ts}"


def _stream_instances(
    arch: Archive, plan: list[tuple[InstanceRef, str]], writer: multipart.MultipartWriter
) -> Iterator[bytes]:
    for ref, target in plan:
        if target == ref.transfer_syntax_uid:
            try:
                stream = arch.open(ref)
            except PacsError as exc:
                log.error("WADO-RS: cannot open %s: %s", ref.sop_uid, exc.reason)
                continue
            with stream:
                yield writer.part_start(_part_type(target))
                while chunk := stream.read(CHUNK):
                    yield chunk
            continue
        with arch.spooled() as converted, arch.readable_path(ref) as source:
            try:
                with converted.open("wb") as out:
                    transcode(Path(source), target, out)
            except TranscodeError as exc:
                log.warning("WADO-RS: instance %s left out: %s", ref.sop_uid, exc.reason)
                continue
            yield writer.part_start(_part_type(target))
            yield from multipart.iter_file(converted, CHUNK)
    yield writer.end()


def audit_download(arch: Archive, study_uid: str, how: str, instances: int) -> None:
    """One ``study.download`` audit row, naming the patient (docs/audit.md)."""
    rows = arch.search(
        Query(Level.STUDY, {"StudyInstanceUID": study_uid}),
        ["StudyInstanceUID", "PatientID", "PatientName"],
    )
    admin_audit.record(
        "study.download",
        study=rows[0] if rows else {"StudyInstanceUID": study_uid},
        details={"format": how, "instances": instances},
    )


def retrieve(principal: Principal, refs: list[InstanceRef]) -> Response:
    if not principal.can_download:
        raise Forbidden("this link allows viewing, not downloading")
    choices = dicom_choices(accept_ranges())
    if not choices:
        raise NotAcceptable('instances are sent as multipart/related; type="application/dicom"')
    plan, multipart_ = _plan(refs, choices)
    if not plan:
        raise NotAcceptable("none of these instances can be sent in an accepted transfer syntax")
    arch = archive()
    log.info(
        "WADO-RS: %s retrieves %d instance(s) of study %s",
        principal.name,
        len(plan),
        refs[0].study_uid,
    )
    audit_download(arch, refs[0].study_uid, "dicomweb", len(plan))
    if not multipart_:
        return _single_instance(arch, *plan[0])
    writer = multipart.MultipartWriter()
    response = Response(
        _stream_instances(arch, plan, writer),
        content_type=multipart.content_type("application/dicom", writer.boundary),
        direct_passthrough=True,
    )
    if all(target == ref.transfer_syntax_uid for ref, target in plan):
        # Known in advance when nothing is converted: lets clients show progress.
        length = 0
        probe = multipart.MultipartWriter(writer.boundary)
        for ref, target in plan:
            length += len(probe.part_start(_part_type(target))) + ref.size_bytes
        length += len(probe.end())
        response.content_length = length
    return response


def _single_instance(arch: Archive, ref: InstanceRef, target: str) -> Response:
    if target == ref.transfer_syntax_uid:
        stream = arch.open(ref)

        def chunks() -> Iterator[bytes]:
            while chunk := stream.read(CHUNK):
                yield chunk

        # Not direct_passthrough: Werkzeug only runs call_on_close callbacks for
        # iterables it wraps itself.
        response = Response(chunks(), content_type=_part_type(target))
        response.content_length = ref.size_bytes
        response.call_on_close(stream.close)
        return response
    # Converted eagerly (a failure is still a 406), then streamed from the spool
    # file, which goes when the response is closed.
    stack = ExitStack()
    try:
        converted = stack.enter_context(arch.spooled())
        with arch.readable_path(ref) as source, converted.open("wb") as out:
            transcode(Path(source), target, out)
    except BaseException:
        stack.close()
        raise

    response = Response(multipart.iter_file(converted, CHUNK), content_type=_part_type(target))
    response.content_length = converted.stat().st_size
    # Called by the WSGI server when it is done with the response, even unread.
    response.call_on_close(stack.close)
    return response


@bp.get("/studies/<study>")
def retrieve_study(study: str) -> Response:
    principal = gate()
    return retrieve(principal, visible_refs(principal, study))


@bp.get("/studies/<study>/series/<series>")
def retrieve_series(study: str, series: str) -> Response:
    principal = gate()
    return retrieve(principal, visible_refs(principal, study, series))


@bp.get("/studies/<study>/series/<series>/instances/<sop>")
def retrieve_instance(study: str, series: str, sop: str) -> Response:
    principal = gate()
    return retrieve(principal, visible_refs(principal, study, series, sop))


# ---------------------------------------------------------------- metadata


def _json_type() -> str:
    for r in accept_ranges():
        if not r.is_multipart and r.part_matches(DICOM_JSON):
            return DICOM_JSON
        if r.media_type == "application/json":
            return "application/json"
    raise NotAcceptable("metadata is available as application/dicom+json")


def _visible_states(principal: Principal, study: str, series: str | None) -> list[SeriesState]:
    check_uid(study, "Study Instance UID")
    if series is not None:
        check_uid(series, "Series Instance UID")
    service = metadata_service()
    if series is not None:
        states = [s for s in service.states(series_uid=series) if s.study_uid == study]
    else:
        states = service.states(study_uid=study)
    states = [
        s
        for s in states
        if principal.allows_study(s.study_pk)
        and (principal.series_uids is None or s.series_uid in principal.series_uids)
        and s.num_instances > 0
    ]
    if not states:
        raise NotFound("no such series" if series else "no such study")
    return states


def _json_response(data: bytes, media_type: str) -> Response:
    """JSON, gzip'd when the client accepts it (metadata of a big study is megabytes)."""
    headers = {"Vary": "Accept-Encoding"}
    if "gzip" in request.headers.get("Accept-Encoding", "") and len(data) > 2048:
        data = gzip.compress(data, compresslevel=1, mtime=0)
        headers["Content-Encoding"] = "gzip"
    return Response(data, content_type=media_type, headers=headers)


def _join_arrays(arrays: list[bytes]) -> bytes:
    inner = [a.strip()[1:-1].strip() for a in arrays]
    return b"[" + b",".join(i for i in inner if i) + b"]"


@bp.get("/studies/<study>/metadata")
def retrieve_study_metadata(study: str) -> Response:
    principal = gate()
    media_type = _json_type()
    states = _visible_states(principal, study, None)
    data = _join_arrays(metadata_service().json_for(states))
    return _json_response(replace_base(data, base_url()), media_type)


@bp.get("/studies/<study>/series/<series>/metadata")
def retrieve_series_metadata(study: str, series: str) -> Response:
    principal = gate()
    media_type = _json_type()
    states = _visible_states(principal, study, series)
    data = _join_arrays(metadata_service().json_for(states))
    return _json_response(replace_base(data, base_url()), media_type)


@bp.get("/studies/<study>/series/<series>/instances/<sop>/metadata")
def retrieve_instance_metadata(study: str, series: str, sop: str) -> Response:
    principal = gate()
    media_type = _json_type()
    one_ref(principal, study, series, sop)
    states = _visible_states(principal, study, series)
    series_json = metadata_service().json_for(states)[0]
    item = instance_item(replace_base(series_json, base_url()), sop)
    if item is None:
        raise NotFound("no such instance")
    data = json.dumps([item], ensure_ascii=False, separators=(",", ":")).encode()
    return _json_response(data, media_type)


# ---------------------------------------------------------------- bulk data


def parse_element_path(path: str) -> list[tuple[int, int | None]]:
    """``00880200/0/7FE00010`` → [(0x00880200, 0), (0x7FE00010, None)]; 400 if malformed."""
    pieces = [p for p in path.split("/") if p]
    if not pieces or len(pieces) % 2 == 0:
        raise InvalidQuery("a bulk data path is tag[/item/tag]...")
    steps: list[tuple[int, int | None]] = []
    for i in range(0, len(pieces), 2):
        tag_text = pieces[i]
        if len(tag_text) != 8:
            raise InvalidQuery(f"bad tag {tag_text[:16]!r} in bulk data path")
        try:
            tag = int(tag_text, 16)
            item = int(pieces[i + 1]) if i + 1 < len(pieces) else None
        except ValueError as exc:
            raise InvalidQuery("bad bulk data path") from exc
        steps.append((tag, item))
    return steps


def element_bytes(arch: Archive, ref: InstanceRef, steps: list[tuple[int, int | None]]) -> bytes:
    """The raw value of the element at ``steps`` in the stored instance; NotFound if absent."""
    with arch.readable_path(ref) as path:
        ds: Any = read_instance(Path(path)).dataset
        for tag, item in steps:
            if tag not in ds:
                raise NotFound("no such element")
            elem = ds[tag]
            if item is None:
                value = elem.value
                if isinstance(value, bytes | bytearray):
                    return bytes(value)
                raise NotFound("that element is not bulk data")
            try:
                ds = elem.value[item]
            except (IndexError, TypeError) as exc:
                raise NotFound("no such sequence item") from exc
    raise NotFound("no such element")


def octet_stream_response(data: bytes, ranges: list[MediaRange]) -> Response:
    """Bulk data as ``multipart/related; type="application/octet-stream"`` (or bare)."""
    for r in ranges:
        if r.is_multipart and r.part_matches("application/octet-stream"):
            body, boundary = multipart.encode([("application/octet-stream", data)])
            return Response(
                body, content_type=multipart.content_type("application/octet-stream", boundary)
            )
        if not r.is_multipart and r.part_matches("application/octet-stream"):
            return Response(data, content_type="application/octet-stream")
    raise NotAcceptable('bulk data is sent as multipart/related; type="application/octet-stream"')


@bp.get("/studies/<study>/series/<series>/instances/<sop>/bulkdata/<path:element>")
def retrieve_bulkdata(study: str, series: str, sop: str, element: str) -> Response:
    from pacs.viewer.dicomweb import pixels

    principal = gate()
    ref = one_ref(principal, study, series, sop)
    steps = parse_element_path(element)
    if steps == [(0x7FE00010, None)]:
        return pixels.pixel_bulkdata(ref)
    data = element_bytes(archive(), ref, steps)
    return octet_stream_response(data, accept_ranges())
