"""Nothing acknowledged is lost, nothing half-received is kept.

- An association aborted (A-ABORT, or the connection dropped) in the middle of a
  large C-STORE leaves no trace: not in the index, not in the object store,
  and the spool is empty once the server has stopped.
- ``kill -9`` of the whole server, ``kill -9`` of one worker, and SIGTERM, each in
  the middle of an ingest by several ``storescu`` processes: every instance a
  storescu got Success for (parsed from ``storescu -v``) is found by C-FIND and
  comes back byte-identical after a restart, and ``pacs verify`` finds the index
  and the store in agreement (no missing, corrupted or orphan object).

The large study is the 250-slice CT bench dataset at /tmp/ds1 when it is there,
or 120 slices generated with /work/shared/bench/make_dataset.py (same generator); the
tests use 120 slices (~63 MB) either way.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from support import findscu, getscu, require_tool, unavailable
from support.dcmtk import STORESCU, dcmtk_env

pytestmark = pytest.mark.integration

BENCH_DATASET = Path("/tmp/ds1")
MAKE_DATASET = Path("/work/shared/bench/make_dataset.py")
INGEST_PROCESSES = 3
SLICES = 120


# ---------------------------------------------------------------- data


@pytest.fixture(scope="session")
def large_ct(tmp_path_factory) -> list[Path]:
    """Slices of one large CT study (512×512, ~0.5 MB each), sorted."""
    existing = sorted((BENCH_DATASET / "s01_ct").glob("*.dcm"))
    manifest = BENCH_DATASET / "manifest.json"
    if len(existing) >= SLICES and manifest.is_file():
        total = json.loads(manifest.read_text()).get("studies", [{}])[0].get("instances")
        if total == len(existing):
            # 120 of its slices are plenty (and keep the machine free for others).
            return existing[:SLICES]
    if not MAKE_DATASET.is_file():
        unavailable(f"neither {BENCH_DATASET} nor {MAKE_DATASET} is available")
    out = tmp_path_factory.mktemp("large_ct")
    subprocess.run(
        [
            sys.executable,
            str(MAKE_DATASET),
            "--out",
            str(out),
            "--studies",
            "1",
            "--slices",
            str(SLICES),
            "--mr-slices",
            "0",
            "--cr-images",
            "0",
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return sorted((out / "s01_ct").glob("*.dcm"))


def _uids(path: Path) -> tuple[str, str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


# ---------------------------------------------------------------- several storescu at once


class Ingest:
    """Several ``storescu -v`` processes sending disjoint parts of a file list."""

    def __init__(self, server, files: Sequence[Path], processes: int = INGEST_PROCESSES):
        exe = require_tool(STORESCU)
        self.outputs: list[list[str]] = []
        self.procs: list[subprocess.Popen] = []
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._acks = 0
        for index in range(processes):
            part = list(files[index::processes])
            proc = subprocess.Popen(
                [
                    str(exe),
                    "-v",
                    "-aet",
                    "STORESCU",
                    "-aec",
                    server.ae_title,
                    server.host,
                    str(server.dicom_port),
                    *map(str, part),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dcmtk_env(),
                text=True,
            )
            lines: list[str] = []
            thread = threading.Thread(target=self._read, args=(proc, lines), daemon=True)
            thread.start()
            self.procs.append(proc)
            self.outputs.append(lines)
            self.threads.append(thread)

    def _read(self, proc: subprocess.Popen, lines: list[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("I: Received Store Response (Success)"):
                with self._lock:
                    self._acks += 1

    @property
    def acks(self) -> int:
        with self._lock:
            return self._acks

    def wait_for_acks(self, count: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while self.acks < count:
            if all(p.poll() is not None for p in self.procs) or time.monotonic() > deadline:
                raise AssertionError(f"only {self.acks} of {count} acknowledgements arrived")
            time.sleep(0.01)

    def finish(self, timeout: float = 120.0) -> None:
        for proc in self.procs:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for thread in self.threads:
            thread.join(10)

    def acknowledged(self, parse) -> list[Path]:
        """Files a storescu got Success for (from its ``-v`` output)."""
        acked = []
        for lines in self.outputs:
            statuses = parse("\n".join(lines))
            acked += [Path(p) for p, status in statuses.items() if status == "Success"]
        return acked


# ---------------------------------------------------------------- checks after a restart


def _present(server, study_uid: str) -> set[str]:
    result = findscu(
        server.host,
        server.dicom_port,
        {"StudyInstanceUID": study_uid, "SeriesInstanceUID": "", "SOPInstanceUID": ""},
        level="IMAGE",
        calling_aet="FINDSCU",
        timeout=120,
    )
    assert result.returncode == 0, result.output
    return {str(r.SOPInstanceUID) for r in result.responses}


def assert_acknowledged_are_intact(server, acked: list[Path], tmp: Path, read_dataset_bytes):
    """Every acknowledged instance is found by C-FIND and comes back byte-identical."""
    assert acked, "the ingest was interrupted before any acknowledgement"
    study_uid, series_uid, _ = _uids(acked[0])
    expected = {_uids(p)[2]: p for p in acked}
    present = _present(server, study_uid)
    missing = sorted(set(expected) - present)
    assert missing == [], f"{len(missing)} acknowledged instance(s) lost"
    result = getscu(
        server.host,
        server.dicom_port,
        {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid},
        tmp,
        level="SERIES",
        calling_aet="GETSCU",
        extra=["+B"],
        timeout=300,
    )
    received = {}
    for path in result.files:
        uid = str(pydicom.filereader.read_file_meta_info(path).MediaStorageSOPInstanceUID)
        received[uid] = path
    not_returned = sorted(set(expected) - set(received))
    assert not_returned == [], result.output[-2000:]
    changed = [
        uid
        for uid, original in expected.items()
        if read_dataset_bytes(received[uid]) != read_dataset_bytes(original)
    ]
    assert changed == []


def assert_verify_clean(server) -> None:
    verify = server.verify()
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "missing" not in verify.stdout
    assert "corrupted" not in verify.stdout
    assert "orphan" not in verify.stdout


# ---------------------------------------------------------------- kill -9, SIGTERM


def test_kill9_of_the_whole_server_loses_nothing_acknowledged(
    pacs_server, large_ct, storescu_results, read_dataset_bytes, tmp_path
):
    server = pacs_server(workers=2)  # the whole server: DICOM and web
    ingest = Ingest(server, large_ct)
    ingest.wait_for_acks(len(large_ct) // 4)
    server.kill9()
    ingest.finish()
    acked = ingest.acknowledged(storescu_results)
    assert len(acked) < len(large_ct), "the ingest finished before the kill"

    server.start()
    assert_acknowledged_are_intact(server, acked, tmp_path / "got", read_dataset_bytes)
    assert server.stop() == 0
    assert_verify_clean(server)
    assert server.spool_files() == []


def test_kill9_of_one_worker_is_survived(
    pacs_server, large_ct, storescu_results, read_dataset_bytes, tmp_path
):
    server = pacs_server(workers=2, web=False)
    workers = server.worker_pids()
    assert len(workers) == 2, workers
    ingest = Ingest(server, large_ct)
    ingest.wait_for_acks(len(large_ct) // 4)
    os.kill(workers[0], signal.SIGKILL)
    ingest.finish()
    acked = ingest.acknowledged(storescu_results)

    # The supervisor replaces the dead worker, and the server goes on serving.
    deadline = time.monotonic() + 30
    while True:
        now = server.worker_pids()
        if len(now) == 2 and workers[0] not in now:
            break
        assert time.monotonic() < deadline, f"worker not replaced: {workers} → {now}"
        time.sleep(0.05)
    assert server.echo()
    assert_acknowledged_are_intact(server, acked, tmp_path / "got", read_dataset_bytes)
    # Whatever the killed worker had not acknowledged can be sent again.
    again = Ingest(server, [p for p in large_ct if p not in set(acked)], processes=2)
    again.finish()
    assert sorted(again.acknowledged(storescu_results) + acked) == sorted(large_ct)
    assert server.stop() == 0
    assert_verify_clean(server)
    assert server.spool_files() == []


def test_sigterm_during_an_ingest_stops_cleanly(
    pacs_server, large_ct, storescu_results, read_dataset_bytes, tmp_path
):
    # A short grace period, so the stop really cuts the ingest.
    server = pacs_server(workers=2, web=False, settings={"shutdown_grace_s": 1})
    ingest = Ingest(server, large_ct)
    ingest.wait_for_acks(len(large_ct) // 4)
    assert server.stop() == 0
    ingest.finish()
    acked = ingest.acknowledged(storescu_results)
    assert server.spool_files() == []

    server.start()
    assert_acknowledged_are_intact(server, acked, tmp_path / "got", read_dataset_bytes)
    assert server.stop() == 0
    assert_verify_clean(server)


# ---------------------------------------------------------------- aborted associations

# A minimal DICOM upper layer client (PS3.8 9.3), enough to stop in mid-C-STORE:
# pynetdicom and DCMTK both finish what they started.

APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _item(item_type: int, payload: bytes) -> bytes:
    return struct.pack(">BxH", item_type, len(payload)) + payload


def _uid(value: str) -> bytes:
    data = value.encode("ascii")
    return data + b"\x00" if len(data) % 2 else data


def _associate_rq(calling: str, called: str, sop_class: str, ts: str) -> bytes:
    context = struct.pack(">BBBB", 1, 0, 0, 0)
    context += _item(0x30, sop_class.encode()) + _item(0x40, ts.encode())
    user = _item(0x51, struct.pack(">I", 16384)) + _item(0x52, b"1.2.826.0.1.3680043.8.498.1")
    body = struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode()
    body += bytes(32) + _item(0x10, APPLICATION_CONTEXT) + _item(0x20, context)
    body += _item(0x50, user)
    return struct.pack(">BxI", 0x01, len(body)) + body


def _read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    header = _recv_exactly(sock, 6)
    pdu_type, length = header[0], struct.unpack(">I", header[2:6])[0]
    return pdu_type, _recv_exactly(sock, length)


def _recv_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("peer closed the connection")
        data += chunk
    return data


def _p_data(context_id: int, control: int, fragment: bytes) -> bytes:
    pdv = struct.pack(">IBB", len(fragment) + 2, context_id, control) + fragment
    return struct.pack(">BxI", 0x04, len(pdv)) + pdv


def _command(sop_class: str, sop_uid: str) -> bytes:
    """A C-STORE-RQ command set, implicit VR little endian (PS3.7 9.3.1.1)."""

    def element(group: int, elem: int, value: bytes) -> bytes:
        return struct.pack("<HHI", group, elem, len(value)) + value

    body = element(0x0000, 0x0002, _uid(sop_class))
    body += element(0x0000, 0x0100, struct.pack("<H", 0x0001))  # C-STORE-RQ
    body += element(0x0000, 0x0110, struct.pack("<H", 1))  # message ID
    body += element(0x0000, 0x0700, struct.pack("<H", 0))  # priority medium
    body += element(0x0000, 0x0800, struct.pack("<H", 0x0000))  # a data set follows
    body += element(0x0000, 0x1000, _uid(sop_uid))
    return element(0x0000, 0x0000, struct.pack("<I", len(body))) + body


def _big_instance(sop_uid: str, size_mb: int = 24) -> bytes:
    """An explicit VR little endian Secondary Capture data set of ``size_mb`` MB."""
    ds = Dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = sop_uid + ".1"
    ds.SeriesInstanceUID = sop_uid + ".2"
    ds.PatientID = "ABORTED"
    ds.PatientName = "ABORTED^TRANSFER"
    ds.Modality = "OT"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.Rows = 1024
    ds.Columns = size_mb * 512
    ds.PixelData = os.urandom(ds.Rows * ds.Columns * 2)
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    write_dataset(buffer, ds)
    return buffer.getvalue()


def send_half_then_stop(server, data: bytes, sop_uid: str, *, how: str) -> None:
    """Associate, send the C-STORE command and half the data set, then abort or drop."""
    with socket.create_connection((server.host, server.dicom_port), timeout=30) as sock:
        sock.sendall(
            _associate_rq("PYNETDICOM", server.ae_title, SECONDARY_CAPTURE, EXPLICIT_VR_LE)
        )
        pdu_type, _ = _read_pdu(sock)
        assert pdu_type == 0x02, f"association not accepted (PDU type {pdu_type:#x})"
        sock.sendall(_p_data(1, 0x03, _command(SECONDARY_CAPTURE, sop_uid)))
        # The acceptor's maximum PDU (256 KiB by default) is more than these fragments.
        fragment = 64 * 1024
        for start in range(0, len(data) // 2, fragment):
            sock.sendall(_p_data(1, 0x00, data[start : start + fragment]))
        if how == "abort":
            sock.sendall(struct.pack(">BxIxxBB", 0x07, 4, 0, 0))  # A-ABORT, service user
        else:
            # Drop the connection with a reset, as a modality that loses power would.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@pytest.mark.parametrize("how", ["abort", "reset"])
def test_aborted_association_leaves_nothing_half_stored(
    pacs_server, how, raw_store, make_part10, raw_get, tmp_path
):
    server = pacs_server(web=False)
    sop_uid = f"1.2.826.0.1.3680043.8.498.777{1 if how == 'abort' else 2}"
    data = _big_instance(sop_uid, size_mb=8)
    bookmark = server.log_size()
    send_half_then_stop(server, data, sop_uid, how=how)
    server.wait_for_log(r"association from PYNETDICOM", since=bookmark)
    assert server.echo()
    # Stopping lets the server finish whatever it would still do with the broken
    # association; then nothing of it may be left anywhere.
    assert server.stop() == 0
    assert server.spool_files() == []
    assert [p for p in server.object_files() if sop_uid in str(p)] == []
    assert [p for p in server.object_files() if "/.tmp/" in str(p)] == []
    assert_verify_clean(server)
    server.start()
    assert _present(server, sop_uid + ".1") == set()

    # The same instance, sent whole, is stored normally and comes back intact.
    part10 = make_part10(
        tmp_path / "whole.dcm",
        data,
        sop_class_uid=SECONDARY_CAPTURE,
        sop_instance_uid=sop_uid,
        transfer_syntax_uid=EXPLICIT_VR_LE,
    )
    (outcome,) = raw_store(server.host, server.dicom_port, [part10])
    assert outcome.status == 0x0000, outcome
    _, got = raw_get(
        server.host,
        server.dicom_port,
        {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": sop_uid + ".1"},
        [(SECONDARY_CAPTURE, EXPLICIT_VR_LE)],
    )
    assert got[sop_uid][1] == data

    assert server.stop() == 0
    assert server.spool_files() == []
    assert_verify_clean(server)


def test_aborted_transfer_is_removed_from_the_spool_while_running(pacs_server):
    server = pacs_server(web=False)
    sop_uid = "1.2.826.0.1.3680043.8.498.7773"
    send_half_then_stop(server, _big_instance(sop_uid, size_mb=8), sop_uid, how="abort")
    assert server.echo()
    deadline = time.monotonic() + 3
    while server.spool_files() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.spool_files() == []


def test_port_probes_do_not_use_up_association_slots(pacs_server):
    server = pacs_server(web=False)
    try:
        for _ in range(70):
            socket.create_connection((server.host, server.dicom_port), timeout=5).close()
        assert server.echo()
    finally:
        # Do not wait out the lingering connections in a SIGTERM stop.
        server.kill9()
