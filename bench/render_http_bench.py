"""Rendered images over HTTP: pacs against Orthanc's own ``/instances/{id}/rendered``.

The viewer's thumbnails and the phone path ask for rendered JPEG/PNG frames, so these
are timed as a browser would fetch them, with ``curl`` on keep-alive connections as
the shared harness does (a Python client would measure itself on 2 cores):

- **first**: each image for the first time, one connection (nothing of it cached in
  pacs; Orthanc renders every request anyway);
- **again**: the same images again, one connection (pacs answers from its caches);
- **4 clients, new images**: 4 ``curl`` processes at once, each on its own images that
  nobody asked for before, against **1 client, new images** on as many: whether the
  server renders on more than one core.

Reuses ``bench/dicomweb_bench.py``'s work folder (``--work``): the 1000-slice 512×512
CT series in both servers (and their big indexes, built once there).

    python bench/render_http_bench.py
    python bench/render_http_bench.py --n 80 --clients 4 --formats jpeg png
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pydicom
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dicomweb_bench as dw

CURL = "/usr/bin/curl"
ACCEPT = {"jpeg": "image/jpeg", "png": "image/png"}


def curl_argv(urls: list[str], headers: dict[str, str], workdir: Path) -> list[str]:
    """One curl process fetching ``urls`` in order on one keep-alive connection."""
    fd, name = tempfile.mkstemp(suffix=".cfg", dir=workdir)
    os.close(fd)
    config = Path(name)
    config.write_text("".join(f'url = "{u}"\noutput = "/dev/null"\n' for u in urls))
    argv = [CURL, "-s", "-K", str(config)]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    return argv


def curl_times(urls: list[str], headers: dict[str, str], workdir: Path) -> list[float]:
    """ms per request for ``urls`` fetched in order on one keep-alive connection."""
    argv = [*curl_argv(urls, headers, workdir), "-w", "%{http_code} %{time_total}\\n"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in out.splitlines() if line.strip()]
    bad = [code for code, _ in rows if code != "200"]
    if bad or len(rows) != len(urls):
        raise SystemExit(f"{len(bad)} failed requests (first: {bad[:1]}) of {len(urls)}")
    return [float(seconds) * 1000 for _, seconds in rows]


def clients_rate(groups: list[list[str]], headers: dict[str, str], workdir: Path) -> float:
    """Images per second with one ``curl`` process per group, all at once."""
    argvs = [[*curl_argv(urls, headers, workdir), "-f"] for urls in groups]
    started = time.perf_counter()
    processes = [subprocess.Popen(argv) for argv in argvs]
    if any(p.wait() for p in processes):
        raise SystemExit("a client failed")
    return sum(len(g) for g in groups) / (time.perf_counter() - started)


def measure(
    name: str, urls_of: list[str], headers: dict[str, str], n: int, clients: int, work: Path
) -> dict[str, float]:
    """The four measurements on disjoint slices of ``urls_of`` (one URL per instance)."""
    first = urls_of[:n]
    single_new = urls_of[n : 2 * n]
    groups = [urls_of[(2 + c) * n : (3 + c) * n] for c in range(clients)]
    if any(len(g) < n for g in groups):
        raise SystemExit(f"need {(2 + clients) * n} instances, the series has {len(urls_of)}")
    dw.step(f"{name}: first, again, 1 client, {clients} clients")
    first_ms = curl_times(first, headers, work)
    again_ms = curl_times(first, headers, work)
    one_rate = clients_rate([single_new], headers, work)
    many_rate = clients_rate(groups, headers, work)
    return {
        "first": statistics.median(first_ms),
        "first_p90": sorted(first_ms)[int(0.9 * (len(first_ms) - 1))],
        "again": statistics.median(again_ms),
        "one": one_rate,
        "many": many_rate,
    }


def instance_urls(base: str, study: str, series: str, sops: list[str]) -> list[str]:
    return [
        f"{base}/dicomweb/studies/{study}/series/{series}/instances/{sop}/rendered" for sop in sops
    ]


def orthanc_urls(base: str, sops: list[str]) -> list[str]:
    urls = []
    for sop in sops:
        found = requests.post(
            base + "/tools/find",
            data=json.dumps({"Level": "Instance", "Query": {"SOPInstanceUID": sop}}),
            timeout=30,
        ).json()
        urls.append(f"{base}/instances/{found[0]}/rendered")
    return urls


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/dicomweb-bench"))
    parser.add_argument("--studies", type=int, default=100_000, help="as dicomweb_bench")
    parser.add_argument("--slices", type=int, default=1000)
    parser.add_argument("--n", type=int, default=80, help="images per client and pass")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--formats", nargs="+", default=["jpeg", "png"], choices=list(ACCEPT))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    ds = dw.dataset(args.work, args.slices)
    data, token = dw.prepare_pacs(args.work, ds, args.studies)
    manifest = json.loads((ds / "manifest.json").read_text())
    study = next(s for s in manifest["studies"] if s["kind"] == "ct")
    study_uid = study["study_uid"]
    series_uid = dw._ct_series_uid(manifest)
    sops = [
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
        for p in sorted(dw.ct_dir(ds).glob("*.dcm"))
    ]
    results: dict[tuple[str, str], dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with dw.pacs_server(data, args.workers) as base:
            auth = {"Authorization": f"Bearer {token}"}
            for fmt in args.formats:
                # Each format on its own slices, so that none is cached by the other.
                offset = args.formats.index(fmt) * (2 + args.clients) * args.n
                urls = instance_urls(base, study_uid, series_uid, sops[offset:])
                headers = {**auth, "Accept": ACCEPT[fmt]}
                results[("pacs", fmt)] = measure(
                    "pacs " + fmt, urls, headers, args.n, args.clients, work
                )
        tiny = args.studies
        with dw.orthanc_server(args.work, ds, dw.tiny_files(args.work, tiny), tiny) as base:
            for fmt in args.formats:
                offset = args.formats.index(fmt) * (2 + args.clients) * args.n
                urls = orthanc_urls(base, sops[offset : offset + (2 + args.clients) * args.n])
                results[("orthanc", fmt)] = measure(
                    "Orthanc " + fmt, urls, {"Accept": ACCEPT[fmt]}, args.n, args.clients, work
                )
    print(
        f"\nRendered 512×512 CT slices over HTTP (curl, keep-alive), {os.cpu_count()} CPUs; "
        f"pacs {args.workers} worker(s) via WADO-RS /rendered with a bearer token, "
        f"Orthanc 1.10 /instances/{{id}}/rendered; {args.n} images per pass and client\n"
    )
    print(
        "| server | format | first ms (median) | first ms (p90) | again ms (median) "
        f"| 1 client, new images/s | {args.clients} clients, new images/s |"
    )
    print("|---|---|---|---|---|---|---|")
    for (server, fmt), r in results.items():
        print(
            f"| {server} | {fmt.upper()} | {r['first']:.1f} | {r['first_p90']:.1f} "
            f"| {r['again']:.1f} | {r['one']:.0f} | {r['many']:.0f} |"
        )


if __name__ == "__main__":
    main()
