#!/usr/bin/python3
"""Trains strokebox's demo model (nnU-Net v2 PlainConvUNet) on synthetic phantom studies.

Pipeline: `strokebox phantom` studies (NIfTI) -> nnU-Net preprocessing (cached .npy) ->
patch training (Dice + CE, foreground oversampling) -> sliding-window validation on held-out
phantoms exported back to their native grid -> ONNX (opset 17, fixed shape) + model.json
(docs/model_package.md). CPU only (Debian python3-torch 1.13), reproducible from --seed
for a given --iterations. See tools/README.md.

Subcommands:
  generate   write phantom studies with `strokebox phantom` into DATA/phantoms/seed_N/
  fake       phantom-like folders from the golden inputs with thresholded labels (plumbing test)
  train      preprocess, train, validate, export the package
  validate   validate + export an existing checkpoint (no training)
"""

import os

# Passive OpenMP waiting: on a shared, oversubscribed CPU, spinning worker threads make
# 2-thread torch 3-5x slower than 1 thread (measured: 17 s vs 5.5 s per iteration at load 10).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import datetime
import hashlib
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nnunet_net  # noqa: E402
import nnunet_preprocess as npp  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHANNELS = ["DWI", "ADC"]
IMAGE_FILES = ["image_0000.nii.gz", "image_0001.nii.gz"]
TRUTH_FILE = "truth.nii.gz"


def parse_seeds(spec: str) -> List[int]:
    """'1-60,70,80-82' -> [1..60, 70, 80, 81, 82]."""
    out: List[int] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


def check_training_seeds(seeds: Sequence[int]) -> None:
    """Seeds >= 9000 (validation/tests) and 100..199 (integration tests) never train."""
    bad = [s for s in seeds if s >= 9000 or 100 <= s <= 199]
    if bad:
        raise SystemExit(f"training seeds {bad} are reserved (>= 9000 validation/tests, "
                         "100..199 integration tests); choose other seeds")


def case_dir(data_dir: str, seed: int) -> str:
    return os.path.join(data_dir, "phantoms", f"seed_{seed}")


def neg_case_dir(data_dir: str, seed: int) -> str:
    return os.path.join(data_dir, "phantoms", f"seed_{seed}_lesions0")


DR_DIR = "dr"  # sub-folder of --data-dir holding tools/phantom_dr.py studies (--dr-dir)


def dr_case_dir(data_dir: str, seed: int) -> str:
    """Studies of tools/phantom_dr.py (domain-randomized generator)."""
    return os.path.join(data_dir, DR_DIR, f"seed_{seed}")


def dr_neg_case_dir(data_dir: str, seed: int) -> str:
    return os.path.join(data_dir, DR_DIR, f"seed_{seed}_lesions0")


def fingerprint_folders(args) -> List[str]:
    """Studies whose lesions give the ADC's CTNormalization statistics: the training studies, or
    with --fingerprint-dr-seeds the strokebox phantoms plus those phantom_dr studies. nnU-Net
    computes one dataset fingerprint for all its folds (DatasetFingerprintExtractor), so that
    networks trained on different subsets normalize alike and can be averaged; this is that for
    ensemble members trained on different data (tools/ensemble_models.py checks it).
    SystemExit when a study is missing or a seed is reserved for validation."""
    if not args.fingerprint_dr_seeds:
        return study_folders(args, "train")
    check_training_seeds(parse_seeds(args.fingerprint_dr_seeds))
    folders = study_folders(argparse.Namespace(**{**vars(args), "dr_train_seeds": args.fingerprint_dr_seeds}), "train")
    missing = [f for f in folders if not os.path.isdir(f)]
    if missing:
        raise SystemExit(f"fingerprint study {missing[0]} missing ({len(missing)} in all)")
    return folders


def package_adc_properties(package: str) -> Dict[str, float]:
    """The ADC channel's CTNormalization intensity properties of an existing model package
    (DIR/model.json, docs/model_package.md): a new network trained with them can join that
    package's ensemble, as nnU-Net trains further folds against the same plans. SystemExit when
    there is no model.json or no CTNormalization ADC channel."""
    path = os.path.join(package, "model.json")
    if not os.path.exists(path):
        raise SystemExit(f"--fingerprint-from {package}: no model.json (not a model package)")
    with open(path) as f:
        spec = json.load(f)
    for ch in spec.get("channels", []):
        if ch.get("name") == "ADC" and ch.get("normalization") == "CTNormalization":
            return {k: float(v) for k, v in ch["intensity_properties"].items()}
    raise SystemExit(f"{package}/model.json has no CTNormalization ADC channel to take the fingerprint from")


def adc_ct_properties(args, cache: str, log) -> Optional[List[Optional[Dict[str, float]]]]:
    """Per channel (DWI, ADC) the CTNormalization intensity properties the training uses: None
    for ZScore (--adc-normalization zscore), else the ADC's from --fingerprint-from's package or
    computed over fingerprint_folders (lesion voxels, or every head voxel with ct-tissue); log is
    the run's Logger.
    SystemExit when both fingerprint options are given, or either with zscore."""
    if args.fingerprint_from and args.fingerprint_dr_seeds:
        raise SystemExit("--fingerprint-from and --fingerprint-dr-seeds both set the ADC normalization: give one")
    if args.adc_normalization == "zscore":
        if args.fingerprint_from or args.fingerprint_dr_seeds:
            raise SystemExit("--adc-normalization zscore has no dataset fingerprint: drop --fingerprint-*")
        return None
    if args.fingerprint_from:
        props = package_adc_properties(args.fingerprint_from)
        log(f"ADC intensity properties from {args.fingerprint_from}: {props}")
        return [None, props]
    region = "tissue" if args.adc_normalization == "ct-tissue" else "lesion"
    return [None, adc_foreground_properties(fingerprint_folders(args), cache, log, region)]


def study_folders(args, kind: str) -> List[str]:
    """Folders of one role ('train', 'val', 'neg'): strokebox phantoms plus phantom_dr studies."""
    spec = {"train": (args.train_seeds, args.dr_train_seeds, case_dir, dr_case_dir),
            "val": (args.val_seeds, args.dr_val_seeds, case_dir, dr_case_dir),
            "neg": (args.negative_seeds, args.dr_negative_seeds, neg_case_dir, dr_neg_case_dir)}[kind]
    return [spec[2](args.data_dir, s) for s in parse_seeds(spec[0])] + \
        [spec[3](args.data_dir, s) for s in parse_seeds(spec[1])]


# ------------------------------------------------------------------ metrics


