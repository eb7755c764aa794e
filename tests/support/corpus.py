"""The shared corpus of real DICOM files and what its manifests say about each file.

One setting names the folder: ``PACS_TEST_DICOM``, by default ``../shared/dicom``
next to the repository. ``MANIFEST.csv`` describes every file (modality, UIDs,
SHA-256, character set, whether it is malformed…); ``vietnamese/MANIFEST.csv``
gives, per synthetic Vietnamese patient, the encoding its files use and the
intended Unicode name and study description. Tests derive what they expect from
these rows rather than from values copied into the test.
"""

from __future__ import annotations

import csv
import os
from functools import cache
from pathlib import Path

from .policy import unavailable

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_VAR = "PACS_TEST_DICOM"
DEFAULT_CORPUS = REPO_ROOT.parent / "shared" / "dicom"
VIETNAMESE_DIR = "vietnamese"

ManifestRow = dict[str, str]


def corpus_path() -> Path:
    """Where the corpus should be: ``$PACS_TEST_DICOM`` or the default (not checked)."""
    configured = os.environ.get(ENV_VAR, "").strip()
    if not configured:
        return DEFAULT_CORPUS
    path = Path(configured).expanduser()
    return path if path.is_absolute() else (REPO_ROOT / path)


def require_corpus() -> Path:
    """The corpus folder, or skip (fail under ``CI=true``) when it is absent."""
    root = corpus_path()
    if not (root / "MANIFEST.csv").is_file():
        unavailable(f"shared DICOM corpus not found at {root}; set {ENV_VAR}")
    return root


@cache
def _read_csv(path: Path) -> tuple[ManifestRow, ...]:
    with path.open(newline="", encoding="utf-8") as fh:
        return tuple(dict(row) for row in csv.DictReader(fh))


def load_manifest(root: Path) -> list[ManifestRow]:
    """The rows of ``root/MANIFEST.csv`` as dicts (column name → text), in file order.

    ``row["path"]`` is relative to ``root``. Each call returns fresh dicts, so a
    caller may annotate them.
    """
    return [dict(row) for row in _read_csv(root / "MANIFEST.csv")]


def load_vietnamese_manifest(root: Path) -> list[ManifestRow]:
    """The rows of ``root/vietnamese/MANIFEST.csv`` (one per patient/study).

    Columns: ``patient_id, encoding, patient_name_unicode,
    study_description_unicode, study_uid, instances``.
    """
    return [dict(row) for row in _read_csv(root / VIETNAMESE_DIR / "MANIFEST.csv")]


def vietnamese_files(root: Path, patient_id: str | None = None) -> list[Path]:
    """The Vietnamese study files (all, or one patient's), sorted by name."""
    pattern = f"{patient_id}_*.dcm" if patient_id else "*.dcm"
    return sorted((root / VIETNAMESE_DIR).glob(pattern))


def manifest_by_path(root: Path) -> dict[str, ManifestRow]:
    """Manifest rows keyed by their ``path`` column."""
    return {row["path"]: row for row in load_manifest(root)}


def is_clean(row: ManifestRow) -> bool:
    """A well-formed Part 10 file: File Meta present and not flagged malformed."""
    return (
        not row["malformed"]
        and row["has_file_meta"] == "True"
        and row["has_preamble_DICM"] == "True"
        and bool(row["sop_instance_uid"])
        and bool(row["study_uid"])
        and bool(row["series_uid"])
    )


def same_sop_siblings(row: ManifestRow) -> list[str]:
    """Paths of the other files that carry this file's SOP Instance UID."""
    return [p.strip() for p in row["same_sop_instance_uid_as"].split("|") if p.strip()]
