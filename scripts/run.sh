#!/usr/bin/env bash
# Install pacs into ./.venv and run it (DICOM + web) on the embedded default
# (SQLite + filesystem in ./pacs-data), loading the sample studies when the
# archive is empty. Extra arguments go to `pacs serve` (e.g. --http-port 9090).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .

exec .venv/bin/pacs serve --data-dir "${PACS_DATA_DIR:-pacs-data}" --samples sample_dicom "$@"
