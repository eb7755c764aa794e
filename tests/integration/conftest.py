"""A real ``pacs serve`` for integration tests, and helpers to talk DICOM to it.

``pacs_server`` (per test) and ``module_pacs_server`` (per module) are factories:

    server = pacs_server(workers=1, env={"PACS_DUPLICATE_POLICY": "keep"})
    storescu(server.host, server.dicom_port, files, calling_aet="STORESCU")

Each server is a subprocess (``python -m pacs serve``) in its own session (so a
``kill -9`` can take its whole process group), with free loopback ports, its own
data directory and ``pacs.toml`` (``settings=``), and an environment without the
developer's ``PACS_*`` variables (``env=`` adds some). It runs DICOM and web
unless ``web=False`` (DICOM-only tests use that: quicker to start, and
independent of the web code). Before it starts, the calling AE titles the tests
use are enrolled with every permission (:data:`DEFAULT_AES`) through the
``pacs ae add`` command; ``aes=`` adds or overrides some (an AE without store
permission, a C-MOVE destination with its port…). The factory returns once a
worker answers C-ECHO, and exposes ``.dicom_port .http_port .data_dir .ae_title
.log_text() .stop() .kill9() .restart()`` and more (see :class:`PacsServer`).
On teardown every server still running gets SIGTERM; when a test fails, the tail
of each live server's log is attached to its report.

Helpers that need no server are plain functions here, handed to test modules
through session fixtures: ``read_dataset_bytes`` (the bytes after the File Meta
of a Part 10 file), ``raw_store`` / ``raw_get`` (pynetdicom C-STORE / C-GET that
keep data set bytes exactly as they are), ``storescu_results`` (parse
``storescu -v``) and ``make_part10`` (wrap raw data set bytes in a File Meta).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID

from support import LOCALHOST, echoscu, free_port, wait_for_port
from support.corpus import REPO_ROOT

#: Calling AE titles enrolled on every server with all permissions (host/port unused:
#: none of them is a C-MOVE destination that gets connected to).
DEFAULT_AES = ("ECHOSCU", "STORESCU", "FINDSCU", "MOVESCU", "GETSCU", "PYNETDICOM")
#: The AE the readiness probe (C-ECHO) calls from.
PROBE_AE = "ECHOSCU"
SERVER_START_TIMEOUT = 60.0


@dataclass(frozen=True)
class RemoteAE:
    """A remote AE to enrol (``pacs ae add`` arguments)."""

    title: str
    host: str = LOCALHOST
    port: int = 104
    store: bool = True
    query: bool = True
    retrieve: bool = True
    destination: bool = True

    def add_arguments(self) -> list[str]:
        """The arguments of ``pacs ae add`` for this AE."""
        args = [self.title, self.host, str(self.port)]
        for flag in ("store", "query", "retrieve", "destination"):
            if not getattr(self, flag):
                args.append(f"--no-{flag}")
        return args


# ---------------------------------------------------------------- Part 10 helpers

# Explicit VRs with a 4-byte length after 2 reserved bytes (PS3.5 7.1.2).
_LONG_LENGTH_VRS = {
    b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"
}  # fmt: skip


def meta_end(data: bytes) -> int:
    """Offset where the data set starts in Part 10 bytes (after preamble and File Meta).

    Walks the explicit-VR little-endian group 0002 elements by hand, so it works on
    files pydicom would refuse: with ``DICM`` at 128 the File Meta follows it;
    without, a file may still start with a (partial) group 0002.
    """
    pos = 132 if data[128:132] == b"DICM" else 0
    while pos + 8 <= len(data):
        group = struct.unpack_from("<H", data, pos)[0]
        if group != 0x0002:
            break
        vr = data[pos + 4 : pos + 6]
        if vr in _LONG_LENGTH_VRS:
            length = struct.unpack_from("<I", data, pos + 8)[0]
            pos += 12 + length
        else:
            length = struct.unpack_from("<H", data, pos + 6)[0]
            pos += 8 + length
    return pos


def dataset_bytes(source: Path | bytes) -> bytes:
    """The data set of a Part 10 file: every byte after the File Meta Information.

    This is what travels in a C-STORE, and what pacs promises to keep unchanged.
    """
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    return data[meta_end(data) :]


def write_part10(
    path: Path,
    dataset: bytes,
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
) -> Path:
    """Write ``dataset`` (raw bytes, unchanged) as a Part 10 file with a File Meta we choose.

    Used to hand pynetdicom files whose own File Meta is missing or broken, or
    hand-made malformed data sets.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax_uid)
    meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.8.498.1")
    with path.open("wb") as out:
        out.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(out, meta, enforce_standard=True)  # type: ignore[arg-type]
        out.write(dataset)
    return path


