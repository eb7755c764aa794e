"""Malformed input over C-STORE: refused with a reason, or stored harmlessly.

Every corpus file that is not well-formed (flagged ``malformed``, no File Meta,
missing or invalid UIDs…) plus hand-made ones (a data set truncated inside an
element, garbage bytes, path-traversal "UIDs") is sent two ways:

- with DCMTK ``storescu``, as a modality would (it often refuses to send such
  a file at all, which is then all there is to see);
- with pynetdicom, which puts the file's data set bytes on the wire exactly as
  they are (a File Meta is made up for files that lack one).

For each attempt: either the response is a failure status, with an
ErrorComment, and the server log has a line with the reason; or the response is
Success and the instance can be found and retrieved (byte-identical for the
exact-bytes sender). Either way the server answers C-ECHO afterwards, and at the
end of the module ``pacs verify`` finds the store and the index in agreement,
with no file outside the object store and nothing left in its staging area.
"""

from __future__ import annotations

import random
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian

from support import corpus_path, findscu, load_manifest, storescu

pytestmark = pytest.mark.integration

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
#: SOP classes of objects outside the patient/study hierarchy, which pacs may refuse
#: at association time: Media Storage Directory (a DICOMDIR is not sent over the
#: network) and Color Palette Storage (a non-patient object).
NOT_STUDY_OBJECTS = {"1.2.840.10008.1.3.10", "1.2.840.10008.5.1.4.39.1"}
PLACEHOLDER_UID = "1.2.826.0.1.3680043.8.498.999999"
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_IMPLIED_SYNTAX = {
    "(none: implicit=True little=True)": "1.2.840.10008.1.2",
    "(none: implicit=False little=True)": "1.2.840.10008.1.2.1",
    "(none: implicit=False little=False)": "1.2.840.10008.1.2.2",
}
#: storescu option that proposes a compressed syntax (it cannot convert to one).
_STORESCU_PROPOSAL = {
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
}


def _valid_uid(value: str) -> bool:
    return len(value) <= 64 and bool(_UID.match(value))


def not_well_formed(row: dict[str, str]) -> bool:
    """The complement of test_dicom_corpus.well_formed (same manifest columns)."""
    uids = ("sop_class_uid", "sop_instance_uid", "study_uid", "series_uid")
    return bool(
        row["malformed"]
        or row["has_file_meta"] != "True"
        or row["has_preamble_DICM"] != "True"
        or not all(_valid_uid(row[c]) for c in uids)
    )


@dataclass(frozen=True)
class Specimen:
    """One malformed input: the file storescu reads, and the Part 10 file whose data
    set pynetdicom sends unchanged."""

    name: str
    original: Path | None
    part10: Path
    sop_instance_uid: str
    transfer_syntax_uid: str


# ---------------------------------------------------------------- specimens


def _corpus_specimens(root: Path, rows, workdir: Path, read_dataset_bytes, make_part10):
    """The corpus files that are not well-formed, each with a File Meta pynetdicom can
    send from (the file itself when it has one)."""
    out = []
    for row in rows:
        path = root / row["path"]
        syntax = row["transfer_syntax_uid"] or _IMPLIED_SYNTAX.get(
            row["transfer_syntax_name"], "1.2.840.10008.1.2"
        )
        sop_class = row["sop_class_uid"] if _valid_uid(row["sop_class_uid"]) else SECONDARY_CAPTURE
        sop_uid = row["sop_instance_uid"] if row["sop_instance_uid"] else PLACEHOLDER_UID + ".1"
        part10 = path
        sendable_meta = (
            row["has_file_meta"] == "True"
            and row["has_preamble_DICM"] == "True"
            and row["transfer_syntax_uid"]
            and row["sop_instance_uid"]
        )
        if not sendable_meta:
            # pynetdicom sends from the File Meta: make one up around the same bytes.
            part10 = make_part10(
                workdir / f"{path.name}.part10",
                read_dataset_bytes(path),
                sop_class_uid=sop_class,
                sop_instance_uid=sop_uid,
                transfer_syntax_uid=syntax,
            )
        out.append(Specimen(row["path"], path, part10, sop_uid, syntax))
    return out


def _small_dataset(**uids: str) -> Dataset:
    """A tiny but complete Secondary Capture image; ``uids`` override its UIDs."""
    ds = Dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = PLACEHOLDER_UID + ".10"
    ds.StudyInstanceUID = PLACEHOLDER_UID + ".11"
    ds.SeriesInstanceUID = PLACEHOLDER_UID + ".12"
    ds.PatientName = "MALFORMED^TEST"
    ds.PatientID = "MALFORMED"
    ds.Modality = "OT"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(range(64))
    for keyword, value in uids.items():
        setattr(ds, keyword, value)
    return ds


def _encode(ds: Dataset) -> bytes:
    """Explicit VR little endian data set bytes, written whatever the values say."""
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid UIDs
        write_dataset(buffer, ds)
    return buffer.getvalue()


