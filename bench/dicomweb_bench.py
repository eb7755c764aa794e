"""DICOMweb latency and throughput: pacs against Orthanc's DICOMweb plugin, in one run.

What it measures (client side, keep-alive HTTP on loopback, medians of repeats):

- QIDO-RS study searches on an index of ``--studies`` studies (target < 50 ms);
- WADO-RS metadata of one ``--slices``-instance series and its study (target < 300 ms);
- frames per second fetching every frame of that series the way OHIF does
  (``multipart/related; type=application/octet-stream; transfer-syntax=*``),
  with ``--clients`` connections at once (a browser uses about six) and with one
  (target ≥ 300 frames/s).

Setup, reused between runs under ``--work`` (delete it to start over):

- the shared synthetic dataset (``/work/shared/bench/make_dataset.py``): one CT
  series of ``--slices`` 512×512 slices, plus ``--orthanc-studies`` tiny
  one-instance studies for Orthanc's index;
- pacs: the CT series imported, the index grown with ``bench/populate_index.py``
  (rows only, no files), the series metadata precomputed (as the worker's
  ``MetadataBuilder`` does when a series settles), a partner token;
- Orthanc 1.10 + its DICOMweb plugin on free loopback ports, fed by DCMTK
  ``storescu`` (TCP_NODELAY=1): the CT series and the tiny studies.

pacs answers with bearer-token authentication on every request; Orthanc runs
without authentication. Both hold the same studies and run on the same machine
in the same run, one after the other, idle except for the measured requests.

    python bench/dicomweb_bench.py                       # 100 000 studies, 1 000 slices
    python bench/dicomweb_bench.py --studies 20000 --orthanc-studies 20000 --repeats 10
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import importlib.util
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

REPO = Path(__file__).resolve().parents[1]
MAKE_DATASET = Path("/work/shared/bench/make_dataset.py")
ORTHANC = Path("/usr/sbin/Orthanc")
ORTHANC_DICOMWEB = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
STORESCU = Path("/usr/bin/storescu")
HOST = "127.0.0.1"
FRAME_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"
DICOM_JSON = "application/dicom+json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args[0]} exited with {process.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listened on port {port} within {timeout} s")


def run(argv: Sequence[str], **kwargs: object) -> None:
    print("  $", " ".join(str(a) for a in argv), flush=True)
    subprocess.run([str(a) for a in argv], check=True, **kwargs)  # type: ignore[call-overload]


def step(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# ---------------------------------------------------------------- setup


def dataset(work: Path, slices: int) -> Path:
    """The shared synthetic CT series of ``slices`` 512×512 slices."""
    out = work / f"ct-{slices}"
    if (out / "manifest.json").exists():
        return out
    step(f"generating a {slices}-slice CT series (make_dataset.py)")
    shutil.rmtree(out, ignore_errors=True)
    run(
        [
            sys.executable,
            MAKE_DATASET,
            "--out",
            out,
            "--studies",
            "1",
            "--slices",
            str(slices),
            "--mr-slices",
            "0",
            "--cr-images",
            "0",
        ]
    )
    return out


def _populate_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "populate_index", REPO / "bench" / "populate_index.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_files(work: Path, count: int) -> Path:
    """``count`` one-instance studies as files, with exactly the attributes that
    ``populate_index.py`` writes into pacs' index (same seed): both servers then
    hold the same studies."""
    out = work / f"tiny-{count}"
    done = out / ".complete"
    if done.exists():
        return out
    step(f"writing {count} one-instance studies for Orthanc (same data as populate_index.py)")
    populate = _populate_module()
    rng = random.Random(7)
    template = Dataset()
    template.Rows = template.Columns = 16
    template.BitsAllocated = template.BitsStored = 16
    template.HighBit = 15
    template.PixelRepresentation = 0
    template.SamplesPerPixel = 1
    template.PhotometricInterpretation = "MONOCHROME2"
    template.PixelData = bytes(16 * 16 * 2)
    for n in range(count):
        h = populate.header(n, rng)
        ds = Dataset()
        ds.update(template)
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.SOPClassUID = h.sop_class_uid
        ds.SOPInstanceUID = h.sop_instance_uid
        ds.StudyInstanceUID = h.study_instance_uid
        ds.SeriesInstanceUID = h.series_instance_uid
        ds.PatientID = h.patient_id
        ds.PatientName = h.patient_name
        ds.PatientBirthDate = h.patient_birth_date
        ds.PatientSex = h.patient_sex
        ds.StudyDate = ds.SeriesDate = h.study_date
        ds.StudyTime = h.study_time
        ds.AccessionNumber = h.accession_number
        ds.StudyID = h.study_id
        ds.StudyDescription = h.study_description
        ds.ReferringPhysicianName = h.referring_physician
        ds.InstitutionName = h.institution
        ds.Modality = h.modality
        ds.SeriesNumber = 1
        ds.InstanceNumber = 1
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = h.sop_class_uid
        meta.MediaStorageSOPInstanceUID = h.sop_instance_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        folder = out / f"{n // 10_000:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        ds.save_as(folder / f"{n:07d}.dcm", enforce_file_format=True)
    done.write_text("ok\n")
    return out


def ct_dir(ds: Path) -> Path:
    return next(p for p in sorted(ds.iterdir()) if p.name.endswith("_ct"))


def prepare_pacs(work: Path, ds: Path, studies: int) -> tuple[Path, str]:
    """The pacs data directory (CT imported, index grown, metadata built) and a token."""
    from pacs.archive import Source
    from pacs.bootstrap import build_archive
    from pacs.config import Settings
    from pacs.storage.dicomweb_models import TokenStore
    from pacs.viewer.dicomweb.metadata import SeriesMetadataService
    from pacs.viewer.dicomweb.tokens import create_token

    data = work / f"pacs-{ds.name}-{studies}"
    ready = data / ".bench-ready"
    archive = build_archive(Settings(data_dir=data))
    if not ready.exists():
        step(f"pacs: importing {ct_dir(ds)}")
        for path in sorted(ct_dir(ds).glob("*.dcm")):
            archive.store_file(path, source=Source("import"))
        step(f"pacs: growing the index to {studies} studies (bench/populate_index.py)")
        run(
            [
                sys.executable,
                REPO / "bench" / "populate_index.py",
                "--data-dir",
                data,
                "--studies",
                str(studies),
            ],
            cwd=REPO,
        )
        ready.write_text("ok\n")
    service = SeriesMetadataService(archive)
    series_uid = _ct_series_uid(json.loads((ds / "manifest.json").read_text()))
    (state,) = service.states(series_uid=series_uid)
    started = time.perf_counter()
    service.build_now(state)
    step(
        f"pacs: series metadata built in {time.perf_counter() - started:.2f} s "
        f"({state.num_instances} instances; done once per series when it settles)"
    )
    token = create_token(
        TokenStore(archive.index.engine), f"bench-{time.time_ns()}", all_studies=True
    ).secret
    archive.index.engine.dispose()
    return data, token


def _ct_series_uid(manifest: dict) -> str:
    for study in manifest["studies"]:
        if study["kind"] == "ct":
            return str(study["series"][0]["series_uid"])
    raise SystemExit("no CT series in the dataset manifest")


@contextmanager
def pacs_server(data: Path, workers: int) -> Iterator[str]:
    # Rendered images kept on disk by an earlier run would make "first" renders warm.
    shutil.rmtree(data / "cache" / "rendered", ignore_errors=True)
    http, dicom = free_port(), free_port()
    log = (data / "bench-server.log").open("ab")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pacs",
            "serve",
            "--data-dir",
            str(data),
            "--host",
            HOST,
            "--http-port",
            str(http),
            "--dicom-port",
            str(dicom),
            "--workers",
            str(workers),
        ],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("PACS_")},
    )
    try:
        wait_for_port(http, process)
        base = f"http://{HOST}:{http}"
        _wait_http(base + "/healthz")
        yield base
    finally:
        process.terminate()
        process.wait(60)
        log.close()


def _wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=5).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer")


@contextmanager
def orthanc_server(work: Path, ds: Path, tiny: Path | None, count: int) -> Iterator[str]:
    home = work / f"orthanc-{ds.name}-{count}"
    home.mkdir(parents=True, exist_ok=True)
    http, dicom = free_port(), free_port()
    config = {
        "Name": "dicomweb-bench",
        "StorageDirectory": str(home / "storage"),
        "IndexDirectory": str(home / "index"),
        "HttpPort": http,
        "DicomPort": dicom,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "StorageCompression": False,
        # Only for loading the bench data faster; reads are what we measure.
        "SyncStorageArea": False,
        # Orthanc gzips answers by default; a 512 KB frame then costs ~40 ms of
        # compression. Off, as an imaging deployment would set it: the fair anchor.
        "HttpCompressionEnabled": False,
        "Plugins": [str(ORTHANC_DICOMWEB)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
    }
    (home / "config.json").write_text(json.dumps(config, indent=2))
    log = (home / "orthanc.log").open("ab")
    env = dict(os.environ, TCP_NODELAY="1")
    process = subprocess.Popen(
        [str(ORTHANC), str(home / "config.json")],
        cwd=home,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        wait_for_port(http, process)
        base = f"http://{HOST}:{http}"
        _wait_http(base + "/system")
        stats = requests.get(base + "/statistics", timeout=30).json()
        wanted = len(list(ct_dir(ds).glob("*.dcm"))) + count
        if stats["CountInstances"] < wanted:
            step(f"Orthanc: loading {wanted - stats['CountInstances']} instances with storescu")
            _storescu(dicom, [ct_dir(ds)], env)
            if tiny is not None:
                groups = sorted(p for p in tiny.iterdir() if p.is_dir())
                halves = [groups[0::2], groups[1::2]]
                threads = [
                    threading.Thread(target=_storescu, args=(dicom, h, env)) for h in halves if h
                ]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
        yield base
    finally:
        process.terminate()
        process.wait(60)
        log.close()


def _storescu(port: int, folders: Sequence[Path], env: dict[str, str]) -> None:
    for folder in folders:
        subprocess.run(
            [str(STORESCU), "-aec", "ORTHANC", "+sd", "+r", HOST, str(port), str(folder)],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


# ---------------------------------------------------------------- measuring


@dataclass
class Timing:
    samples: list[float] = field(default_factory=list)
    results: int | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def p95(self) -> float:
        if not self.samples:
            return float("nan")
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


class Client:
    """One keep-alive HTTP/1.1 connection (http.client: requests adds milliseconds per
    call against some servers, which would measure the client, not the server)."""

    def __init__(self, root: str, headers: dict[str, str]) -> None:
        parts = urllib.parse.urlsplit(root)
        self.host, self.port = parts.hostname or HOST, parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.headers = headers
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=300)

    def get(self, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        """Status and body (gunzipped when the server compressed it, as a browser does)."""
        all_headers = {**self.headers, "Accept-Encoding": "gzip", **headers}
        for attempt in range(2):
            try:
                self.conn.request("GET", self.prefix + "/" + path.lstrip("/"), headers=all_headers)
                response = self.conn.getresponse()
                body = response.read()
                break
            except (http.client.HTTPException, ConnectionError):
                # The server closed an idle keep-alive connection: reconnect once.
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=300)
                if attempt:
                    raise
        if response.getheader("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return response.status, body


@dataclass
class Target:
    name: str
    root: str  # DICOMweb root URL
    headers: dict[str, str]

    def client(self) -> Client:
        return Client(self.root, self.headers)


def timed_get(
    client: Client, path: str, headers: dict[str, str], repeats: int, warmup: int = 2
) -> tuple[Timing, bytes]:
    timing = Timing()
    body = b""
    for i in range(warmup + repeats):
        started = time.perf_counter()
        status, body = client.get(path, headers)
        elapsed = (time.perf_counter() - started) * 1000
        if status != 200:
            raise SystemExit(f"GET {path} → {status}: {body[:300]!r}")
        if i >= warmup:
            timing.samples.append(elapsed)
    return timing, body


def qido_queries(ohif_like: bool) -> list[tuple[str, str]]:
    return [
        ("studies, newest first (limit 25)", "studies?limit=25"),
        (
            "OHIF study list (limit 101, includefield)",
            "studies?limit=101&offset=0&fuzzymatching=false&includefield=00081030%2C00080060",
        ),
        ("PatientName=nguyen* (limit 25)", "studies?PatientName=nguyen*&limit=25"),
        (
            "PatientName 'nguyen thi', fuzzy (limit 25)",
            "studies?PatientName=nguyen%20thi&fuzzymatching=true&limit=25",
        ),
        ("StudyDate one month (limit 25)", "studies?StudyDate=20200101-20200131&limit=25"),
        ("ModalitiesInStudy=MR (limit 25)", "studies?ModalitiesInStudy=MR&limit=25"),
        ("page 50 (offset 1000, limit 20)", "studies?limit=20&offset=1000"),
    ]


def measure_qido(target: Target, repeats: int) -> dict[str, Timing]:
    client = target.client()
    out = {}
    for label, query in qido_queries(True):
        timing, body = timed_get(client, query, {"Accept": DICOM_JSON}, repeats)
        timing.results = len(json.loads(body)) if body else 0
        out[label] = timing
    return out


def find_series(target: Target, study_uid: str) -> tuple[str, list[str]]:
    client = target.client()
    _, body = client.get(f"studies/{study_uid}/series", {"Accept": DICOM_JSON})
    series_uid = json.loads(body)[0]["0020000E"]["Value"][0]
    _, body = client.get(
        f"studies/{study_uid}/series/{series_uid}/instances?limit=100000", {"Accept": DICOM_JSON}
    )
    return series_uid, [i["00080018"]["Value"][0] for i in json.loads(body)]


def measure_metadata(
    target: Target, study_uid: str, series_uid: str, repeats: int
) -> dict[str, Timing]:
    client = target.client()
    headers = {"Accept": DICOM_JSON}
    series_path = f"studies/{study_uid}/series/{series_uid}/metadata"
    series_timing, body = timed_get(client, series_path, headers, repeats, warmup=1)
    series_timing.results = len(json.loads(body))
    study_timing, body = timed_get(client, f"studies/{study_uid}/metadata", headers, repeats, 1)
    study_timing.results = len(json.loads(body))
    return {"series metadata": series_timing, "study metadata": study_timing}


def measure_fetch(
    target: Target,
    study_uid: str,
    series_uid: str,
    sops: list[str],
    clients: int,
    resource: str = "frames/1",
    accept: str = FRAME_ACCEPT,
) -> tuple[float, Timing]:
    """Images per second fetching ``resource`` of every instance with ``clients``
    connections, and the time of each request."""
    local = threading.local()
    timing = Timing()

    def fetch(sop: str) -> int:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = target.client()
        path = f"studies/{study_uid}/series/{series_uid}/instances/{sop}/{resource}"
        started = time.perf_counter()
        status, body = client.get(path, {"Accept": accept})
        timing.samples.append((time.perf_counter() - started) * 1000)
        if status != 200:
            raise SystemExit(f"GET {path} → {status}: {body[:200]!r}")
        return len(body)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        total = sum(pool.map(fetch, sops))
    elapsed = time.perf_counter() - started
    assert total > 0
    return len(sops) / elapsed, timing


def measure_frames(
    target: Target, study_uid: str, series_uid: str, sops: list[str], clients: int
) -> float:
    """Frames per second fetching frame 1 of every instance with ``clients`` connections."""
    return measure_fetch(target, study_uid, series_uid, sops, clients)[0]


def measure_rendered(
    target: Target, study_uid: str, series_uid: str, sops: list[str]
) -> dict[str, Timing | float]:
    """Rendered JPEGs (WADO-RS /rendered, default window) of ``sops``: a first pass (no
    render cached anywhere), then again with 1 and with 4 connections."""
    rendered = {"resource": "rendered", "accept": "image/jpeg"}
    _rate, first = measure_fetch(target, study_uid, series_uid, sops, 1, **rendered)
    serial, again = measure_fetch(target, study_uid, series_uid, sops, 1, **rendered)
    parallel, _timing = measure_fetch(target, study_uid, series_uid, sops, 4, **rendered)
    return {
        "rendered first": first,
        "rendered again": again,
        "rendered/s 1": serial,
        "rendered/s 4": parallel,
    }


# ---------------------------------------------------------------- report


def fmt_ms(t: Timing | None) -> str:
    if t is None:
        return "-"
    return f"{t.median:.1f} (p95 {t.p95:.1f})"


Row = tuple[str, str, "Timing | float | None", "Timing | float | None", str]


def _cell(value: Timing | float | None, unit: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f} {unit}"
    results = f", {value.results} results" if value.results is not None else ""
    return f"{fmt_ms(value)} ms{results}"


def _meets(value: Timing | float | None, target: str) -> str:
    if not target or value is None:
        return "-"
    kind, rest = target.split(" ", 1)
    limit = float(rest.split()[0])
    number = value.median if isinstance(value, Timing) else value
    ok = number < limit if kind == "<" else number >= limit
    return "yes" if ok else "NO"


def report(rows: list[Row]) -> None:
    """A Markdown table: measurement, pacs, Orthanc, target, whether pacs meets it."""
    header = ("measurement", "pacs", "Orthanc + DICOMweb plugin", "target", "pacs meets")
    lines = [header]
    for label, unit, ours, theirs, target in rows:
        lines.append((label, _cell(ours, unit), _cell(theirs, unit), target, _meets(ours, target)))
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    for n, row in enumerate(lines):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/dicomweb-bench"))
    parser.add_argument("--studies", type=int, default=100_000, help="studies in pacs' index")
    parser.add_argument(
        "--orthanc-studies",
        type=int,
        default=None,
        help="tiny studies for Orthanc (default: --studies)",
    )
    parser.add_argument("--slices", type=int, default=1000, help="instances in the big series")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--clients", type=int, default=6, help="parallel connections for frames")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--skip-orthanc", action="store_true")
    args = parser.parse_args()
    tiny = args.studies if args.orthanc_studies is None else args.orthanc_studies
    args.work.mkdir(parents=True, exist_ok=True)

    ds = dataset(args.work, args.slices)
    data, token = prepare_pacs(args.work, ds, args.studies)
    manifest = json.loads((ds / "manifest.json").read_text())
    study_uid = next(s["study_uid"] for s in manifest["studies"] if s["kind"] == "ct")

    results: dict[str, dict[str, Timing | float]] = {}
    with pacs_server(data, args.workers) as pacs_base:
        target = Target("pacs", pacs_base + "/dicomweb", {"Authorization": f"Bearer {token}"})
        results["pacs"] = collect(target, study_uid, args)
    if not args.skip_orthanc:
        tiny_dir = tiny_files(args.work, tiny) if tiny else None
        with orthanc_server(args.work, ds, tiny_dir, tiny) as orthanc_base:
            target = Target("orthanc", orthanc_base + "/dicom-web", {})
            results["orthanc"] = collect(target, study_uid, args)

    ours, theirs = results["pacs"], results.get("orthanc", {})
    rows: list[Row] = []
    for label, _ in qido_queries(True):
        rows.append((f"QIDO {label}", "", ours[label], theirs.get(label), "< 50 ms"))
    for label in ("series metadata", "study metadata"):
        rows.append(
            (f"{label} ({args.slices} instances)", "", ours[label], theirs.get(label), "< 300 ms")
        )
    rows.append(
        (
            f"frames/s, {args.clients} connections",
            "frames/s",
            ours["frames_parallel"],
            theirs.get("frames_parallel"),
            ">= 300 frames/s",
        )
    )
    rows.append(
        (
            "frames/s, 1 connection",
            "frames/s",
            ours["frames_serial"],
            theirs.get("frames_serial"),
            "",
        )
    )
    rows.append(
        (
            "rendered JPEG, first time (100 slices)",
            "",
            ours.get("rendered first"),
            theirs.get("rendered first"),
            "",
        )
    )
    rows.append(
        (
            "rendered JPEG, again (100 slices)",
            "",
            ours.get("rendered again"),
            theirs.get("rendered again"),
            "",
        )
    )
    for clients in (1, 4):
        rows.append(
            (
                f"rendered JPEG/s, {clients} connection(s)",
                "images/s",
                ours.get(f"rendered/s {clients}"),
                theirs.get(f"rendered/s {clients}"),
                "",
            )
        )
    print()
    print(
        f"DICOMweb on {socket.gethostname()} ({os.cpu_count()} CPUs): {args.studies} + 1 "
        f"studies in pacs, {tiny} + 1 in Orthanc; big series {args.slices} × 512×512 "
        f"CT; pacs {args.workers} worker(s), bearer token; medians of {args.repeats} (ms)"
    )
    report(rows)


def collect(target: Target, study_uid: str, args: argparse.Namespace) -> dict[str, Timing | float]:
    step(f"{target.name}: QIDO")
    out: dict[str, Timing | float] = dict(measure_qido(target, args.repeats))
    series_uid, sops = find_series(target, study_uid)
    step(f"{target.name}: metadata of {len(sops)} instances")
    out.update(measure_metadata(target, study_uid, series_uid, max(5, args.repeats // 2)))
    step(f"{target.name}: frames")
    measure_frames(target, study_uid, series_uid, sops[:50], args.clients)  # warm up
    out["frames_parallel"] = max(
        measure_frames(target, study_uid, series_uid, sops, args.clients) for _ in range(2)
    )
    out["frames_serial"] = measure_frames(target, study_uid, series_uid, sops[:300], 1)
    step(f"{target.name}: rendered JPEG")
    try:
        out.update(measure_rendered(target, study_uid, series_uid, sops[-100:]))
    except SystemExit as exc:  # a server without /rendered: its cells stay empty
        print(f"{target.name}: no rendered images ({exc})", flush=True)
    return out


if __name__ == "__main__":
    main()
