#!/usr/bin/env bash
# Measure pacs, Orthanc (TCP no-delay) and DCMTK storescp with the shared harness
# (../shared/bench/run_bench.py), interleaved in one run on this machine.
#   bench/run_harness.sh                                # ingest, query, move; 3 repeats
#   bench/run_harness.sh --phases ingest --repeats 5    # any run_bench.py options
# Set PACS_SRC to benchmark another checkout of pacs (default: this one).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
harness="${PACS_BENCH_HARNESS:-$here/../shared/bench}"
dataset="${PACS_BENCH_DATASET:-/tmp/bench_ds}"
python="$here/.venv/bin/python"
if [ ! -f "$dataset/manifest.json" ]; then
    "$python" "$harness/make_dataset.py" --out "$dataset" --tiny 2000
fi
targets="$(mktemp /tmp/pacs-targets.XXXXXX.json)"
trap 'rm -f "$targets"' EXIT
sed "s#{here_pacs}#${PACS_SRC:-$here}#g" "$here/bench/targets.json" > "$targets"
exec "$python" "$harness/run_bench.py" --targets "$targets" --dataset "$dataset" \
    --out "$here/bench/results" --phases "${PHASES:-ingest,query,move}" "$@"
