"""Two pacs nodes on one PostgreSQL database and one S3 bucket, each able to answer anything.

Each node is a real ``pacs serve`` subprocess with its own ports, data folder
and spool, and the same ``database_url``, ``storage = "s3"`` bucket (moto,
reached through the minio client) and ``secret_key``. The schema is created
once with ``pacs db upgrade``; the nodes run with ``auto_migrate = false``, as
in production.

- A study stored through one node is found (C-FIND) and moved (C-MOVE to DCMTK
  ``storescp``) through the other.
- A web session signed in on one node is accepted by the other, and ending it
  on one ends it on both.
- Probe jobs are each run exactly once by the many claimers of both nodes.
- One node killed (SIGKILL) in the middle of an ingest: the other keeps
  storing and answering; every instance acknowledged before the kill is
  archived; the dead node's interrupted stores are reconciled by the living
  one once they are ``stale_intent_s`` old.

The tests run in order on one cluster; the last one kills and restarts node B.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from pacs.archive import Archive, sha256_file
from pacs.bootstrap import build_archive
from pacs.config import Settings
from pacs.jobs import PROBE
from pacs.storage.jobs import JobQueue
from pacs.storage.models import StoreIntent
from pacs.storage.objects import instance_key
from pacs.viewer.users import Accounts
from support import (
    PostgresCluster,
    S3Endpoint,
    StoreSCP,
    findscu,
    free_port,
    movescu,
    require_tool,
    storescu,
    unique_bucket,
)
from support.corpus import REPO_ROOT
from support.dcmtk import STORESCU, dcmtk_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SAMPLES = REPO_ROOT / "sample_dicom"
STALE_INTENT_S = 3
PASSWORD = "đúng-ngựa-pin-kẹp-1"
MOVE_AE = "STORESCP"


@dataclass
class Cluster:
    a: Any  # PacsServer
    b: Any
    settings: dict[str, Any]
    archive: Archive  # the test's own view of the shared index and bucket
    move_port: int
    workdir: Path

    def nodes(self) -> list[Any]:
        return [self.a, self.b]


def _run_cli(args: Sequence[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pacs", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def cluster(
    postgres: PostgresCluster,
    s3_endpoint: S3Endpoint,
    module_pacs_server: Callable[..., Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("multinode")
    url = postgres.create_database()
    common: dict[str, Any] = {
        "database_url": url,
        **s3_endpoint.settings(unique_bucket()),
        "secret_key": secrets.token_hex(32),
        "auto_migrate": False,
        "stale_intent_s": STALE_INTENT_S,
        "job_poll_s": 0.2,
    }
    # The schema, once, the way an operator creates it: `pacs db upgrade`.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACS_")}
    upgrade = _run_cli(
        ["db", "upgrade", "--data-dir", str(workdir / "admin")],
        {**env, "PACS_DATABASE_URL": url},
        workdir,
    )
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    assert "schema is current" in upgrade.stdout

    move_port = free_port()
    destination = {"title": MOVE_AE, "port": move_port, "store": False}
    a = module_pacs_server(settings={**common, "node_name": "node-a"}, workers=1, aes=[destination])
    b = module_pacs_server(settings={**common, "node_name": "node-b"}, workers=2, aes=[destination])
    archive = build_archive(Settings(data_dir=workdir / "probe", **common))
    Accounts(archive.index.engine).create("quantri", PASSWORD, role="admin")
    yield Cluster(a, b, common, archive, move_port, workdir)
    archive.index.engine.dispose()


def _sop_uids(files: Sequence[Path]) -> set[str]:
    return {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}


def _study_uid(folder: Path) -> str:
    first = sorted(folder.glob("*.dcm"))[0]
    return str(pydicom.dcmread(first, stop_before_pixels=True).StudyInstanceUID)


# ---------------------------------------------------------------- DICOM across nodes


def test_what_one_node_stores_the_other_finds_and_moves(cluster: Cluster, tmp_path: Path) -> None:
    mr = sorted((SAMPLES / "mr_brain").glob("*.dcm"))
    cr = sorted((SAMPLES / "cr_chest").glob("*.dcm"))
    # -xv: propose JPEG 2000 lossless, the CR files' own transfer syntax.
    for node, files, extra in ((cluster.a, mr, []), (cluster.b, cr, ["-xv"])):
        sent = storescu(node.host, node.dicom_port, files, calling_aet="STORESCU", extra=extra)
        assert sent.returncode == 0, sent.output

    studies = {_study_uid(SAMPLES / "mr_brain"), _study_uid(SAMPLES / "cr_chest")}
    for node in cluster.nodes():
        found = findscu(
            node.host,
            node.dicom_port,
            {"StudyInstanceUID": "", "PatientID": "", "NumberOfStudyRelatedInstances": ""},
            level="STUDY",
        )
        assert found.returncode == 0, found.output
        counts = {
            str(r.StudyInstanceUID): int(r.NumberOfStudyRelatedInstances) for r in found.responses
        }
        assert studies <= set(counts), node.workdir
        assert counts[_study_uid(SAMPLES / "mr_brain")] == len(mr)
        assert counts[_study_uid(SAMPLES / "cr_chest")] == len(cr)

    # Each study moved through the node that did not receive it.
    for node, folder, files in ((cluster.b, "mr_brain", mr), (cluster.a, "cr_chest", cr)):
        received = tmp_path / folder
        with StoreSCP(received, ae_title=MOVE_AE, port=cluster.move_port) as scp:
            moved = movescu(
                node.host,
                node.dicom_port,
                {"StudyInstanceUID": _study_uid(SAMPLES / folder)},
                MOVE_AE,
                calling_aet="MOVESCU",
            )
            assert moved.returncode == 0, moved.output
            got = scp.wait_for_files(len(files))
        assert _sop_uids(got) == _sop_uids(files)


# ---------------------------------------------------------------- web sessions


def _csrf(html: str) -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', html)
    assert match, "page without a CSRF token"
    return match.group(1)


def test_a_web_session_from_one_node_is_accepted_by_the_other(cluster: Cluster) -> None:
    url_a = f"http://{cluster.a.host}:{cluster.a.http_port}"
    url_b = f"http://{cluster.b.host}:{cluster.b.http_port}"
    browser = requests.Session()
    token = _csrf(browser.get(f"{url_a}/login", timeout=30).text)
    signed_in = browser.post(
        f"{url_a}/login",
        data={"username": "quantri", "password": PASSWORD, "csrf_token": token},
        allow_redirects=False,
        timeout=30,
    )
    assert signed_in.status_code == 302, signed_in.text[:500]

    on_b = browser.get(f"{url_b}/api/session", timeout=30)
    assert on_b.status_code == 200, on_b.text
    assert on_b.json()["user"]["username"] == "quantri"
    csrf = on_b.json()["csrf"]
    # Node B serves admin data to the session node A opened, including what A stored.
    summary = browser.get(f"{url_b}/admin/ops/api/summary?days=7", timeout=30)
    assert summary.status_code == 200, summary.text
    assert summary.json()["totals"]["studies"] >= 2

    # Ending every session on B (a state change, CSRF-checked there) ends it on A too.
    ended = browser.post(
        f"{url_b}/account/sessions",
        headers={"X-CSRF-Token": csrf},
        allow_redirects=False,
        timeout=30,
    )
    assert ended.status_code == 302, ended.text[:500]
    stale = requests.Session()
    stale.cookies.update({"pacs_session": signed_in.cookies["pacs_session"]})
    assert stale.get(f"{url_a}/api/session", timeout=30).status_code == 401


# ---------------------------------------------------------------- jobs across nodes


def test_probe_jobs_are_run_exactly_once_by_claimers_on_both_nodes(cluster: Cluster) -> None:
    queue = JobQueue(cluster.archive.index.engine)
    ids = [queue.enqueue(PROBE, {"sleep_s": 0.02}) for _ in range(300)]
    # More claimers, in this process, under both nodes' names: every claimer races.
    taken: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def claim_as(node: str) -> None:
        from pacs.storage.database import make_engine

        engine = make_engine(cluster.settings["database_url"], pool_size=2)
        mine = JobQueue(engine)
        while not stop.is_set():
            jobs = mine.claim([PROBE], node)
            if not jobs:
                time.sleep(0.05)
                continue
            time.sleep(0.02)
            with lock:
                taken.append(jobs[0].id)
            mine.complete(jobs[0], {"node": node})
        engine.dispose()

    threads = [
        threading.Thread(target=claim_as, args=(f"node-{'ab'[i % 2]}:test{i}",), daemon=True)
        for i in range(8)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            states = Counter(queue.get(i).state for i in ids)  # type: ignore[union-attr]
            if states["done"] == len(ids):
                break
            time.sleep(0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    jobs = [queue.get(i) for i in ids]
    assert all(j is not None and j.state == "done" for j in jobs), Counter(
        j.state for j in jobs if j
    )
    assert all(j.attempts == 1 for j in jobs if j), "a job was claimed more than once"
    assert all(j.result and j.result["node"] == j.locked_by for j in jobs if j)
    assert len(taken) == len(set(taken))
    servers = Counter(j.locked_by.split(":")[0] for j in jobs if j and "test" not in j.locked_by)
    # The servers' own runners took part, on both nodes.
    assert servers["node-a"] > 0 and servers["node-b"] > 0, servers


# ---------------------------------------------------------------- a node dies mid-ingest


def _synthetic_series(source: Sequence[Path], out: Path, count: int) -> dict[Path, str]:
    """``count`` new instances (new UIDs, same pixels) of one new study: path → SOP UID."""
    out.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    made = {}
    for n in range(count):
        ds = pydicom.dcmread(source[n % len(source)])
        sop = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, sop
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.InstanceNumber = n + 1
        path = out / f"{n:04d}.dcm"
        ds.save_as(path)
        made[path] = sop
    return made


class Ingest:
    """Several ``storescu -v`` at once, their output read as it comes."""

    def __init__(self, node: Any, files: Sequence[Path], processes: int) -> None:
        exe = require_tool(STORESCU)
        self.outputs: list[list[str]] = []
        self.procs: list[subprocess.Popen] = []
        self.readers: list[threading.Thread] = []
        for index in range(processes):
            # -xt: propose JPEG-LS lossless, the sample CT's own transfer syntax.
            args = ["-v", "-xt", "-aet", "STORESCU", "-aec", node.ae_title, node.host]
            proc = subprocess.Popen(
                [str(exe), *args, str(node.dicom_port), *map(str, files[index::processes])],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dcmtk_env(),
                text=True,
            )
            lines: list[str] = []
            reader = threading.Thread(target=self._read, args=(proc, lines), daemon=True)
            reader.start()
            self.procs.append(proc)
            self.outputs.append(lines)
            self.readers.append(reader)

    @staticmethod
    def _read(proc: subprocess.Popen, lines: list[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))

    def acks(self) -> int:
        return sum(
            1
            for lines in self.outputs
            for line in list(lines)
            if "Store Response (Success)" in line
        )

    def finish(self) -> None:
        for proc in self.procs:
            proc.wait(120)
        for reader in self.readers:
            reader.join(10)

    def acknowledged(self, parse: Callable[[str], dict[str, str]]) -> list[Path]:
        return [
            Path(path)
            for lines in self.outputs
            for path, status in parse("\n".join(lines)).items()
            if status == "Success"
        ]


def _intents(archive: Archive, prefix: str | None = None) -> int:
    stmt = select(func.count()).select_from(StoreIntent)
    if prefix is not None:
        stmt = stmt.where(StoreIntent.node.startswith(prefix))
    with archive.index.engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


def _plant_interrupted_store(archive: Archive, source: Path, tmp: Path) -> tuple[str, str]:
    """What a node killed between the object write and the index commit leaves behind:
    the object in the bucket, an intent under that node's name, no index row."""
    [(path, sop)] = _synthetic_series([source], tmp / "interrupted", 1).items()
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    key = instance_key(ds.StudyInstanceUID, ds.SeriesInstanceUID, sop)
    sha256, _ = sha256_file(path)
    archive.index.add_intent(key, sha256, "node-b:99999")
    archive.objects.put_file(key, path, consume=False)
    return str(ds.StudyInstanceUID), sop


