"""Run DCMTK's command-line tools against a server under test.

Every tool is run by absolute path (``/usr/bin/storescu``…): pynetdicom installs
console scripts with the same names on PATH, and those behave differently.
``TCP_NODELAY=1`` is set in the tools' environment (DCMTK otherwise leaves
Nagle's algorithm on, which adds ~40 ms stalls per small PDU on loopback).
Each wrapper returns the exit status with stdout and stderr merged, and raises
:class:`DcmtkTimeout` when the tool does not finish in time.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import pydicom
from pydicom.dataset import Dataset

from .net import LOCALHOST, free_port, stop_process, wait_for_port
from .policy import require_tool

DCMTK_BIN = Path("/usr/bin")
STORESCU = DCMTK_BIN / "storescu"
FINDSCU = DCMTK_BIN / "findscu"
MOVESCU = DCMTK_BIN / "movescu"
GETSCU = DCMTK_BIN / "getscu"
ECHOSCU = DCMTK_BIN / "echoscu"
STORESCP = DCMTK_BIN / "storescp"

#: findscu/movescu/getscu information model flags
MODELS = {"study": "-S", "patient": "-P", "worklist": "-W"}

Keys = Mapping[str, str] | Sequence[str]


class ToolResult(NamedTuple):
    """Exit status and merged stdout+stderr of one tool run (unpacks as a pair)."""

    returncode: int
    output: str


class FindResult(NamedTuple):
    returncode: int
    output: str
    #: the C-FIND responses' identifiers, in the order they arrived
    responses: list[Dataset]


class GetResult(NamedTuple):
    returncode: int
    output: str
    #: the files the C-GET wrote into the output directory, sorted by name
    files: list[Path]


class DcmtkTimeout(AssertionError):
    """A DCMTK tool ran past its timeout (it has been killed)."""


def dcmtk_env() -> dict[str, str]:
    """The environment for DCMTK tools: ours plus ``TCP_NODELAY=1``."""
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    return env


def run_dcmtk(tool: Path, args: Sequence[str], *, timeout: float = 60.0) -> ToolResult:
    """Run DCMTK ``tool`` (absolute path) with ``args``; skip/fail if it is not installed."""
    exe = require_tool(tool)
    try:
        proc = subprocess.run(
            [str(exe), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dcmtk_env(),
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        output = (exc.output or b"").decode("utf-8", "replace")
        raise DcmtkTimeout(
            f"{exe.name} {' '.join(args)} did not finish within {timeout} s\n{output}"
        ) from None
    return ToolResult(proc.returncode, proc.stdout.decode("utf-8", "replace"))


def key_args(keys: Keys, level: str | None = None) -> list[str]:
    """``-k`` options for a query: a mapping ``{"PatientName": "NGUYEN*"}`` or
    ready-made ``"Keyword=value"`` strings; ``level`` adds QueryRetrieveLevel."""
    items = [f"{k}={v}" for k, v in keys.items()] if isinstance(keys, Mapping) else list(keys)
    if level is not None and not any(i.startswith("QueryRetrieveLevel") for i in items):
        items.insert(0, f"QueryRetrieveLevel={level}")
    out: list[str] = []
    for item in items:
        out += ["-k", item]
    return out


def _assoc(calling_aet: str, called_aet: str) -> list[str]:
    return ["-aet", calling_aet, "-aec", called_aet]


def echoscu(
    host: str,
    port: int,
    *,
    calling_aet: str = "ECHOSCU",
    called_aet: str = "PACS",
    extra: Sequence[str] = (),
    timeout: float = 30.0,
) -> ToolResult:
    """C-ECHO (verification)."""
    args = [*_assoc(calling_aet, called_aet), *extra, host, str(port)]
    return run_dcmtk(ECHOSCU, args, timeout=timeout)


def storescu(
    host: str,
    port: int,
    files: Iterable[Path | str],
    *,
    calling_aet: str = "STORESCU",
    called_aet: str = "PACS",
    extra: Sequence[str] = (),
    timeout: float = 120.0,
) -> ToolResult:
    """C-STORE ``files`` in one association (add ``+sd``/``+r`` in ``extra`` for folders)."""
    args = [*_assoc(calling_aet, called_aet), *extra, host, str(port), *map(str, files)]
    return run_dcmtk(STORESCU, args, timeout=timeout)


def findscu(
    host: str,
    port: int,
    keys: Keys,
    *,
    level: str | None = "STUDY",
    model: str = "study",
    calling_aet: str = "FINDSCU",
    called_aet: str = "PACS",
    extra: Sequence[str] = (),
    timeout: float = 60.0,
) -> FindResult:
    """C-FIND with ``keys``; the responses are parsed from files DCMTK extracts (``-X``).

    Give keys you want returned with an empty value (``{"PatientName": ""}``).
    ``model`` is ``study``, ``patient`` or ``worklist`` (then pass ``level=None``).
    """
    with tempfile.TemporaryDirectory(prefix="findscu-") as out:
        args = [
            *_assoc(calling_aet, called_aet),
            MODELS[model],
            "-X",
            "-od",
            out,
            *key_args(keys, level),
            *extra,
            host,
            str(port),
        ]
        result = run_dcmtk(FINDSCU, args, timeout=timeout)
        responses = [pydicom.dcmread(p, force=True) for p in sorted(Path(out).glob("rsp*.dcm"))]
    return FindResult(result.returncode, result.output, responses)


def movescu(
    host: str,
    port: int,
    keys: Keys,
    destination: str,
    *,
    level: str = "STUDY",
    model: str = "study",
    calling_aet: str = "MOVESCU",
    called_aet: str = "PACS",
    extra: Sequence[str] = (),
    timeout: float = 120.0,
) -> ToolResult:
    """C-MOVE what ``keys`` select to the AE titled ``destination``."""
    args = [
        *_assoc(calling_aet, called_aet),
        "-aem",
        destination,
        MODELS[model],
        *key_args(keys, level),
        *extra,
        host,
        str(port),
    ]
    return run_dcmtk(MOVESCU, args, timeout=timeout)


def getscu(
    host: str,
    port: int,
    keys: Keys,
    output_dir: Path,
    *,
    level: str = "STUDY",
    model: str = "study",
    calling_aet: str = "GETSCU",
    called_aet: str = "PACS",
    extra: Sequence[str] = (),
    timeout: float = 120.0,
) -> GetResult:
    """C-GET what ``keys`` select into ``output_dir`` (created if missing)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    args = [
        *_assoc(calling_aet, called_aet),
        MODELS[model],
        "-od",
        str(output_dir),
        *key_args(keys, level),
        *extra,
        host,
        str(port),
    ]
    result = run_dcmtk(GETSCU, args, timeout=timeout)
    files = sorted(p for p in output_dir.iterdir() if p.is_file())
    return GetResult(result.returncode, result.output, files)