def _handmade_specimens(shared_dicom: Path, workdir: Path, read_dataset_bytes, make_part10):
    """Inputs no file in the corpus provides, in the order of HANDMADE_NAMES."""
    ct = shared_dicom / "pydicom/test_files/CT_small.dcm"
    ct_meta = pydicom.filereader.read_file_meta_info(ct)
    ct_data = read_dataset_bytes(ct)
    ct_uid = str(ct_meta.MediaStorageSOPInstanceUID)
    specimens = []

    def add(name, data, *, sop_uid, sop_class=str(ct_meta.MediaStorageSOPClassUID), ts=None):
        ts = ts or str(ct_meta.TransferSyntaxUID)
        part10 = make_part10(
            workdir / f"{name}.dcm",
            data,
            sop_class_uid=sop_class,
            sop_instance_uid=sop_uid,
            transfer_syntax_uid=ts,
        )
        specimens.append(Specimen(name, None, part10, sop_uid, ts))

    # Cut inside an element: in the middle of Patient's Name, and of Pixel Data.
    name_at = ct_data.index(b"\x10\x00\x10\x00PN")
    add("truncated-in-patient-name", ct_data[: name_at + 8 + 5], sop_uid=ct_uid)
    pixels_at = ct_data.index(b"\xe0\x7f\x10\x00")
    add("truncated-in-pixel-data", ct_data[: pixels_at + 12 + 1000], sop_uid=ct_uid)
    # An element whose length claims far more than the data set holds.
    too_long = b"\xe0\x7f\x10\x00OW\x00\x00\xff\xff\xff\x7f"
    add("length-past-the-end", ct_data[:pixels_at] + too_long, sop_uid=ct_uid)
    rng = random.Random(20261122)
    garbage = bytes(rng.randrange(256) for _ in range(4096))
    add("garbage", garbage, sop_uid=PLACEHOLDER_UID + ".20")
    add(
        "garbage-after-dicm-prefix",
        b"\x00" * 128 + b"DICM" + garbage,
        sop_uid=PLACEHOLDER_UID + ".21",
    )
    add("empty-data-set", b"", sop_uid=PLACEHOLDER_UID + ".22")
    # Path traversal through UIDs. The C-STORE command's Affected SOP Instance UID
    # comes from the File Meta: the same "UID" where pynetdicom can send it (it
    # refuses more than 64 characters), a harmless one otherwise.
    traversal = {
        "sop-uid-dot-dot": ({"SOPInstanceUID": "../../etc"}, "../../etc"),
        "study-uid-dot-dot": ({"StudyInstanceUID": "../../../tmp/pacs-escape"}, None),
        "series-uid-absolute": ({"SeriesInstanceUID": "/etc/passwd"}, None),
        "sop-uid-too-long": ({"SOPInstanceUID": "1." + "2" * 70}, None),
        # The command names a traversal, the data set a valid UID.
        "command-uid-dot-dot": ({"SOPInstanceUID": PLACEHOLDER_UID + ".30"}, "../../etc"),
    }
    for index, (name, (uids, command_uid)) in enumerate(traversal.items()):
        ds = _small_dataset(**uids)
        add(
            name,
            _encode(ds),
            sop_uid=command_uid or f"{PLACEHOLDER_UID}.{40 + index}",
            sop_class=SECONDARY_CAPTURE,
            ts=ExplicitVRLittleEndian,
        )
    return specimens


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def server(module_pacs_server):
    return module_pacs_server(web=False)


@pytest.fixture(scope="module")
def specimens(shared_dicom, corpus_manifest, tmp_path_factory, read_dataset_bytes, make_part10):
    workdir = tmp_path_factory.mktemp("malformed")
    rows = [row for row in corpus_manifest if not_well_formed(row)]
    assert len(rows) >= 14
    corpus = _corpus_specimens(shared_dicom, rows, workdir, read_dataset_bytes, make_part10)
    handmade = _handmade_specimens(shared_dicom, workdir, read_dataset_bytes, make_part10)
    assert [s.name for s in handmade] == HANDMADE_NAMES
    return {s.name: s for s in corpus + handmade}


@pytest.fixture(scope="module")
def tree_before(server) -> set[Path]:
    """Every file under the server's working directory before any malformed input."""
    return {p for p in server.workdir.rglob("*") if p.is_file()}


HANDMADE_NAMES = [
    "truncated-in-patient-name",
    "truncated-in-pixel-data",
    "length-past-the-end",
    "garbage",
    "garbage-after-dicm-prefix",
    "empty-data-set",
    "sop-uid-dot-dot",
    "study-uid-dot-dot",
    "series-uid-absolute",
    "sop-uid-too-long",
    "command-uid-dot-dot",
]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "specimen_name" in metafunc.fixturenames:
        # Parametrised by name (the ids in the report); the specimens themselves are
        # built once per module by the fixture above.
        root = corpus_path()
        names = (
            [row["path"] for row in load_manifest(root) if not_well_formed(row)]
            if (root / "MANIFEST.csv").is_file()
            else []
        )
        metafunc.parametrize("specimen_name", names + HANDMADE_NAMES)


