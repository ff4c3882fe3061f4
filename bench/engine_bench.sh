#!/bin/bash
# One-command engine benchmark (issue 3): times the forward pass of the ISLES-size nnU-Net
# (2 in-channels, 2 classes, features 32..320, 1x2x128^3, seeded random weights from
# tools/make_isles_net.py, generated into BUILD/isles, never committed) with our engine (fp32,
# fp16 weights, bf16 where the CPU runs it natively), PyTorch (fp32 and bf16 autocast,
# 2 threads) and a oneDNN matmul ceiling; prints a table (median of RUNS runs after warm-up,
# GFLOP/s, % of the ceiling, peak RSS, ratio against PyTorch) and the per-layer profile of
# the engine's fastest precision.
#
#   bench/engine_bench.sh [BUILD_DIR]        (needs targets strokebox and matmul_ceiling_bench)
#   env: RUNS (5), WARMUP (1), THREADS (2), TORCH_TIMEOUT (s per PyTorch mode, 1800),
#        PATCH (128; e.g. 64 for a quick run on a busy machine), NET (BUILD/isles[-PATCH]),
#        OMP_WAIT_POLICY (passive: spinning OpenMP threads hurt on a shared 2-core machine)
set -uo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "${1:-$SRC/build}" && pwd)
RUNS=${RUNS:-5}
WARMUP=${WARMUP:-1}
THREADS=${THREADS:-2}
TORCH_TIMEOUT=${TORCH_TIMEOUT:-1800}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
PY=/usr/bin/python3
PATCH=${PATCH:-128}
if [ "$PATCH" = 128 ]; then NET=${NET:-$BUILD/isles}; else NET=${NET:-$BUILD/isles-$PATCH}; fi
OUT=$(mktemp -d /tmp/engine_bench.XXXXXX)
echo "engine_bench: $(date -u +%FT%TZ), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
echo "load: $(uptime)"
echo "runs $RUNS after $WARMUP warm-up, $THREADS threads, OMP_WAIT_POLICY=$OMP_WAIT_POLICY, results in $OUT"
if [ ! -f "$NET/model.onnx" ]; then
  echo "generating $NET/model.onnx ..."
  "$PY" "$SRC/tools/make_isles_net.py" --out "$NET" --patch "$PATCH" >/dev/null 2>"$OUT/make_net.log" || { cat "$OUT/make_net.log"; exit 1; }
fi

row() {  # name command...: runs a command that prints one JSON line; keeps it as $OUT/name.json
  local name=$1; shift
  echo "  $name ..."
  if "$@" >"$OUT/$name.json" 2>"$OUT/$name.err"; then :; else
    echo "{\"error\": $(tail -c 300 "$OUT/$name.err" | "$PY" -c 'import json,sys; print(json.dumps(sys.stdin.read().strip() or "failed (timeout?)"))')}" >"$OUT/$name.json"
  fi
}

row ceiling_fp32 "$BUILD/bench/matmul_ceiling_bench" fp32 2048 10
row ceiling_bf16 "$BUILD/bench/matmul_ceiling_bench" bf16 2048 10
for p in fp32 fp16 bf16; do
  row engine_$p "$BUILD/strokebox" engine bench --onnx "$NET/model.onnx" --precision $p --runs "$RUNS" \
      --warmup "$WARMUP" --threads "$THREADS" --profile
done
for p in fp32 bf16; do
  row torch_$p timeout "$TORCH_TIMEOUT" "$PY" "$SRC/tools/make_isles_net.py" --out "$NET" --patch "$PATCH" --bench-torch $p \
      --runs "$RUNS" --warmup "$WARMUP" --threads "$THREADS"
done

PATCH=$PATCH "$PY" - "$OUT" <<'PYEOF'
import json, os, sys
out = sys.argv[1]
def load(n):
    try:
        return json.loads(open(os.path.join(out, n + ".json")).read().strip().splitlines()[-1])
    except Exception as e:
        return {"error": str(e)}
GFLOP = load("engine_fp32").get("gflop", 958.0)
ceil = {p: load("ceiling_" + p) for p in ("fp32", "bf16")}
torch = {p: load("torch_" + p) for p in ("fp32", "bf16")}
print("\nforward pass of the ISLES-size nnU-Net, 1x2x%s^3, %.0f GFLOP per pass (conv + deconv)" % (os.environ.get("PATCH", "128"), GFLOP))
print("oneDNN matmul ceiling (2048^3): fp32 %s, bf16 %s" % tuple(
    ("%.1f GFLOP/s" % c["gflop_per_s"]) if "gflop_per_s" in c else "n/a (%s)" % c.get("error", "")[:80]
    for c in (ceil["fp32"], ceil["bf16"])))
print("%-44s %10s %10s %9s %12s %10s %10s %10s" % ("", "median s", "GFLOP/s", "% ceiling", "peak RSS MiB",
                                                  "vs PyTorch", "CPU s", "CPU ratio"))
rows = [("strokebox engine fp32", "engine_fp32", "fp32", "fp32"),
        ("strokebox engine fp16 weights", "engine_fp16", None, "fp32"),
        ("strokebox engine bf16", "engine_bf16", "bf16", "bf16"),
        ("PyTorch fp32", "torch_fp32", "fp32", "fp32"),
        ("PyTorch bf16 autocast", "torch_bf16", "bf16", "bf16")]
for label, name, tp, cp in rows:
    r = load(name)
    if "median_s" not in r:
        print("%-44s n/a: %s" % (label, r.get("error", "?").splitlines()[-1][:110] if r.get("error") else "?"))
        continue
    if name == "engine_fp16":
        label += " (" + r.get("precision", "") + ")"
        cp = "bf16" if "bf16-compute" in r.get("precision", "") else "fp32"
        tp = cp
    rate = GFLOP / r["median_s"]
    c = ceil.get(cp, {}).get("gflop_per_s")
    t = torch.get(tp or "fp32", {}).get("median_s")
    tc = torch.get(tp or "fp32", {}).get("median_cpu_s")
    cpu = r.get("median_cpu_s")
    print("%-44s %10.2f %10.1f %9s %12.0f %10s %10s %10s" % (
        label[:44], r["median_s"], rate, ("%.0f %%" % (100 * rate / c)) if c else "n/a",
        r.get("peak_rss_mib", -1), ("%.2fx" % (t / r["median_s"])) if t else "n/a",
        ("%.2f" % cpu) if cpu else "n/a", ("%.2fx" % (tc / cpu)) if tc and cpu else "n/a"))
print("(CPU s: process CPU time per pass, all threads; on a shared machine the CPU-time ratio is the\n"
      " robust comparison, wall time also measures the neighbours)")
for p in ("bf16", "fp32"):
    prof = os.path.join(out, "engine_%s.err" % p)
    if "median_s" in load("engine_" + p) and os.path.exists(prof):
        print("\nper-layer profile, engine %s (top 15 of %s):" % (p, prof))
        lines = [l for l in open(prof).read().splitlines() if not l.startswith("20")]
        print("\n".join(lines[:17]))
        kinds = [i for i, l in enumerate(lines) if "by step kind" in l]
        if kinds:
            print("\n".join(lines[kinds[0]:kinds[0] + 12]))
        break
PYEOF