def file_meta(path: Path) -> dict[str, str]:
    """SOP Class / Instance and Transfer Syntax UIDs from a Part 10 file's File Meta."""
    from pydicom.filereader import read_file_meta_info

    meta = read_file_meta_info(path)
    return {
        "sop_class_uid": str(meta.get("MediaStorageSOPClassUID", "")).strip("\x00 "),
        "sop_instance_uid": str(meta.get("MediaStorageSOPInstanceUID", "")).strip("\x00 "),
        "transfer_syntax_uid": str(meta.get("TransferSyntaxUID", "")).strip("\x00 "),
    }


# ---------------------------------------------------------------- storescu -v output

_SENDING = re.compile(r"^I: Sending file: (?P<path>.+?)\s*$")
_RESPONSE = re.compile(r"^I: Received Store Response \((?P<status>[^)]*)\)")


def storescu_statuses(output: str) -> dict[str, str]:
    """What ``storescu -v`` says happened to each file: path → status.

    ``"Success"`` means the SCP acknowledged the instance; ``"Error: …"`` /
    ``"Warning: …"`` are the response statuses as DCMTK names them; ``"not sent"``
    means storescu gave up on the file itself (unreadable, no presentation
    context) or the association died before a response arrived.
    """
    statuses: dict[str, str] = {}
    current: str | None = None
    for line in output.splitlines():
        sending = _SENDING.match(line)
        if sending:
            current = sending["path"]
            statuses[current] = "not sent"
            continue
        response = _RESPONSE.match(line)
        if response and current is not None:
            statuses[current] = response["status"]
            current = None
    return statuses


# ---------------------------------------------------------------- raw C-STORE


@dataclass(frozen=True)
class RawStoreResult:
    path: Path
    #: the C-STORE response status, or None when no response came back
    status: int | None
    error_comment: str
    #: the SCP accepted none of the presentation contexts (nothing was sent)
    context_rejected: bool = False


