"""Online backup while pacs runs: the index, the session key, and optionally the
filesystem object store.

- SQLite: SQLite's backup API copies a consistent snapshot of the index while
  stores go on (WAL mode: readers never block the writer).
- PostgreSQL: ``pg_dump --format=custom`` (one consistent snapshot as well);
  restore with ``pg_restore``. The ``pg_dump`` on the PATH must be at least the
  server's version.
- Objects: ``--objects`` copies a filesystem store next to the index. Large
  stores are better copied with ``rsync`` (incremental); S3/MinIO buckets with
  bucket replication or ``mc mirror`` (see docs/operations.md). The index is
  taken first, so every object it names was already in the store: objects
  stored during the backup are at worst extra (``pacs verify`` lists them as
  orphans, ``pacs reindex`` picks them up).

A ``backup.json`` manifest records what was taken, from which schema, with
checksums; the folder is created private (0700): it holds patient data and the
session key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from pacs.config import Settings, settings_to_dict
from pacs.errors import PacsError
from pacs.storage.database import throwaway_engine
from pacs.storage.models import Patient, Study

log = logging.getLogger(__name__)

MANIFEST = "backup.json"
SQLITE_FILE = "index.sqlite"
PG_FILE = "index.pgdump"
OBJECTS_DIR = "objects"
#: Settings a backup never writes down.
SECRET_SETTINGS = {"s3_secret_key", "secret_key", "database_url", "s3_access_key"}


class BackupFailed(PacsError):
    """The backup could not be taken (the reason says which step)."""


@dataclass
class BackupReport:
    dest: Path
    index_file: Path
    database: str  # "sqlite" or "postgresql"
    objects_copied: int = 0
    objects_bytes: int = 0
    files: dict[str, dict[str, Any]] = field(default_factory=dict)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _prepare_dest(dest: Path) -> None:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupFailed(f"{dest} exists and is not an empty folder: choose a new one")
    try:
        dest.mkdir(parents=True, exist_ok=True, mode=0o700)
        dest.chmod(0o700)
    except OSError as exc:
        raise BackupFailed(f"cannot create {dest}: {exc}") from exc


def backup_sqlite(database: Path, target: Path) -> None:
    """Copy a live SQLite index to ``target`` with SQLite's online backup API."""
    if not database.is_file():
        raise BackupFailed(f"no SQLite index at {database}")
    try:
        source = sqlite3.connect(database, timeout=30)
        try:
            copy = sqlite3.connect(target)
            try:
                # All pages in one step: a consistent snapshot, however busy the writers.
                source.backup(copy)
                check = copy.execute("PRAGMA quick_check").fetchone()
            finally:
                copy.close()
        finally:
            source.close()
    except sqlite3.Error as exc:
        raise BackupFailed(f"SQLite backup of {database} failed: {exc}") from exc
    if not check or check[0] != "ok":
        raise BackupFailed(f"the copy of the index failed its check: {check}")


def pg_environment(database_url: str) -> dict[str, str]:
    """libpq variables for ``pg_dump``/``pg_restore`` (the password never on a command line)."""
    url = make_url(database_url)
    env = {"PGDATABASE": url.database or "postgres"}
    for key, value in (
        ("PGHOST", url.host),
        ("PGPORT", url.port),
        ("PGUSER", url.username),
        ("PGPASSWORD", url.password),
    ):
        if value:
            env[key] = str(value)
    for key, value in url.query.items():  # e.g. sslmode=require
        if key == "sslmode" and isinstance(value, str):
            env["PGSSLMODE"] = value
    return env


