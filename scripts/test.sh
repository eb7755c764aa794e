#!/usr/bin/env bash
# Install everything the test suite needs and run all of it:
#   Debian packages: DCMTK (DICOM peers), Orthanc + its DICOMweb plugin (peer PACS),
#   PostgreSQL (second index backend), Chromium (viewer tests);
#   Python: pacs with its test extras (pytest, moto[server] for S3, dicomweb-client,
#   playwright driving the system Chromium, ruff).
# Extra arguments go to pytest (e.g. -k dicomweb, -m "not browser").
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(dcmtk orthanc orthanc-dicomweb postgresql chromium)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    # The orthanc and postgresql packages start system services on install; the
    # tests run their own instances on free ports, so keep the services down.
    own_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod +x /usr/sbin/policy-rc.d
        own_policy=1
    fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    [ -n "$own_policy" ] && $SUDO rm -f /usr/sbin/policy-rc.d
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"

.venv/bin/ruff check pacs tests bench sample_dicom
.venv/bin/ruff format --check pacs tests bench sample_dicom
.venv/bin/python -m pytest -ra "$@"