def send_raw(
    host: str,
    port: int,
    files: Sequence[Path],
    *,
    calling_aet: str = "PYNETDICOM",
    called_aet: str = "PACS",
) -> list[RawStoreResult]:
    """C-STORE the data set bytes of Part 10 files exactly as they are in each file.

    pynetdicom streams the bytes after the File Meta (STORE_SEND_CHUNKED_DATASET)
    with the SOP Class / Instance UIDs and Transfer Syntax of the File Meta, so a
    malformed data set reaches the SCP as it is. DCMTK's storescu re-encodes what
    it sends (group lengths, sequence lengths, VR fixes), which is why this exists.
    One association per call; raises AssertionError if it is not accepted.
    """
    from pynetdicom import AE, _config

    metas = [(Path(p), file_meta(Path(p))) for p in files]
    contexts = sorted({(m["sop_class_uid"], m["transfer_syntax_uid"]) for _, m in metas})
    assert len(contexts) <= 128, "too many presentation contexts for one association"
    ae = AE(calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    for sop_class, ts in contexts:
        ae.add_requested_context(sop_class, ts)
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    results: list[RawStoreResult] = []
    try:
        assoc = ae.associate(host, port, ae_title=called_aet)
        assert not assoc.is_rejected, f"association {calling_aet} → {called_aet} rejected"
        if not assoc.is_established:
            # pynetdicom aborts an association without any accepted context.
            return [RawStoreResult(Path(p), None, "", context_rejected=True) for p in files]
        try:
            for path, _ in metas:
                try:
                    rsp = assoc.send_c_store(path)
                except (ValueError, AttributeError, RuntimeError):
                    results.append(RawStoreResult(path, None, "not sent"))
                    if not assoc.is_established:
                        break
                    continue
                status = int(rsp.Status) if "Status" in rsp else None
                comment = str(rsp.get("ErrorComment", "") or "")
                results.append(RawStoreResult(path, status, comment))
        finally:
            if assoc.is_established:
                assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
        ae.shutdown()
    return results


def send_raw_get(
    host: str,
    port: int,
    identifier: Mapping[str, str | list[str]],
    contexts: Iterable[tuple[str, str]],
    *,
    model: str = "study",
    calling_aet: str = "PYNETDICOM",
    called_aet: str = "PACS",
) -> tuple[list[int], dict[str, tuple[str, bytes]]]:
    """C-GET with pynetdicom, accepting the storage sub-operations in ``contexts``
    ((SOP Class, transfer syntax) pairs, each on its own presentation context).

    Returns the C-GET response statuses and, per SOP Instance UID received, the
    transfer syntax and the data set bytes exactly as they arrived.
    """
    from pydicom.dataset import Dataset
    from pynetdicom import AE, _config, build_role, evt
    from pynetdicom.sop_class import (
        PatientRootQueryRetrieveInformationModelGet,
        StudyRootQueryRetrieveInformationModelGet,
    )

    information_model = (
        StudyRootQueryRetrieveInformationModelGet
        if model == "study"
        else PatientRootQueryRetrieveInformationModelGet
    )
    received: dict[str, tuple[str, bytes]] = {}

    def on_store(event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        data = bytes(event.request.DataSet.getvalue())
        received[uid] = (str(event.context.transfer_syntax), data)
        return 0x0000

    pairs = sorted(set(contexts))
    assert len(pairs) < 128, "too many presentation contexts for one association"
    ae = AE(calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    ae.add_requested_context(information_model)
    for sop_class, ts in pairs:
        ae.add_requested_context(sop_class, ts)
    roles = [build_role(sop_class, scp_role=True) for sop_class in sorted({p[0] for p in pairs})]
    query = Dataset()
    for keyword, value in identifier.items():
        setattr(query, keyword, value)
    previous = _config.STORE_RECV_CHUNKED_DATASET
    _config.STORE_RECV_CHUNKED_DATASET = False
    statuses: list[int] = []
    try:
        assoc = ae.associate(
            host,
            port,
            ae_title=called_aet,
            ext_neg=roles,
            evt_handlers=[(evt.EVT_C_STORE, on_store)],
        )
        assert assoc.is_established, f"association {calling_aet} → {called_aet} not accepted"
        for status, _ in assoc.send_c_get(query, information_model):
            if status is not None and "Status" in status:
                statuses.append(int(status.Status))
        assoc.release()
    finally:
        _config.STORE_RECV_CHUNKED_DATASET = previous
        ae.shutdown()
    return statuses, received


# ---------------------------------------------------------------- the server


def _clean_environ() -> dict[str, str]:
    """Our environment without PACS_* (a developer's settings must not leak in)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PACS_")}


def _children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (what ``pgrep -P`` prints), from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces.
        fields = text.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and fields[0] != "Z" and int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return sorted(found)


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its parent counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class PacsServer:
    """One ``pacs serve`` subprocess and its data directory.

    ``workdir`` holds ``data/`` (index, objects, spool), ``pacs.toml`` and
    ``server.log`` (appended to across restarts, each start marked). The ports
    stay the same across :meth:`restart`.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        workers: int = 1,
        ae_title: str = "PACS",
        env: Mapping[str, str] | None = None,
        settings: Mapping[str, Any] | None = None,
        aes: Iterable[RemoteAE | Mapping[str, Any]] = (),
        default_aes: bool = True,
        web: bool = True,
        dicom_port: int | None = None,
        samples: Path | None = None,
    ) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.config_path = workdir / "pacs.toml"
        self.log_path = workdir / "server.log"
        self.host = LOCALHOST
        self.ae_title = ae_title
        self.workers = workers
        self.web = web
        self.samples = samples
        self.dicom_port = dicom_port or free_port()
        self.http_port = free_port()
        self.env = dict(env or {})
        self.process: subprocess.Popen | None = None
        self.exit_codes: list[int] = []
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(_toml(settings or {}))
        enrol = [RemoteAE(t) for t in DEFAULT_AES] if default_aes else []
        extra = [ae if isinstance(ae, RemoteAE) else RemoteAE(**ae) for ae in aes]
        by_title = {ae.title: ae for ae in [*enrol, *extra]}
        for ae in by_title.values():
            self.enrol(ae)

    # ------------------------------------------------------------ CLI

    def environ(self) -> dict[str, str]:
        return {**_clean_environ(), **self.env}

    def cli(
        self, *args: str, timeout: float = 300.0, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python -m pacs ARGS --config … --data-dir …`` on this server's data."""
        command, *rest = args
        if command == "ae":
            # A click group: the common options belong to its sub-command.
            sub, *rest = rest
            argv = ["ae", sub, *self._common_options(), *rest]
        else:
            argv = [command, *self._common_options(), *rest]
        proc = subprocess.run(
            [sys.executable, "-m", "pacs", *argv],
            cwd=self.workdir,
            env=self.environ(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"pacs {' '.join(argv)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def _common_options(self) -> list[str]:
        return ["--config", str(self.config_path), "--data-dir", str(self.data_dir)]

    def enrol(self, ae: RemoteAE) -> None:
        """``pacs ae add`` in-process (a subprocess costs a second of imports each).

        A running server notices within its registry cache time (2 s); callers that
        enrol while it runs wait for that through :meth:`wait_until_accepted`.
        """
        from click.testing import CliRunner

        from pacs.cli import main

        unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("PACS_")}
        result = CliRunner(env={**unset, **self.env}).invoke(
            main,
            ["ae", "add", *self._common_options(), *ae.add_arguments()],
            catch_exceptions=False,
        )
        assert result.exit_code == 0, f"pacs ae add {ae.title} failed: {result.output}"

    def verify(self) -> subprocess.CompletedProcess[str]:
        """``pacs verify`` (checksums included) on this server's data."""
        return self.cli("verify")

    # ------------------------------------------------------------ process

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None, "server not started"
        return self.process.pid

    def start(self, timeout: float = SERVER_START_TIMEOUT) -> None:
        """Start ``pacs serve`` and return once a worker answers C-ECHO."""
        assert not self.running, "already running"
        argv = [
            sys.executable,
            "-m",
            "pacs",
            "serve",
            *self._common_options(),
            "--host",
            self.host,
            "--ae-title",
            self.ae_title,
            "--dicom-port",
            str(self.dicom_port),
            "--http-port",
            str(self.http_port),
            "--workers",
            str(self.workers),
        ]
        if not self.web:
            argv.append("--no-web")
        if self.samples is not None:
            argv += ["--samples", str(self.samples)]
        with self.log_path.open("a") as log:
            log.write(f"\n===== test harness: starting {' '.join(argv[2:])}\n")
            log.flush()
            self.process = subprocess.Popen(
                argv,
                cwd=self.workdir,
                env=self.environ(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group: kill9() takes the workers with it.
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        # No bare TCP probe of the DICOM port: pynetdicom keeps an association
        # thread for a connection that never sends A-ASSOCIATE-RQ until its ACSE
        # timeout, which would then hold up the shutdown. C-ECHO is the probe.
        self.wait_until_accepted(PROBE_AE, timeout)
        if self.web:
            remaining = max(1.0, deadline - time.monotonic())
            wait_for_port(
                self.host, self.http_port, remaining, process=self.process, log=self.log_path
            )

    def wait_until_accepted(self, calling_aet: str, timeout: float = 15.0) -> None:
        """Poll with C-ECHO until a worker accepts an association from ``calling_aet``.

        The supervisor listens before any worker accepts, so an open port proves
        nothing; an answered C-ECHO does.
        """
        deadline = time.monotonic() + max(timeout, 1.0)
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"pacs serve exited with {self.process.returncode}\n{self.log_tail()}"
                )
            if self.echo(calling_aet, timeout=10):
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no C-ECHO answer for {calling_aet} within {timeout:.0f} s\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def echo(self, calling_aet: str = PROBE_AE, *, timeout: float = 30.0) -> bool:
        """True when a C-ECHO from ``calling_aet`` succeeds."""
        result = echoscu(
            self.host,
            self.dicom_port,
            calling_aet=calling_aet,
            called_aet=self.ae_title,
            extra=["-to", "5", "-ta", "10", "-td", "10"],
            timeout=timeout,
        )
        return result.returncode == 0

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM the supervisor and wait for it; returns its exit code."""
        assert self.process is not None, "server not started"
        workers = _children(self.process.pid)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
                raise AssertionError(
                    f"pacs serve did not stop within {timeout} s of SIGTERM\n{self.log_tail()}"
                ) from None
        self._wait_workers_gone(workers)
        code = self.process.returncode
        self.exit_codes.append(code)
        return code

    def kill9(self) -> None:
        """SIGKILL the whole server (supervisor and workers) at once, like a power cut."""
        assert self.process is not None, "server not started"
        workers = _children(self.process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)
        self.exit_codes.append(self.process.returncode)
        self._wait_workers_gone(workers)

    def _wait_workers_gone(self, pids: Iterable[int], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        pids = list(pids)
        while any(_alive(p) for p in pids):
            if time.monotonic() > deadline:
                raise AssertionError(f"worker processes {pids} outlived the supervisor")
            time.sleep(0.05)

    def restart(self, timeout: float = SERVER_START_TIMEOUT) -> None:
        """Stop (if running) and start again on the same data directory and ports."""
        if self.running:
            self.stop()
        self.start(timeout)

    def worker_pids(self) -> list[int]:
        """The live worker processes (children of the supervisor)."""
        return _children(self.pid)

    # ------------------------------------------------------------ log and files

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_size(self) -> int:
        """A bookmark for :meth:`log_since`."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_since(self, bookmark: int) -> str:
        with self.log_path.open("rb") as fh:
            fh.seek(bookmark)
            return fh.read().decode("utf-8", "replace")

    def wait_for_log(self, pattern: str, *, since: int = 0, timeout: float = 15.0) -> str:
        """Poll the log (from bookmark ``since``) for a line matching regex ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log_since(since).splitlines():
                if regex.search(line):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no log line matching {pattern!r} within {timeout} s\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def log_tail(self, lines: int = 80) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    @property
    def objects_dir(self) -> Path:
        return self.data_dir / "objects"

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "tmp"

    def object_files(self) -> list[Path]:
        """Every file under the object store, staging areas included."""
        root = self.objects_dir
        return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []

    def spool_files(self) -> list[Path]:
        """Every file in the temporary spool (``data/tmp``, all workers)."""
        root = self.spool_dir
        return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _toml(settings: Mapping[str, Any]) -> str:
    lines = ["[pacs]"]
    for key, value in settings.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int | float):
            text = str(value)
        else:
            text = '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


#: Servers whose factory is still open; their logs go into failing reports.
_LIVE: list[PacsServer] = []


class ServerFactory:
    """Creates started servers and stops them all on :meth:`close`."""

    def __init__(self, make_dir: Callable[[], Path]) -> None:
        self._make_dir = make_dir
        self.servers: list[PacsServer] = []

    def __call__(self, *, start: bool = True, **kwargs: Any) -> PacsServer:
        server = PacsServer(self._make_dir(), **kwargs)
        self.servers.append(server)
        _LIVE.append(server)
        if start:
            server.start()
        return server

    def close(self) -> None:
        errors = []
        for server in self.servers:
            try:
                if server.running:
                    server.stop()
            except AssertionError as exc:
                errors.append(str(exc))
            finally:
                if server in _LIVE:
                    _LIVE.remove(server)
        if errors:
            raise AssertionError("\n".join(errors))


@pytest.fixture
def pacs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Factory of ``pacs serve`` processes stopped (SIGTERM) after the test."""
    factory = ServerFactory(lambda: tmp_path_factory.mktemp("pacs"))
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def module_pacs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Like ``pacs_server``, but the servers live for the whole test module."""
    factory = ServerFactory(lambda: tmp_path_factory.mktemp("pacs"))
    yield factory
    factory.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for server in _LIVE:
            report.sections.append(
                (f"pacs server log ({server.workdir.name}, last 80 lines)", server.log_tail())
            )
    return report


# ---------------------------------------------------------------- helper fixtures


@pytest.fixture(scope="session")
def read_dataset_bytes() -> Callable[[Path | bytes], bytes]:
    """:func:`dataset_bytes`: the bytes after the File Meta of a Part 10 file."""
    return dataset_bytes


@pytest.fixture(scope="session")
def raw_store() -> Callable[..., list[RawStoreResult]]:
    """:func:`send_raw`: C-STORE files' data set bytes unchanged, through pynetdicom."""
    return send_raw


@pytest.fixture(scope="session")
def raw_get() -> Callable[..., tuple[list[int], dict[str, tuple[str, bytes]]]]:
    """:func:`send_raw_get`: C-GET through pynetdicom, keeping the received bytes."""
    return send_raw_get


@pytest.fixture(scope="session")
def storescu_results() -> Callable[[str], dict[str, str]]:
    """:func:`storescu_statuses`: parse ``storescu -v`` output into path → status."""
    return storescu_statuses


@pytest.fixture(scope="session")
def make_part10() -> Callable[..., Path]:
    """:func:`write_part10`: wrap raw data set bytes in a File Meta of our choosing."""
    return write_part10


@pytest.fixture(scope="session")
def sample_dicom() -> Path:
    """The project's sample studies (``sample_dicom/``)."""
    return REPO_ROOT / "sample_dicom"
