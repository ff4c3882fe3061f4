#!/usr/bin/python3
"""Synthetic acute infarcts inserted into real healthy diffusion studies, for training.

Why: models trained only on phantoms (tools/phantom_dr.py) call the real posterior fossa an
infarct. On real DWI the cerebellum and inferior vermis are the brightest tissue, because the
head lies on the receive coil's posterior elements, and their ADC sits a little below the
cerebrum's (issue 14; models/demo/TRAINING.md). Real healthy heads show the network real
anatomy, coil profiles, EPI distortion and noise with the label "no infarct"; the infarcts
inserted into them carry the one cue that must decide: a reduced ADC with the DWI brightening
that the reduction implies. No real stroke case is used (the issue's claim is synthetic-to-real).

Host input: a folder per healthy study holding dwi.nii.gz (trace at b) and adc.nii.gz
(10^-6 mm^2/s) as `strokebox segment --study DIR --out HOST --save-inputs` writes them, and its
report.json (the b-value, report key dwi_b_value).

Signal model (mono-exponential between b = 0 and the study's b; Le Bihan, Radiology 1986):
    S0 = S_b * exp(b * ADC)                      (the host's implied b = 0 signal)
    ADC' = ADC * (1 - f * (1 - r))               r = relative ADC of the infarct, 0.45-0.75 (--relative-adc)
    S0'  = S0 * (1 + f * (s - 1))                s = T2 prolongation of the infarct, 1.0-1.4
    S_b' = S0' * exp(-b * ADC')
with f the infarct's volume fraction per voxel (soft edge) and r varying smoothly inside it;
ADC' is kept >= 300 inside infarcts (the range of acute infarcts is 350-620, RAPID's threshold
620). The truth is f >= 0.5 inside the host's parenchyma.

Parenchyma: head = DWI above a fraction of its 99th percentile, brain = the largest connected
part of the head with ADC 300-1400 (CSF and background excluded), away from the brain's outer
edge by 2 mm. Infarcts grow from a random parenchyma voxel (log-uniform 0.1-80 mL; lacunes
0.1-1.5 mL) as distance-plus-smooth-noise blobs in mm, the same shape model as phantom_dr.

Failed fat suppression (--fat P, probability per study; 0 by default, so earlier seeds
regenerate unchanged): the scalp and skull-base fat that the host's scanner suppressed comes
back as a patchy shell 1-12 mm outside the brain (S0 0.04-1.5 x the parenchyma's, ADC 20-200:
fat barely diffuses), shifted 0-12 mm along one in-plane axis as EPI's fat-water chemical shift
displaces it (3.4 ppm over a phase-encode bandwidth of 20-40 Hz per pixel; Bernstein, Handbook
of MRI Pulse Sequences, 2004, 17.4). Water and fat add per voxel before the scanner's ADC fit:
    S0 = S0w + F,  S_b = S_bw + F * exp(-b * ADC_fat),  ADC = ln(S0 / S_b) / b
so where the ghost overlaps brain the DWI brightens and the ADC drops like an infarct's. It is
never labelled: the network must learn the shifted ring of fat, not the local values (issue 14:
every false positive left on lesion-free phantoms was fat, median ADC 73-290). With
--fat-nyquist Q, a fraction Q of those studies also get the fat's N/2 (Nyquist) ghost: a copy at
0.05-0.25 of its signal, half the field of view away along the same phase-encode axis (EPI's
odd/even echo mismatch; Bernstein 2004, 16.1), which lands over the middle of the brain.

Lower SNR (--low-snr P, probability per study; 0 by default, so earlier seeds regenerate
unchanged): the study is re-acquired at a lower signal-to-noise ratio, as a 1.5 T scanner, a
thinner slice or a shorter protocol gives. The hosts are all 3 T research-grade series whose
trace SNR in the parenchyma reads 14-21 by estimate_noise, while many clinics scan strokes at
1.5 T (about half the SNR in the same time). A target SNR of the trace DWI in the parenchyma is
drawn log-uniform in --snr-range (default 5-15); the noise the host already has (estimate_noise)
is topped up to it with complex Gaussian noise in the b = 0 and the trace image, magnitude taken
(Rician; Gudbjartsson and Patz, Magn Reson Med 1995), its standard deviation varying smoothly
over the field of view as parallel imaging's g-factor makes it (1-2x; Pruessmann et al., Magn
Reson Med 1999). The b = 0 image gets 1-2x the trace's noise (the trace averages the diffusion
directions, the b = 0 is often one average). The ADC is then fitted from the noisy pair as the
scanner does, ADC = ln(S0 / S_b) / b, clipped at 0, inside the head; outside it stays as the
host's scanner wrote it. The truth does not change: a noisier image of the same infarct.

Output per study (nnU-Net file convention, as tools/phantom_dr.py): OUT/seed_N/ (or
seed_N_lesions0 with --lesions 0) with image_0000.nii.gz (DWI), image_0001.nii.gz (ADC,
10^-6 mm^2/s), truth.nii.gz (uint8), phantom.json (host, b-value, lesions). The seed picks the
host (seed modulo the number of hosts, hosts sorted by name) and every random draw.

Usage: tools/host_lesions.py --hosts 'data/hosts/decub_*' --out data/dr --seeds 5000-5161 --fat 0.5
"""

