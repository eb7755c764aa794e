"""Viewer speed: first image, a 250-slice series loaded for scrolling, and W/L in Chromium.

    python bench/viewer_bench.py                   # builds its data in a temporary folder
    python bench/viewer_bench.py --workers 2 --runs 7 --keep /tmp/viewer-bench

What it does:

1. Makes test studies from the sample CT (512×512, JPEG-LS): ``--runs`` copies of the
   128-slice study (new UIDs), and ``--runs`` 250-slice studies (the 128 slices, then
   122 more shifted along z), so every measured run is *cold*: a study no cache
   has seen.
2. Starts a real ``pacs serve`` on loopback and signs in like the browser.
3. **First image**: the viewer's requests, timed from the study request to the
   first frame's last byte: ``GET /api/studies/<uid>``, then at once the series
   geometry and the first raw frame (as the page does), over keep-alive
   connections. Also the phone path (a rendered JPEG instead of the raw frame).
4. **250-slice series**: the geometry, then every raw frame in batches of 8 over
   4 keep-alive connections (the viewer's loader), plain and gzip.
5. **Window/level in Chromium**: opens the 128-slice study in headless
   ``/usr/bin/chromium`` (Playwright), drags W/L with the mouse for a few seconds
   and times the repaints with ``requestAnimationFrame``.

Prints one Markdown table with medians over the runs, and the targets.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parents[1]
CT = REPO / "sample_dicom" / "ct_head"
PASSWORD = "bench password 2024"
BATCH = 8
PARALLEL = 4


# ---------------------------------------------------------------- data


def copy_ct_study(target: Path, slices: int, tag: str) -> None:
    """A new CT study of ``slices`` slices made of the sample CT's (positions continued)."""
    sources = sorted(CT.glob("*.dcm"))
    study, series = generate_uid(), generate_uid()
    target.mkdir(parents=True)
    step = 1.25
    for n in range(slices):
        ds = pydicom.dcmread(sources[n % len(sources)])
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientID = f"BENCH{tag}"
        ds.AccessionNumber = f"B{tag}"
        ds.InstanceNumber = n + 1
        z = -63.75 + n * step
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], z]
        ds.SliceLocation = z
        ds.save_as(target / f"{n:04d}.dcm", enforce_file_format=True)


# ---------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("pacs serve exited early")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("pacs serve did not listen")


class Client:
    """A signed-in keep-alive HTTP client (one connection per thread)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookie = ""
        self.csrf = ""
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            self._local.conn = conn
        return conn

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        all_headers = {"Cookie": self.cookie, **(headers or {})}
        for attempt in (1, 2):
            conn = self._conn()
            try:
                conn.request(method, path, body=body, headers=all_headers)
                response = conn.getresponse()
                data = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._local.conn = None
                if attempt == 2:
                    raise
        cookie = response.getheader("Set-Cookie")
        if cookie:
            self.cookie = cookie.split(";", 1)[0]
        return response.status, dict(response.getheaders()), data

    def get(self, path: str) -> bytes:
        status, _, data = self.request("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path}: HTTP {status}: {data[:200]!r}")
        return data

    def sign_in(self, username: str, password: str) -> None:
        _, _, page = self.request("GET", "/login")
        self.csrf = re.search(rb'name="csrf-token" content="([^"]+)"', page).group(1).decode()  # type: ignore[union-attr]
        form = urllib.parse.urlencode(
            {"username": username, "password": password, "csrf_token": self.csrf}
        ).encode()
        status, _, _ = self.request(
            "POST", "/login", form, {"Content-Type": "application/x-www-form-urlencoded"}
        )
        if status != 302:
            raise SystemExit(f"sign-in failed: HTTP {status}")


# ---------------------------------------------------------------- measurements


def first_image(client: Client, pool: ThreadPoolExecutor, study_uid: str, rendered: bool) -> float:
    """ms from asking for the study to holding its first image's bytes."""
    started = time.perf_counter()
    study = json.loads(client.get(f"/api/studies/{study_uid}"))
    series = study["series"][0]
    geometry = pool.submit(client.get, f"/api/series/{series['series_uid']}")
    sop = series["first_sop_uid"]
    if rendered:
        client.get(f"/api/instances/{sop}/frames/1/rendered?format=jpeg&quality=88&w=390&h=700")
    else:
        client.get(f"/api/frames?f={sop}/1")
    elapsed = (time.perf_counter() - started) * 1000
    geometry.result()
    return elapsed


