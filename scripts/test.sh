#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite (unit + integration).
# Prints ctest's summary; exits non-zero when any test fails.
# Usage: scripts/test.sh [ctest options, e.g. -L unit or -R Dicom]
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
scripts/install-deps.sh
scripts/build.sh
cd build
# oneDNN and torch use OpenMP; passive waiting keeps tests fast when they share the 2 cores.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
ctest --output-on-failure --timeout 1200 -j "${JOBS:-$(nproc)}" "$@"
echo "test.sh: whole suite took $(( $(date +%s) - start )) s"