def test_a_node_killed_mid_ingest_loses_nothing_acknowledged(
    cluster: Cluster,
    tmp_path: Path,
    storescu_results: Callable[[str], dict[str, str]],
    read_dataset_bytes: Callable[[Path | bytes], bytes],
) -> None:
    ct = sorted((SAMPLES / "ct_head").glob("*.dcm"))
    to_b = _synthetic_series(ct, tmp_path / "to_b", 450)
    to_a = _synthetic_series(ct, tmp_path / "to_a", 60)
    planted_study, planted = _plant_interrupted_store(cluster.archive, ct[0], tmp_path)

    ingest = Ingest(cluster.b, list(to_b), processes=3)
    deadline = time.monotonic() + 120
    while ingest.acks() < 40:
        assert time.monotonic() < deadline, "node B acknowledged nothing"
        assert any(p.poll() is None for p in ingest.procs), "the ingest ended before the kill"
        time.sleep(0.01)
    cluster.b.kill9()
    left_by_b = _intents(cluster.archive, "node-b:")
    ingest.finish()
    acked = ingest.acknowledged(storescu_results)
    assert 40 <= len(acked) < len(to_b), "node B was not killed in the middle of the ingest"

    # Node A goes on storing and answering.
    sent = storescu(
        cluster.a.host,
        cluster.a.dicom_port,
        list(to_a),
        calling_aet="STORESCU",
        extra=["-v", "-xt"],
    )
    statuses = storescu_results(sent.output)
    assert sent.returncode == 0 and set(statuses.values()) == {"Success"}, sent.output[-2000:]

    # Every instance B acknowledged before it died is archived, its data set unchanged.
    expected = {to_b[p] for p in acked} | set(to_a.values())
    refs = {r.sop_uid: r for r in cluster.archive.instances(sop_uids=sorted(expected))}
    assert sorted(expected - set(refs)) == []
    for path in acked:
        with cluster.archive.open(refs[to_b[path]]) as stored:
            assert read_dataset_bytes(stored.read()) == read_dataset_bytes(path)

    # The dead node's unfinished stores (the planted one, and whatever the kill cut
    # short) are reconciled by node A once stale: the planted object gets indexed.
    deadline = time.monotonic() + STALE_INTENT_S * 10 + 30
    while _intents(cluster.archive) > 0:
        assert time.monotonic() < deadline, f"{_intents(cluster.archive)} intent(s) never swept"
        time.sleep(0.2)
    assert cluster.archive.instance(planted).sop_uid == planted
    print(f"node B left {left_by_b} intent(s) behind (1 planted); all reconciled by node A")

    found = findscu(
        cluster.a.host,
        cluster.a.dicom_port,
        {"StudyInstanceUID": planted_study, "SeriesInstanceUID": "", "SOPInstanceUID": ""},
        level="IMAGE",
    )
    assert found.returncode == 0, found.output
    assert [str(r.SOPInstanceUID) for r in found.responses] == [planted]

    # Index and bucket agree: nothing missing, corrupted or orphaned.
    verify = cluster.a.verify()
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # Node B comes back and serves again.
    cluster.b.start()
    again = findscu(
        cluster.b.host,
        cluster.b.dicom_port,
        {"StudyInstanceUID": planted_study, "SeriesInstanceUID": "", "SOPInstanceUID": ""},
        level="IMAGE",
    )
    assert again.returncode == 0, again.output
    assert [str(r.SOPInstanceUID) for r in again.responses] == [planted]
