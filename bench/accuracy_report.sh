#!/bin/bash
# Accuracy of the box on synthetic phantom studies, per engine precision, in the shape of the
# ISLES deployment study's comparison table (precision, recall, accuracy, F1, Dice, IoU, mAP,
# HD95: mean and standard deviation over the studies), plus each reduced precision's agreement
# with fp32 on the same studies.
#
#   bench/accuracy_report.sh [-n N] [-p fp32,bf16,fp16] [-b BUILD_DIR] [-m MODEL_DIR] [-s FIRST_SEED]
#                            [-l LESIONS]
#
# Studies: `strokebox phantom --format nifti --seed S` for S = FIRST_SEED .. FIRST_SEED+N-1
# (default 9200; seeds >= 9000 are never used for training), with the phantom's own random
# lesion count (which may be 0: lesion-free studies are counted and reported) unless -l. Each is segmented with
# `strokebox segment --image DWI --image ADC --precision P` and scored with
# `strokebox evaluate` against the phantom's truth.nii.gz. A precision the engine refuses (e.g.
# bf16 on a CPU without AVX512-BF16/AMX) is skipped with the engine's reason. mAP is the mean
# voxel-wise average precision of `strokebox segment --probabilities`'s lesion_probability.nii.gz
# over the studies with a lesion (evaluate gives null without one).
# HD95 is averaged over the studies where both masks are non-empty (count given).
# Never part of the test suite.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=5
PRECISIONS=fp32,bf16,fp16
BUILD=$ROOT/build
MODEL=$ROOT/models/demo
FIRST=9200
LESIONS=
usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }
while getopts "n:p:b:m:s:l:h" opt; do
  case $opt in
    n) N=$OPTARG ;;
    p) PRECISIONS=$OPTARG ;;
    b) BUILD=$OPTARG ;;
    m) MODEL=$OPTARG ;;
    s) FIRST=$OPTARG ;;
    l) LESIONS=$OPTARG ;;
    h) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
BIN=$BUILD/strokebox
[ -x "$BIN" ] || { echo "accuracy_report: no $BIN (build the strokebox target first)" >&2; exit 2; }
command -v jq >/dev/null || { echo "accuracy_report: needs jq" >&2; exit 2; }
[ "$FIRST" -ge 9000 ] || { echo "accuracy_report: seeds below 9000 may be training seeds" >&2; exit 2; }
IFS=, read -r -a PRECS <<<"$PRECISIONS"

WORK=$(mktemp -d /tmp/strokebox-accuracy.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
VALUES=$WORK/values.txt  # lines: PRECISION METRIC VALUE
: >"$VALUES"
declare -A SKIPPED=()
LESION_FREE=0

for ((i = 0; i < N; i++)); do
  seed=$((FIRST + i))
  study=$WORK/seed_$seed
  "$BIN" phantom --format nifti --seed "$seed" ${LESIONS:+--lesions "$LESIONS"} --out "$study" >/dev/null \
    2>"$WORK/phantom.log" || { cat "$WORK/phantom.log" >&2; exit 1; }
  if [ "$("$BIN" evaluate --pred "$study/truth.nii.gz" --truth "$study/truth.nii.gz" | jq '.truth_lesions')" = 0 ]; then
    LESION_FREE=$((LESION_FREE + 1))
  fi
  for p in "${PRECS[@]}"; do
    [ -z "${SKIPPED[$p]:-}" ] || continue
    out=$study/out_$p
    if ! "$BIN" segment --model "$MODEL" --precision "$p" --image "$study/image_0000.nii.gz" \
        --image "$study/image_0001.nii.gz" --out "$out" --probabilities >/dev/null 2>"$WORK/segment.log"; then
      SKIPPED[$p]=$(grep -m1 -i "strokebox segment" "$WORK/segment.log" || tail -n1 "$WORK/segment.log")
      echo "accuracy_report: skipping $p: ${SKIPPED[$p]}" >&2
      continue
    fi
    "$BIN" evaluate --pred "$out/lesion_mask.nii.gz" --truth "$study/truth.nii.gz" \
        --prob "$out/lesion_probability.nii.gz" |
      jq -r --arg p "$p" '[["precision", .precision], ["recall", .recall], ["accuracy", .accuracy],
          ["map", .average_precision],
          ["f1", .f1], ["dice", .dice], ["iou", .iou], ["hd95_mm", .hd95_mm], ["lesion_f1", .lesion_f1],
          ["abs_volume_diff_ml", .abs_volume_diff_ml]][] | select(.[1] != null) | "\($p) \(.[0]) \(.[1])"' \
      >>"$VALUES"
    if [ "$p" != fp32 ] && [ -f "$study/out_fp32/lesion_mask.nii.gz" ]; then
      "$BIN" evaluate --pred "$out/lesion_mask.nii.gz" --truth "$study/out_fp32/lesion_mask.nii.gz" |
        jq -r --arg p "$p" '"\($p) agree_fp32_dice \(.dice)", "\($p) agree_fp32_voxels \(.accuracy)"' >>"$VALUES"
    fi
  done
done

stat() {  # stat PRECISION METRIC -> "mean ± std (n)" or "n/a"
  awk -v p="$1" -v m="$2" '$1 == p && $2 == m {n++; s += $3; q += $3 * $3}
    END {if (!n) {print "n/a"; exit}; mean = s / n; v = n > 1 ? (q - n * mean * mean) / (n - 1) : 0;
         if (v < 0) v = 0; printf "%.4f ± %.4f", mean, sqrt(v); if (m == "hd95_mm") printf " (n=%d)", n}' "$VALUES"
}

echo "Model: $MODEL; phantom seeds $FIRST..$((FIRST + N - 1)) (N=$N, $LESION_FREE lesion-free);" \
  "mean ± sample std over studies (empty-mask conventions of image/metrics.h)."
echo
echo "| engine precision | precision | recall | accuracy | F1 | Dice | IoU | mAP | HD95 (mm) | lesion-wise F1 | abs vol diff (mL) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for p in "${PRECS[@]}"; do
  if [ -n "${SKIPPED[$p]:-}" ] && ! grep -q "^$p " "$VALUES"; then
    echo "| $p | skipped: engine refused (${SKIPPED[$p]//|/\\|}) ||||||||||"
    continue
  fi
  echo "| $p | $(stat "$p" precision) | $(stat "$p" recall) | $(stat "$p" accuracy) | $(stat "$p" f1) |" \
    "$(stat "$p" dice) | $(stat "$p" iou) | $(stat "$p" map) | $(stat "$p" hd95_mm) |" \
    "$(stat "$p" lesion_f1) | $(stat "$p" abs_volume_diff_ml) |"
done
echo
echo "| engine precision | Dice with fp32 | voxel agreement with fp32 |"
echo "|---|---|---|"
for p in "${PRECS[@]}"; do
  [ "$p" != fp32 ] || continue
  if ! grep -q "^$p agree_fp32" "$VALUES"; then
    echo "| $p | n/a | n/a |"
    continue
  fi
  echo "| $p | $(stat "$p" agree_fp32_dice) | $(stat "$p" agree_fp32_voxels) |"
done
