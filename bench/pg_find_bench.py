"""C-FIND at study level with a million instances (PostgreSQL) or 100 000 studies (SQLite).

Fills a fresh database (a throwaway PostgreSQL cluster as the tests use, or
``--database-url``, which may also be SQLite) with ``--studies`` studies of
``--instances-per-study`` instances each through ``bench/populate_index.py --bulk`` (100 000 × 10 by
default), starts ``pacs serve --no-web`` on it, and times study-level C-FINDs
the way a modality's query screen or a viewer sends them: one association,
each query repeated, wall time from the request to the last response.

    python bench/pg_find_bench.py
    python bench/pg_find_bench.py --studies 20000 --repeats 20
    python bench/pg_find_bench.py --database-url postgresql+psycopg://pacs@db/pacs --no-populate
    python bench/pg_find_bench.py --database-url sqlite:////tmp/find100k/index.sqlite \
        --instances-per-study 1

Target: median under 50 ms for each query.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind
from sqlalchemy import Connection, text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from populate_index import bulk_load  # noqa: E402

from pacs.storage.database import make_engine, upgrade  # noqa: E402
from support import PostgresCluster, free_port  # noqa: E402
from support.dcmtk import ECHOSCU, FINDSCU, dcmtk_env  # noqa: E402

RETURN_KEYS = {
    "PatientName": "",
    "PatientID": "",
    "PatientBirthDate": "",
    "StudyDate": "",
    "StudyTime": "",
    "AccessionNumber": "",
    "ModalitiesInStudy": "",
    "StudyDescription": "",
    "NumberOfStudyRelatedSeries": "",
    "NumberOfStudyRelatedInstances": "",
    "StudyInstanceUID": "",
}
#: (what, matching keys) — the queries a reception desk or a viewer sends.
QUERIES = [
    ("patient ID", {"PatientID": "BN00012345"}),
    ("accession number", {"AccessionNumber": "ACC000054321"}),
    ("patient name prefix", {"PatientName": "NGUYEN^VAN H*"}),
    ("one day", {"StudyDate": "20230415"}),
    ("one week, CT", {"StudyDate": "20230410-20230416", "ModalitiesInStudy": "CT"}),
    ("one month, MR", {"StudyDate": "20210301-20210331", "ModalitiesInStudy": "MR"}),
    ("name prefix + year", {"PatientName": "TRAN*", "StudyDate": "20240101-20241231"}),
    ("study UID", {"StudyInstanceUID": ""}),  # filled with a real UID at run time
]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PACS_")}


@contextlib.contextmanager
def database(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    with PostgresCluster() as cluster:
        yield cluster.create_database("pacs_find_bench")


@contextlib.contextmanager
def server(url: str, workdir: Path) -> Iterator[int]:
    config = workdir / "pacs.toml"
    config.write_text(f'[pacs]\ndatabase_url = "{url}"\n')
    options = ["--config", str(config), "--data-dir", str(workdir / "data")]
    subprocess.run(
        [sys.executable, "-m", "pacs", "ae", "add", *options, "FINDSCU", "127.0.0.1", "104"],
        env=_env(),
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [sys.executable, "-m", "pacs", "ae", "add", *options, "ECHOSCU", "127.0.0.1", "104"],
        env=_env(),
        check=True,
        capture_output=True,
    )
    port = free_port()
    with (workdir / "server.log").open("ab") as log:
        listen = ["--host", "127.0.0.1", "--dicom-port", str(port)]
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pacs",
                "serve",
                *options,
                *listen,
                "--workers",
                "1",
                "--no-web",
            ],
            env={**_env(), "PACS_LOG_LEVEL": "WARNING"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(
            [str(ECHOSCU), "-aet", "ECHOSCU", "-aec", "PACS", "127.0.0.1", str(port)],
            env=dcmtk_env(),
            capture_output=True,
            check=False,
        ).returncode:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((workdir / "server.log").read_text()[-3000:])
            time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        process.wait(60)


def identifier(criteria: dict[str, str]) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.SpecificCharacterSet = "ISO_IR 192"
    for keyword, value in {**RETURN_KEYS, **criteria}.items():
        setattr(ds, keyword, value)
    return ds


def time_queries(port: int, queries: list[tuple[str, dict[str, str]]], repeats: int) -> list:
    ae = AE("FINDSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACS")
    if not assoc.is_established:
        raise RuntimeError("association refused")
    # Without TCP_NODELAY, loopback adds a delayed-ACK stall (~40 ms) to every query.
    raw = assoc.dul.socket.socket  # type: ignore[union-attr]
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rows = []
    try:
        for label, criteria in queries:
            query = identifier(criteria)
            times, matches = [], 0
            for attempt in range(repeats + 3):
                started = time.perf_counter()
                found = 0
                for status, _ in assoc.send_c_find(
                    query, StudyRootQueryRetrieveInformationModelFind
                ):
                    if status is not None and status.Status in (0xFF00, 0xFF01):
                        found += 1
                elapsed = (time.perf_counter() - started) * 1000
                if attempt >= 3:  # the first runs warm caches
                    times.append(elapsed)
                matches = found
            times.sort()
            rows.append(
                (label, matches, statistics.median(times), times[int(len(times) * 0.95) - 1])
            )
    finally:
        assoc.release()
        ae.shutdown()
    return rows


def _median_ms(argv: list[str], repeats: int) -> float:
    times = []
    for attempt in range(repeats + 2):
        started = time.perf_counter()
        subprocess.run(argv, env=dcmtk_env(), capture_output=True, check=True)
        if attempt >= 2:
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def time_findscu(
    port: int, queries: list[tuple[str, dict[str, str]]], repeats: int
) -> tuple[float, list[float]]:
    """Median ms of one DCMTK ``findscu`` process per query (association included), as the
    shared harness measures, and of ``echoscu`` (the process-and-association floor)."""
    target = ["-aet", "FINDSCU", "-aec", "PACS", "127.0.0.1", str(port)]
    echo = _median_ms([str(ECHOSCU), *target], repeats)
    medians = []
    for _, criteria in queries:
        keys = ["-k", "QueryRetrieveLevel=STUDY"]
        for keyword, value in {**RETURN_KEYS, **criteria}.items():
            keys += ["-k", f"{keyword}={value}" if value else keyword]
        medians.append(_median_ms([str(FINDSCU), "-S", *keys, *target], repeats))
    return echo, medians


def time_index(url: str, queries: list[tuple[str, dict[str, str]]], repeats: int) -> list[float]:
    """Median ms of the index query alone (``SqlIndex.search``, in this process)."""
    from pacs.storage.index import SqlIndex
    from pacs.storage.matching import Level, Query

    engine = make_engine(url)
    index = SqlIndex(engine)
    medians = []
    for _, criteria in queries:
        query = Query(Level.STUDY, criteria)
        times = []
        for attempt in range(repeats + 3):
            started = time.perf_counter()
            index.search(query, list(RETURN_KEYS))
            if attempt >= 3:
                times.append((time.perf_counter() - started) * 1000)
        medians.append(statistics.median(times))
    engine.dispose()
    return medians


def database_bytes(conn: Connection, url: str) -> int:
    if url.startswith("sqlite"):
        return os.path.getsize(url.split("///", 1)[1])
    return int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default="")
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--instances-per-study", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--no-populate", action="store_true", help="the database is filled")
    args = parser.parse_args()
    with database(args.database_url or None) as url, tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(url)
        upgrade(engine)
        if not args.no_populate:
            started = time.perf_counter()
            bulk_load(engine, 0, args.studies, args.instances_per_study, seed=7)
            with engine.begin() as conn:
                conn.execute(text("ANALYZE"))
            print(f"populated in {time.perf_counter() - started:.0f} s", flush=True)
        with engine.connect() as conn:
            studies = conn.execute(text("SELECT count(*) FROM studies")).scalar_one()
            instances = conn.execute(text("SELECT count(*) FROM instances")).scalar_one()
            size = database_bytes(conn, url)
            some_uid = conn.execute(
                text("SELECT study_uid FROM studies ORDER BY id LIMIT 1 OFFSET :n"),
                {"n": studies // 2},
            ).scalar_one()
        engine.dispose()
        queries = [
            (label, {"StudyInstanceUID": some_uid} if label == "study UID" else criteria)
            for label, criteria in QUERIES
        ]
        with server(url, Path(tmp)) as port:
            rows = time_queries(port, queries, args.repeats)
            echo_ms, findscu_ms = time_findscu(port, queries, max(5, args.repeats // 2))
        index_ms = time_index(url, queries, args.repeats)
    print(
        f"\nC-FIND STUDY on {engine.dialect.name}: {studies:,} studies, {instances:,} instances "
        f"(database {size / 2**30:.1f} GiB), {os.cpu_count()} CPU(s).\n"
        f"'assoc': {args.repeats} queries on one open association (pynetdicom client, "
        f"TCP_NODELAY); 'findscu': one DCMTK findscu process per query, association "
        f"included, and minus the echoscu floor ({echo_ms:.1f} ms), as the shared harness "
        f"measures; 'index': the SQL query alone.\n"
    )
    print(
        "| query | matches | assoc median ms | assoc p95 ms | findscu median ms "
        "| findscu − echo ms | index median ms |"
    )
    print("|---|---|---|---|---|---|---|")
    for (label, matches, median, p95), find, index in zip(rows, findscu_ms, index_ms, strict=True):
        print(
            f"| {label} | {matches} | {median:.1f} | {p95:.1f} | {find:.1f} "
            f"| {find - echo_ms:.1f} | {index:.1f} |"
        )


if __name__ == "__main__":
    main()
