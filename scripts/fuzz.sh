#!/bin/sh
# Builds the libFuzzer targets with clang (ASan + UBSan) in build-fuzz/, apart from the normal
# build, and fuzzes one of them for a number of minutes, starting from and adding to
# fuzz/corpus/<target>/. Crashes land in build-fuzz/artifacts/<target>/ (crash-*, leak-*,
# timeout-*, oom-*); after fixing one, copy its input into fuzz/corpus/<target>/ so that the
# unit tests replay it.
#   scripts/fuzz.sh dicom_volume 10      # 10 minutes of the dataset-to-volume path
#   scripts/fuzz.sh config 5             # 5 minutes of firmware::parse_config
# Environment: FUZZ_JOBS (parallel workers, default 1), FUZZ_BUILD_DIR (default build-fuzz).
set -eu
usage() { echo "usage: $0 dicom_volume|config MINUTES" >&2; exit 2; }
[ $# -eq 2 ] || usage
target=$1
minutes=$2
case $target in dicom_volume|config) ;; *) usage ;; esac
case $minutes in ''|*[!0-9]*) usage ;; esac

root=$(cd "$(dirname "$0")/.." && pwd)
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}
jobs=${FUZZ_JOBS:-1}
CC=clang CXX=clang++ cmake -S "$root/fuzz" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" --target "${target}_fuzzer" -j2

corpus=$root/fuzz/corpus/$target
work=$build/corpus/$target          # everything found; only small, interesting inputs go to git
artifacts=$build/artifacts/$target
mkdir -p "$corpus" "$work" "$artifacts"
case $target in
  dicom_volume) extra="-max_len=65536 -dict=$root/fuzz/dicom.dict" ;;
  config) extra="-max_len=4096 -dict=$root/fuzz/toml.dict" ;;
esac
cd "$build"
parallel=""
[ "$jobs" -gt 1 ] && parallel="-jobs=$jobs -workers=$jobs"
# shellcheck disable=SC2086
"$build/${target}_fuzzer" "$work" "$corpus" $extra $parallel -max_total_time=$((minutes * 60)) -timeout=10 \
  -rss_limit_mb=3072 -artifact_prefix="$artifacts/" -print_final_stats=1 >"$build/${target}.log" 2>&1 || true
grep -E "^Done|stat::number_of_executed_units|stat::peak_rss|ERROR|SUMMARY" "$build/${target}.log" || true
echo "log: $build/${target}.log; artifacts: $artifacts"
ls "$artifacts"