import argparse
import functools
import glob
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, Optional, Tuple

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from phantom_dr import parse_seeds, smooth_noise, write_study  # noqa: E402  (same seeds, noise, files)

MIN_INFARCT_ADC = 300.0  # 10^-6 mm^2/s; acute infarcts are 350-620 (issue 14)


@functools.lru_cache(maxsize=None)  # each worker reads a host once, however many studies it makes
def load_host(folder: str) -> Dict:
    """Reads a --save-inputs folder: dwi, adc (float32, x,y,z as stored), affine, spacing (mm),
    b (s/mm^2), its brain and parenchyma masks (parenchyma_masks), the distance outside the brain
    and the parenchyma's median b = 0 signal (for residual_fat). Read-only: the studies
    made from it share it. Raises ValueError with the folder named when a file or the b-value
    is missing."""
    files = {k: os.path.join(folder, f"{k}.nii.gz") for k in ("dwi", "adc")}
    for path in files.values():
        if not os.path.exists(path):
            raise ValueError(f"{folder}: no {os.path.basename(path)}; write it with "
                             "`strokebox segment --study DIR --out HOST --save-inputs`")
    report = os.path.join(folder, "report.json")
    b = None
    if os.path.exists(report):
        with open(report) as f:
            b = json.load(f).get("dwi_b_value")
    if not b:
        raise ValueError(f"{folder}: report.json with dwi_b_value is needed for the b-value")
    dimg = nib.load(files["dwi"])
    dwi = np.asarray(dimg.dataobj, np.float32)
    adc = np.asarray(nib.load(files["adc"]).dataobj, np.float32)
    spacing = np.array(dimg.header.get_zooms()[:3], float)
    brain, par = parenchyma_masks(dwi, adc, spacing)
    s0 = dwi * np.exp(float(b) * adc * 1e-6)
    return {"dwi": dwi, "adc": adc, "affine": dimg.affine, "spacing": spacing, "b": float(b),
            "brain": brain, "parenchyma": par, "name": os.path.basename(os.path.normpath(folder)),
            # for residual_fat: distance outside the brain (mm) and the parenchyma's b = 0 signal
            "outside_mm": ndi.distance_transform_edt(~ndi.binary_fill_holes(brain), sampling=spacing),
            "s0_parenchyma": float(np.median(s0[par])) if par.any() else float(np.median(dwi))}


def head_mask(dwi: np.ndarray) -> np.ndarray:
    """The head (boolean, shape of dwi): DWI above 0.12 of its 99th percentile, holes filled."""
    return ndi.binary_fill_holes(dwi > 0.12 * np.percentile(dwi, 99))