def hd95_mm(pred: np.ndarray, truth: np.ndarray, spacing) -> Optional[float]:
    """95th-percentile symmetric Hausdorff distance between the surfaces of two masks, mm
    (max of the two directed 95th percentiles, as MONAI's compute_hausdorff_distance with
    percentile=95). None when either mask is empty."""
    from scipy import ndimage as ndi
    if not pred.any() or not truth.any():
        return None
    sp = pred & ~ndi.binary_erosion(pred)
    st = truth & ~ndi.binary_erosion(truth)
    dt_t = ndi.distance_transform_edt(~st, sampling=spacing)
    dt_p = ndi.distance_transform_edt(~sp, sampling=spacing)
    return float(max(np.percentile(dt_t[sp], 95), np.percentile(dt_p[st], 95)))


def bf16_native() -> bool:
    """True when the CPU runs bf16 natively (AVX512-BF16 or AMX-BF16 in /proc/cpuinfo):
    then torch's CPU autocast in bf16 is faster than fp32 (measured 1.46x per sample on an
    AVX512-BF16 Zen 5 for this net); elsewhere bf16 is emulated and slower."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def _proc_kib(path: str, key: str) -> int:
    with open(path) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


class Logger:
    """Prints and appends to a log file (line buffered)."""

    def __init__(self, path: str):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.f = open(path, "a", buffering=1)

    def __call__(self, msg: str) -> None:
        line = f"[{datetime.datetime.now().strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        self.f.write(line + "\n")


# ------------------------------------------------------------------ data generation


def generate(args) -> None:
    binary = args.strokebox
    if not os.path.exists(binary):
        raise SystemExit(f"{binary} not found: build it first (cmake --build ... --target strokebox)")
    jobs = []
    for s in parse_seeds(args.seeds):
        jobs.append((s, case_dir(args.data_dir, s), None))
    for s in parse_seeds(args.negative_seeds):
        jobs.append((s, neg_case_dir(args.data_dir, s), 0))

    def run(job):
        seed, out, lesions = job
        if os.path.exists(os.path.join(out, TRUTH_FILE)) and not args.force:
            return seed, 0, "exists"
        os.makedirs(out, exist_ok=True)
        cmd = [binary, "phantom", "--out", out, "--seed", str(seed), "--format", "nifti"]
        if lesions is not None:
            cmd += ["--lesions", str(lesions)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        return seed, p.returncode, (p.stderr or p.stdout)[-400:]

    t0 = time.time()
    failed = []
    with ThreadPoolExecutor(max_workers=args.jobs) as ex:
        for seed, rc, msg in ex.map(run, jobs):
            print(f"seed {seed}: rc {rc} {msg.strip() if rc else ''}", flush=True)
            if rc:
                failed.append(seed)
    print(f"generated {len(jobs)} studies in {time.time() - t0:.0f} s; failed: {failed}")
    if failed:
        raise SystemExit(1)


def fake_from_golden(args) -> None:
    """Plumbing test data: golden inputs with label = DWI z > 2.5 and ADC z < 0 (largest
    bright-DWI regions), written in the phantom layout as seeds 1-4 and 9001-9004."""
    import nibabel as nib
    import shutil
    gold = "/work/shared/golden/inputs"
    for n, case in enumerate(sorted(os.listdir(gold)), start=1):
        dwi, _, aff = npp.read_nifti(os.path.join(gold, case, f"{case}_0000.nii.gz"))
        adc, _, _ = npp.read_nifti(os.path.join(gold, case, f"{case}_0001.nii.gz"))
        zd = (dwi - dwi.mean()) / dwi.std()
        za = (adc - adc.mean()) / adc.std()
        lab = ((zd > 2.5) & (za < 0)).astype(np.uint8)
        for seed in (n, 9000 + n):
            out = case_dir(args.data_dir, seed)
            os.makedirs(out, exist_ok=True)
            for i in range(2):
                shutil.copy(os.path.join(gold, case, f"{case}_000{i}.nii.gz"),
                            os.path.join(out, IMAGE_FILES[i]))
            npp.write_nifti_like(lab, aff, os.path.join(out, TRUTH_FILE))
        print(case, "label voxels", int(lab.sum()))


# ------------------------------------------------------------------ preprocessing cache


def load_case(folder: str, with_truth: bool = True):
    chans, spacing, affine = [], None, None
    for f in IMAGE_FILES:
        a, sp, aff = npp.read_nifti(os.path.join(folder, f))
        if spacing is None:
            spacing, affine = sp, aff
        elif a.shape != chans[0].shape:
            raise ValueError(f"{folder}: channel shapes differ {a.shape} vs {chans[0].shape}")
        chans.append(a)
    # The ADC in 10^-6 mm^2/s whatever unit the file used, as the appliance does before a
    # CTNormalization channel (firmware/pipeline.cc); ZScore does not depend on the unit.
    adc = CHANNELS.index("ADC")
    chans[adc] = (chans[adc] * npp.adc_unit_scale(chans[adc])).astype(np.float32)
    truth = None
    tpath = os.path.join(folder, TRUTH_FILE)
    if with_truth and os.path.exists(tpath):
        truth, _, _ = npp.read_nifti(tpath)
        truth = (truth > 0.5).astype(np.uint8)
    return chans, spacing, affine, truth


def file_stamps(folder: str) -> List[float]:
    """Modification times of a study's files, part of every cache key."""
    return [os.path.getmtime(os.path.join(folder, f)) for f in IMAGE_FILES + [TRUTH_FILE]
            if os.path.exists(os.path.join(folder, f))]


