#!/bin/bash
# Time and segmentation agreement of the deployment options of an imported nnU-Net model
# (test-time mirroring on/off, tile step 0.5 / 0.75 / 1.0) on the nnU-Net golden cases.
#
#   bench/nnunet_options.sh [BUILD_DIR] [REPEATS]
#
# Converts ../shared/golden's nnU-Net results folder with tools/import_nnunet.py, writes one
# model.json variant per option (same fold_0.onnx), runs `strokebox segment --image ...` on
# every golden case and compares each mask with nnU-Net's own segmentation (nnU-Net defaults
# but mirroring off: tile step 0.5, `prediction/<case>__nomirror`) and, for case01, with
# nnU-Net's mirrored one (`case01__mirror`), using `strokebox evaluate` (accuracy = voxel
# agreement). Time = the pipeline's own "inference" + "preprocess" + "export" stages of
# report.json (median over REPEATS runs, default 1), on this machine's CPU engine.
# Prints a Markdown table. Never part of the test suite.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}
REPEATS=${2:-1}
BIN=$BUILD/strokebox
GOLDEN=$ROOT/../shared/golden
RESULTS=$GOLDEN/model/Dataset990_GoldenTiny/nnUNetTrainer__nnUNetPlans__3d_fullres
CASES=(case01 case02 case03 case04)
[ -x "$BIN" ] || { echo "nnunet_options: no $BIN (build the strokebox target first)" >&2; exit 2; }
command -v jq >/dev/null || { echo "nnunet_options: needs jq" >&2; exit 2; }

WORK=$(mktemp -d /tmp/strokebox-nnunet-options.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
/usr/bin/python3 "$ROOT/tools/import_nnunet.py" "$RESULTS" --out "$WORK/base" --folds 0 >/dev/null 2>"$WORK/import.log" ||
  { cat "$WORK/import.log" >&2; exit 1; }

variant() {  # variant NAME MIRROR STEP
  mkdir -p "$WORK/$1"
  ln -sf "$WORK/base/fold_0.onnx" "$WORK/$1/fold_0.onnx"
  jq --argjson m "$2" --argjson s "$3" '.use_mirroring = $m | .tile_step_size = $s' \
    "$WORK/base/model.json" >"$WORK/$1/model.json"
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

echo "| mirroring | tile step | case | tiles x mirrors | time (s) | agreement vs nnU-Net no-mirror (%) | Dice vs nnU-Net no-mirror | agreement vs nnU-Net mirror (%) |"
echo "|---|---|---|---|---|---|---|---|"
for mirror in false true; do
  for step in 0.5 0.75 1.0; do
    name="m${mirror}_s${step}"
    variant "$name" "$mirror" "$step"
    total=0
    for c in "${CASES[@]}"; do
      in=$GOLDEN/inputs/$c/$c
      times=()
      for ((r = 0; r < REPEATS; r++)); do
        out=$WORK/out_${name}_$c
        rm -rf "$out"
        "$BIN" segment --model "$WORK/$name" --image "${in}_0000.nii.gz" --image "${in}_0001.nii.gz" \
          --out "$out" >/dev/null 2>>"$WORK/segment.log"
        times+=("$(jq '.timings_ms.preprocess + .timings_ms.inference + .timings_ms.export' "$out/report.json")")
      done
      t=$(printf '%s\n' "${times[@]}" | median)
      runs=$(jq '.nnunet.network_runs' "$out/report.json")
      ev=$("$BIN" evaluate --pred "$out/lesion_mask.nii.gz" --truth "$GOLDEN/prediction/${c}__nomirror/$c.nii.gz")
      agree=$(jq '.accuracy * 100' <<<"$ev")
      dice=$(jq '.dice' <<<"$ev")
      agree_m="-"
      if [ "$c" = case01 ]; then
        agree_m=$("$BIN" evaluate --pred "$out/lesion_mask.nii.gz" \
          --truth "$GOLDEN/prediction/case01__mirror/case01.nii.gz" | jq '.accuracy * 100' | xargs printf '%.3f')
      fi
      printf '| %s | %s | %s | %s | %.2f | %.3f | %.4f | %s |\n' "$mirror" "$step" "$c" "$runs" \
        "$(awk -v t="$t" 'BEGIN {print t / 1000}')" "$agree" "$dice" "$agree_m"
    done
  done
done
