"""``pacs import``, ``pacs reindex`` and ``pacs verify`` on the data of a running server.

- import of a file, a folder and a zip: a progress bar on stderr, a summary on
  stdout (stored / duplicates / refused with reasons), exit code 1 because some
  files were refused; the running server finds what was imported.
- ``pacs reindex --yes`` rebuilds the index from the objects alone: every C-FIND
  answers exactly as before.
- ``pacs verify`` notices an object deleted behind its back, one corrupted, and a
  stray one nobody indexed (exit code 1).
"""

from __future__ import annotations

import os
import pty
import random
import re
import shutil
import subprocess
import sys
import unicodedata
import zipfile
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from support import findscu

pytestmark = pytest.mark.integration

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
GOOD_IN_ZIP = (
    "pydicom/charset_files/chrFren.dcm",
    "pydicom/charset_files/chrX1.dcm",
    "pydicom/test_files/MR_small.dcm",
)


@pytest.fixture(scope="module")
def server(module_pacs_server):
    return module_pacs_server(web=False)


@pytest.fixture(scope="module")
def inputs(shared_dicom: Path, tmp_path_factory) -> dict[str, Path]:
    """A single file, a folder (with a non-DICOM file in it) and a zip holding good
    files, a duplicate of the single file, a truncated file, DICM-prefixed garbage
    and a text file."""
    root = tmp_path_factory.mktemp("import")
    folder = root / "vietnamese"
    shutil.copytree(shared_dicom / "vietnamese", folder)
    assert (folder / "MANIFEST.csv").is_file()
    single = shared_dicom / "pydicom/test_files/CT_small.dcm"
    archive = root / "transfer.zip"
    rng = random.Random(7)
    with zipfile.ZipFile(archive, "w") as zf:
        for name in GOOD_IN_ZIP:
            zf.write(shared_dicom / name, f"good/{Path(name).name}")
        zf.write(single, "again/CT_small.dcm")
        zf.write(shared_dicom / "pydicom/test_files/MR_truncated.dcm", "bad/MR_truncated.dcm")
        garbage = b"\x00" * 128 + b"DICM" + bytes(rng.randrange(256) for _ in range(2048))
        zf.writestr("bad/garbage.dcm", garbage)
        zf.writestr("README.txt", "not DICOM\n")
    return {
        "file": single,
        "folder": folder,
        "zip": archive,
        "inconsistent": _inconsistent_studies(root / "inconsistent"),
    }


def _inconsistent_studies(folder: Path, studies: int = 3, instances: int = 12) -> Path:
    """Studies whose instances each carry another birth date, sex and study time
    (as the Vietnamese corpus files do, but with enough instances that the order
    the archive reads them in shows)."""
    folder.mkdir()
    root = "1.2.826.0.1.3680043.8.498.5151"
    for study in range(1, studies + 1):
        for number in range(1, instances + 1):
            ds = Dataset()
            ds.SOPClassUID = SECONDARY_CAPTURE
            ds.SOPInstanceUID = f"{root}.{study}.1.{number}"
            ds.StudyInstanceUID = f"{root}.{study}"
            ds.SeriesInstanceUID = f"{root}.{study}.1"
            ds.PatientID = f"INCONSISTENT{study}"
            ds.PatientName = f"INCONSISTENT^{study}"
            ds.PatientBirthDate = f"19{50 + number:02d}0101"
            ds.PatientSex = "MF"[number % 2]
            ds.StudyDate = "20240101"
            ds.StudyTime = f"1000{number:02d}"
            ds.Modality = "OT"
            ds.SeriesNumber = 1
            ds.InstanceNumber = number
            ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.save_as(folder / f"s{study}_{number:02d}.dcm", enforce_file_format=True)
    return folder