# ---------------------------------------------------------------- the test


def _found(server, sop_uid: str) -> int:
    result = findscu(
        server.host,
        server.dicom_port,
        {"SOPInstanceUID": sop_uid, "StudyInstanceUID": "", "SeriesInstanceUID": ""},
        level="IMAGE",
        calling_aet="FINDSCU",
    )
    return len(result.responses)


def _reason_logged(server, bookmark: int, caller: str) -> str:
    line = server.wait_for_log(
        rf"(?i)(?=.*{re.escape(caller)})(?=.*(fail|refus|reject|invalid|cannot))",
        since=bookmark,
        timeout=10,
    )
    return line


def test_malformed_input_is_refused_with_a_reason_or_stored_harmlessly(
    server,
    tree_before,
    specimens,
    specimen_name,
    raw_store,
    raw_get,
    read_dataset_bytes,
    storescu_results,
):
    specimen = specimens[specimen_name]

    # 1. As a modality would send it (storescu re-encodes, or gives up on the file).
    if specimen.original is not None:
        bookmark = server.log_size()
        proposal = _STORESCU_PROPOSAL.get(specimen.transfer_syntax_uid)
        result = storescu(
            server.host,
            server.dicom_port,
            [specimen.original],
            calling_aet="STORESCU",
            extra=["-v", *([proposal] if proposal else [])],
        )
        status = storescu_results(result.output).get(str(specimen.original), "not sent")
        if status == "Success":
            assert _found(server, specimen.sop_instance_uid) == 1
        elif status != "not sent":
            assert status.startswith(("Error", "Failed", "Refused", "Unknown Status")), status
            _reason_logged(server, bookmark, "STORESCU")
        assert server.echo(), f"no C-ECHO answer after storescu sent {specimen.name}"

    # 2. The exact bytes.
    bookmark = server.log_size()
    (outcome,) = raw_store(server.host, server.dicom_port, [specimen.part10])
    if outcome.context_rejected:
        # Refused at association time: not an object pacs stores at all.
        assert _sop_class(specimen.part10) in NOT_STUDY_OBJECTS, specimen.name
    elif outcome.status is None:
        pytest.fail(f"no C-STORE response for {specimen.name}")
    elif outcome.status == 0x0000:
        _, got = raw_get(
            server.host,
            server.dicom_port,
            _image_level_keys(specimen),
            [(_sop_class(specimen.part10), specimen.transfer_syntax_uid)],
        )
        uid = _dataset_sop_uid(specimen.part10)
        assert uid in got, f"{specimen.name} stored but not retrievable"
        assert got[uid][1] == read_dataset_bytes(specimen.part10)
    else:
        failure = 0xA000 <= outcome.status <= 0xCFFF or 0x0100 <= outcome.status <= 0x01FF
        assert failure, f"{specimen.name}: unexpected status 0x{outcome.status:04X}"
        assert outcome.error_comment, f"{specimen.name}: 0x{outcome.status:04X} without a reason"
        log = server.log_since(bookmark)
        assert outcome.error_comment in log, f"reason {outcome.error_comment!r} not in the log"
    assert server.echo(), f"no C-ECHO answer after the exact bytes of {specimen.name}"


def _sop_class(part10: Path) -> str:
    return str(pydicom.filereader.read_file_meta_info(part10).MediaStorageSOPClassUID)


def _dataset_sop_uid(part10: Path) -> str:
    """The data set's own SOP Instance UID: what pacs indexes an instance under."""
    return str(pydicom.dcmread(part10, stop_before_pixels=True, force=True).SOPInstanceUID)


def _image_level_keys(specimen: Specimen) -> dict[str, str]:
    ds = pydicom.dcmread(specimen.part10, stop_before_pixels=True, force=True)
    return {
        "QueryRetrieveLevel": "IMAGE",
        "StudyInstanceUID": str(ds.StudyInstanceUID),
        "SeriesInstanceUID": str(ds.SeriesInstanceUID),
        "SOPInstanceUID": str(ds.SOPInstanceUID),
    }


def test_nothing_half_stored_and_nothing_outside_the_store(server, tree_before):
    """After all of the above: the index and the store agree, and the only new files
    are objects under data/objects (nothing escaped through a crafted UID)."""
    verify = server.verify()
    assert verify.returncode == 0, verify.stdout + verify.stderr
    new = {p for p in server.workdir.rglob("*") if p.is_file()} - tree_before
    allowed = (server.objects_dir, server.data_dir / "index.sqlite")
    outside = [
        p
        for p in new
        if not any(p == a or a in p.parents for a in allowed)
        and p.name not in ("server.log", "index.sqlite-wal", "index.sqlite-shm")
    ]
    assert outside == []
    staging = [p for p in server.object_files() if server.objects_dir / ".tmp" in p.parents]
    assert staging == []
    assert not Path("/tmp/pacs-escape").exists()
    assert server.stop() == 0
    assert server.spool_files() == []
