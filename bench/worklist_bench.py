"""Worklist search latency on a big index, through the real web endpoint.

Fill an index first (no files needed), then run the searches a radiologist makes:

    python bench/populate_index.py --data-dir /tmp/bigpacs --studies 100000
    python bench/worklist_bench.py --data-dir /tmp/bigpacs

Each search is ``GET /api/studies?…`` through the Flask app (session check,
count, one page of rows, opened status), timed end to end in process, and also
``worklist.search`` alone (the SQL). Prints a Markdown table of medians and
95th percentiles over ``--repeat`` runs. The target is under 200 ms per search.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from pacs.bootstrap import build_archive
from pacs.config import load_settings
from pacs.storage.matching import Level, Query
from pacs.viewer import worklist
from pacs.viewer.app import create_app
from pacs.viewer.users import AccountError, Accounts, random_password

SEARCHES: list[tuple[str, str]] = [
    ("newest first (no filter)", ""),
    ("name: nguyen", "name=nguyen"),
    ("name: nguyen thi", "name=nguyen%20thi"),
    ("name: tran van hung", "name=tran%20van%20hung"),
    ("name: Đặng (diacritics)", "name=%C4%90%E1%BA%B7ng"),
    ("patient ID prefix", "patient_id=BN0001"),
    ("accession", "accession=ACC000050000"),
    ("date: one day", "date_from=2024-03-18&date_to=2024-03-18"),
    ("date: last 7 days", "date_from=2025-12-22&date_to=2025-12-28"),
    ("modality CT", "modality=CT"),
    ("description: ct so nao", "description=ct%20so%20nao"),
    ("referring: hung", "referring=hung"),
    ("name + CT + one year", "name=nguyen&modality=CT&date_from=2024-01-01&date_to=2024-12-31"),
    ("sort by name", "sort=name&dir=asc"),
    ("sort by modality", "sort=modality&dir=asc"),
    ("sort by images desc", "sort=images&dir=desc"),
    ("page 1000 (offset 49 950)", "page=1000"),
    ("no match", "name=zzzz"),
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def login(client: Any, username: str, password: str) -> None:
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    response = client.post(
        "/login", data={"username": username, "password": password, "csrf_token": token}
    )
    if response.status_code != 302:
        raise SystemExit(f"cannot sign in as {username}: HTTP {response.status_code}")


def bench_user(accounts: Accounts, username: str, role: str) -> str:
    password = random_password()
    try:
        accounts.create(username, password, role=role)
    except AccountError:
        accounts.set_password(username, password)
    return password


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--page-size", type=int, default=50)
    parser.add_argument(
        "--scoped", type=int, default=200, help="studies assigned to the referring-doctor run"
    )
    args = parser.parse_args()
    settings = load_settings(data_dir=args.data_dir, database_url=args.database_url or None)
    archive = build_archive(settings)
    totals = archive.totals()
    accounts = Accounts(archive.index.engine)
    app = create_app(settings, archive)

    radiologist = app.test_client()
    login(radiologist, "bench_rad", bench_user(accounts, "bench_rad", "radiologist"))
    referring = app.test_client()
    doctor_password = bench_user(accounts, "bench_ref", "referring")
    doctor = accounts.get("bench_ref")
    some = archive.search(Query(Level.STUDY, limit=args.scoped, offset=1000), ["StudyInstanceUID"])
    for row in some:
        accounts.store.assign(doctor.id, row["StudyInstanceUID"], by_user_id=None)
    login(referring, "bench_ref", doctor_password)

    print(
        f"\nWorklist search, {totals['studies']:,} studies in the index "
        f"({settings.effective_database_url.split(':')[0]}), page size {args.page_size}, "
        f"{args.repeat} runs each\n"
    )
    print("| search | matches | HTTP median ms | HTTP p95 ms | SQL median ms | under 200 ms |")
    print("|---|---|---|---|---|---|")
    worst = 0.0
    runs = [(label, query, radiologist, None) for label, query in SEARCHES]
    runs.append(
        (f"referring doctor ({args.scoped} assigned)", "", referring, "scoped"),
    )
    runs.append(("referring doctor, name: nguyen", "name=nguyen", referring, "scoped"))
    for label, query, client, scoped in runs:
        url = f"/api/studies?page_size={args.page_size}&{query}"
        http_times, sql_times = [], []
        total = 0
        client.get(url)  # warm the page cache once, as a running server would be
        for _ in range(args.repeat):
            started = time.perf_counter()
            response = client.get(url)
            http_times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.get_data(as_text=True)
            total = response.json["total"]
            params = dict(parse_qsl(f"page_size={args.page_size}&{query}"))
            scope = sorted(accounts.store.visible_study_pks(doctor.id)) if scoped else None
            started = time.perf_counter()
            worklist.search(archive, params, scope)
            sql_times.append((time.perf_counter() - started) * 1000)
        median = statistics.median(http_times)
        worst = max(worst, median)
        print(
            f"| {label} | {total:,} | {median:.1f} | {percentile(http_times, 0.95):.1f} | "
            f"{statistics.median(sql_times):.1f} | {'yes' if median < 200 else '**no**'} |"
        )
    print(f"\nslowest median: {worst:.1f} ms (target < 200 ms)")


if __name__ == "__main__":
    main()
