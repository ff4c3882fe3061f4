#!/usr/bin/env bash
# Load benchmark of the DICOM node (issue 7 part 6): starts the real daemon
# (`strokebox run --config ...`, simulated board, the demo model) and runs four senders at once,
# each sending phantom studies of 60 to 120 instances over one association per study, for a
# configurable duration. Studies are processed by the daemon meanwhile (as in the field).
# Prints per-instance store latency (median, p99), refused associations, loss (acknowledged
# instances missing from the index) and studies per minute.
#
# Usage: bench/load_bench.sh [--smoke] [--duration S] [--senders N] [--build DIR] [--keep]
#   --smoke      20 s run (default duration: 180 s)
#   --build DIR  build tree with strokebox and bench/load_bench (default: build)
#   --keep       keep the work directory (daemon log, data dir)
#   --nagle      senders leave Nagle's algorithm on (as a DICOM stack that does not disable it)
# Exit status: 0 when no association was refused and nothing was lost or failed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build="$root/build"
duration=180
senders=4
keep=0
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) duration=20 ;;
    --duration) duration="$2"; shift ;;
    --senders) senders="$2"; shift ;;
    --build) build="$2"; shift ;;
    --keep) keep=1 ;;
    --nagle) extra+=(--nagle) ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "load_bench.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[[ "$build" = /* ]] || build="$root/$build"
bin="$build/strokebox"
gen="$build/bench/load_bench"
for f in "$bin" "$gen"; do
  [[ -x "$f" ]] || { echo "load_bench.sh: $f missing: cmake --build $build --target strokebox load_bench" >&2; exit 2; }
done

work=$(mktemp -d /tmp/strokebox_load.XXXXXX)
daemon_pid=""
cleanup() {
  if [[ -n "$daemon_pid" ]] && kill -0 "$daemon_pid" 2>/dev/null; then
    kill -TERM "$daemon_pid"
    wait "$daemon_pid" 2>/dev/null || true
  fi
  if [[ $keep -eq 0 ]]; then rm -rf "$work"; else echo "work directory kept: $work"; fi
}
trap cleanup EXIT

# Source studies: one phantom per sender (DWI + ADC series); load_bench replicates their
# slices into further series to reach 60..120 instances per study.
echo "generating $senders phantom studies..."
"$bin" phantom --format dicom --seed 700 --count "$senders" --out "$work/src" >/dev/null
sources=()
for d in "$work"/src/phantom_*; do sources+=(--source "$d"); done

port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/strokebox.toml" <<EOF
[dicom]
ae_title = "STROKEBOX"
port = $port
bind_address = "127.0.0.1"
max_associations = $senders
study_quiet_s = 5

[storage]
data_dir = "$work/data"
min_free_mb = 64

[model]
dir = "$root/models/demo"

[board]
kind = "sim"

[status]
enabled = false
EOF

"$bin" run --config "$work/strokebox.toml" > "$work/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 1 300); do
  if echoscu -aec STROKEBOX 127.0.0.1 "$port" 2>/dev/null; then break; fi
  kill -0 "$daemon_pid" 2>/dev/null || { echo "daemon exited:"; cat "$work/daemon.log"; exit 1; }
  sleep 0.1
done

echo "sending for $duration s with $senders senders to port $port..."
status=0
OMP_WAIT_POLICY=PASSIVE "$gen" --port "$port" --senders "$senders" --duration-s "$duration" \
  "${sources[@]}" ${extra[@]+"${extra[@]}"} --db "$work/data/strokebox.db" --json "$work/load.json" || status=$?

jobs=$("$bin" status --json --data-dir "$work/data" 2>/dev/null |
  /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps(d.get("jobs", d.get("job_counts", {}))))' 2>/dev/null || echo "?")
echo "daemon jobs at the end: $jobs"
rejected=$(grep -c "rejecting association\|refused with 0x" "$work/daemon.log" || true)
echo "daemon log: associations rejected or instances refused: $rejected"
exit $status