def load_series(
    client: Client, pool: ThreadPoolExecutor, study_uid: str, gzip: bool
) -> tuple[float, int]:
    """(ms until every raw frame is here, bytes transferred) as the viewer's loader does it."""
    started = time.perf_counter()
    study = json.loads(client.get(f"/api/studies/{study_uid}"))
    series = study["series"][0]
    first = pool.submit(client.get, f"/api/frames?f={series['first_sop_uid']}/1")
    meta = json.loads(client.get(f"/api/series/{series['series_uid']}"))
    first.result()
    keys = [f"{i['sop_uid']}/1" for i in meta["instances"]][1:]
    batches = [keys[i : i + BATCH] for i in range(0, len(keys), BATCH)]
    suffix = "&z=1" if gzip else ""

    def fetch(batch: list[str]) -> int:
        status, _, data = client.request(
            "GET", f"/api/frames?f={','.join(batch)}{suffix}", headers={"Accept-Encoding": "gzip"}
        )
        assert status == 200
        if gzip:
            import zlib

            zlib.decompress(data, 31)
        return len(data)

    received = sum(pool.map(fetch, batches))
    return (time.perf_counter() - started) * 1000, received


IN_PAGE_DRAG = """(seconds) => new Promise((resolve) => {
  // One pointer move per animation frame, as a mouse at the display's rate would give.
  const v = window.pacsViewer.active;
  const el = v.element;
  const r = el.getBoundingClientRect();
  const x = r.left + r.width / 2, y = r.top + r.height / 2;
  const opts = (dx) => ({ pointerId: 7, pointerType: "mouse", button: 0, buttons: 1,
                          clientX: x + dx, clientY: y + dx / 3, bubbles: true });
  window.benchPaints = [];
  el.dispatchEvent(new PointerEvent("pointerdown", opts(0)));
  const end = performance.now() + seconds * 1000;
  let i = 0;
  const tick = () => {
    if (performance.now() > end) {
      el.dispatchEvent(new PointerEvent("pointerup", opts(0)));
      resolve(window.benchPaints);
      return;
    }
    i += 1;
    el.dispatchEvent(new PointerEvent("pointermove", opts((i % 200) - 100)));
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
})"""


def _paint_stats(paints: list[list[float]], moves: int) -> dict[str, float]:
    starts = [p[0] for p in paints]
    durations = [p[1] - p[0] for p in paints]
    span = (starts[-1] - starts[0]) / 1000 if len(starts) > 1 else 1
    intervals = [b - a for a, b in itertools.pairwise(starts)]
    return {
        "fps": (len(starts) - 1) / span,
        "interval_p95": sorted(intervals)[int(0.95 * (len(intervals) - 1))] if intervals else 0,
        "paint_ms": statistics.median(durations) if durations else 0,
        "paint_p95": sorted(durations)[int(0.95 * (len(durations) - 1))] if durations else 0,
        "moves": moves,
    }


