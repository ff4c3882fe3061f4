#!/bin/bash
# Crash soak (issue 7, part 1): runs the Crash harness of tests/integration/crash_test.cc for
# CYCLES cycles: the real daemon receives one new phantom-derived study per cycle from storescu
# and is killed with SIGKILL at a random point (receive, processing, sending to a real Orthanc,
# or idle) and restarted; after each cycle every acknowledged instance must be indexed with a
# complete spool file and PRAGMA integrity_check must be ok; at the end every study is
# done/failed exactly once and Orthanc holds no duplicate study or result series.
#
#   bench/crash_soak.sh [CYCLES] [BUILD_DIR]     (needs targets strokebox and integration_test)
#   env: CYCLES (50; the argument wins), SEED (1: the random kill points), OMP_WAIT_POLICY
#        (passive), STROKEBOX_KEEP_TEST_DATA=1 keeps the data directory and daemon logs.
set -uo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
CYCLES=${1:-${CYCLES:-50}}
BUILD=$(cd "${2:-$SRC/build}" && pwd)
BIN=$(find "$BUILD" -maxdepth 3 -type f -name integration_test | head -1)
[ -x "$BIN" ] || { echo "crash_soak: no integration_test under $BUILD (build targets strokebox and integration_test)"; exit 1; }
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
export STROKEBOX_CRASH_CYCLES=$CYCLES
export STROKEBOX_CRASH_SEED=${SEED:-1}
echo "crash_soak: $(date -u +%FT%TZ), $CYCLES cycles, seed $STROKEBOX_CRASH_SEED, $(nproc) cores, binary $BIN"
start=$(date +%s)
"$BIN" --gtest_filter='Crash.*' --gtest_color=no
rc=$?
echo "crash_soak: exit $rc after $(( $(date +%s) - start )) s"
exit $rc
