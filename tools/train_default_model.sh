#!/usr/bin/env bash
# Trains the default model (models/demo) from nothing but this tree and Debian's packages:
# phantom studies (strokebox phantom + tools/phantom_dr.py), preprocessing, the accelerated
# recipe (bf16 autocast where native, batch from memory, early stopping), validation, ONNX.
#   tools/train_default_model.sh --hosts DIR [--compare] [--out DIR]
# --hosts DIR: a folder holding checkouts of two public healthy-volunteer repositories of dcm2niix
# (BSD-2-Clause; fetched once, on the cloud side): DIR/dcm_qa_decubitus (neurolabusc, commit
# 92cd635) and DIR/dcm_qa_toshiba (commit 8110517). Their 9 diffusion series are the hosts of
# tools/host_lesions.py (synthetic infarcts in real healthy heads).
# The default model is an ensemble of four trainings (tools/ensemble_models.py; nnU-Net averages
# folds the same way): seed 3 on the host studies 4000-4161 and seed 3 on 5000-5161 (the same
# hosts, half of the studies with failed fat suppression); seed 2 on each of the two with half of
# their studies re-acquired at a lower SNR (--low-snr 0.5, data/dr_snr; the rest of the data the
# same, and the ADC normalization of the first network). Each is the accelerated
# recipe on 1 thread, two at a time (about 31 min per pair on the 2-core Zen 5, so ~65 min plus
# ~20 min of data; torch's results depend on the thread count, so 1 thread reproduces
# models/demo). The ADC is normalized as an absolute value (--adc-normalization ct).
# --compare then also trains the baseline recipe (fp32, batch 2, fixed iterations, the same number
# of samples) beside the accelerated one with early stopping, on the hosts data and seed 3, one
# thread each (models/demo/TRAINING.md, "The training recipe").
# One thread: on the shared 2-core machine 2-thread torch ran 3x slower per iteration than 1
# thread whenever another process held the second core (OpenMP barriers).
# Needs build/strokebox (scripts/build.sh). Data and runs go to data/ (git-ignored).
# Seeds: training 1-60 (strokebox phantom), 1000-1179 (phantom_dr as of commit 012fcfe, taken
# from git history so the default model is reproduced exactly) and 2000-2179 (phantom_dr as of
# b4a8732: kurtosis, surface coil, posterior fossa); validation 9001-9012 and 9500-9519 (012fcfe),
# 9700-9719 (b4a8732), lesion-free 9007, 9600-9603 and 9800-9803; 4000-4161 and 5000-5161
# (--fat 0.5) host_lesions.py, both also with --low-snr 0.5 in data/dr_snr.
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
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
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
# The same hosts with failed fat suppression in half the studies (fat is never an infarct).
$PY tools/host_lesions.py --hosts 'data/hosts/decub_*' --hosts 'data/hosts/toshiba_*' --out data/dr --seeds 5000-5161 --fat 0.5
# Both again with half the studies at a lower SNR (same infarcts and fat; models/demo/TRAINING.md,
# "Lower SNR in the host studies"), in data/dr_snr beside links to the other studies.
$PY tools/host_lesions.py --hosts 'data/hosts/decub_*' --hosts 'data/hosts/toshiba_*' --out data/dr_snr --seeds 4000-4161 --low-snr 0.5
$PY tools/host_lesions.py --hosts 'data/hosts/decub_*' --hosts 'data/hosts/toshiba_*' --out data/dr_snr --seeds 5000-5161 --fat 0.5 --low-snr 0.5
for s in $(seq 1000 1179) $(seq 2000 2179) $(seq 9500 9519); do ln -sfn ../dr/seed_$s data/dr_snr/seed_$s; done
for s in 9600 9601 9602 9603; do ln -sfn ../dr/seed_${s}_lesions0 data/dr_snr/seed_${s}_lesions0; done

COMMON=(--adc-normalization ct --train-seeds 1-60
        --val-seeds 9001-9006,9008-9012 --negative-seeds 9007
        --dr-val-seeds 9500-9519 --dr-negative-seeds 9600-9603
        --train-patch 48,48,48 --p-fg 0.4 --hard-stop-min 110)
HOSTS_DATA=1000-1179,2000-2179,4000-4161
FAT_DATA=1000-1179,2000-2179,5000-5161
# Fill the preprocessing cache once per data set (the runs beside each other read it).
$PY tools/train_demo.py train "${COMMON[@]}" --dr-train-seeds $HOSTS_DATA --prepare-only --run-dir data/run_prepare
$PY tools/train_demo.py train "${COMMON[@]}" --dr-train-seeds $FAT_DATA --prepare-only --run-dir data/run_prepare
# The last iteration's weights are kept (--keep last, --patience 100: no early stop): the
# validation Dice at 300-iteration steps swings by 0.1 while the learning rate is high, and an
# early "best" checkpoint called 10 mL of infarct on the healthy hosts it was trained on.
RECIPE=(--threads 1 --recipe accelerated --iterations 3000 --val-every 300 --patience 100 --min-iterations 900
        --keep last --no-final-validation)
member() {  # NAME SEED DATA [MORE OPTIONS]: one training, one core, in the background
  $PY tools/train_demo.py train "${COMMON[@]}" "${RECIPE[@]}" --seed "$2" --dr-train-seeds "$3" "${@:4}" \
    --run-dir "data/run_$1" --out "data/model_$1" > "data/run_$1.out" 2>&1
}
# Two at a time, one core each, so that each pair sees the same machine. The low-SNR pair takes
# the first network's ADC normalization (its data would give a slightly different one).
member hosts_s3 3 $HOSTS_DATA & a=$!
member fat_s3 3 $FAT_DATA & b=$!
wait $a; wait $b
SNR=(--dr-dir dr_snr --fingerprint-from data/model_hosts_s3)
member snr_hosts_s2 2 $HOSTS_DATA "${SNR[@]}" & a=$!
member snr_fat_s2 2 $FAT_DATA "${SNR[@]}" & b=$!
wait $a; wait $b
# Postprocessing chosen on the validation data (models/demo/TRAINING.md, "Leaving implausible
# lesions out"): lesions whose ADC lies below any brain tissue (fat, noise floor) are left out.
$PY tools/ensemble_models.py --out "$OUT" --model-id "strokebox-demo-$(date +%Y.%m.%d)-lowsnr-pp" \
  --member model=data/model_hosts_s3 --member lowsnr_seed2=data/model_snr_hosts_s2 \
  --member fat_lowsnr_seed2=data/model_snr_fat_s2 --member fat_seed3=data/model_fat_s3 \
  --implausible-lesions exclude-below-tissue-adc
if [ "$COMPARE" = 1 ]; then
  # The recipe table (models/demo/TRAINING.md): baseline and accelerated side by side on the hosts data.
  $PY tools/train_demo.py train "${COMMON[@]}" --dr-train-seeds $HOSTS_DATA --seed 3 --threads 1 --recipe baseline \
    --batch 2 --iterations 6000 --run-dir data/run_baseline --out data/model_baseline > data/run_baseline.out 2>&1 &
  baseline=$!
  $PY tools/train_demo.py train "${COMMON[@]}" --dr-train-seeds $HOSTS_DATA --seed 3 --threads 1 --recipe accelerated \
    --iterations 3000 --val-every 300 --patience 3 --min-iterations 900 \
    --run-dir data/run_accelerated --out data/model_accelerated > data/run_accelerated.out 2>&1
  wait $baseline
fi
echo "train_default_model: $(( $(date +%s) - start )) s"
