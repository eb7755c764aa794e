"""Finding studies and instances *as the caller may see them*.

Every lookup passes the caller's scope to the archive, so a study outside it is
simply not found: a referring doctor or a share link never learns that other
studies exist (404, never 403).
"""

from __future__ import annotations

from typing import Any

from flask import current_app

from pacs.archive import Archive
from pacs.errors import NotFound
from pacs.storage.index import InstanceRef
from pacs.storage.matching import Level, Query
from pacs.storage.objects import is_valid_uid
from pacs.viewer import worklist
from pacs.viewer.access import Principal


def archive() -> Archive:
    return current_app.extensions["pacs_archive"]


def scoped_refs(principal: Principal, **selectors: Any) -> list[InstanceRef]:
    """Instances the caller may see among those selected (see :meth:`Archive.instances`)."""
    refs = archive().instances(study_scope=principal.scope(), **selectors)
    if principal.series_uids is not None:
        refs = [r for r in refs if r.series_uid in principal.series_uids]
    return refs


def scoped_instance(principal: Principal, sop_uid: str) -> InstanceRef:
    """The instance, or NotFound when it does not exist *or* is outside the caller's scope."""
    refs = scoped_refs(principal, sop_uids=[sop_uid])
    if not refs:
        raise NotFound(f"no instance {sop_uid}")
    return refs[0]


def study_row(principal: Principal, study_uid: str) -> dict[str, Any]:
    """The study's worklist row, or NotFound (also when it is outside the caller's scope)."""
    if not is_valid_uid(study_uid):
        raise NotFound(f"no study {study_uid}")
    rows = archive().search(
        Query(Level.STUDY, {"StudyInstanceUID": study_uid}, study_scope=principal.scope()),
        worklist.KEYWORDS,
    )
    if not rows:
        raise NotFound(f"no study {study_uid}")
    return rows[0]
