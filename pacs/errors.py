"""Our error types, and the one table that maps them to DICOM statuses and HTTP codes.

The DICOM handlers and the HTTP views never invent a status: they look it up
here, so a refusal means the same thing on every edge.
"""

from __future__ import annotations


class PacsError(Exception):
    """Base of every error pacs raises on purpose."""

    #: DIMSE status (PS3.7 Annex C; PS3.4 B.2.3, C.4.1.1.4, C.4.2.1.5, C.4.3.1.4)
    dicom_status: int = 0xC000
    http_status: int = 500

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConfigError(PacsError):
    """A setting is unknown or has a bad value."""


class InvalidInstance(PacsError):
    """The object is not a DICOM instance we can keep (malformed, missing UIDs…)."""

    dicom_status = 0xC000  # Error: Cannot understand
    http_status = 400


class DuplicateInstance(PacsError):
    """A different object arrived under a known SOP Instance UID and policy is reject."""

    dicom_status = 0x0111  # Duplicate SOP Instance (PS3.7 C.4)
    http_status = 409


class InvalidQuery(PacsError):
    """A query identifier or search parameter we cannot understand."""

    dicom_status = 0xA900  # Identifier does not match SOP Class
    http_status = 400


class NotFound(PacsError):
    dicom_status = 0xC000
    http_status = 404


class UnknownDestination(PacsError):
    """C-MOVE to an AE title that is not enrolled as a move destination."""

    dicom_status = 0xA801  # Refused: Move Destination unknown
    http_status = 400


class NotAuthorized(PacsError):
    dicom_status = 0x0124  # Refused: Not authorized
    http_status = 403


class StorageUnavailable(PacsError):
    """The object store or the index cannot be reached or failed to write."""

    dicom_status = 0xA700  # Refused: Out of resources
    http_status = 503


class StorageFull(StorageUnavailable):
    """The storage volume is below the configured free-space floor."""

    dicom_status = 0xA700
    http_status = 507


class ShuttingDown(StorageUnavailable):
    """The server is stopping and takes no new work; the sender should retry."""

    dicom_status = 0xA700
    http_status = 503


class PayloadTooLarge(PacsError):
    http_status = 413
    dicom_status = 0xA700


class NotAcceptable(PacsError):
    http_status = 406


class FrameDecodeError(PacsError):
    """The pixel data of an instance cannot be turned into an image."""

    http_status = 422
