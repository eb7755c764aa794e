"""Push throughput to a local partner, with and without lossless compression on the way.

For each dataset, each receiver and each compression setting, one push of every
study of the dataset, timed from the job's start to its end (association, every
C-STORE with its confirmation written to the database, and the partner's C-FIND
count when it has one), exactly as a worker runs it (``PushService.run``). Prints
instances/s, MB/s *on the wire* (what the socket carried: data sets, commands,
PDU headers), the archived size, the wire size and the bytes compression saved.

Receivers, both on loopback:

- a second pacs (``python -m pacs serve --no-web --workers 1``), emptied of the
  study between runs (a re-sent study would only be a duplicate there);
- DCMTK ``storescp`` (``+xa``: every transfer syntax; it writes what it receives).

Datasets: the 250-slice CT of the shared harness (``--ct``, made by
``/work/shared/bench/make_dataset.py --out /tmp/ds1 --studies 1 --slices 250
--mr-slices 0 --cr-images 0``) and ``sample_dicom/`` (CT already JPEG-LS, MR
uncompressed, CR JPEG 2000, US JPEG: only the MR can be compressed).

    python bench/push_bench.py
    python bench/push_bench.py --ct /tmp/ds1 --compressions none jpegls j2k
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pacs.archive import Source  # noqa: E402
from pacs.bootstrap import build_archive  # noqa: E402
from pacs.config import load_settings  # noqa: E402
from pacs.consult import PUSH_JOB, Consult  # noqa: E402
from pacs.errors import PacsError  # noqa: E402
from pacs.jobs import JobRunner  # noqa: E402
from pacs.scp import sending, tuning  # noqa: E402

SENDER_AE = "BENCH_SND"
RECEIVER_AE = "BENCH_RCV"
STORESCP = Path("/usr/bin/storescp")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_echo(port: int, ae_title: str, timeout: float = 60.0) -> None:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ae = AE(ae_title=SENDER_AE)
        ae.add_requested_context(Verification)
        ae.acse_timeout = 5
        assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
        if assoc.is_established:
            assoc.release()
            ae.shutdown()
            return
        ae.shutdown()
        time.sleep(0.2)
    raise SystemExit(f"nothing answered C-ECHO on port {port}")


@dataclass
class Receiver:
    name: str
    ae_title: str
    port: int
    data_dir: Path | None = None

    def empty(self, study_uids: list[str]) -> None:
        """Forget what the previous run sent (a pacs receiver would take it as duplicates)."""
        if self.data_dir is None:
            return
        settings = load_settings(None, environ={}, data_dir=self.data_dir)
        archive = build_archive(settings, migrate=False)
        for uid in study_uids:
            archive.delete(archive.instances(study_uid=uid))
        archive.index.engine.dispose()


@contextmanager
def pacs_receiver(work: Path) -> Iterator[Receiver]:
    data = work / "receiver"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACS_")}
    subprocess.run(
        [sys.executable, "-m", "pacs", "ae", "add", SENDER_AE, "127.0.0.1", "1",
         "--data-dir", str(data)],
        check=True, env=env, cwd=REPO, capture_output=True,
    )  # fmt: skip
    with (work / "receiver.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pacs", "serve", "--data-dir", str(data), "--host",
             "127.0.0.1", "--dicom-port", str(port), "--ae-title", RECEIVER_AE, "--workers",
             "1", "--no-web"],
            env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for_echo(port, RECEIVER_AE)
        yield Receiver("pacs", RECEIVER_AE, port, data)
    finally:
        proc.terminate()
        proc.wait(30)


@contextmanager
def storescp_receiver(work: Path) -> Iterator[Receiver]:
    out = work / "storescp"
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with (work / "storescp.log").open("ab") as log:
        proc = subprocess.Popen(
            [str(STORESCP), "--aetitle", "STORESCP", "+xa", "-od", str(out), str(port)],
            env={**os.environ, "TCP_NODELAY": "1"}, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for_echo(port, "STORESCP")
        yield Receiver("storescp", "STORESCP", port)
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(out, ignore_errors=True)


@dataclass
class Row:
    dataset: str
    receiver: str
    compression: str
    instances: int
    seconds: float
    archived: int
    wire: int
    verified: str
    cap: int = 0

    @property
    def saved(self) -> float:
        return 1 - self.wire / self.archived if self.archived else 0.0


def load(consult: Consult, folder: Path) -> list[str]:
    """Import ``folder`` into the sender's archive; the study UIDs."""
    studies: dict[str, None] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            result = consult.archive.store_file(path, source=Source("import"))
        except PacsError:
            continue
        studies[result.study_instance_uid] = None
    return list(studies)