def _run_with_tty_stderr(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    """Run ``argv`` with stderr on a pseudo-terminal (click only draws its progress
    bar on a terminal); returns (exit code, stdout, stderr)."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL
        )
        os.close(slave)
        slave = -1
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO once the child closed its end
                break
            if not data:
                break
            chunks.append(data)
        stdout = proc.stdout.read().decode() if proc.stdout else ""
        code = proc.wait(300)
    finally:
        os.close(master)
        if slave != -1:
            os.close(slave)
    return code, stdout, b"".join(chunks).decode("utf-8", "replace")


@pytest.fixture(scope="module")
def imported(server, inputs) -> tuple[int, str, str]:
    argv = [
        sys.executable,
        "-m",
        "pacs",
        "import",
        "--config",
        str(server.config_path),
        "--data-dir",
        str(server.data_dir),
        str(inputs["file"]),
        str(inputs["folder"]),
        str(inputs["zip"]),
        str(inputs["inconsistent"]),
    ]
    return _run_with_tty_stderr(argv, server.workdir, server.environ())


def _count(summary: str, label: str) -> int:
    match = re.search(rf"(\d+) {label}", summary)
    assert match, f"no '{label}' count in:\n{summary}"
    return int(match.group(1))


def test_import_summary_progress_and_exit_code(imported, inputs):
    code, stdout, stderr = imported
    dicom_in_folder = [p for p in inputs["folder"].iterdir() if p.suffix == ".dcm"]
    dicom_in_folder += list(inputs["inconsistent"].iterdir())
    # Refused files make the exit code 1.
    assert code == 1, stdout + stderr
    assert _count(stdout, "stored") == len(dicom_in_folder) + 1 + len(GOOD_IN_ZIP)
    assert _count(stdout, r"duplicate\(s\)") == 1
    assert _count(stdout, "refused") == 2
    refused = {line.split(":", 1)[0].strip(): line for line in stdout.splitlines()[1:]}
    truncated = next(line for name, line in refused.items() if name.endswith("MR_truncated.dcm"))
    garbage = next(line for name, line in refused.items() if name.endswith("garbage.dcm"))
    assert "truncated" in truncated.lower()
    assert garbage.split(":", 2)[-1].strip(), "a refusal without a reason"
    # The progress bar goes to stderr (it counts the candidates), never into the summary.
    # Every candidate: the DICOM files, the single file, MANIFEST.csv, and in the zip
    # the good files, the duplicate, the truncated file, the garbage and README.txt.
    total = len(dicom_in_folder) + 1 + 1 + len(GOOD_IN_ZIP) + 4
    assert "Importing" in stderr
    assert f"{total}/{total}" in stderr
    assert "Importing" not in stdout


def test_the_running_server_finds_what_was_imported(imported, server, vietnamese_manifest):
    for row in vietnamese_manifest:
        result = findscu(
            server.host,
            server.dicom_port,
            {
                "SpecificCharacterSet": "ISO_IR 192",
                "PatientID": row["patient_id"],
                "PatientName": "",
                "NumberOfStudyRelatedInstances": "",
            },
            calling_aet="FINDSCU",
        )
        assert len(result.responses) == 1, row
        response = result.responses[0]
        name = unicodedata.normalize("NFC", row["patient_name_unicode"])
        assert unicodedata.normalize("NFC", str(response.PatientName)) == name
        assert int(response.NumberOfStudyRelatedInstances) == int(row["instances"])


SNAPSHOT_KEYS = {
    "PATIENT": (
        "patient",
        (
            "PatientID",
            "PatientName",
            "PatientBirthDate",
            "PatientSex",
            "NumberOfPatientRelatedStudies",
            "NumberOfPatientRelatedSeries",
            "NumberOfPatientRelatedInstances",
        ),
    ),
    "STUDY": (
        "study",
        (
            "StudyInstanceUID",
            "PatientID",
            "PatientName",
            "StudyDate",
            "StudyTime",
            "AccessionNumber",
            "StudyDescription",
            "ModalitiesInStudy",
            "NumberOfStudyRelatedSeries",
            "NumberOfStudyRelatedInstances",
        ),
    ),
    "SERIES": (
        "study",
        (
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "Modality",
            "SeriesNumber",
            "SeriesDescription",
            "NumberOfSeriesRelatedInstances",
        ),
    ),
    "IMAGE": (
        "study",
        (
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "SOPInstanceUID",
            "SOPClassUID",
            "InstanceNumber",
        ),
    ),
}


def _snapshot(server) -> dict[str, list[dict[str, str]]]:
    """Every C-FIND answer at every level."""
    snapshot = {}
    for level, (model, keys) in SNAPSHOT_KEYS.items():
        result = findscu(
            server.host,
            server.dicom_port,
            {"SpecificCharacterSet": "ISO_IR 192", **dict.fromkeys(keys, "")},
            level=level,
            model=model,
            calling_aet="FINDSCU",
        )
        assert result.returncode == 0, result.output
        snapshot[level] = [{k: str(r.get(k, "")) for k in keys} for r in result.responses]
    return snapshot


def _rows(snapshot, level: str, masked: dict[str, set[str]] | None = None) -> list[tuple]:
    """The level's answers as sorted tuples; ``masked`` maps an attribute to the
    patients/studies whose value is not well defined (their files disagree)."""
    rows = []
    for answer in snapshot[level]:
        owner = answer.get("StudyInstanceUID") if level != "PATIENT" else answer["PatientID"]
        row = tuple(
            "(differs between instances)" if masked and owner in masked.get(k, ()) else v
            for k, v in answer.items()
        )
        rows.append(row)
    return sorted(rows)


@pytest.fixture(scope="module")
def ambiguous(inputs) -> dict[str, set[str]]:
    """Attribute → patients (patient level) or studies whose imported files disagree
    on its value. The Vietnamese studies do: each instance has its own birth date,
    sex and study time."""
    values: dict[tuple[str, str], set[str]] = {}
    paths = [inputs["file"], *inputs["folder"].glob("*.dcm"), *inputs["inconsistent"].iterdir()]
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in ("PatientBirthDate", "PatientSex", "PatientName"):
            values.setdefault((keyword, str(ds.PatientID)), set()).add(str(ds.get(keyword)))
        for keyword in ("StudyDate", "StudyTime", "AccessionNumber", "StudyDescription"):
            key = (keyword, str(ds.StudyInstanceUID))
            values.setdefault(key, set()).add(str(ds.get(keyword)))
    out: dict[str, set[str]] = {}
    for (keyword, owner), seen in values.items():
        if len(seen) > 1:
            out.setdefault(keyword, set()).add(owner)
    return out


@pytest.fixture(scope="module")
def reindexed(imported, server):
    """C-FIND snapshots before and after ``pacs reindex --yes`` (server restarted)."""
    before = _snapshot(server)
    assert len(before["IMAGE"]) >= 12
    assert server.stop() == 0
    reindex = server.cli("reindex", "--yes")
    assert reindex.returncode == 0, reindex.stdout + reindex.stderr
    server.start()
    return before, _snapshot(server)


def test_reindex_gives_the_same_answers(reindexed, ambiguous):
    before, after = reindexed
    for level in SNAPSHOT_KEYS:
        old, new = _rows(before, level, ambiguous), _rows(after, level, ambiguous)
        assert (sorted(set(old) - set(new)), sorted(set(new) - set(old))) == ([], []), level
        assert len(old) == len(new)


def test_reindex_gives_the_same_answers_even_for_inconsistent_studies(reindexed):
    before, after = reindexed
    for level in SNAPSHOT_KEYS:
        assert _rows(before, level) == _rows(after, level), level


def test_verify_finds_a_missing_a_corrupted_and_an_orphan_object(imported, reindexed, server):
    assert server.stop() == 0
    clean = server.verify()
    assert clean.returncode == 0, clean.stdout + clean.stderr
    objects = [p for p in server.object_files() if p.suffix == ".dcm"]
    assert len(objects) >= 3
    missing, corrupted, kept = objects[0], objects[1], objects[2]
    missing.unlink()
    data = bytearray(corrupted.read_bytes())
    data[-1] ^= 0xFF
    corrupted.write_bytes(bytes(data))
    orphan = kept.parent / "1.2.826.0.1.3680043.8.498.424242.dcm"
    shutil.copyfile(kept, orphan)

    report = server.verify()
    assert report.returncode == 1, report.stdout
    key = lambda p: p.relative_to(server.objects_dir).as_posix()  # noqa: E731
    assert f"missing: {key(missing)}" in report.stdout
    assert f"corrupted: {key(corrupted)}" in report.stdout
    assert key(orphan) in report.stdout and "orphan" in report.stdout
    assert "all good" not in report.stdout
