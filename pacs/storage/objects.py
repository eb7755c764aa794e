"""The object-store interface, and the one function that makes object keys.

An object store keeps bytes under keys and promises durability when ``put_*``
returns. Backends translate their vendor errors into :class:`ObjectNotFound`
and :class:`~pacs.errors.StorageUnavailable`; only bytes, paths and the plain
dataclasses below leave this package.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol

from pacs.errors import InvalidInstance, NotFound

UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_UID = r"[0-9]+(?:\.[0-9]+)*"
KEY_RE = re.compile(rf"^{_UID}/{_UID}/{_UID}\.dcm$")
INSTANCE_SUFFIX = ".dcm"


class ObjectNotFound(NotFound):
    """No object under that key."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime


def is_valid_uid(value: str) -> bool:
    return len(value) <= 64 and bool(UID_RE.match(value))


def instance_key(study_uid: str, series_uid: str, sop_uid: str) -> str:
    """Object key of an instance, built from validated UIDs only.

    Raises :class:`InvalidInstance` when a UID is not a syntactically valid UID,
    so raw input can never reach a path or a bucket key.
    """
    for label, uid in (("Study", study_uid), ("Series", series_uid), ("SOP Instance", sop_uid)):
        if not is_valid_uid(uid):
            raise InvalidInstance(f"{label} Instance UID {uid[:80]!r} is not a valid UID")
    return f"{study_uid}/{series_uid}/{sop_uid}{INSTANCE_SUFFIX}"


def check_key(key: str) -> str:
    """Refuse any key that :func:`instance_key` could not have produced."""
    if not KEY_RE.match(key):
        raise ObjectNotFound(f"invalid object key {key[:120]!r}")
    return key


class ObjectStore(Protocol):
    """Where instance bytes live. Every ``put`` is durable when it returns."""

    name: str

    def put_file(self, key: str, path: Path, *, consume: bool, synced: bool = False) -> None:
        """Store the file at ``path`` under ``key``; with ``consume`` the file may be moved.

        ``synced`` says the caller has already fsynced ``path`` itself.
        """
        ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def open(self, key: str) -> BinaryIO:
        """A readable binary stream; the caller closes it. Raises ObjectNotFound."""
        ...

    def read_range(self, key: str, start: int, length: int) -> bytes: ...

    def local_path(self, key: str) -> Path | None:
        """A filesystem path to read the object from directly, if the backend has one."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""
        ...

    def iter_objects(self) -> Iterator[ObjectInfo]:
        """Every instance object in the store (used by reindex and verify)."""
        ...

    def free_bytes(self) -> int | None:
        """Free space for new objects, or None when the backend cannot tell."""
        ...

    def check(self) -> None:
        """Raise StorageUnavailable when the store cannot be used."""
        ...
