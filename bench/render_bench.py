"""Time the server-side pixel pipeline (pacs.viewer.rendering) and print a table.

Imports a CT series (by default the 250-slice 512×512 CT that
``/work/shared/bench/make_dataset.py --studies 1 --slices 250 --mr-slices 0
--cr-images 0`` writes) and ``sample_dicom/`` into a throwaway archive, then
times each step of the pipeline with the library called directly (no HTTP):

    python bench/render_bench.py                       # /tmp/ds1, sample_dicom
    python bench/render_bench.py --dataset /tmp/ds1 --n 100 --threads 4

"cold" means nothing of the instance is in the pipeline's caches (the file is in
the OS page cache: it was just written). Orthanc's figures for comparison
(shared/bench/RESULTS.md, same CT, over HTTP): /rendered JPEG 1.2 ms,
PNG 5.0 ms, /frames/0/raw 0.3 ms.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pacs.archive import Archive, Source  # noqa: E402
from pacs.bootstrap import build_archive  # noqa: E402
from pacs.config import load_settings  # noqa: E402
from pacs.storage.index import InstanceRef  # noqa: E402
from pacs.viewer import rendering as R  # noqa: E402

Row = tuple[str, float, float, int, str]


def timed(fn: Callable[[Any], Any], items: Sequence[Any]) -> tuple[float, float, int]:
    """(median ms, p90 ms, bytes of the last result) of fn over items, one call each."""
    times = []
    size = 0
    for item in items:
        start = time.perf_counter()
        out = fn(item)
        times.append((time.perf_counter() - start) * 1000)
        size = _size(out)
    times.sort()
    p90 = times[min(len(times) - 1, int(len(times) * 0.9))]
    return statistics.median(times), p90, size


def _size(out: Any) -> int:
    if isinstance(out, bytes):
        return len(out)
    if isinstance(out, tuple) and out and isinstance(out[0], bytes):
        return len(out[0])
    return len(getattr(out, "data", b""))


def import_dir(archive: Archive, folder: Path) -> list[InstanceRef]:
    refs = []
    for path in sorted(folder.rglob("*.dcm")):
        result = archive.store_file(path, source=Source("import"))
        refs.append(archive.instance(result.sop_instance_uid))
    return refs


def first_image_in_new_process(data_dir: Path, sop: str) -> float:
    """ms for one render in a fresh interpreter, imports of the pipeline excluded."""
    code = f"""
import time, warnings, logging
warnings.simplefilter("ignore"); logging.disable(logging.WARNING)
from pathlib import Path
from pacs.bootstrap import build_archive
from pacs.config import load_settings
from pacs.viewer import rendering as R
archive = build_archive(load_settings(data_dir=Path({str(data_dir)!r})))
ref = archive.instance({sop!r})
start = time.perf_counter()
R.render(archive, ref, R.RenderRequest())
print((time.perf_counter() - start) * 1000)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    return float(out.stdout.strip().splitlines()[-1])


