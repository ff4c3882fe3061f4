#!/usr/bin/env bash
# The main job end to end on this machine: installs what is missing, builds, makes a phantom
# DWI/ADC study on the Colin27 head, starts the appliance daemon on loopback, sends the study
# to it over DICOM with DCMTK's storescu (a real C-STORE client), waits for the result and
# prints report.json plus the Dice against the phantom's ground truth.
# Usage: scripts/demo.sh [SEED]        (default seed 9100; any seed >= 9000 was never trained on)
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${1:-9100}

scripts/install-deps.sh
WORK=$(mktemp -d /tmp/strokebox-demo.XXXXXX)
scripts/build.sh >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; echo "demo: build failed" >&2; exit 1; }
BIN=build/strokebox
DAEMON_PID=""
cleanup() {
  if [ -n "$DAEMON_PID" ]; then kill "$DAEMON_PID" 2>/dev/null || true; wait "$DAEMON_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT

echo "== 1. phantom study (seed $SEED) -> $WORK/study"
$BIN phantom --out "$WORK/study" --seed "$SEED" --format dicom

PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo "== 2. appliance daemon on 127.0.0.1:$PORT (data in $WORK/data, log in $WORK/daemon.log)"
$BIN run --port "$PORT" --bind 127.0.0.1 --ae-title STROKEBOX --data-dir "$WORK/data" \
  --model models/demo --quiet-s 2 >"$WORK/daemon.log" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 1 100); do
  echoscu -aec STROKEBOX 127.0.0.1 "$PORT" >/dev/null 2>&1 && break
  kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$WORK/daemon.log"; echo "demo: daemon exited" >&2; exit 1; }
  sleep 0.2
done

echo "== 3. C-STORE of the study with storescu"
storescu -aec STROKEBOX +sd +r 127.0.0.1 "$PORT" "$WORK/study/DWI" "$WORK/study/ADC"

echo "== 4. waiting for the result"
REPORT=""
for _ in $(seq 1 600); do
  REPORT=$(find "$WORK/data/results" -name report.json 2>/dev/null | head -n 1 || true)
  [ -n "$REPORT" ] && break
  kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$WORK/daemon.log"; echo "demo: daemon exited" >&2; exit 1; }
  sleep 0.5
done
[ -n "$REPORT" ] || { cat "$WORK/daemon.log"; echo "demo: no result after 5 minutes" >&2; exit 1; }
cat "$REPORT"
RESULT_DIR=$(dirname "$REPORT")
echo "== 5. outputs in $RESULT_DIR: $(ls "$RESULT_DIR" | tr '\n' ' ')"
echo "== 6. against the phantom's ground truth"
$BIN evaluate --pred "$RESULT_DIR/lesion_mask.nii.gz" --truth "$WORK/study/truth.nii.gz"
echo "== 7. the technician's view"
$BIN status --data-dir "$WORK/data"