def parenchyma_masks(dwi: np.ndarray, adc: np.ndarray, spacing) -> Tuple[np.ndarray, np.ndarray]:
    """(brain, parenchyma) boolean masks, shape of dwi: see the module doc."""
    head = head_mask(dwi)
    cand = head & (adc > 300) & (adc < 1400)
    cand = ndi.binary_opening(cand, iterations=1)
    lab, n = ndi.label(cand)
    if n == 0:
        return cand, cand
    sizes = ndi.sum(cand, lab, range(1, n + 1))
    brain = lab == 1 + int(np.argmax(sizes))
    filled = ndi.binary_fill_holes(brain)
    depth = ndi.distance_transform_edt(filled, sampling=spacing)
    return brain, brain & (depth > 2.0)


def make_blob(rng, allowed: np.ndarray, seeds_from: np.ndarray, spacing, target_ml: float) -> Optional[np.ndarray]:
    """Soft fraction map (float32, shape of allowed) of one irregular blob of about target_ml,
    grown in mm from a random voxel of seeds_from and kept inside allowed; None if no room."""
    pts = np.argwhere(seeds_from)
    if len(pts) == 0:
        return None
    c = pts[int(rng.integers(len(pts)))]
    vox_ml = float(np.prod(spacing)) / 1000.0
    n_target = max(1, int(round(target_ml / vox_ml)))
    r_mm = (3 * target_ml * 1000 / (4 * np.pi)) ** (1 / 3)
    reach = np.ceil((r_mm * 2.5 + 6) / spacing).astype(int)
    lo = np.maximum(c - reach, 0)
    hi = np.minimum(c + reach + 1, allowed.shape)
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    sub = tuple(hi - lo)
    g = np.indices(sub, dtype=np.float32)
    aniso = rng.uniform(0.6, 1.4, 3)
    d = np.sqrt(sum(((g[a] + lo[a] - c[a]) * spacing[a] * aniso[a]) ** 2 for a in range(3)))
    sigma = rng.uniform(2.0, 5.0) / spacing  # mm -> voxels
    score = d / max(r_mm, 1.0) + smooth_noise(rng, sub, sigma) * rng.uniform(0.3, 0.8)
    score[~allowed[sl]] = np.inf
    flat = np.sort(score.ravel())
    k = min(n_target, int(np.isfinite(flat).sum()))
    if k < 1:
        return None
    m = score <= flat[k - 1]
    lab, n = ndi.label(m)
    if n > 1:  # keep the part holding the centre, or the largest
        cc = lab[tuple(c - lo)] or 1 + int(np.argmax(ndi.sum(m, lab, range(1, n + 1))))
        m = lab == cc
    frac = np.zeros(allowed.shape, np.float32)
    frac[sl] = ndi.gaussian_filter(m.astype(np.float32), 0.5)
    frac[sl] = np.maximum(frac[sl], m)  # the blob itself is all infarct; only its rim is partial
    return frac * allowed


def residual_fat(rng, host: Dict) -> Tuple[np.ndarray, float, Dict]:
    """Residual fat of a failed fat suppression on the host's grid: (F, ADC_fat, description),
    F the fat's b = 0 signal (float32, shape of the host, in the host's S0 units), ADC_fat in
    10^-6 mm^2/s. See the module doc for the model and its sources."""
    spacing, out, s0_par = host["spacing"], host["outside_mm"], host["s0_parenchyma"]
    inner = float(rng.uniform(1.0, 4.0))
    thick = float(rng.uniform(3.0, 8.0))
    shell = ((out > inner) & (out < inner + thick)).astype(np.float32)
    shell = ndi.gaussian_filter(shell, 1.0 / spacing)
    patchy = smooth_noise(rng, out.shape, 8.0 / spacing)  # fat is thicker in places, absent in others
    shell *= np.clip(1.0 + 0.6 * patchy, 0.0, None) * (patchy > rng.uniform(-1.5, 0.0))
    supp = float(rng.uniform(0.05, 0.6))  # residual fraction after fat suppression
    amp = float(rng.uniform(0.8, 2.5)) * supp * s0_par
    # chemical shift along one in-plane axis (the slice axis is the coarsest)
    inplane = [int(a) for a in np.argsort(spacing)[:2]]
    axis = inplane[int(rng.integers(2))]
    shift_mm = float(rng.uniform(0.0, 12.0)) * (1 if rng.random() < 0.5 else -1)
    vec = [0.0, 0.0, 0.0]
    vec[axis] = shift_mm / spacing[axis]
    fat = ndi.shift(shell * amp, vec, order=1, mode="constant").astype(np.float32)
    adc_fat = float(rng.uniform(20.0, 200.0))
    return fat, adc_fat, {"residual": round(supp, 3), "s0_rel": round(amp / s0_par, 3),
                          "adc": round(adc_fat, 1), "inner_mm": round(inner, 1),
                          "thickness_mm": round(thick, 1), "shift_axis": axis,
                          "shift_mm": round(shift_mm, 1)}