def push_all(
    consult: Consult, receiver: Receiver, studies: list[str], compression: str, cap: int = 0
) -> Row:
    partner_name = f"{receiver.name}-{compression}-{cap}"
    partners = consult.partners
    if partners.store.by_name(partner_name) is None:
        partners.save(
            partner_name,
            ae_title=receiver.ae_title,
            host="127.0.0.1",
            port=receiver.port,
            compression=compression,
            bandwidth_bps=cap,
        )
    partner = partners.named(partner_name)
    receiver.empty(studies)
    runner = JobRunner(consult.queue, f"bench:{os.getpid()}")
    runner.register(PUSH_JOB, consult.pushes.run, lease_s=60)
    pushes = [consult.pushes.create(partner, uid, created_by="bench") for uid in studies]
    started = time.perf_counter()
    runner.run_pending()
    seconds = time.perf_counter() - started
    done = [consult.pushes.store.get(p.id) for p in pushes]
    assert all(p is not None and p.state == "done" for p in done), done
    verified = [p.verified_count for p in done if p is not None]
    return Row(
        dataset="",
        receiver=receiver.name,
        compression=compression,
        instances=sum(p.sent for p in done if p),
        seconds=seconds,
        archived=sum(p.bytes_sent for p in done if p),
        wire=sum(p.wire_bytes for p in done if p),
        verified="-" if None in verified else str(sum(v for v in verified if v is not None)),
        cap=cap,
    )


#: the estimate column: a district hospital's line
LINK_BPS = 10e6


def table(rows: list[Row]) -> str:
    head = (
        f"{'dataset':<13} {'receiver':<9} {'compression':<11} {'cap MB/s':>8} {'inst':>5} "
        f"{'s':>6} {'inst/s':>7} {'MB/s wire':>9} {'archived MB':>11} {'wire MB':>8} "
        f"{'saved':>6} {'verified':>8} {'s @10Mbit':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        # On a 10 Mbit/s line the wire is the limit, unless encoding is slower still.
        on_link = max(r.seconds, r.wire * 8 / LINK_BPS)
        cap = f"{r.cap / 1e6:.1f}" if r.cap else "-"
        lines.append(
            f"{r.dataset:<13} {r.receiver:<9} {r.compression:<11} {cap:>8} {r.instances:>5} "
            f"{r.seconds:>6.2f} {r.instances / r.seconds:>7.1f} {r.wire / 1e6 / r.seconds:>9.1f} "
            f"{r.archived / 1e6:>11.1f} {r.wire / 1e6:>8.1f} {r.saved:>6.0%} {r.verified:>8} "
            f"{on_link:>9.0f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct", type=Path, default=Path("/tmp/ds1"))
    parser.add_argument("--samples", type=Path, default=REPO / "sample_dicom")
    parser.add_argument("--compressions", nargs="+", default=["none", "jpegls"])
    parser.add_argument("--receivers", nargs="+", default=["pacs", "storescp"])
    parser.add_argument("--work", type=Path, default=None, help="keep the work folder here")
    parser.add_argument(
        "--cap",
        type=float,
        default=5e6,
        help="also push the CT to storescp under this cap (bytes/s; 0: skip)",
    )
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="push-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    settings = load_settings(None, environ={}, data_dir=work / "sender", ae_title=SENDER_AE)
    consult = Consult.build(settings, build_archive(settings))
    tuning.install()
    sending.install()
    datasets = [(name, path) for name, path in (("ct-250", args.ct), ("sample_dicom", args.samples))
                if path.exists()]  # fmt: skip
    loaded = {name: load(consult, path) for name, path in datasets}
    rows: list[Row] = []
    makers = {"pacs": pacs_receiver, "storescp": storescp_receiver}
    for receiver_name in args.receivers:
        with makers[receiver_name](work) as receiver:
            for name, _ in datasets:
                for compression in args.compressions:
                    row = push_all(consult, receiver, loaded[name], compression)
                    row.dataset = name
                    rows.append(row)
                    print(f"  {name} → {receiver_name} ({compression}): {row.seconds:.2f} s",
                          file=sys.stderr)  # fmt: skip
            if receiver_name == "storescp" and args.cap and datasets:
                name = datasets[0][0]
                for compression in args.compressions[:2]:
                    row = push_all(consult, receiver, loaded[name], compression, int(args.cap))
                    row.dataset = name
                    rows.append(row)
    print(table(rows))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
