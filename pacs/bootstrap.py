"""The composition root: builds the archive from settings. Nothing else wires backends."""

from __future__ import annotations

import logging
from pathlib import Path

from pacs.archive import Archive
from pacs.config import Settings
from pacs.errors import ConfigError
from pacs.storage.database import ensure_schema, make_engine
from pacs.storage.filesystem import FilesystemObjectStore
from pacs.storage.index import SqlIndex
from pacs.storage.objects import ObjectStore

log = logging.getLogger(__name__)


def build_object_store(settings: Settings) -> ObjectStore:
    if settings.storage == "filesystem":
        return FilesystemObjectStore(settings.effective_storage_dir)
    if settings.storage == "s3":
        from pacs.storage.s3 import S3ObjectStore

        if not settings.s3_endpoint:
            raise ConfigError("storage = s3 needs s3_endpoint (PACS_S3_ENDPOINT)")
        return S3ObjectStore(
            settings.s3_endpoint,
            settings.s3_bucket,
            settings.s3_access_key,
            settings.s3_secret_key,
            secure=settings.s3_secure,
            region=settings.s3_region,
            timeout_s=settings.s3_timeout_s,
        )
    raise ConfigError(f"unknown storage backend {settings.storage!r}")


def build_archive(
    settings: Settings,
    *,
    node: str | None = None,
    migrate: bool = True,
    spool_dir: Path | None = None,
) -> Archive:
    """The archive for these settings, with its schema checked (or migrated)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(
        settings.effective_database_url, sqlite_synchronous=settings.sqlite_synchronous
    )
    if migrate:
        ensure_schema(engine, auto_migrate=settings.auto_migrate)
    objects = build_object_store(settings)
    return Archive(settings, objects, SqlIndex(engine), node=node, spool_dir=spool_dir)