def estimate_noise(img: np.ndarray, mask: np.ndarray) -> float:
    """Standard deviation of the noise of img (float) inside mask, from each voxel's difference
    to the mean of its 6 face neighbours: for white noise var(x - mean6) = 7/6 sigma^2; the median
    absolute deviation (x 1.4826) keeps edges and anatomy from dominating. 0 if mask is empty.
    Interpolated images (zero-filled k-space) have correlated noise and read lower."""
    if not mask.any():
        return 0.0
    nb = sum(np.roll(img, sh, axis=a) for a in range(3) for sh in (-1, 1)) / 6.0
    d = (img - nb)[mask]
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(7.0 / 6.0))


def lower_snr(rng, dwi: np.ndarray, adc: np.ndarray, b: float, parenchyma: np.ndarray,
              snr_range: Tuple[float, float]) -> Tuple[np.ndarray, np.ndarray, Dict]:
    """(dwi, adc, description) re-acquired at a lower SNR: see the module doc. dwi is the trace
    at b (host units), adc in 10^-6 mm^2/s, both float32 of one shape; parenchyma the mask where
    the SNR is defined. Returns the inputs unchanged (description with "added_sigma" 0) where the
    host is already at or below the target SNR."""
    s_par = float(np.median(dwi[parenchyma])) if parenchyma.any() else float(np.median(dwi))
    host_sigma = estimate_noise(dwi, parenchyma)
    snr = float(np.exp(rng.uniform(np.log(snr_range[0]), np.log(snr_range[1]))))
    add = float(np.sqrt(max((s_par / snr) ** 2 - host_sigma ** 2, 0.0)))
    desc = {"target_snr": round(snr, 2), "host_snr": round(s_par / max(host_sigma, 1e-9), 2),
            "added_sigma": round(add, 4)}
    if add <= 0:
        return dwi, adc, desc
    gmax = float(rng.uniform(1.0, 2.0))
    g = smooth_noise(rng, dwi.shape, np.array(dwi.shape) / 4.0)
    g = 1.0 + (gmax - 1.0) * (g - g.min()) / max(float(g.max() - g.min()), 1e-6)
    g = (g / float(np.mean(g[parenchyma]) if parenchyma.any() else np.mean(g))).astype(np.float32)
    b0_factor = float(rng.uniform(1.0, 2.0))
    s0 = dwi * np.exp(b * adc * 1e-6)

    def rician(img, sigma):
        re = img + sigma * rng.standard_normal(img.shape).astype(np.float32)
        im = sigma * rng.standard_normal(img.shape).astype(np.float32)
        return np.sqrt(re * re + im * im).astype(np.float32)

    sb_n = rician(dwi, add * g)
    s0_n = rician(s0, add * b0_factor * g)
    head = head_mask(dwi)
    fit = np.log(np.maximum(s0_n, 1e-6) / np.maximum(sb_n, 1e-6)) / b * 1e6
    adc_n = np.where(head, np.clip(fit, 0.0, None), adc).astype(np.float32)
    desc.update({"g_max": round(gmax, 3), "b0_noise_factor": round(b0_factor, 3)})
    return sb_n, adc_n, desc


