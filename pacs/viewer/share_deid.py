"""What a de-identified share link's viewer sees: pseudonymous UIDs and cleaned details.

A de-identified link (``Principal.deidentify``) never sees a real UID: every
UID the API sends is replaced with the link's pseudonym (the same one the files
of its ZIP carry), and the UIDs it sends back in URLs are translated to the
real ones here. The reverse table is built from the instances the link may
see (one study), cached per link, and rebuilt when an unknown pseudonym comes
in (a new instance arrived), at most once every few seconds per link.

Study and series details (which feed the corner text) and the tag browser go
through :mod:`pacs.deidentify` with the link's key, so they say exactly what
the downloaded files say.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import pydicom
from flask import current_app

from pacs.deidentify import Pseudonymizer, deidentify_dataset, deidentify_values
from pacs.errors import NotFound
from pacs.storage.index import InstanceRef
from pacs.viewer.access import Forbidden, Principal

_CACHE_SIZE = 256
_REBUILD_AFTER_S = 5.0
#: study_json fields and the index keywords they come from
_STUDY_FIELDS = {
    "study_uid": "StudyInstanceUID",
    "patient_name": "PatientName",
    "patient_id": "PatientID",
    "birth_date": "PatientBirthDate",
    "sex": "PatientSex",
    "study_date": "StudyDate",
    "study_time": "StudyTime",
    "accession": "AccessionNumber",
    "description": "StudyDescription",
    "referring": "ReferringPhysicianName",
    "institution": "InstitutionName",
}
_SERIES_FIELDS = {
    "series_uid": "SeriesInstanceUID",
    "description": "SeriesDescription",
    "date": "SeriesDate",
    "time": "SeriesTime",
}


@dataclass
class _Table:
    pseudo: Pseudonymizer
    real_by_shown: dict[str, str]
    built_at: float


class DeidView:
    """One de-identified caller's view: UIDs both ways, cleaned JSON and tags."""

    def __init__(self, principal: Principal, table: _Table, refresh: Any) -> None:
        self.principal = principal
        self._table = table
        self._refresh = refresh

    @property
    def pseudo(self) -> Pseudonymizer:
        return self._table.pseudo

    def shown(self, uid: str) -> str:
        return self.pseudo.uid(uid) if uid else uid

    def real(self, shown_uid: str) -> str:
        """The real UID behind a pseudonym from a URL; NotFound for anything else."""
        found = self._table.real_by_shown.get(shown_uid)
        if found is None:
            self._table = self._refresh(self.principal, force=False)
            found = self._table.real_by_shown.get(shown_uid)
        if found is None:
            raise NotFound("no such object")
        return found

    def study(self, item: dict[str, Any]) -> dict[str, Any]:
        """A :func:`pacs.viewer.worklist.study_json` item, de-identified."""
        values = {kw: item.get(key, "") for key, kw in _STUDY_FIELDS.items()}
        clean = deidentify_values(values, self.pseudo)
        out = dict(item)
        for key, kw in _STUDY_FIELDS.items():
            out[key] = clean[kw]
        out["deidentified"] = True
        return out

    def series(self, item: dict[str, Any]) -> dict[str, Any]:
        values = {kw: item.get(key, "") for key, kw in _SERIES_FIELDS.items()}
        clean = deidentify_values(values, self.pseudo)
        out = dict(item)
        for key, kw in _SERIES_FIELDS.items():
            out[key] = clean[kw]
        for key in ("first_sop_uid", "middle_sop_uid"):
            if out.get(key):
                out[key] = self.shown(out[key])
        return out

    def instance_summary(self, item: dict[str, Any]) -> dict[str, Any]:
        out = dict(item)
        out["sop_uid"] = self.shown(out.get("sop_uid", ""))
        out["series_description"] = ""
        out.pop("acquisition_time", None)
        return out

    def tags(self, archive: Any, ref: InstanceRef) -> dict[str, Any]:
        """The tag browser's content of the de-identified header (as the ZIP has it)."""
        from pacs.charset import apply_text_codec
        from pacs.viewer.tags import _elements

        with archive.readable_path(ref) as path:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        codec = apply_text_codec(ds)
        deidentify_dataset(ds, self.pseudo)
        meta = _elements(ds.file_meta, 0) if getattr(ds, "file_meta", None) is not None else []
        elements = _elements(ds, 0)
        if ref.rows:
            elements.append(
                {
                    "tag": "7FE0,0010",
                    "keyword": "PixelData",
                    "name": "Pixel Data",
                    "vr": "",
                    "value": f"({ref.rows}×{ref.columns}, {ref.frames or 1} frame(s); not shown)",
                }
            )
        return {"meta": meta, "dataset": elements, "charset_repaired": codec, "deidentified": True}


class DeidViews:
    """Per-link tables, cached; one per app (``app.extensions``)."""

    def __init__(self, pseudonymizer_for: Any) -> None:
        #: share id (str) → Pseudonymizer, supplied by the share module
        self._pseudonymizer_for = pseudonymizer_for
        self._tables: OrderedDict[str, _Table] = OrderedDict()
        self._lock = threading.Lock()

    def _build(self, principal: Principal, *, force: bool) -> _Table:
        key = principal.extra.get("share_id", "")
        with self._lock:
            cached = self._tables.get(key)
        fresh = cached is not None and time.monotonic() - cached.built_at < _REBUILD_AFTER_S
        if cached is not None and fresh and not force:
            return cached
        pseudo = cached.pseudo if cached is not None else self._pseudonymizer_for(key)
        archive = current_app.extensions["pacs_archive"]
        refs = archive.instances(study_scope=principal.scope())
        if principal.series_uids is not None:
            refs = [r for r in refs if r.series_uid in principal.series_uids]
        table: dict[str, str] = {}
        for ref in refs:
            for uid in (ref.study_uid, ref.series_uid, ref.sop_uid):
                table.setdefault(pseudo.uid(uid), uid)
        built = _Table(pseudo, table, time.monotonic())
        with self._lock:
            self._tables[key] = built
            self._tables.move_to_end(key)
            while len(self._tables) > _CACHE_SIZE:
                self._tables.popitem(last=False)
        return built

    def view(self, principal: Principal) -> DeidView:
        key = principal.extra.get("share_id", "")
        with self._lock:
            cached = self._tables.get(key)
        table = cached if cached is not None else self._build(principal, force=True)
        return DeidView(principal, table, self._build)


EXTENSION = "pacs_deid_views"


def deid_view(principal: Principal) -> DeidView | None:
    """The de-identified view for this caller, or None when it sees real data.

    Raises Forbidden when the caller must be de-identified but nothing can do it
    (the sharing feature is not registered): better nothing than real data.
    """
    if not principal.deidentify:
        return None
    views: DeidViews | None = current_app.extensions.get(EXTENSION)
    if views is None or "share_id" not in principal.extra:
        raise Forbidden("this caller may only see de-identified data")
    return views.view(principal)


def real_uid(principal: Principal, uid: str) -> str:
    """A UID from a URL as the archive knows it (the same for callers seeing real data)."""
    view = deid_view(principal)
    return view.real(uid) if view is not None else uid