def window_level_fps(port: int, study_uid: str, seconds: float) -> dict[str, dict[str, float]]:
    """W/L repaint rate: real mouse moves sent by Playwright, and one move per frame in-page."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="pacs-bench-chromium-")
    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
    ]
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path="/usr/bin/chromium",
            headless=True,
            args=args,
            viewport={"width": 1280, "height": 900},
        )
        try:
            page = context.new_page()
            base = f"http://127.0.0.1:{port}"
            page.goto(base + "/login")
            page.fill("#username", "bench")
            page.fill("#password", PASSWORD)
            page.click("#login-form button[type=submit]")
            page.wait_for_load_state()
            page.goto(f"{base}/viewer/{study_uid}")
            page.wait_for_function(
                "() => window.pacsViewer?.active?.stack?.complete", timeout=60000
            )
            page.evaluate("""() => {
                const v = window.pacsViewer.active;
                window.benchPaints = [];
                const draw = v.draw.bind(v);
                v.draw = () => {
                  const t0 = performance.now(); const before = v.paintCount; draw();
                  if (v.paintCount > before) window.benchPaints.push([t0, performance.now()]);
                };
            }""")
            box = page.locator(".viewport.active").bounding_box()
            x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(x, y)
            page.mouse.down()
            deadline = time.monotonic() + seconds
            i = 0
            while time.monotonic() < deadline:
                i += 1
                # Back and forth, so the window keeps changing.
                dx = (i % 200) - 100
                page.mouse.move(x + dx, y + dx / 3)
            page.mouse.up()
            mouse = _paint_stats(page.evaluate("() => window.benchPaints"), i)
            paints = page.evaluate(IN_PAGE_DRAG, seconds)
            per_frame = _paint_stats(paints, len(paints))
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)
    return {"mouse": mouse, "frame": per_frame}


# ---------------------------------------------------------------- main


def median_of(fn: Callable[[str], float], uids: list[str]) -> tuple[float, list[float]]:
    values = [fn(uid) for uid in uids]
    return statistics.median(values), values


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=6, help="cold runs (each on its own study)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--wl-seconds", type=float, default=4.0)
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: temporary)")
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="pacs-viewer-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    data_dir = work / "data"
    studies_dir = work / "studies"
    if not studies_dir.exists():
        print(f"making {args.runs} × 128-slice and {args.runs} × 250-slice CT studies in {work} …")
        for n in range(args.runs):
            copy_ct_study(studies_dir / f"first{n}", 128, f"F{n}")
            copy_ct_study(studies_dir / f"long{n}", 250, f"L{n}")

    env = {k: v for k, v in os.environ.items() if not k.startswith("PACS_")}
    from pacs.bootstrap import build_archive
    from pacs.config import Settings
    from pacs.importer import import_paths
    from pacs.storage.matching import Level, Query
    from pacs.viewer.users import AccountError, Accounts

    archive = build_archive(Settings(data_dir=data_dir))
    if archive.totals()["instances"] == 0:
        print("importing …")
        import_paths(archive, [studies_dir])
    try:
        Accounts(archive.index.engine).create("bench", PASSWORD, role="radiologist")
    except AccountError:
        Accounts(archive.index.engine).set_password("bench", PASSWORD)
    uids = {
        r["AccessionNumber"]: r["StudyInstanceUID"]
        for r in archive.search(Query(Level.STUDY), ["AccessionNumber", "StudyInstanceUID"])
    }
    archive.index.engine.dispose()

    port = free_port()
    log = (work / "server.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pacs",
            "serve",
            "--data-dir",
            str(data_dir),
            "--host",
            "127.0.0.1",
            "--dicom-port",
            str(free_port()),
            "--http-port",
            str(port),
            "--workers",
            str(args.workers),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    rows: list[tuple[str, str, str, str]] = []
    try:
        wait_port(port, server)
        client = Client(port)
        client.sign_in("bench", PASSWORD)
        client.get("/healthz")
        pool = ThreadPoolExecutor(PARALLEL)
        half = max(1, args.runs // 2)
        first_uids = [uids[f"BF{n}"] for n in range(args.runs)]
        raw_first, values = median_of(
            lambda u: first_image(client, pool, u, False), first_uids[:half] or first_uids
        )
        rows.append(
            (
                "first image, raw 16-bit (cold)",
                f"{raw_first:.0f} ms",
                ", ".join(f"{v:.0f}" for v in values),
                "< 150 ms",
            )
        )
        rendered_first, values = median_of(
            lambda u: first_image(client, pool, u, True), first_uids[half:] or first_uids
        )
        rows.append(
            (
                "first image, rendered JPEG for a phone (cold)",
                f"{rendered_first:.0f} ms",
                ", ".join(f"{v:.0f}" for v in values),
                "< 150 ms",
            )
        )
        warm, values = median_of(lambda u: first_image(client, pool, u, False), first_uids[:half])
        rows.append(
            (
                "first image, raw, study seen before",
                f"{warm:.0f} ms",
                ", ".join(f"{v:.0f}" for v in values),
                "–",
            )
        )
        long_uids = [uids[f"BL{n}"] for n in range(args.runs)]
        results = [load_series(client, pool, u, False) for u in long_uids[:half] or long_uids]
        times = [r[0] for r in results]
        rows.append(
            (
                "250-slice series, all raw frames (cold)",
                f"{statistics.median(times) / 1000:.2f} s",
                ", ".join(f"{t / 1000:.2f}" for t in times) + f" · {results[0][1] / 1e6:.0f} MB",
                "< 3 s",
            )
        )
        results = [load_series(client, pool, u, True) for u in long_uids[half:] or long_uids]
        times = [r[0] for r in results]
        rows.append(
            (
                "250-slice series, gzip (cold; for slow links)",
                f"{statistics.median(times) / 1000:.2f} s",
                ", ".join(f"{t / 1000:.2f}" for t in times) + f" · {results[0][1] / 1e6:.0f} MB",
                "–",
            )
        )
        again = [load_series(client, pool, long_uids[0], False)[0]]
        rows.append(
            (
                "250-slice series, raw, loaded again (server caches)",
                f"{again[0] / 1000:.2f} s",
                "",
                "–",
            )
        )
        if not args.no_browser:
            measured = window_level_fps(port, uids["BF0"], args.wl_seconds)
            for how, fps in (
                ("Playwright mouse moves", measured["mouse"]),
                ("one move per frame", measured["frame"]),
            ):
                rows.append(
                    (
                        f"W/L drag in Chromium, 512×512 CT ({how})",
                        f"{fps['fps']:.0f} fps",
                        f"repaint median {fps['paint_ms']:.1f} ms, p95 {fps['paint_p95']:.1f} ms;"
                        f" frame interval p95 {fps['interval_p95']:.1f} ms; {fps['moves']} moves",
                        "≥ 30 fps",
                    )
                )
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    print(
        f"\nViewer benchmark — loopback, pacs serve --workers {args.workers}, "
        f"{os.cpu_count()} CPU core(s), {args.runs} cold runs\n"
    )
    print("| measure | median | runs | target |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