def atomic_write(path: str, write, binary: bool = True) -> None:
    """write(file) into a temporary file, then a rename onto path, so that a second training run
    reading the same cache never sees a half-written file (two runs side by side fill it at once)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb" if binary else "w") as f:
        write(f)
    os.replace(tmp, path)


def atomic_save(path: str, array: np.ndarray) -> None:
    """np.save through atomic_write."""
    atomic_write(path, lambda f: np.save(f, array))


def preprocess_cached(folder: str, cache_dir: str, target_spacing, log: Logger, ct_properties=None):
    """Preprocessed (data float32 (2, z, y, x), seg uint8 (z, y, x)) for one study, cached as
    .npy keyed by the study folder (its real path, so a study linked into another --dr-dir is
    preprocessed once), its files' modification times (a regenerated study is
    preprocessed again), the target spacing and the normalization (ct_properties: per channel
    None for ZScore or CTNormalization's intensity properties)."""
    norm = "" if ct_properties is None else "|" + json.dumps(ct_properties, sort_keys=True)
    key = hashlib.sha1(f"{os.path.realpath(folder)}|{file_stamps(folder)}|{list(target_spacing)}{norm}".encode()).hexdigest()[:12]
    dpath = os.path.join(cache_dir, f"{key}_data.npy")
    spath = os.path.join(cache_dir, f"{key}_seg.npy")
    if os.path.exists(dpath) and os.path.exists(spath):
        return np.load(dpath), np.load(spath)
    chans, spacing, affine, truth = load_case(folder)
    if truth is None:
        raise SystemExit(f"{folder}: no {TRUTH_FILE}")
    data, seg, _ = npp.preprocess_case(chans, spacing, target_spacing, seg=truth, affine=affine,
                                       ct_properties=ct_properties)
    os.makedirs(cache_dir, exist_ok=True)
    atomic_save(dpath, data)
    atomic_save(spath, seg)
    log(f"preprocessed {folder}: spacing {tuple(round(s, 3) for s in spacing)} "
        f"{chans[0].shape} -> {data.shape[1:]}, lesion voxels {int(seg.sum())}")
    return data, seg


def adc_foreground_properties(folders: Sequence[str], cache_dir: str, log: Logger, region: str = "lesion",
                              per_case: int = 10000) -> Dict[str, float]:
    """The ADC channel's foreground intensity properties as nnU-Net's dataset fingerprint
    computes them (DatasetFingerprintExtractor: voxels under label > 0, at most `per_case`
    sampled per case with a fixed seed, pooled), in 10^-6 mm^2/s. region "tissue" pools every
    voxel with a positive ADC instead (the whole head: background, CSF and brain keep distinct
    values after clipping). Cached in cache_dir keyed by the folders, their files' times and region. With
    region "lesion", lesion-free studies contribute nothing."""
    key = hashlib.sha1(("|".join(f"{os.path.abspath(f)}{file_stamps(f)}" for f in folders) + region)
                       .encode()).hexdigest()[:12]
    path = os.path.join(cache_dir, f"adc_fg_{key}.json")
    if os.path.exists(path):
        return json.load(open(path))
    rng = np.random.RandomState(1234)
    pooled = []
    for folder in folders:
        chans, _, _, truth = load_case(folder)
        adc = chans[CHANNELS.index("ADC")]
        if region == "tissue":
            v = adc[adc > 0]
        elif truth is None or not truth.any():
            continue
        else:
            v = adc[truth > 0]
        pooled.append(v[rng.choice(v.size, per_case, replace=True)] if v.size > per_case else v)
    if not pooled:
        raise SystemExit("CTNormalization of the ADC needs training studies with lesions")
    props = {k: round(x, 4) for k, x in npp.foreground_intensity_properties(np.concatenate(pooled)).items()}
    os.makedirs(cache_dir, exist_ok=True)
    atomic_write(path, lambda f: json.dump(props, f), binary=False)
    log(f"ADC intensity properties ({region} voxels of {len(pooled)} studies): {props}")
    return props


# ------------------------------------------------------------------ sampling, augmentation


class PatchSampler:
    """nnU-Net-like patch sampling: uniform random patch (may extend past the border when
    the volume is smaller than the patch; zero padded), or with probability p_fg a patch
    centred on a random lesion voxel (nnU-Net's foreground oversampling)."""

    def __init__(self, cases, patch, p_fg: float, rng: np.random.Generator):
        self.cases = cases
        self.patch = np.array(patch)
        self.p_fg = p_fg
        self.rng = rng
        self.fg = [np.argwhere(seg > 0) for _, seg in cases]

    def _lower_bounds(self, shape):
        lo = np.minimum(0, shape - self.patch)
        hi = np.maximum(0, shape - self.patch)
        return lo, hi

    def sample(self):
        i = int(self.rng.integers(len(self.cases)))
        data, seg = self.cases[i]
        shape = np.array(seg.shape)
        lo, hi = self._lower_bounds(shape)
        fg = self.fg[i]
        if len(fg) and self.rng.random() < self.p_fg:
            c = fg[int(self.rng.integers(len(fg)))]
            lb = np.clip(c - self.patch // 2, lo, hi)
        else:
            lb = np.array([int(self.rng.integers(a, b + 1)) for a, b in zip(lo, hi)])
        ub = lb + self.patch
        src = tuple(slice(max(a, 0), min(b, s)) for a, b, s in zip(lb, ub, shape))
        dst = tuple(slice(max(a, 0) - a, min(b, s) - a) for a, b, s in zip(lb, ub, shape))
        x = np.zeros((data.shape[0],) + tuple(self.patch), dtype=np.float32)
        y = np.zeros(tuple(self.patch), dtype=np.int64)
        x[(slice(None),) + dst] = data[(slice(None),) + src]
        y[dst] = seg[src]
        return x, y

    def batch(self, n: int):
        xs, ys = zip(*(self.sample() for _ in range(n)))
        x = torch.from_numpy(np.stack(xs))
        y = torch.from_numpy(np.stack(ys))
        return augment_batch(x, y, self.rng)


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    a = np.deg2rad(rng.uniform(-max_deg, max_deg, 3))
    c, s = np.cos(a), np.sin(a)
    rx = np.array([[1, 0, 0], [0, c[0], -s[0]], [0, s[0], c[0]]])
    ry = np.array([[c[1], 0, s[1]], [0, 1, 0], [-s[1], 0, c[1]]])
    rz = np.array([[c[2], -s[2], 0], [s[2], c[2], 0], [0, 0, 1]])
    return rz @ ry @ rx


def augment_batch(x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator):
    """nnU-Net v2's default training augmentation (nnUNetTrainer.get_training_transforms,
    3d_fullres), per sample, on (B, C, z, y, x) float32 / (B, z, y, x) int64:
    rotation +-30 deg per axis (p 0.2) and scaling 0.7-1.4 (p 0.2) as one affine resampling
    (linear for images, nearest for labels, zeros outside); Gaussian noise (p 0.1, variance
    0-0.1); Gaussian blur (p 0.2, sigma 0.5-1 voxel, per channel p 0.5); multiplicative
    brightness 0.75-1.25 (p 0.15); contrast 0.75-1.25 (p 0.15, range preserved); simulated low
    resolution (p 0.25, per channel p 0.5, zoom 0.5-1); gamma 0.7-1.5 (inverted p 0.1, plain
    p 0.3, mean and std preserved); mirroring on each axis (p 0.5)."""
    xs, ys = [], []
    for i in range(x.shape[0]):
        xi, yi = x[i:i + 1], y[i:i + 1]
        rot = rng.random() < 0.2
        scl = rng.random() < 0.2
        if rot or scl:
            m = _rotation(rng, 30) if rot else np.eye(3)
            if scl:
                m = m / rng.uniform(0.7, 1.4)  # zoom in/out: sampling grid scaled by 1/s
            theta = torch.zeros(1, 3, 4)
            theta[0, :, :3] = torch.from_numpy(m[::-1, ::-1].copy()).float()  # grid is (x, y, z)
            grid = F.affine_grid(theta, list(xi.shape), align_corners=False)
            xi = F.grid_sample(xi, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            yi = F.grid_sample(yi[:, None].float(), grid, mode="nearest", padding_mode="zeros",
                               align_corners=False)[:, 0].long()
        xi = xi.clone()
        blur = rng.random() < 0.2
        lowres = rng.random() < 0.25
        if rng.random() < 0.1:
            xi += torch.randn_like(xi) * float(np.sqrt(rng.uniform(0, 0.1)))
        for c in range(xi.shape[1]):
            ch = xi[:, c:c + 1]
            if blur and rng.random() < 0.5:
                sig = float(rng.uniform(0.5, 1.0))
                k = torch.arange(-2, 3, dtype=torch.float32)
                k = torch.exp(-k ** 2 / (2 * sig ** 2))
                k = k / k.sum()
                for ax in range(3):
                    shape = [1, 1, 1, 1, 1]
                    shape[2 + ax] = 5
                    pad = [0, 0, 0, 0, 0, 0]
                    pad[2 * (2 - ax)] = pad[2 * (2 - ax) + 1] = 2
                    ch = F.conv3d(F.pad(ch, pad, mode="replicate"), k.view(shape))
            if rng.random() < 0.15:
                ch = ch * float(rng.uniform(0.75, 1.25))
            if rng.random() < 0.15:
                mn, lo, hi = ch.mean(), ch.min(), ch.max()
                ch = ((ch - mn) * float(rng.uniform(0.75, 1.25)) + mn).clamp(lo, hi)
            if lowres and rng.random() < 0.5:
                size = ch.shape[2:]
                z = float(rng.uniform(0.5, 1.0))
                small = F.interpolate(ch, scale_factor=z, mode="nearest")
                ch = F.interpolate(small, size=size, mode="trilinear", align_corners=False)
            for p_g, inv in ((0.1, True), (0.3, False)):
                if rng.random() < p_g:
                    g = float(rng.uniform(0.7, 1.5))
                    mn, sd = ch.mean(), ch.std()
                    v = -ch if inv else ch
                    lo = v.min()
                    rng_v = v.max() - lo + 1e-7
                    v = ((v - lo) / rng_v) ** g * rng_v + lo
                    v = -v if inv else v
                    ch = (v - v.mean()) / (v.std() + 1e-8) * sd + mn
            xi[:, c:c + 1] = ch
        for ax in range(3):
            if rng.random() < 0.5:
                xi = torch.flip(xi, dims=[2 + ax])
                yi = torch.flip(yi, dims=[1 + ax])
        xs.append(xi)
        ys.append(yi)
    return torch.cat(xs), torch.cat(ys)


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """nnU-Net's DC_and_CE_loss (weights 1/1): CE + soft Dice over foreground classes,
    batch dice, smooth 1e-5; the Dice term is -dc as in MemoryEfficientSoftDiceLoss."""
    ce = F.cross_entropy(logits, target)
    p = torch.softmax(logits, 1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 4, 1, 2, 3)[:, 1:].float()
    dims = (0, 2, 3, 4)
    inter = (p * onehot).sum(dims)
    denom = p.sum(dims) + onehot.sum(dims)
    dc = (2 * inter + 1e-5) / torch.clamp(denom + 1e-5, min=1e-8)
    return ce - dc.mean()


# ------------------------------------------------------------------ network, training


def build_net(features: Sequence[int]) -> nnunet_net.PlainConvUNet:
    n = len(features)
    return nnunet_net.PlainConvUNet(
        in_ch=2, features=features, kernels=[3] * n, strides=[1] + [2] * (n - 1),
        n_conv_per_stage=[2] * n, num_classes=2, n_conv_per_stage_decoder=[2] * (n - 1))


def seed_everything(seed: int):
    torch.manual_seed(seed)
    np.random.seed(seed)
    return np.random.default_rng(seed)


def make_optimizer(net, lr):
    return torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=3e-5)


def lr_at(it: int, total: int, base: float, warmup: int = 20) -> float:
    """Linear warm-up, then nnU-Net's poly schedule (1 - it/total)^0.9."""
    if it < warmup:
        return base * (it + 1) / warmup
    return base * (1 - it / total) ** 0.9


def train_step(net, opt, x: torch.Tensor, y: torch.Tensor, amp: bool, clip: Optional[float] = None) -> float:
    """One optimizer step on batch (x, y): forward under bf16 autocast when amp (loss in fp32),
    backward, optional gradient-norm clipping, step. Returns the loss."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        logits = net(x)
    loss = dice_ce_loss(logits.float(), y)
    opt.zero_grad()
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
    opt.step()
    return float(loss)


def measure_iteration_time(args, cases, log: Logger, amp: bool, n: int = 6) -> float:
    """Seconds per training iteration (median of n after 1 warm-up), on a throw-away net."""
    rng = seed_everything(args.seed + 12345)
    net = build_net(args.features)
    opt = make_optimizer(net, args.lr)
    sampler = PatchSampler(cases, args.train_patch or args.patch, args.p_fg, rng)
    times = []
    for i in range(n + 1):
        t = time.time()
        x, y = sampler.batch(args.batch)
        train_step(net, opt, x, y, amp)
        if i:
            times.append(time.time() - t)
    log(f"iteration time: {['%.2f' % t for t in times]} s")
    return float(np.median(times))


def auto_batch_size(args, cases, amp: bool, log: Logger) -> int:
    """Batch size from the memory available (nnU-Net sizes its batch to the GPU's memory; on
    the CPU the limit is RAM): one training step at batch 2 measures the peak resident memory
    per sample (VmHWM after resetting it through /proc/self/clear_refs), then
    batch = floor(memory_fraction x MemAvailable / per-sample), clamped to [1, max_batch].
    The cap exists because on the CPU samples/s is flat in the batch size (measured 0.185 vs
    0.189 s/sample at batch 2 and 4): a bigger batch only means fewer optimizer steps."""
    import gc
    rng = seed_everything(args.seed + 777)
    net = build_net(args.features)
    opt = make_optimizer(net, args.lr)
    sampler = PatchSampler(cases, args.train_patch or args.patch, args.p_fg, rng)
    x, y = sampler.batch(2)
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    before = _proc_kib("/proc/self/status", "VmRSS")
    train_step(net, opt, x, y, amp)
    peak = _proc_kib("/proc/self/status", "VmHWM")
    per_sample = max((peak - before) * 1024 / 2, 32 << 20)
    avail = _proc_kib("/proc/meminfo", "MemAvailable") * 1024
    fit = int(args.memory_fraction * avail // per_sample)
    batch = max(1, min(args.max_batch, fit))
    log(f"auto batch: {per_sample / 2**20:.0f} MiB per sample ({'bf16' if amp else 'fp32'}), "
        f"MemAvailable {avail / 2**30:.1f} GiB x {args.memory_fraction} -> fits {fit}, "
        f"cap {args.max_batch} -> batch {batch}")
    del net, opt
    return batch


def quick_validate(net, val_cases, args, amp: bool) -> Dict:
    """Dice and HD95 on preprocessed validation studies (target spacing, sliding window step
    0.5, no export to the native grid): the early-stopping signal. Returns mean_dice (studies
    with lesions), mean_hd95_mm (studies where both masks are non-empty; empty prediction of a
    lesion counts as 100 mm), fp_ml on lesion-free studies."""
    net.eval()
    dices, hds, fp = [], [], 0.0
    vml = float(np.prod(args.target_spacing)) / 1000.0

    def predict(t):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            return net(torch.from_numpy(t)).float().numpy()
    for data, seg in val_cases:
        logits = npp.sliding_window_logits(predict, data, args.patch, 2, 0.5)
        pred = logits.argmax(0) > 0
        truth = seg > 0
        if truth.any():
            dices.append(2 * (pred & truth).sum() / (pred.sum() + truth.sum()))
            h = hd95_mm(pred, truth, args.target_spacing)
            hds.append(100.0 if h is None else h)
        else:
            fp += float(pred.sum()) * vml
    net.train()
    return {"dice": float(np.mean(dices)) if dices else 0.0,
            "hd95": float(np.mean(hds)) if hds else 0.0, "fp_ml": fp}


def train(args, cases, iterations: int, log: Logger, run_dir: str, amp: bool = False,
          val_cases=None):
    """Trains a fresh network for up to `iterations` steps; with val_cases, validates every
    args.val_every steps and stops early on a plateau, keeping the best-Dice weights (or the
    last ones with args.keep == "last").
    Returns (net, iterations done, seconds, losses, kept iteration, validation history)."""
    rng = seed_everything(args.seed)
    net = build_net(args.features)
    nnunet_net.init_he(net)
    opt = make_optimizer(net, args.lr)
    sampler = PatchSampler(cases, args.train_patch or args.patch, args.p_fg, rng)
    t0 = time.time()
    hard_stop = args.hard_stop_min * 60
    losses = []
    done = 0
    history = []
    best = {"dice": -1.0, "hd95": float("inf"), "iteration": 0, "state": None}
    stale = 0
    net.train()
    for it in range(iterations):
        for g in opt.param_groups:
            g["lr"] = lr_at(it, iterations, args.lr)
        x, y = sampler.batch(args.batch)
        losses.append(train_step(net, opt, x, y, amp, clip=12))
        done = it + 1
        el = time.time() - t0
        if done % 10 == 0 or done == iterations:
            eta = el / done * (iterations - done)
            log(f"it {done}/{iterations} loss {np.mean(losses[-10:]):.4f} "
                f"lr {opt.param_groups[0]['lr']:.2e} elapsed {el:.0f} s eta {eta:.0f} s")
        if done % 100 == 0:
            torch.save({"net": net.state_dict(), "iteration": done}, os.path.join(run_dir, "checkpoint.pt"))
        if val_cases is not None and done % args.val_every == 0:
            tv = time.time()
            v = quick_validate(net, val_cases, args, amp)
            improved = (v["dice"] > best["dice"] + args.min_delta_dice or
                        v["hd95"] < best["hd95"] - args.min_delta_hd95)
            if v["dice"] > best["dice"]:  # the weights are copied only when they may be exported
                best.update(iteration=done, state={k: t.clone() for k, t in net.state_dict().items()}
                            if args.keep == "best" else None)
            best["dice"] = max(best["dice"], v["dice"])
            best["hd95"] = min(best["hd95"], v["hd95"])
            stale = 0 if improved else stale + 1
            history.append(dict(v, iteration=done, elapsed_s=round(time.time() - t0, 1)))
            log(f"validation at it {done}: dice {v['dice']:.4f} hd95 {v['hd95']:.2f} mm "
                f"lesion-free {v['fp_ml']:.2f} mL ({time.time() - tv:.0f} s); best dice "
                f"{best['dice']:.4f} at it {best['iteration']}, {stale}/{args.patience} without improvement")
            if stale >= args.patience and done >= args.min_iterations:
                log(f"EARLY STOP after {done} iterations: no Dice gain >= {args.min_delta_dice} nor HD95 "
                    f"gain >= {args.min_delta_hd95} mm in {args.patience} validations; keeping it {best['iteration']}")
                break
        if el > hard_stop and done < iterations:
            log(f"HARD STOP after {done} iterations ({el:.0f} s > {hard_stop:.0f} s)")
            break
    train_s = time.time() - t0
    kept = done
    if best["state"] is not None:
        net.load_state_dict(best["state"])
        kept = best["iteration"]
    torch.save({"net": net.state_dict(), "iteration": done, "features": list(args.features)},
               os.path.join(run_dir, "checkpoint.pt"))
    return net, done, train_s, losses, kept, history


# ------------------------------------------------------------------ validation


def predict_study(net, folder: str, args):
    """Full nnU-Net-style inference on one study: preprocess, sliding window (step 0.5,
    Gaussian), export to the native grid. Returns (seg (z, y, x) uint8, truth or None,
    voxel volume mL)."""
    chans, spacing, affine, truth = load_case(folder)
    data, _, props = npp.preprocess_case(chans, spacing, args.target_spacing, affine=affine,
                                         ct_properties=args.ct_properties)
    net.eval()
    with torch.no_grad():
        logits = npp.sliding_window_logits(lambda t: net(torch.from_numpy(t)).numpy(), data,
                                           args.patch, 2, 0.5)
    seg = npp.export_logits(logits, props, args.target_spacing)
    return seg, truth, float(np.prod(spacing)) / 1000.0, affine


def validate(net, args, log: Logger, run_dir: str) -> Dict:
    """Full inference on every validation and lesion-free study, on the native grid: Dice,
    HD95 (mm), volume error (mL) per study; predicted volume on lesion-free studies."""
    results = {"per_study": {}, "negatives": {}}
    dices, hds = [], []
    pred_dir = os.path.join(run_dir, "val_pred")
    os.makedirs(pred_dir, exist_ok=True)
    t0 = time.time()
    for folder in study_folders(args, "val"):
        if not os.path.isdir(folder):
            log(f"validation study {folder} missing, skipped")
            continue
        name = os.path.relpath(folder, args.data_dir).replace(os.sep, "_")
        seg, truth, vml, aff = predict_study(net, folder, args)
        npp.write_nifti_like(seg, aff, os.path.join(pred_dir, f"{name}.nii.gz"))
        _, spacing, _ = npp.read_nifti(os.path.join(folder, TRUTH_FILE))
        tp = int(((seg > 0) & (truth > 0)).sum())
        ps, ts = int((seg > 0).sum()), int((truth > 0).sum())
        d = None if ts == 0 else 2 * tp / (ps + ts)
        h = hd95_mm(seg > 0, truth > 0, spacing) if ts else None
        if d is not None:
            dices.append(d)
            hds.append(100.0 if h is None else h)
        results["per_study"][name] = {"dice": None if d is None else round(d, 4),
                                      "hd95_mm": None if h is None else round(h, 2),
                                      "pred_ml": round(ps * vml, 3), "truth_ml": round(ts * vml, 3)}
        log(f"validation {name}: dice {d if d is None else round(d, 4)} hd95 {h if h is None else round(h, 1)} "
            f"pred {ps * vml:.2f} mL truth {ts * vml:.2f} mL")
    fps = []
    for folder in study_folders(args, "neg"):
        if not os.path.isdir(folder):
            log(f"lesion-free study {folder} missing, skipped")
            continue
        name = os.path.relpath(folder, args.data_dir).replace(os.sep, "_")
        seg, truth, vml, aff = predict_study(net, folder, args)
        fp = float((seg > 0).sum()) * vml
        fps.append(fp)
        results["negatives"][name] = {"fp_ml": round(fp, 3)}
        log(f"lesion-free {name}: predicted {fp:.3f} mL")
    results["mean_dice"] = round(float(np.mean(dices)), 4) if dices else None
    results["mean_hd95_mm"] = round(float(np.mean(hds)), 2) if hds else None
    results["max_lesion_free_ml"] = round(max(fps), 3) if fps else None
    results["validation_s"] = round(time.time() - t0, 1)
    log(f"mean validation dice {results['mean_dice']} hd95 {results['mean_hd95_mm']} mm "
        f"({len(dices)} studies), lesion-free max {results['max_lesion_free_ml']} mL in {results['validation_s']} s")
    return results


# ------------------------------------------------------------------ ONNX export and check


def run_onnx_with_torch(model, x: torch.Tensor) -> torch.Tensor:
    """Executes an ONNX graph of Conv/ConvTranspose/InstanceNormalization/LeakyRelu/Concat
    with torch.nn.functional from the ONNX initializers (no onnxruntime on Debian 12):
    checks the exported graph's topology, attributes and weights, not just the checker."""
    from onnx import numpy_helper
    vals = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in model.graph.initializer}
    vals[model.graph.input[0].name] = x
    for node in model.graph.node:
        a = {at.name: at for at in node.attribute}
        ins = [vals[n] if n else None for n in node.input]

        def ints(name, default):
            return list(a[name].ints) if name in a else default
        if node.op_type in ("Conv", "ConvTranspose"):
            pads = ints("pads", [0] * 6)
            if pads[:3] != pads[3:]:
                raise ValueError(f"asymmetric pads {pads} in {node.name}")
            kw = dict(stride=ints("strides", [1, 1, 1]), padding=pads[:3],
                      dilation=ints("dilations", [1, 1, 1]), groups=a["group"].i if "group" in a else 1)
            bias = ins[2] if len(ins) > 2 else None
            if node.op_type == "Conv":
                y = F.conv3d(ins[0], ins[1], bias, **kw)
            else:
                y = F.conv_transpose3d(ins[0], ins[1], bias, output_padding=ints("output_padding", [0, 0, 0]), **kw)
        elif node.op_type == "InstanceNormalization":
            y = F.instance_norm(ins[0], weight=ins[1], bias=ins[2], eps=a["epsilon"].f if "epsilon" in a else 1e-5)
        elif node.op_type == "LeakyRelu":
            y = F.leaky_relu(ins[0], a["alpha"].f if "alpha" in a else 0.01)
        elif node.op_type == "Concat":
            y = torch.cat(ins, a["axis"].i)
        elif node.op_type == "Identity":
            y = ins[0]
        else:
            raise ValueError(f"unsupported op {node.op_type}")
        vals[node.output[0]] = y
    return vals[model.graph.output[0].name]


def export_onnx(net, args, path: str, log: Logger) -> Dict:
    import onnx
    net.eval()
    dummy = torch.zeros((1, 2) + tuple(args.patch))
    torch.onnx.export(net, dummy, path, opset_version=17, input_names=["input"],
                      output_names=["logits"], do_constant_folding=True)
    model = onnx.load(path)
    onnx.checker.check_model(model)
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn((1, 2) + tuple(args.patch), generator=g)
    with torch.no_grad():
        ref = net(x)
        got = run_onnx_with_torch(model, x)
    diff = float((ref - got).abs().max())
    same_argmax = float((ref.argmax(1) == got.argmax(1)).float().mean())
    ops = sorted({n.op_type for n in model.graph.node})
    shp = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    log(f"ONNX {path}: {os.path.getsize(path) / 1e6:.2f} MB, ops {ops}, input {shp}, "
        f"max |onnx - torch| {diff:.2e}, argmax agreement {same_argmax:.6f}")
    if diff > 1e-3:
        raise SystemExit("ONNX graph does not reproduce the torch network")
    return {"onnx_check": "onnx.checker.check_model ok", "onnx_vs_torch_max_abs": diff,
            "onnx_ops": ops}


def channel_entry(name: str, ct_props: Optional[Dict[str, float]]) -> Dict:
    """model.json channel: ZScore, or CTNormalization with its intensity properties
    (docs/model_package.md; the box converts an ADC channel to 10^-6 mm^2/s first)."""
    if ct_props is None:
        return {"name": name, "normalization": "ZScoreNormalization", "use_mask_for_norm": False}
    return {"name": name, "normalization": "CTNormalization", "use_mask_for_norm": False,
            "unit": "1e-6 mm2/s", "intensity_properties": ct_props}


def write_package(args, out_dir: str, prov: Dict) -> None:
    date = datetime.date.today().strftime("%Y.%m.%d")
    pkg = {
        "format": "strokebox-model/1",
        "model_id": f"strokebox-demo-{date}",
        # Trained on b = 800-1500 s/mm^2 (phantom_dr) and 1000 (strokebox phantom): the box
        # refuses studies outside the accepted range unless told otherwise (docs/model_package.md).
        "diffusion": {"b_value_s_mm2": 1000, "accepted_b_range_s_mm2": [700, 1500]},
        "networks": ["model.onnx"],
        "channels": [channel_entry(c, props) for c, props in zip(CHANNELS, args.ct_properties or [None] * 2)],
        "target_spacing_mm": list(args.target_spacing),
        "patch_size": list(args.patch),
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "labels": {"background": 0, "lesion": 1},
        "regions_class_order": None,
        "use_mirroring": False,
        "mirroring_axes": [0, 1, 2],
        "tile_step_size": 0.5,
        "resampling": {"data_order": 3, "data_order_z": 0, "probabilities_order": 1,
                       "probabilities_order_z": 0, "force_separate_z": None},
        "architecture": {"network_class_name": "PlainConvUNet",
                         "features_per_stage": list(args.features),
                         "strides": [1] + [2] * (len(args.features) - 1),
                         "n_conv_per_stage": 2, "n_conv_per_stage_decoder": 2,
                         "kernel_size": 3, "num_classes": 2, "input_channels": 2},
        "provenance": prov,
    }
    with open(os.path.join(out_dir, "model.json"), "w") as f:
        json.dump(pkg, f, indent=2)
        f.write("\n")


def finish(net, args, log, run_dir, prov):
    """Validation, ONNX export, package files."""
    val = {"skipped": "--no-final-validation (tools/evaluate_model.py evaluates the package)"} \
        if args.no_final_validation else validate(net, args, log, run_dir)
    os.makedirs(args.out, exist_ok=True)
    onnx_info = export_onnx(net, args, os.path.join(args.out, "model.onnx"), log)
    prov.update(onnx_info)
    prov["validation"] = val
    write_package(args, args.out, prov)
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(prov, f, indent=2)
    log(f"wrote {args.out}/model.onnx and model.json")


def cmd_train(args) -> None:
    torch.set_num_threads(args.threads)
    check_training_seeds(parse_seeds(args.train_seeds) + parse_seeds(args.dr_train_seeds))
    run_dir = args.run_dir
    os.makedirs(run_dir, exist_ok=True)
    log = Logger(os.path.join(run_dir, "train.log"))
    log(f"args: {vars(args)}")
    t_all = time.time()
    cache = os.path.join(args.data_dir, "cache")
    cases = []
    train_folders = study_folders(args, "train")
    for folder in train_folders:
        if not os.path.isdir(folder):
            raise SystemExit(f"training study {folder} missing: run `generate` / tools/phantom_dr.py first")
    # ADC is quantitative (10^-6 mm^2/s; an infarct is below ~620): CTNormalization keeps the
    # absolute value, ZScore (nnU-Net's MRI default) makes it relative to the study's own mix of
    # background, brain and CSF.
    args.ct_properties = adc_ct_properties(args, cache, log)
    for folder in train_folders:
        cases.append(preprocess_cached(folder, cache, args.target_spacing, log, args.ct_properties))
    t_pre = time.time() - t_all
    n_fg = sum(1 for _, s in cases if s.any())
    log(f"{len(cases)} training studies ({n_fg} with lesions) ready in {t_pre:.0f} s")
    if args.prepare_only:
        return
    # The recipe (issue 14): "baseline" = fp32, fixed batch, fixed iterations; "accelerated" =
    # bf16 autocast where the CPU runs bf16 natively, batch from the memory available, early
    # stopping on a validation plateau (Dice and HD95), best checkpoint kept.
    accelerated = args.recipe == "accelerated"
    amp = accelerated and args.precision in ("auto", "bf16") and (args.precision == "bf16" or bf16_native())
    log(f"recipe {args.recipe}: precision {'bf16 autocast' if amp else 'fp32'}"
        + ("" if amp or not accelerated else " (this CPU has no native bf16: AVX512-BF16/AMX missing)"))
    if accelerated and args.batch == 0:
        args.batch = auto_batch_size(args, cases, amp, log)
    elif args.batch == 0:
        args.batch = 2
    val_cases = None
    if accelerated:
        folders = [f for f in study_folders(args, "val") + study_folders(args, "neg") if os.path.isdir(f)]
        if 0 < args.early_stop_studies < len(folders):  # evenly spaced subset: validation stays cheap
            folders = [folders[int(i)] for i in np.linspace(0, len(folders) - 1, args.early_stop_studies)]
        val_cases = [preprocess_cached(f, cache, args.target_spacing, log, args.ct_properties) for f in folders]
        log(f"early stopping on {len(val_cases)} validation studies every {args.val_every} iterations, "
            f"patience {args.patience}")
    if args.iterations == "auto":
        t_it = measure_iteration_time(args, cases, log, amp)
        iterations = max(20, int(args.train_budget_min * 60 / (t_it * 1.08)) // 10 * 10)
        log(f"{t_it:.2f} s/iteration -> {iterations} iterations for {args.train_budget_min} min")
    else:
        iterations = int(args.iterations)
    net, done, train_s, losses, kept, history = train(args, cases, iterations, log, run_dir, amp=amp,
                                                      val_cases=val_cases)
    log(f"trained {done} iterations in {train_s:.0f} s, final loss {np.mean(losses[-50:]):.4f}, "
        f"kept iteration {kept}")
    prov = {
        "source": "tools/train_demo.py",
        "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
        "reproduce": "python3 tools/train_demo.py " + " ".join(sys.argv[1:]),
        "seed": args.seed,
        "recipe": args.recipe,
        "precision": "bf16 autocast" if amp else "fp32",
        "iterations": done,
        "kept_iteration": kept,
        "iterations_planned": iterations,
        "early_stopping_history": history,
        "batch_size": args.batch,
        "train_patch": list(args.train_patch or args.patch),
        "optimizer": f"AdamW lr {args.lr} wd 3e-5, warm-up 20 it, poly 0.9, grad clip 12",
        "loss": "CE + soft Dice (foreground, batch dice), nnU-Net DC_and_CE_loss",
        "foreground_oversampling": args.p_fg,
        "training_time_s": round(train_s, 1),
        "preprocessing_time_s": round(t_pre, 1),
        "torch": torch.__version__,
        "threads": args.threads,
        "phantom_train_seeds": args.train_seeds,
        "phantom_val_seeds": args.val_seeds,
        "phantom_lesion_free_seeds": args.negative_seeds,
        "phantom_dr_train_seeds": args.dr_train_seeds,
        "phantom_dr_val_seeds": args.dr_val_seeds,
        "phantom_dr_lesion_free_seeds": args.dr_negative_seeds,
        "final_train_loss": round(float(np.mean(losses[-50:])), 4),
        "adc_normalization": args.adc_normalization,
        "ct_properties": args.ct_properties,
    }
    finish(net, args, log, run_dir, prov)
    log(f"total wall time {time.time() - t_all:.0f} s")


def cmd_validate(args) -> None:
    torch.set_num_threads(args.threads)
    log = Logger(os.path.join(args.run_dir, "validate.log"))
    ck = torch.load(os.path.join(args.run_dir, "checkpoint.pt"), map_location="cpu")
    net = build_net(args.features)
    net.load_state_dict(ck["net"])
    prov = {"source": "tools/train_demo.py", "seed": args.seed, "iterations": ck["iteration"]}
    summ = os.path.join(args.run_dir, "summary.json")
    if os.path.exists(summ):
        prov.update({k: v for k, v in json.load(open(summ)).items()
                     if k not in ("validation", "onnx_check", "onnx_vs_torch_max_abs", "onnx_ops")})
    # The checkpoint was trained with these inputs: validate and package it the same way.
    args.ct_properties = prov.get("ct_properties")
    finish(net, args, log, args.run_dir, prov)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=os.path.join(REPO, "data"))
    common.add_argument("--val-seeds", default="9001-9006")
    common.add_argument("--negative-seeds", default="9007",
                        help="seeds generated with --lesions 0 (false-positive check)")
    common.add_argument("--dr-dir", default="dr", help="sub-folder of --data-dir with phantom_dr studies")
    common.add_argument("--dr-train-seeds", default="",
                        help="tools/phantom_dr.py studies (DATA/dr/seed_N) to train on")
    common.add_argument("--dr-val-seeds", default="", help="phantom_dr studies to validate on")
    common.add_argument("--dr-negative-seeds", default="",
                        help="lesion-free phantom_dr studies (DATA/dr/seed_N_lesions0)")

    g = sub.add_parser("generate", parents=[common])
    g.add_argument("--strokebox", default=os.path.join(REPO, "build-h5", "strokebox"))
    g.add_argument("--seeds", default="1-60,9001-9006")
    g.add_argument("--jobs", type=int, default=2)
    g.add_argument("--force", action="store_true")
    g.set_defaults(fn=generate)

    f = sub.add_parser("fake", parents=[common])
    f.set_defaults(fn=fake_from_golden)

    for name, fn in (("train", cmd_train), ("validate", cmd_validate)):
        t = sub.add_parser(name, parents=[common])
        t.add_argument("--train-seeds", default="1-60")
        t.add_argument("--seed", type=int, default=1)
        t.add_argument("--iterations", default="auto", help="number, or 'auto' to fit --train-budget-min")
        t.add_argument("--train-budget-min", type=float, default=28.0)
        t.add_argument("--hard-stop-min", type=float, default=33.0,
                       help="stop training after this many minutes whatever --iterations says")
        t.add_argument("--features", type=lambda s: [int(v) for v in s.split(",")],
                       default=[8, 16, 32, 64, 80])
        t.add_argument("--patch", type=lambda s: [int(v) for v in s.split(",")], default=[64, 64, 64])
        t.add_argument("--train-patch", type=lambda s: [int(v) for v in s.split(",")], default=None,
                       help="training patch (default: --patch, the exported inference patch)")
        t.add_argument("--prepare-only", action="store_true", help="only fill the preprocessing cache")
        t.add_argument("--target-spacing", type=lambda s: [float(v) for v in s.split(",")],
                       default=[2.0, 2.0, 2.0])
        t.add_argument("--batch", type=int, default=0,
                       help="batch size; 0 = 2 for the baseline recipe, from memory for the accelerated one")
        t.add_argument("--recipe", choices=["baseline", "accelerated"], default="accelerated")
        t.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                       help="accelerated recipe: bf16 autocast where native (auto), or forced")
        t.add_argument("--max-batch", type=int, default=4)
        t.add_argument("--no-final-validation", action="store_true",
                       help="skip the Python validation after training (evaluate with tools/evaluate_model.py)")
        t.add_argument("--memory-fraction", type=float, default=0.5)
        t.add_argument("--val-every", type=int, default=400)
        t.add_argument("--patience", type=int, default=4)
        t.add_argument("--early-stop-studies", type=int, default=14,
                       help="validation studies (evenly spaced over --val/--negative seeds) for early stopping")
        t.add_argument("--min-iterations", type=int, default=1200)
        t.add_argument("--keep", choices=["best", "last"], default="best",
                       help="weights to export: the best validation Dice (default) or the last iteration's "
                            "(nnU-Net's checkpoint_final: the learning rate has decayed to ~0 there)")
        t.add_argument("--min-delta-dice", type=float, default=0.005)
        t.add_argument("--min-delta-hd95", type=float, default=1.0)
        t.add_argument("--lr", type=float, default=2e-3)
        t.add_argument("--p-fg", type=float, default=0.33)
        t.add_argument("--threads", type=int, default=2)
        t.add_argument("--fingerprint-dr-seeds", default="",
                       help="phantom_dr studies whose lesions (with --train-seeds' phantoms) give the "
                            "ADC normalization statistics, instead of the training studies: one "
                            "fingerprint for ensemble members trained on different data, as nnU-Net "
                            "shares one across its folds")
        t.add_argument("--fingerprint-from", default="", metavar="PACKAGE",
                       help="take the ADC normalization statistics from this model package's "
                            "model.json (so the new network can join its ensemble)")
        t.add_argument("--adc-normalization", choices=["ct", "ct-tissue", "zscore"], default="ct",
                       help="ADC channel: CTNormalization (absolute ADC kept) with the intensity "
                            "properties of the training lesions (ct, nnU-Net's fingerprint; default) or "
                            "of all head voxels (ct-tissue), or ZScore per study")
        t.add_argument("--run-dir", default=os.path.join(REPO, "data", "demo_run"))
        t.add_argument("--out", default=os.path.join(REPO, "models", "demo"))
        t.set_defaults(fn=fn)
    args = ap.parse_args(argv)
    global DR_DIR
    DR_DIR = args.dr_dir
    args.fn(args)


if __name__ == "__main__":
    main()