def backup_postgres(database_url: str, target: Path, *, pg_dump: str = "pg_dump") -> dict[str, Any]:
    """``pg_dump --format=custom`` of the index database into ``target``; returns what
    the dump holds (totals, schema revisions), read from the very snapshot it dumped."""
    executable = shutil.which(pg_dump)
    if executable is None:
        raise BackupFailed(f"{pg_dump} is not installed (PostgreSQL client tools)")
    env = {**os.environ, **pg_environment(database_url)}
    engine = throwaway_engine(database_url)
    try:
        with engine.connect() as conn:
            # One snapshot for the dump and for the figures in the manifest.
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
                contents = _contents(conn)
                try:
                    proc = subprocess.run(
                        [
                            executable,
                            "--format=custom",
                            "--no-owner",
                            f"--snapshot={snapshot}",
                            "--file",
                            str(target),
                        ],
                        env=env,
                        stdin=subprocess.DEVNULL,
                        capture_output=True,
                        text=True,
                        timeout=24 * 3600,
                        check=False,
                    )
                except (OSError, subprocess.TimeoutExpired) as exc:
                    raise BackupFailed(f"pg_dump failed: {exc}") from exc
    except SQLAlchemyError as exc:
        raise BackupFailed(f"cannot read the index database: {exc}") from exc
    finally:
        engine.dispose()
    if proc.returncode != 0:
        raise BackupFailed(f"pg_dump failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return contents


def _contents(conn: Connection) -> dict[str, Any]:
    """Totals and schema revisions, as seen by ``conn``'s transaction."""
    row = conn.execute(
        select(
            func.count(Study.id),
            func.coalesce(func.sum(Study.num_series), 0),
            func.coalesce(func.sum(Study.num_instances), 0),
            func.coalesce(func.sum(Study.size_bytes), 0),
        )
    ).one()
    patients = conn.execute(select(func.count(Patient.id))).scalar_one()
    revisions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return {
        "totals": {
            "patients": int(patients),
            "studies": int(row[0]),
            "series": int(row[1]),
            "instances": int(row[2]),
            "bytes": int(row[3]),
        },
        "schema_revisions": sorted(revisions),
    }


def sqlite_contents(path: Path) -> dict[str, Any]:
    """What a copied SQLite index holds."""
    engine = throwaway_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            return _contents(conn)
    finally:
        engine.dispose()


def copy_objects(root: Path, target: Path) -> tuple[int, int]:
    """Copy the instance files of a filesystem store (not its staging area)."""
    copied = size = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.endswith(".dcm"):
                continue
            source = Path(dirpath) / name
            dest = target / source.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copy2(source, dest)
            except FileNotFoundError:
                continue  # deleted meanwhile: the index copy, taken first, no longer has it
            copied += 1
            size += dest.stat().st_size
    return copied, size


def backup(
    settings: Settings, dest: Path, *, objects: bool = False, pg_dump: str = "pg_dump"
) -> BackupReport:
    """Take an online backup into the new folder ``dest``; raises BackupFailed."""
    from pacs.bootstrap import build_archive

    archive = build_archive(settings)
    if objects and archive.objects.name != "filesystem":
        raise BackupFailed(
            "--objects copies a filesystem store only; protect an S3/MinIO bucket with "
            "replication or `mc mirror` (docs/operations.md)"
        )
    _prepare_dest(dest)
    started = datetime.now(UTC)
    url = settings.effective_database_url
    if settings.is_sqlite:
        index_file = dest / SQLITE_FILE
        backup_sqlite(Path(make_url(url).database or ""), index_file)
        contents = sqlite_contents(index_file)
        database = "sqlite"
    else:
        index_file = dest / PG_FILE
        contents = backup_postgres(url, index_file, pg_dump=pg_dump)
        database = "postgresql"
    report = BackupReport(dest, index_file, database)
    report.files[index_file.name] = {
        "bytes": index_file.stat().st_size,
        "sha256": _sha256(index_file),
    }
    key_file = settings.data_dir / "secret_key"
    if key_file.is_file():
        shutil.copy2(key_file, dest / "secret_key")
        (dest / "secret_key").chmod(0o600)
        report.files["secret_key"] = {"bytes": key_file.stat().st_size}
    if objects:
        root = settings.effective_storage_dir
        report.objects_copied, report.objects_bytes = copy_objects(root, dest / OBJECTS_DIR)
    try:
        version = metadata.version("pacs")
    except metadata.PackageNotFoundError:
        version = "unknown"
    manifest = {
        "created_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "pacs_version": version,
        "node": settings.effective_node_name,
        "database": database,
        # As of the index copy, not of now.
        "schema_revisions": contents["schema_revisions"],
        "totals": contents["totals"],
        "storage": archive.objects.name,
        "objects_included": objects,
        "objects_copied": report.objects_copied,
        "objects_bytes": report.objects_bytes,
        "files": report.files,
        "settings": {
            k: v for k, v in settings_to_dict(settings).items() if k not in SECRET_SETTINGS
        },
    }
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    archive.index.engine.dispose()
    log.info("backup of the %s index written to %s", database, dest)
    return report