class StoreSCPEndpoint(NamedTuple):
    """A running ``storescp``: unpacks as ``(ae, port, directory)``."""

    ae: str
    port: int
    directory: Path

    def files(self) -> list[Path]:
        """The files received so far, sorted by name."""
        return sorted(p for p in self.directory.iterdir() if p.is_file())

    def wait_for_files(self, count: int, timeout: float = 30.0) -> list[Path]:
        """Poll until at least ``count`` files arrived; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            files = self.files()
            if len(files) >= count or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        assert len(files) >= count, f"storescp received {len(files)} of {count} files"
        return files


@contextmanager
def StoreSCP(
    directory: Path,
    *,
    ae_title: str = "STORESCP",
    port: int | None = None,
    extra: Sequence[str] = (),
    log: Path | None = None,
    startup_timeout: float = 15.0,
) -> Iterator[StoreSCPEndpoint]:
    """Run DCMTK ``storescp`` on a free loopback port, writing what it receives to ``directory``.

    Accepts every transfer syntax it knows (``+xa``). Yields once the port
    listens; terminates the process on exit. Its log goes to ``log`` (default:
    ``<directory>.storescp.log`` next to the output folder, so it never shows up
    among the received files).
    """
    exe = require_tool(STORESCP)
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = log or directory.with_name(directory.name + ".storescp.log")
    args = [str(exe), "--aetitle", ae_title, "+xa", "-od", str(directory), *extra, str(port)]
    with log.open("ab") as log_fh:
        process = subprocess.Popen(
            args,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dcmtk_env(),
        )
    try:
        wait_for_port(LOCALHOST, port, startup_timeout, process=process, log=log)
        yield StoreSCPEndpoint(ae_title, port, directory)
    finally:
        stop_process(process)
