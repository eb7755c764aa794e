"""Recovering from the object store: ``pacs reindex`` and ``pacs verify``, on the embedded
setup (SQLite + filesystem) and the production one (PostgreSQL + S3).

- The index is wiped (the SQLite file deleted; the PostgreSQL tables emptied) and
  ``pacs reindex`` rebuilds it from the objects alone: every patient, study,
  series and instance row comes back with the same attributes. Study and
  patient attributes come from the first instance received, and the corpus has
  studies whose instances disagree (the Vietnamese ones: birth dates, sexes,
  times), so this also checks that reindex replays the arrival order, which it
  takes from the objects' modification times. Those are exact on a filesystem;
  S3 reports them to the second, so there a study whose instances disagree and
  arrived within one second may come back with the attributes of another of its
  instances (checked: any difference is such a study, with one of its own
  instances' attributes).
- ``pacs verify`` finds an object that was deleted behind pacs' back and one
  whose bytes were changed, lists both, and exits 1.

Rows are compared on what the files say; what only ingest knows (row ids,
arrival times, the sending AE title) is left out.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from pacs.archive import Archive, Source
from pacs.bootstrap import build_archive
from pacs.config import Settings
from pacs.dicomfile import read_instance
from pacs.storage.models import Instance, Patient, Series, Study
from support import S3Endpoint, is_clean, load_manifest, unique_bucket, vietnamese_files
from support.corpus import REPO_ROOT

pytestmark = pytest.mark.integration

BACKENDS = ("sqlite-filesystem", "postgresql-s3")
#: What only ingest knows: row ids and links, arrival times, the sending AE.
PROVENANCE = {
    "id",
    "patient_pk",
    "study_pk",
    "series_pk",
    "created_at",
    "updated_at",
    "received_at",
    "source_ae",
}
TABLES = {
    Patient: ("patient_id", "issuer"),
    Study: ("study_uid",),
    Series: ("series_uid",),
    Instance: ("sop_uid",),
}


def _toml(values: dict[str, Any]) -> str:
    lines = ["[pacs]"]
    for key, value in values.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, int | float):
            lines.append(f"{key} = {value}")
        else:
            lines.append(f'{key} = "{value}"')
    return "\n".join(lines) + "\n"


class Site:
    """An archive's settings, written as a pacs.toml the CLI reads too."""

    def __init__(self, root: Path, values: dict[str, Any], *, exact_times: bool) -> None:
        #: the store's modification times order objects as they arrived
        self.exact_times = exact_times
        self.root = root
        self.values = values
        self.settings = Settings(data_dir=root / "data", **values)
        self.config = root / "pacs.toml"
        self.config.write_text(_toml(values))

    def archive(self) -> Archive:
        return build_archive(self.settings)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PACS_")}
        command, *rest = args
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "pacs",
                command,
                "--config",
                str(self.config),
                "--data-dir",
                str(self.root / "data"),
                *rest,
            ],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )


@pytest.fixture(params=BACKENDS)
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    if request.param == "sqlite-filesystem":
        yield Site(tmp_path, {}, exact_times=True)
        return
    s3: S3Endpoint = request.getfixturevalue("s3_endpoint")
    url = request.getfixturevalue("fresh_postgres_url")
    yield Site(tmp_path, {"database_url": url, **s3.settings(unique_bucket())}, exact_times=False)


@pytest.fixture(scope="module")
def corpus_files(shared_dicom: Path) -> list[Path]:
    """Every well-formed corpus file, the Vietnamese studies and the sample studies."""
    clean = [shared_dicom / row["path"] for row in load_manifest(shared_dicom) if is_clean(row)]
    samples = sorted((REPO_ROOT / "sample_dicom").rglob("*.dcm"))
    return clean + vietnamese_files(shared_dicom) + samples


def ingest(archive: Archive, files: list[Path]) -> int:
    stored = 0
    for path in files:
        try:
            archive.store_file(path, source=Source("dicom", ae_title="CT_PHONG_2"))
        except Exception:  # the corpus has files pacs refuses; not what this test is about
            continue
        stored += 1
    return stored


def snapshot(archive: Archive) -> dict[str, dict[tuple, dict[str, Any]]]:
    """Every archive row, by its natural key, without what only ingest knows."""
    out = {}
    with archive.index.engine.connect() as conn:
        for model, key in TABLES.items():
            columns = [c for c in model.__table__.columns if c.name not in PROVENANCE]
            rows = conn.execute(select(*columns)).mappings()
            out[model.__tablename__] = {tuple(r[k] for k in key): dict(r) for r in rows}
    return out


def differences(before: dict, after: dict) -> list[str]:
    found = []
    for table, rows in before.items():
        again = after[table]
        for key in sorted(set(rows) | set(again), key=str):
            if rows.get(key) != again.get(key):
                old, new = rows.get(key) or {}, again.get(key) or {}
                changed = {c: (old.get(c), new.get(c)) for c in old.keys() | new.keys()
                           if old.get(c) != new.get(c)}  # fmt: skip
                found.append(f"{table} {key}: {changed}")
    return found


#: Study row column → the instance header attribute it is copied from.
STUDY_FROM_HEADER = {
    "patient_id": "patient_id",
    "patient_name": "patient_name",
    "patient_birth_date": "patient_birth_date",
    "patient_sex": "patient_sex",
    "study_date": "study_date",
    "study_time": "study_time",
    "accession_number": "accession_number",
    "study_id": "study_id",
    "description": "study_description",
    "referring_physician": "referring_physician",
    "institution": "institution",
    "charset": "specific_character_set",
}


