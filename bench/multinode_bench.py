"""Ingest through one pacs node versus two, on PostgreSQL + S3 (moto), and print a table.

Each configuration gets a fresh database (a throwaway PostgreSQL cluster, as the
tests use) and a fresh bucket on a moto S3 server, then ``--senders`` DCMTK
``storescu`` processes send the same number of new instances, split evenly over
the nodes. A reference row runs one node on the embedded SQLite + filesystem.

    python bench/multinode_bench.py                      # 250 instances of /tmp/ds1 (or samples)
    python bench/multinode_bench.py --instances 500 --senders 4 --workers 2 --repeats 3

Every node is a real ``pacs serve`` (``--workers`` processes each). moto is one
Python process holding everything in memory: on a small machine it is often the
bottleneck, so read the two-node row as "what a second node adds here", not as
what MinIO on real disks would do.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support import PostgresCluster, free_port, moto_server, unique_bucket  # noqa: E402
from support.dcmtk import ECHOSCU, STORESCU, dcmtk_env  # noqa: E402

BENCH_CT = Path("/tmp/ds1/s01_ct")
SAMPLE_CT = REPO / "sample_dicom" / "ct_head"


@dataclass
class Run:
    label: str
    instances: int
    bytes: int
    seconds: float


@dataclass
class Node:
    process: subprocess.Popen[bytes]
    port: int
    workdir: Path


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PACS_")}


def _toml(values: dict[str, object]) -> str:
    lines = ["[pacs]"]
    for key, value in values.items():
        text = str(value).lower() if isinstance(value, bool) else repr(value).replace("'", '"')
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


def pacs(workdir: Path, *args: str) -> None:
    # Groups (ae, db) take the options after their sub-command.
    group, sub, *rest = args
    options = ["--config", str(workdir / "pacs.toml"), "--data-dir", str(workdir / "data")]
    argv = [group, sub, *options, *rest]
    subprocess.run(
        [sys.executable, "-m", "pacs", *argv], env=_env(), check=True, capture_output=True
    )


def start_node(workdir: Path, settings: dict[str, object], workers: int) -> Node:
    workdir.mkdir(parents=True)
    (workdir / "pacs.toml").write_text(_toml(settings))
    pacs(workdir, "ae", "add", "STORESCU", "127.0.0.1", "104")
    pacs(workdir, "ae", "add", "ECHOSCU", "127.0.0.1", "104")
    port = free_port()
    log = (workdir / "server.log").open("ab")
    serve = ["serve", "--config", str(workdir / "pacs.toml"), "--data-dir", str(workdir / "data")]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pacs",
            *serve,
            "--host",
            "127.0.0.1",
            "--dicom-port",
            str(port),
            "--workers",
            str(workers),
            "--no-web",
        ],
        env={**_env(), "PACS_LOG_LEVEL": "WARNING"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        echo = subprocess.run(
            [str(ECHOSCU), "-aet", "ECHOSCU", "-aec", "PACS", "127.0.0.1", str(port)],
            env=dcmtk_env(),
            capture_output=True,
            check=False,
        )
        if echo.returncode == 0:
            return Node(process, port, workdir)
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError((workdir / "server.log").read_text()[-3000:])
        time.sleep(0.2)


def stop_node(node: Node) -> None:
    node.process.terminate()
    node.process.wait(60)


def make_instances(count: int, out: Path) -> tuple[list[Path], int]:
    """``count`` new instances (new UIDs) of one study, from the bench CT or the samples."""
    sources = sorted(BENCH_CT.glob("*.dcm")) or sorted(SAMPLE_CT.glob("*.dcm"))
    out.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    files, size = [], 0
    for n in range(count):
        ds = pydicom.dcmread(sources[n % len(sources)])
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        path = out / f"{n:05d}.dcm"
        ds.save_as(path)
        files.append(path)
        size += path.stat().st_size
    return files, size


def send(nodes: list[Node], files: list[Path], senders: int) -> float:
    """Seconds for ``senders`` storescu processes to store ``files`` (split over nodes)."""
    syntax = str(pydicom.dcmread(files[0], stop_before_pixels=True).file_meta.TransferSyntaxUID)
    # storescu proposes uncompressed syntaxes unless told: -xt for JPEG-LS (the samples).
    propose = ["-xt"] if syntax == "1.2.840.10008.1.2.4.80" else []
    started = time.perf_counter()
    procs = []
    for i in range(senders):
        port = str(nodes[i % len(nodes)].port)
        procs.append(
            subprocess.Popen(
                [
                    str(STORESCU),
                    *propose,
                    "-aet",
                    "STORESCU",
                    "-aec",
                    "PACS",
                    "127.0.0.1",
                    port,
                    *map(str, files[i::senders]),
                ],
                env=dcmtk_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    for proc in procs:
        output, _ = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(output.decode(errors="replace")[-2000:])
    return time.perf_counter() - started


Configure = Callable[[Path], list[dict[str, object]]]


def run(label: str, configure: Configure, args: argparse.Namespace, root: Path) -> list[Run]:
    """``args.repeats`` ingests, each on fresh nodes (``configure`` gives their settings)."""
    runs = []
    for repeat in range(args.repeats):
        base = root / f"{label.replace(' ', '_').replace(',', '')}-{repeat}"
        files, size = make_instances(args.instances, base / "files")
        nodes = [
            start_node(base / f"node{i}", {**values, "node_name": f"bench-{i}"}, args.workers)
            for i, values in enumerate(configure(base))
        ]
        try:
            seconds = send(nodes, files, args.senders)
        finally:
            for node in nodes:
                stop_node(node)
        runs.append(Run(label, len(files), size, seconds))
        shutil.rmtree(base / "files", ignore_errors=True)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=250)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="worker processes per node")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="pacs-multinode-") as tmp,
        PostgresCluster() as postgres,
        moto_server() as s3,
    ):
        root = Path(tmp)

        def shared(count: int) -> Configure:
            def configure(base: Path) -> list[dict[str, object]]:
                values = {
                    "database_url": postgres.create_database(),
                    **s3.settings(unique_bucket()),
                }
                # The schema once, before the nodes start, as `pacs db upgrade` does.
                migrate = base / "migrate"
                migrate.mkdir(parents=True)
                (migrate / "pacs.toml").write_text(_toml(values))
                pacs(migrate, "db", "upgrade")
                return [values] * count

            return configure

        results = run("1 node, SQLite + filesystem", lambda base: [{}], args, root)
        results += run("1 node, PostgreSQL + S3", shared(1), args, root)
        results += run("2 nodes, PostgreSQL + S3", shared(2), args, root)
    print(
        f"\nIngest: {args.instances} new instances per run, {args.senders} storescu senders "
        f"spread over the nodes, {args.workers} worker(s) per node, {os.cpu_count()} CPU(s)\n"
    )
    print("| configuration | runs | instances/s (median) | MB/s (median) | seconds (median) |")
    print("|---|---|---|---|---|")
    by_label: dict[str, list[Run]] = {}
    for result in results:
        by_label.setdefault(result.label, []).append(result)
    for label, runs in by_label.items():
        rate = statistics.median(r.instances / r.seconds for r in runs)
        mbps = statistics.median(r.bytes / r.seconds / 1e6 for r in runs)
        secs = statistics.median(r.seconds for r in runs)
        print(f"| {label} | {len(runs)} | {rate:.1f} | {mbps:.1f} | {secs:.1f} |")


if __name__ == "__main__":
    main()