def make_study(host: Dict, seed: int, lesions: Optional[int] = None, fat: float = 0.0,
               nyquist: float = 0.0, low_snr: float = 0.0, snr_range: Tuple[float, float] = (5.0, 15.0),
               relative_adc: Tuple[float, float] = (0.45, 0.75)) -> Dict:
    """One training study from a host: infarcts inserted (count drawn 0-3, 0 in 1 of 7, unless lesions given;
    0 gives the host with its intensity varied and an empty truth); with probability `fat`, failed
    fat suppression added (residual_fat; its draws use their own stream, so fat = 0 leaves a seed's
    study as it was), and then with probability `nyquist` the fat's N/2 ghost (a third stream); last, with probability
    `low_snr`, the whole study re-acquired at a lower SNR (lower_snr, a fourth stream). Each
    infarct's relative ADC is drawn uniformly in `relative_adc` (the same draw for any range, so
    a seed keeps its infarcts' places, sizes and T2)."""
    rng = np.random.default_rng(seed)
    dwi, adc, spacing, b = host["dwi"], host["adc"], host["spacing"], host["b"]
    brain, par = host["brain"], host["parenchyma"]
    count = int(rng.choice([0, 1, 1, 1, 2, 2, 3])) if lesions is None else lesions
    allowed = brain & (adc < 1200)
    frac = np.zeros(dwi.shape, np.float32)
    radc = np.ones(dwi.shape, np.float32)
    s0f = np.ones(dwi.shape, np.float32)
    desc = []
    for _ in range(count):
        lacune = rng.random() < 0.3
        ml = float(rng.uniform(0.1, 1.5)) if lacune else float(np.exp(rng.uniform(np.log(0.5), np.log(80))))
        f = make_blob(rng, allowed, par, spacing, ml)
        if f is None:
            continue
        r = float(rng.uniform(*relative_adc))
        s = float(rng.uniform(1.0, 1.4))
        # heterogeneous restriction inside an infarct (core and penumbra-like rim)
        r_map = np.clip(r + 0.06 * smooth_noise(rng, dwi.shape, 2.0), 0.35, max(0.85, relative_adc[1] + 0.05))
        new = f > frac
        radc = np.where(new, r_map, radc)
        s0f = np.where(new, s, s0f)
        frac = np.maximum(frac, f)
        desc.append({"kind": "lacunar" if lacune else "territorial", "target_ml": round(ml, 2),
                     "relative_adc": round(r, 3), "s0_factor": round(s, 3)})
    inside = frac > 0.05  # the blur's far tail is left out so the rest of the host stays as scanned
    adc_new = np.where(inside, adc * (1 - frac * (1 - radc)), adc)
    adc_new[inside] = np.maximum(adc_new[inside], np.minimum(adc[inside], MIN_INFARCT_ADC))
    s0 = dwi * np.exp(b * adc * 1e-6)
    dwi_new = s0 * (1 + frac * (s0f - 1)) * np.exp(-b * adc_new * 1e-6)
    dwi_new = np.where(inside, dwi_new, dwi)
    fat_desc = None
    frng = np.random.default_rng([seed, 1])
    if fat > 0 and frng.random() < fat:
        f0, adc_fat, fat_desc = residual_fat(frng, host)
        grng = np.random.default_rng([seed, 2])
        if nyquist > 0 and grng.random() < nyquist:
            # EPI's N/2 (Nyquist) ghost of the fat: a weak copy half the field of view away along
            # the phase-encode axis, wrapped around, i.e. over the middle of the brain.
            axis = fat_desc["shift_axis"]
            amp = float(grng.uniform(0.05, 0.25))
            f0 = f0 + amp * np.roll(f0, f0.shape[axis] // 2, axis=axis)
            fat_desc["n2_ghost"] = round(amp, 3)
        on = f0 > 1e-3 * float(f0.max())
        s0w = dwi_new * np.exp(b * adc_new * 1e-6)
        s0t = s0w + f0
        sbt = dwi_new + f0 * np.exp(-b * adc_fat * 1e-6)
        adc_new = np.where(on, np.log(np.maximum(s0t, 1e-6) / np.maximum(sbt, 1e-6)) / b * 1e6, adc_new)
        dwi_new = np.where(on, sbt, dwi_new)
    snr_desc = None
    nrng = np.random.default_rng([seed, 3])
    if low_snr > 0 and nrng.random() < low_snr:
        dwi_new, adc_new, snr_desc = lower_snr(nrng, dwi_new.astype(np.float32), adc_new.astype(np.float32), b,
                                               par, snr_range)
    truth = ((frac >= 0.5) & brain).astype(np.uint8)
    gain = round(float(np.exp(rng.uniform(np.log(0.5), np.log(2.0)))), 3)  # scanner scaling is arbitrary
    vox_ml = float(np.prod(spacing)) / 1000.0
    params = {"host": host["name"], "seed": seed, "b": b, "dwi_gain": gain,
              "lesions": desc, "lesion_count": len(desc), "fat": fat_desc, "low_snr": snr_desc,
              "total_lesion_volume_ml": round(float(truth.sum()) * vox_ml, 2),
              "shape": list(dwi.shape), "spacing_mm": [round(float(s), 3) for s in spacing]}
    return {"dwi": (dwi_new * gain).astype(np.float32), "adc": adc_new.astype(np.float32),
            "truth": truth, "affine": host["affine"], "params": params}


def _job(job):
    host_dir, seed, out, lesions, fat, nyquist, low_snr, snr_range, relative_adc = job
    if os.path.exists(os.path.join(out, "truth.nii.gz")):
        return seed, "exists", 0.0
    t0 = time.time()
    s = make_study(load_host(host_dir), seed, lesions, fat, nyquist, low_snr, snr_range, relative_adc)
    write_study(s, out)
    p = s["params"]
    return seed, f"{p['host']}: {p['lesion_count']} lesions {p['total_lesion_volume_ml']} mL", time.time() - t0


def range_arg(flag: str, text: str, upper: float) -> Tuple[float, float]:
    """LO,HI of a command-line range with 0 < LO <= HI < upper; SystemExit naming `flag` otherwise."""
    bounds = tuple(float(v) for v in text.split(","))
    if len(bounds) != 2 or not 0 < bounds[0] <= bounds[1] < upper:
        limit = "" if upper == float("inf") else f" < {upper:g}"
        raise SystemExit(f"{flag} wants LO,HI with 0 < LO <= HI{limit}, got {text}")
    return bounds


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", required=True, action="append",
                    help="glob of host folders (repeatable); each from `strokebox segment --save-inputs`")
    ap.add_argument("--out", required=True, help="studies go to OUT/seed_N (or seed_N_lesions0)")
    ap.add_argument("--seeds", required=True)
    ap.add_argument("--lesions", type=int, default=None, help="force this many infarcts (0: lesion-free)")
    ap.add_argument("--fat", type=float, default=0.0,
                    help="probability per study of failed fat suppression (0-1; default 0)")
    ap.add_argument("--fat-nyquist", type=float, default=0.0,
                    help="probability, given failed fat suppression, of the fat's N/2 ghost too (0-1; default 0)")
    ap.add_argument("--low-snr", type=float, default=0.0,
                    help="probability per study of re-acquiring it at a lower SNR (0-1; default 0)")
    ap.add_argument("--snr-range", default="5,15", metavar="LO,HI",
                    help="target SNR of the trace DWI in the parenchyma, drawn log-uniform (default 5,15)")
    ap.add_argument("--relative-adc", default="0.45,0.75", metavar="LO,HI",
                    help="infarct ADC relative to its tissue, drawn uniformly (default 0.45,0.75; "
                         "acute infarcts lie at about 0.5-0.8, models/demo/TRAINING.md)")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args(argv)
    snr_range = range_arg("--snr-range", a.snr_range, float("inf"))
    relative_adc = range_arg("--relative-adc", a.relative_adc, 1.0)
    hosts = sorted({h for pattern in a.hosts for h in glob.glob(pattern) if os.path.isdir(h)})
    if not hosts:
        raise SystemExit(f"no host folders match {a.hosts}")
    suffix = "" if a.lesions is None else f"_lesions{a.lesions}"
    jobs = [(hosts[s % len(hosts)], s, os.path.join(a.out, f"seed_{s}{suffix}"), a.lesions, a.fat,
             a.fat_nyquist, a.low_snr, snr_range, relative_adc)
            for s in parse_seeds(a.seeds)]
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=a.jobs) as ex:
        for seed, msg, dt in ex.map(_job, jobs):
            print(f"seed {seed}: {msg} ({dt:.1f} s)", flush=True)
    print(f"{len(jobs)} studies from {len(hosts)} hosts in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