#: Patient row column → the instance header attribute it is copied from.
PATIENT_FROM_HEADER = {
    "name": "patient_name",
    "birth_date": "patient_birth_date",
    "sex": "patient_sex",
}


def variants(archive: Archive) -> tuple[dict[Any, set[tuple]], dict[Any, set[tuple]]]:
    """The distinct study-level attributes the stored instances of each study carry,
    and the patient-level ones of each patient (ID, issuer)."""
    studies: dict[Any, set[tuple]] = {}
    patients: dict[Any, set[tuple]] = {}
    for ref in archive.instances():
        with archive.readable_path(ref) as path:
            h = read_instance(path).header
        studies.setdefault(ref.study_uid, set()).add(
            tuple(str(getattr(h, a)) for a in STUDY_FROM_HEADER.values())
        )
        patients.setdefault((h.patient_id, h.issuer_of_patient_id), set()).add(
            tuple(str(getattr(h, a)) for a in PATIENT_FROM_HEADER.values())
        )
    return studies, patients


def assert_only_order_ambiguous(archive: Archive, before: dict, after: dict) -> None:
    """Rows differ only where arrival order cannot be told from second-resolution
    times: a study (patient) whose instances disagree, and then it has one of its own
    instances' values."""
    studies, patients = variants(archive)
    for table in ("series", "instances"):
        assert differences({table: before[table]}, {table: after[table]}) == []
    for table, key_variants, columns in (
        ("studies", studies, STUDY_FROM_HEADER),
        ("patients", patients, PATIENT_FROM_HEADER),
    ):
        for key, row in after[table].items():
            if before[table][key] == row:
                continue
            natural = key[0] if table == "studies" else key
            assert len(key_variants[natural]) > 1, f"{table} {key} changed"
            assert tuple(str(row[c]) for c in columns) in key_variants[natural], key


def wipe_index(site: Site, archive: Archive) -> None:
    """Lose the index: the SQLite file goes; PostgreSQL's archive tables are emptied."""
    archive.index.engine.dispose()
    if site.settings.is_sqlite:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{site.root / 'data' / 'index.sqlite'}{suffix}").unlink(missing_ok=True)
    else:
        archive.index.wipe()
        archive.index.engine.dispose()


def test_reindex_of_a_wiped_index_reproduces_every_row(
    site: Site, corpus_files: list[Path]
) -> None:
    archive = site.archive()
    stored = ingest(archive, corpus_files)
    assert stored > 200
    before = snapshot(archive)
    assert len(before["instances"]) > 200 and len(before["studies"]) > 50
    wipe_index(site, archive)

    result = site.cli("reindex", "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"reindexed {len(before['instances'])} instance(s)" in result.stdout

    again = site.archive()
    after = snapshot(again)
    assert {t: len(r) for t, r in after.items()} == {t: len(r) for t, r in before.items()}
    if site.exact_times:
        assert differences(before, after) == []
    else:
        assert_only_order_ambiguous(again, before, after)
    assert again.totals()["bytes"] == sum(r["size_bytes"] for r in before["instances"].values())
    again.index.engine.dispose()


def test_verify_lists_a_missing_and_a_corrupted_object(site: Site) -> None:
    archive = site.archive()
    files = sorted((REPO_ROOT / "sample_dicom" / "mr_brain").glob("*.dcm"))
    assert ingest(archive, files) == len(files)
    clean = site.cli("verify")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "all good" in clean.stdout

    refs = archive.instances(study_uid=archive.instances()[0].study_uid)
    gone, changed = refs[3], refs[7]
    archive.objects.delete(gone.object_key)
    with archive.open(changed) as stream:
        data = bytearray(stream.read())
    data[-100] ^= 0xFF  # one bit of pixel data, same length
    archive.objects.put_bytes(changed.object_key, bytes(data))

    result = site.cli("verify")
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert f"missing: {gone.object_key}" in lines
    assert f"corrupted: {changed.object_key}" in lines
    assert f"checked {len(files)} indexed object(s)" in lines
    problems = [line for line in lines if line.startswith(("missing", "corrupted", "orphan"))]
    assert len(problems) == 2, problems
    archive.index.engine.dispose()


def test_recovering_a_dead_worker_leaves_a_live_one_with_a_longer_pid_alone(
    tmp_path: Path,
) -> None:
    """Worker "n:123" died; "n:1234" is alive and mid-store: only the first's object
    is reconciled (indexed), the second's intent stays for its writer to finish."""
    from pacs.archive import sha256_file
    from pacs.storage.index import utcnow
    from pacs.storage.objects import instance_key

    archive = build_archive(Settings(data_dir=tmp_path / "data"))
    sources = sorted((REPO_ROOT / "sample_dicom").rglob("*.dcm"))[:2]
    planted = {}
    for writer, source in zip(("n:123", "n:1234"), sources, strict=True):
        header = read_instance(source).header
        key = instance_key(
            header.study_instance_uid, header.series_instance_uid, header.sop_instance_uid
        )
        archive.index.add_intent(key, sha256_file(source)[0], writer)
        archive.objects.put_file(key, source, consume=False)
        planted[writer] = header.sop_instance_uid

    assert archive.recover(node="n:123") == 1
    assert archive.instance(planted["n:123"]) is not None
    assert archive.index.get_instance(planted["n:1234"]) is None
    assert [i.node for i in archive.index.stale_intents(utcnow())] == ["n:1234"]

    assert archive.recover(node_prefix="n:") == 1
    assert archive.instance(planted["n:1234"]) is not None
    archive.index.engine.dispose()