def threaded(fn: Callable[[Any], Any], items: Sequence[Any], threads: int) -> float:
    """Items per second with ``threads`` threads sharing the items."""
    chunks = [items[i::threads] for i in range(threads)]
    start = time.perf_counter()
    workers = [threading.Thread(target=lambda c=c: [fn(x) for x in c]) for c in chunks]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return len(items) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=Path("/tmp/ds1"))
    parser.add_argument("--samples", type=Path, default=REPO / "sample_dicom")
    parser.add_argument("--n", type=int, default=100, help="slices per measurement")
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)

    ct_dirs = sorted(args.dataset.glob("*_ct"))
    if not ct_dirs:
        sys.exit(f"no CT study under {args.dataset}; run shared/bench/make_dataset.py first")
    data_dir = Path(tempfile.mkdtemp(prefix="render-bench-"))
    try:
        run(args, ct_dirs[0], data_dir)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def run(args: argparse.Namespace, ct_dir: Path, data_dir: Path) -> None:
    archive = build_archive(load_settings(data_dir=data_dir))
    started = time.perf_counter()
    ct = import_dir(archive, ct_dir)
    print(f"imported {len(ct)} CT slices in {time.perf_counter() - started:.1f} s", flush=True)
    samples = import_dir(archive, args.samples) if args.samples.is_dir() else []
    n = min(args.n, len(ct))
    step = max(1, len(ct) // n)
    slices = ct[::step][:n]
    others = [r for r in ct if r not in slices][:n]
    rows: list[Row] = []

    def add(label: str, fn: Callable[[Any], Any], items: Sequence[Any], note: str = "") -> None:
        median, p90, size = timed(fn, items)
        rows.append((label, median, p90, size, note))

    jpeg, png, webp = (
        R.RenderRequest(),
        R.RenderRequest(format="png"),
        R.RenderRequest(format="webp"),
    )
    rows.append(
        (
            "first image, new process (CT 512², JPEG)",
            first_image_in_new_process(data_dir, slices[0].sop_uid),
            float("nan"),
            0,
            "read+parse+decode+window+encode",
        )
    )
    R.clear_caches()
    add("cold render JPEG (CT 512²)", lambda r: R.render(archive, r, jpeg), slices, "no cache")
    add(
        "warm render JPEG, same request",
        lambda r: R.render(archive, r, jpeg),
        slices,
        "output cache",
    )
    R.configure_caches(output_bytes=0)
    add(
        "render JPEG from decoded frame",
        lambda r: R.render(archive, r, jpeg),
        slices,
        "frame cache",
    )
    add("render PNG from decoded frame", lambda r: R.render(archive, r, png), slices, "frame cache")
    add(
        "render WebP from decoded frame",
        lambda r: R.render(archive, r, webp),
        slices,
        "frame cache",
    )
    windows = [R.RenderRequest(window=(float(40 + i), 400.0)) for i in range(len(slices))]
    add(
        "render JPEG, new window each time",
        lambda i: R.render(archive, slices[i], windows[i]),
        range(len(slices)),
        "LUT built",
    )
    small = R.RenderRequest(size=(256, 256))
    add("render JPEG fitted to 256²", lambda r: R.render(archive, r, small), slices, "frame cache")
    R.configure_caches(output_bytes=R.DEFAULT_OUTPUT_CACHE_BYTES)
    R.clear_caches()
    add("cold PNG render", lambda r: R.render(archive, r, png), slices, "no cache")
    R.clear_caches()
    add("cold raw 16-bit frame", lambda r: R.raw_frame(archive, r, 0), slices, "no cache")
    add("warm raw 16-bit frame", lambda r: R.raw_frame(archive, r, 0), slices, "frame cache")
    R.clear_caches()
    add("native frame bytes", lambda r: R.native_frame_bytes(archive, r, 0), slices, "file read")
    add("stored frame bytes", lambda r: R.stored_frame_bytes(archive, r, 0), others, "file read")
    R.clear_caches()
    add("cold thumbnail 128 JPEG", lambda r: R.thumbnail(archive, r), slices, "no cache")

    R.clear_caches()
    start = time.perf_counter()
    job = R.prefetch(archive, ct)
    job.wait()
    prefetch_s = time.perf_counter() - start
    rows.append(
        (
            f"prefetch whole series ({len(ct)} slices)",
            prefetch_s * 1000,
            float("nan"),
            job.bytes,
            f"{job.frames / prefetch_s:.0f} frames/s, {R.PREFETCH_WORKERS} threads",
        )
    )
    add("render JPEG after prefetch", lambda r: R.render(archive, r, jpeg), slices, "frame cache")

    for label, folder in (
        ("sample CT (JPEG-LS 512²)", "ct_head"),
        ("sample CR (JPEG 2000 lossless)", "cr_chest"),
        ("sample MR (native 16-bit)", "mr_brain"),
    ):
        refs = [r for r in samples if f"/{folder}/" in _path(archive, r)]
        if refs:
            R.clear_caches()
            add(f"cold render {label}", lambda r: R.render(archive, r, jpeg), refs[:n], "no cache")
    jls = [r for r in samples if "/ct_head/" in _path(archive, r)][:n]
    if jls:
        R.clear_caches()
        native = partial(R.native_frame_bytes, archive)
        add("native frame of JPEG-LS CT", lambda r: native(r, 0), jls, "decoded, no cache")
        add("native frame of JPEG-LS CT again", lambda r: native(r, 0), jls, "frame cache")
        stored = partial(R.stored_frame_bytes, archive)
        add("stored frame of JPEG-LS CT", lambda r: stored(r, 0), jls, "fragment read")
    cine = [r for r in samples if "/us_cine/" in _path(archive, r)]
    if cine:
        ref = cine[0]
        frames = range(R.frame_count(archive, ref))
        R.clear_caches()
        add(
            "cold US cine frame (JPEG baseline)",
            lambda i: R.render(archive, ref, R.RenderRequest(frame=i)),
            frames,
            f"{len(frames)} frames, one at a time",
        )
        R.configure_caches(output_bytes=0)
        add(
            "US cine frame from decoded frame",
            lambda i: R.render(archive, ref, R.RenderRequest(frame=i)),
            frames,
            "frame cache",
        )
        R.configure_caches(output_bytes=R.DEFAULT_OUTPUT_CACHE_BYTES)

    # Threads: decoded frames cached, outputs not, so every call windows and encodes.
    R.clear_caches()
    R.prefetch(archive, slices).wait()
    R.configure_caches(output_bytes=0)
    one = threaded(lambda r: R.render(archive, r, jpeg), slices * 3, 1)
    many = threaded(lambda r: R.render(archive, r, jpeg), slices * 3, args.threads)
    R.configure_caches(output_bytes=R.DEFAULT_OUTPUT_CACHE_BYTES)

    print()
    print("| step | median ms | p90 ms | bytes | note |")
    print("|---|---|---|---|---|")
    for label, median, p90, size, note in rows:
        p90_text = "–" if p90 != p90 else f"{p90:.2f}"
        print(f"| {label} | {median:.2f} | {p90_text} | {size or '–'} | {note} |")
    print()
    print(
        f"JPEG renders from decoded frames: {one:.0f}/s on 1 thread, "
        f"{many:.0f}/s on {args.threads} threads sharing the work"
    )
    load = os.getloadavg()
    print(
        f"{os.cpu_count()} CPUs; load average {load[0]:.1f} at the end (other processes "
        "running on the machine make every figure above slower and noisier)"
    )


def _path(archive: Archive, ref: InstanceRef) -> str:
    # sample_dicom keeps its folders in the study description only; map by SOP class.
    folders = {
        "1.2.840.10008.5.1.4.1.1.2": "/ct_head/",
        "1.2.840.10008.5.1.4.1.1.1": "/cr_chest/",
        "1.2.840.10008.5.1.4.1.1.4": "/mr_brain/",
        "1.2.840.10008.5.1.4.1.1.3.1": "/us_cine/",
    }
    return folders.get(ref.sop_class_uid, "")


if __name__ == "__main__":
    main()
