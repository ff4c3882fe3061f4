#!/usr/bin/env bash
# Trains the default model (models/demo) from nothing but this tree and Debian's packages:
# phantom studies (strokebox phantom + tools/phantom_dr.py), preprocessing, the accelerated
# recipe (bf16 autocast where native, batch from memory, early stopping), validation, ONNX.
#   tools/train_default_model.sh --hosts DIR [--compare] [--out DIR]
# --hosts DIR: a folder holding checkouts of two public healthy-volunteer repositories of dcm2niix
# (BSD-2-Clause; fetched once, on the cloud side): DIR/dcm_qa_decubitus (neurolabusc, commit
# 92cd635) and DIR/dcm_qa_toshiba (commit 8110517). Their 9 diffusion series are the hosts of
# tools/host_lesions.py (synthetic infarcts in real healthy heads).
# Default: the accelerated recipe on 1 thread, as the default model was trained (about 31 min on the
# 2-core Zen 5 plus ~20 min of data; torch's results depend on the thread count, so 1 thread
# reproduces models/demo). The ADC is normalized as an absolute value (--adc-normalization ct).
# --compare also trains the baseline recipe (fp32, batch 2, fixed iterations, the same number of
# samples) on the same data and seed at the same time, one thread each (models/demo/TRAINING.md).
# One thread: on the shared 2-core machine 2-thread torch ran 3x slower per iteration than 1
# thread whenever another process held the second core (OpenMP barriers).
# Needs build/strokebox (scripts/build.sh). Data and runs go to data/ (git-ignored).
# Seeds: training 1-60 (strokebox phantom), 1000-1179 (phantom_dr as of commit 012fcfe, taken
# from git history so the default model is reproduced exactly) and 2000-2179 (phantom_dr as of
# b4a8732: kurtosis, surface coil, posterior fossa); validation 9001-9012 and 9500-9519 (012fcfe),
# 9700-9719 (b4a8732), lesion-free 9007, 9600-9603 and 9800-9803; 4000-4161 host_lesions.py.
# Never trained on a real stroke case: real healthy heads only host synthetic infarcts.
set -euo pipefail
cd "$(dirname "$0")/.."
COMPARE=0
OUT=models/demo
HOSTS=
while [ $# -gt 0 ]; do
  case "$1" in
    --compare) COMPARE=1 ;;
    --out) OUT=$2; shift ;;
    --hosts) HOSTS=$2; shift ;;
    -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
PY=/usr/bin/python3
[ -x build/strokebox ] || { echo "build/strokebox missing: run scripts/build.sh" >&2; exit 1; }
[ -n "$HOSTS" ] && [ -d "$HOSTS/dcm_qa_decubitus/In" ] && [ -d "$HOSTS/dcm_qa_toshiba/In/Galan" ] || {
  echo "--hosts DIR must hold dcm_qa_decubitus/ and dcm_qa_toshiba/ (see the comment at the top)" >&2; exit 2; }
export OMP_WAIT_POLICY=PASSIVE
start=$(date +%s)

$PY tools/train_demo.py generate --strokebox build/strokebox --seeds 1-60,9001-9006,9008-9012 --negative-seeds 9007
# The first domain-randomized set comes from the generator as it was at 012fcfe (mono-exponential
# signal, no surface-coil gain): the default model was trained on both generations.
git show 012fcfe:tools/phantom_dr.py > data/phantom_dr_012fcfe.py
$PY data/phantom_dr_012fcfe.py --out data/dr --seeds 9500-9519 --jobs 2
$PY data/phantom_dr_012fcfe.py --out data/dr --seeds 9600-9603 --lesions 0 --jobs 2
$PY data/phantom_dr_012fcfe.py --out data/dr --seeds 1000-1179 --jobs 2
# The second from the generator as it was at b4a8732 (kurtosis, surface coil in any direction).
git show b4a8732:tools/phantom_dr.py > data/phantom_dr_b4a8732.py
$PY data/phantom_dr_b4a8732.py --out data/dr --seeds 2000-2179 --jobs 2
$PY data/phantom_dr_b4a8732.py --out data/dr --seeds 9700-9719 --jobs 2
$PY data/phantom_dr_b4a8732.py --out data/dr --seeds 9800-9803 --lesions 0 --jobs 2

# The third: synthetic infarcts in 9 real healthy series (2 volunteers, Siemens VE11 and Canon
# Galan), read by the box itself (--save-inputs writes the trace and ADC it assembled).
for p in HFS HFP HFDL HFDR; do
  [ -f data/hosts/decub_$p/adc.nii.gz ] ||
    build/strokebox segment --study "$HOSTS/dcm_qa_decubitus/In/$p" --out data/hosts/decub_$p --save-inputs >/dev/null
done
for s in 10006_DTI_ALL_20d 6006_DTI_SAG_30d 7006_DTI_ortho 8006_DTI_AX_30d 9006_DTI_COR_20d; do
  [ -f data/hosts/toshiba_$s/adc.nii.gz ] ||
    build/strokebox segment --study "$HOSTS/dcm_qa_toshiba/In/Galan/$s" --out data/hosts/toshiba_$s --save-inputs >/dev/null
done
$PY tools/host_lesions.py --hosts 'data/hosts/decub_*' --hosts 'data/hosts/toshiba_*' --out data/dr --seeds 4000-4161

COMMON=(--seed 3 --adc-normalization ct --train-seeds 1-60 --dr-train-seeds 1000-1179,2000-2179,4000-4161
        --val-seeds 9001-9006,9008-9012 --negative-seeds 9007
        --dr-val-seeds 9500-9519 --dr-negative-seeds 9600-9603
        --train-patch 48,48,48 --p-fg 0.4 --hard-stop-min 110)
# Fill the preprocessing cache once (both runs read it).
$PY tools/train_demo.py train "${COMMON[@]}" --prepare-only --run-dir data/run_prepare
THREADS=1
if [ "$COMPARE" = 1 ]; then
  # both runs at once, one core each, so they see the same machine
  $PY tools/train_demo.py train "${COMMON[@]}" --threads 1 --recipe baseline --batch 2 --iterations 6000 \
    --run-dir data/run_baseline --out data/model_baseline > data/run_baseline.out 2>&1 &
  baseline=$!
fi
# The last iteration's weights are kept (--keep last, --patience 100: no early stop): the
# validation Dice at 300-iteration steps swings by 0.1 while the learning rate is high, and an
# early "best" checkpoint called 10 mL of infarct on the healthy hosts it was trained on.
$PY tools/train_demo.py train "${COMMON[@]}" --threads "$THREADS" --recipe accelerated --iterations 3000 \
  --val-every 300 --patience 100 --min-iterations 900 --keep last --no-final-validation \
  --run-dir data/run_accelerated --out "$OUT"
if [ "$COMPARE" = 1 ]; then
  wait $baseline
fi
echo "train_default_model: $(( $(date +%s) - start )) s"
