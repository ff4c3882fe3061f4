#!/usr/bin/python3
"""Domain-randomized synthetic diffusion studies (DWI + ADC + lesion truth) for training.

Why: a model trained on one generator learns that generator's look (issue 14: the first demo
model called 132 mL of a healthy brain infarct). Here everything that is not the physics of an
infarct is drawn at random per study, so the one stable cue left is the physics: an acute
infarct is bright on DWI *because* its ADC is low (350-620 x 10^-6 mm^2/s, and 0.45-0.75 of the
normal parenchyma's around it), inside brain parenchyma, in a vascular territory. Look-alikes
with bright DWI but high ADC (T2 shine-through, chronic lesions, CSF pulsation) and
susceptibility pile-up are negatives.

Signal model (per voxel, tissue compartments t with volume fraction f_t):
    S(b) = sum_t f_t * S0_t * exp(-b D_t + (b D_t)^2 K_t / 6)   (diffusion kurtosis, DKI)
with each tissue's apparent ADC at b = 1000 s/mm^2 (the clinical convention the ADC ranges
below use) and kurtosis K_t drawn per study; D_t follows from them. Brain tissue is not
mono-exponential (Jensen et al., Magn Reson Med 2005;53:1432), so its apparent ADC falls with b:
normal white matter at b = 1500-2000 comes near the infarct range, and the acute infarct's own
kurtosis is raised (Hui et al., Stroke 2012;43:2968). The scanner's ADC = ln(S(0) / S(b)) / b
from the two noisy magnitude images, as a scanner computes it (0 where S(0) is background noise).

Anatomy: the Colin27 head (Debian package mricron-data: ch2 = whole head 1 mm, ch2bet = brain)
and the AAL atlas (vascular territories from its labels), deformed per study (rotation,
scaling, smooth elastic field). Acquisition: axial slices 2.5-6 mm thick with gaps, in-plane
1.5-2.5 mm acquired (k-space truncation, hence Gibbs ringing) optionally zero-filled to half the
spacing, EPI geometric distortion along the phase-encode axis with susceptibility pile-up near
the sinuses and skull base, N/2 ghost, bias field and receive-coil gain (posterior-inferior in
most studies, as a supine head on a coil's posterior elements), Rician noise, scalp and skull
present or stripped, fat suppression of varying quality, b in 800-1500 s/mm^2, ADC stored in
10^-6 or 10^-3 mm^2/s or mm^2/s.

Output per study folder (nnU-Net file convention, same as `strokebox phantom --format nifti`):
image_0000.nii.gz (DWI), image_0001.nii.gz (ADC), truth.nii.gz (uint8), phantom.json (params).

Usage: tools/phantom_dr.py --out DIR --seeds 1000-1199 [--lesions N] [--jobs 2]
"""

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, List, Optional, Tuple

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

TEMPLATES = "/usr/share/mricron/templates"
WORK_MM = 1.5  # working grid spacing, mm (isotropic)

# AAL label names -> vascular territory (approximate, textbook territories).
MCA = ("Precentral", "Frontal_Mid", "Frontal_Inf_Oper", "Frontal_Inf_Tri", "Frontal_Inf_Orb",
       "Rolandic_Oper", "Insula", "Postcentral", "Parietal_Inf", "SupraMarginal", "Angular",
       "Temporal_Sup", "Temporal_Mid", "Heschl", "Putamen", "Pallidum", "Caudate",
       "Temporal_Pole_Sup", "Temporal_Pole_Mid", "Frontal_Mid_Orb", "Parietal_Sup")
ACA = ("Frontal_Sup_Medial", "Frontal_Med_Orb", "Cingulum_Ant", "Cingulum_Mid",
       "Supp_Motor_Area", "Paracentral_Lobule", "Frontal_Sup", "Rectus", "Olfactory",
       "Frontal_Sup_Orb", "Precuneus")
PCA = ("Occipital_Sup", "Occipital_Mid", "Occipital_Inf", "Calcarine", "Cuneus", "Lingual",
       "Fusiform", "ParaHippocampal", "Hippocampus", "Thalamus", "Temporal_Inf", "Cingulum_Post")
DEEP = ("Putamen", "Pallidum", "Thalamus", "Caudate")


class Template:
    """Colin27 head and brain, tissue fractions and territory masks on the WORK_MM grid.
    Arrays are (x, y, z) in MNI/RAS orientation (the templates' affines are diagonal)."""

    def __init__(self, root: str = TEMPLATES):
        def load(name, order):
            img = nib.load(os.path.join(root, name))
            d = np.asarray(img.get_fdata(dtype=np.float32))
            z = np.array(img.header.get_zooms()[:3]) / WORK_MM
            return ndi.zoom(d, z, order=order), img.affine
        head, aff = load("ch2.nii.gz", 1)
        brain, _ = load("ch2bet.nii.gz", 1)
        aal, _ = load("aal.nii.gz", 0)
        shape = np.minimum(np.minimum(head.shape, brain.shape), aal.shape)
        sl = tuple(slice(0, s) for s in shape)
        head, brain, aal = head[sl], brain[sl], aal[sl].astype(np.int16)
        self.shape = tuple(int(s) for s in shape)
        self.origin = aff[:3, 3].astype(float)  # MNI mm of voxel 0
        bmask = ndi.binary_fill_holes(brain > 5)
        bmask = ndi.binary_opening(bmask, iterations=1)
        # Tissue classes from T1 intensity inside the brain (3-class k-means on the template).
        v = brain[bmask]
        c = np.percentile(v, [10, 50, 90]).astype(float)
        for _ in range(20):
            lab = np.argmin(np.abs(v[:, None] - c[None, :]), axis=1)
            c = np.array([v[lab == k].mean() for k in range(3)])
        csf_c, gm_c, wm_c = np.sort(c)
        t1 = np.where(bmask, brain, 0)
        f_gm = np.clip(np.where(t1 < gm_c, (t1 - csf_c) / (gm_c - csf_c), (wm_c - t1) / (wm_c - gm_c)), 0, 1)
        f_wm = np.clip((t1 - gm_c) / (wm_c - gm_c), 0, 1)
        f_csf = np.clip(1 - f_gm - f_wm, 0, 1) * bmask
        # Subarachnoid CSF rim between brain and skull: 1-4 mm outside the brain mask.
        rim = ndi.binary_dilation(bmask, iterations=2) & ~bmask
        f_csf = np.maximum(f_csf, rim.astype(np.float32))
        # Outside the brain: bone/air (dark on T1), soft tissue (mid), fat (bright).
        outside = (head > 8) & ~bmask & ~rim
        hv = head[outside]
        lo, hi = np.percentile(hv, [35, 80])
        f_fat = np.clip((head - hi) / (hi * 0.3 + 1e-6) + 0.5, 0, 1) * outside
        f_soft = np.clip(1 - f_fat, 0, 1) * outside * (head > lo)
        self.fields = np.stack([f_csf, f_gm, f_wm, f_fat, f_soft,
                                bmask.astype(np.float32)]).astype(np.float32)
        self.names = ["csf", "gm", "wm", "fat", "soft", "brain"]
        self.parenchyma = (f_gm + f_wm > 0.5) & bmask
        self.aal = aal
        names = {}
        with open(os.path.join(root, "aal.nii.txt")) as f:
            for line in f:
                p = line.split()
                if len(p) >= 2:
                    names[int(p[0])] = p[1]
        self.label_names = names
        mm = self.mm_grid()
        self.territories = {}
        for side in ("L", "R"):
            def mask_of(prefixes):
                ids = [k for k, n in names.items()
                       if n.endswith("_" + side) and n[:-2] in prefixes]
                return np.isin(aal, ids) & self.parenchyma
            self.territories[f"MCA_{side}"] = mask_of(MCA)
            self.territories[f"ACA_{side}"] = mask_of(ACA)
            self.territories[f"PCA_{side}"] = mask_of(PCA)
            cb = [k for k, n in names.items() if n.startswith("Cerebelum") and n.endswith("_" + side)]
            self.territories[f"cerebellum_{side}"] = np.isin(aal, cb) & self.parenchyma
            deep = mask_of(DEEP)
            # Corona radiata / centrum semiovale: unlabelled white matter above the ventricles.
            cr = (aal == 0) & (f_wm > 0.7) & (mm[2] > 8) & (mm[2] < 38) & \
                 ((mm[0] < -8) if side == "L" else (mm[0] > 8))
            self.territories[f"deep_{side}"] = deep | cr
        self.territories["brainstem"] = (aal == 0) & self.parenchyma & (np.abs(mm[0]) < 12) & \
            (mm[2] > -48) & (mm[2] < -8) & (mm[1] > -42) & (mm[1] < -8)
        # Ventricles: CSF deep inside the brain (for CSF pulsation); sinuses for susceptibility.
        deep_brain = ndi.binary_erosion(bmask, iterations=int(12 / WORK_MM))
        self.ventricles = (f_csf > 0.6) & deep_brain
        # Posterior fossa (cerebellum + brainstem): its own ADC/S0 per study (cerebellar cortex
        # is denser than cerebral cortex: lower ADC, brighter DWI on real scanners).
        self.infratentorial = ndi.gaussian_filter(
            (self.territories["cerebellum_L"] | self.territories["cerebellum_R"] |
             self.territories["brainstem"]).astype(np.float32), 1.5)
        self.sinus_points_mm = np.array([[0, 55, -20], [-30, 10, -30], [30, 10, -30],
                                         [0, 40, -35], [-40, -20, -35], [40, -20, -35]], float)

    def mm_grid(self):
        idx = np.indices(self.shape, dtype=np.float32)
        return [idx[a] * WORK_MM + self.origin[a] for a in range(3)]


_TEMPLATE: Optional[Template] = None


def template() -> Template:
    global _TEMPLATE
    if _TEMPLATE is None:
        _TEMPLATE = Template()
    return _TEMPLATE


def smooth_noise(rng, shape, sigma_vox, amp=1.0):
    """Zero-mean, unit-std Gaussian random field smoothed with sigma_vox, times amp."""
    n = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox)
    return (n / (n.std() + 1e-8) * amp).astype(np.float32)


def coarse_field(rng, shape, n_ctrl, amp):
    """Smooth random field from a coarse control grid (cubic upsampling): cheap elastic noise."""
    ctrl = rng.standard_normal((n_ctrl, n_ctrl, n_ctrl)).astype(np.float32) * amp
    return ndi.zoom(ctrl, np.array(shape) / n_ctrl, order=3)[: shape[0], : shape[1], : shape[2]]


def make_blob(rng, t: Template, region: np.ndarray, target_ml: float,
              allowed: np.ndarray) -> Tuple[np.ndarray, Dict]:
    """Irregular lesion of about target_ml inside `allowed`, grown from a random voxel of
    `region`: distance to the centre plus smooth noise, thresholded to the target volume.
    Returns a float32 fraction map (soft edge) and its description."""
    pts = np.argwhere(region)
    if len(pts) == 0:
        return None, {}
    c = pts[int(rng.integers(len(pts)))]
    vox_ml = WORK_MM ** 3 / 1000.0
    n_target = max(2, int(target_ml / vox_ml))
    r = (3 * n_target / (4 * np.pi)) ** (1 / 3) * 2.2 + 6
    lo = np.maximum(c - int(r), 0)
    hi = np.minimum(c + int(r) + 1, t.shape)
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    sub_shape = tuple(hi - lo)
    g = np.indices(sub_shape, dtype=np.float32)
    aniso = rng.uniform(0.6, 1.4, 3)
    d = np.sqrt(sum(((g[a] + lo[a] - c[a]) * aniso[a]) ** 2 for a in range(3)))
    score = d / max(r / 2.2, 1.0) + smooth_noise(rng, sub_shape, rng.uniform(1.5, 3.5), rng.uniform(0.3, 0.8))
    score[~allowed[sl]] = np.inf
    flat = np.sort(score.ravel())
    k = min(n_target, int(np.isfinite(flat).sum()))
    if k < 2:
        return None, {}
    thr = flat[k - 1]
    m = (score <= thr)
    lab, n = ndi.label(m)
    if n > 1:  # keep the component holding the centre (or the largest)
        cc = lab[tuple(c - lo)]
        if cc == 0:
            cc = 1 + int(np.argmax(ndi.sum(m, lab, range(1, n + 1))))
        m = lab == cc
    frac = np.zeros(t.shape, np.float32)
    frac[sl] = ndi.gaussian_filter(m.astype(np.float32), 0.6)
    frac *= allowed
    return frac, {"centre_mni_mm": [round(float(t.origin[a] + c[a] * WORK_MM), 1) for a in range(3)],
                  "volume_ml_template": round(float(m.sum() * vox_ml), 2)}


def draw_lesions(rng, t: Template, count: int):
    """Acute infarcts: (fraction map, list of descriptions)."""
    total = np.zeros(t.shape, np.float32)
    desc = []
    kinds = ["territorial"] * 6 + ["lacunar"] * 3 + ["cerebellar", "brainstem"]
    side = "L" if rng.random() < 0.5 else "R"
    for _ in range(count):
        kind = kinds[int(rng.integers(len(kinds)))]
        if kind == "territorial":
            terr = ["MCA", "MCA", "MCA", "ACA", "PCA", "PCA"][int(rng.integers(6))] + "_" + side
            region, ml = t.territories[terr], float(np.exp(rng.uniform(np.log(0.8), np.log(120))))
            allowed = ndi.binary_dilation(t.territories[terr], iterations=2) & t.parenchyma
        elif kind == "lacunar":
            terr = f"deep_{'L' if rng.random() < 0.5 else 'R'}"
            region, ml = t.territories[terr], float(rng.uniform(0.1, 1.8))
            allowed = t.parenchyma
        elif kind == "cerebellar":
            terr = f"cerebellum_{side}"
            region, ml = t.territories[terr], float(np.exp(rng.uniform(np.log(0.3), np.log(30))))
            allowed = t.territories[terr]
        else:
            terr = "brainstem"
            region, ml = t.territories[terr], float(rng.uniform(0.1, 3.0))
            allowed = t.parenchyma
        frac, d = make_blob(rng, t, region, ml, allowed)
        if frac is None:
            continue
        # An infarct's ADC is its own tissue's, reduced (relative ADC 0.45-0.75 of the normal
        # parenchyma around it; the absolute value, 350-620, is set in make_study once the
        # study's tissue ADCs are drawn): never an ADC that only matches its surroundings.
        radc = float(rng.uniform(0.45, 0.75))
        s0 = float(rng.uniform(1.0, 1.6))
        d.update({"kind": kind, "territory": terr, "target_ml": round(ml, 2),
                  "relative_adc": round(radc, 3), "s0_factor": round(s0, 3)})
        desc.append((frac, d))
        total = np.maximum(total, frac)
    return total, desc


def _mimic_blob(rng, t: Template, territories, ml_range, kind, adc_range, s0_range, out) -> None:
    """One look-alike blob in a random territory and side (log-uniform volume, mL), with its
    ADC (10^-6 mm^2/s) and S0 factor drawn from the ranges; appended to out."""
    side = "L" if rng.random() < 0.5 else "R"
    terr = territories[int(rng.integers(len(territories)))] + "_" + side
    ml = float(np.exp(rng.uniform(np.log(ml_range[0]), np.log(ml_range[1]))))
    f, d = make_blob(rng, t, t.territories[terr], ml, t.parenchyma)
    if f is not None:
        d.update({"kind": kind, "adc": float(rng.uniform(*adc_range)), "s0_factor": float(rng.uniform(*s0_range))})
        out.append((f, d))


def draw_mimics(rng, t: Template):
    """Negatives: bright-DWI look-alikes that do not restrict diffusion."""
    out = []
    if rng.random() < 0.35:  # T2 shine-through: subacute/vasogenic, high S0, ADC normal-high
        for _ in range(int(rng.integers(1, 3))):
            _mimic_blob(rng, t, ["MCA", "PCA", "deep"], (0.5, 40), "t2_shine_through", (850, 1400), (1.8, 3.5), out)
    if rng.random() < 0.35:  # chronic infarct / gliosis: high ADC, high S0 (DWI iso to bright)
        _mimic_blob(rng, t, ["MCA", "ACA", "PCA", "deep", "cerebellum"], (0.3, 60), "chronic", (1400, 2600),
                    (2.0, 4.0), out)
    if rng.random() < 0.25:  # white-matter hyperintensities (T2 bright, ADC mildly raised)
        f = np.zeros(t.shape, np.float32)
        for _ in range(int(rng.integers(3, 12))):
            side = "L" if rng.random() < 0.5 else "R"
            g, _ = make_blob(rng, t, t.territories[f"deep_{side}"], float(rng.uniform(0.05, 1.0)), t.parenchyma)
            if g is not None:
                f = np.maximum(f, g)
        out.append((f, {"kind": "wmh", "adc": float(rng.uniform(900, 1300)),
                        "s0_factor": float(rng.uniform(1.4, 2.2))}))
    return out


def deform_coords(rng, t: Template):
    """Sampling coordinates (3, x, y, z) into the template for a random rotation (+-12 deg),
    anisotropic scaling (0.88-1.12), shift (+-6 mm) and smooth elastic field (<= ~4 mm)."""
    ang = np.deg2rad(rng.uniform(-12, 12, 3))
    cx, cy, cz = np.cos(ang)
    sx, sy, sz = np.sin(ang)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    a = rz @ ry @ rx @ np.diag(1.0 / rng.uniform(0.88, 1.12, 3))
    centre = (np.array(t.shape) - 1) / 2.0
    shift = rng.uniform(-6, 6, 3) / WORK_MM
    idx = np.indices(t.shape, dtype=np.float32).reshape(3, -1)
    src = (a @ (idx - centre[:, None])) + centre[:, None] + shift[:, None]
    src = src.reshape((3,) + t.shape).astype(np.float32)
    amp = rng.uniform(0, 4.0) / WORK_MM / 2
    for k in range(3):
        src[k] += coarse_field(rng, t.shape, 6, amp)
    return src


def warp(field, coords, order=1):
    return ndi.map_coordinates(field, coords, order=order, mode="constant", cval=0.0, prefilter=False)


def kspace_resample(img: np.ndarray, n_acq: Tuple[int, int], n_out: Tuple[int, int]) -> np.ndarray:
    """In-plane acquisition of a complex (x, y, slices) image: keep the central n_acq k-space
    lines (truncation -> Gibbs ringing) and zero-fill to n_out (scanner interpolation)."""
    nx, ny = img.shape[:2]
    k = np.fft.fftshift(np.fft.fft2(img, axes=(0, 1)), axes=(0, 1))
    cx, cy = nx // 2, ny // 2
    ax, ay = min(n_acq[0], nx), min(n_acq[1], ny)
    kc = k[cx - ax // 2: cx - ax // 2 + ax, cy - ay // 2: cy - ay // 2 + ay]
    out = np.zeros((n_out[0], n_out[1]) + img.shape[2:], np.complex64)
    ox, oy = n_out[0] // 2, n_out[1] // 2
    out[ox - ax // 2: ox - ax // 2 + ax, oy - ay // 2: oy - ay // 2 + ay] = kc
    scale = (n_out[0] * n_out[1]) / float(nx * ny)
    return np.fft.ifft2(np.fft.ifftshift(out, axes=(0, 1)), axes=(0, 1)).astype(np.complex64) * scale


def slice_profile(vol: np.ndarray, thickness_vox: float, spacing_vox: float, n_slices: int,
                  start_vox: float) -> np.ndarray:
    """Average over a box slice profile along the last axis: slice k covers
    [start + k*spacing, start + k*spacing + thickness) in working-grid voxels."""
    cs = np.concatenate([np.zeros(vol.shape[:2] + (1,), vol.dtype), np.cumsum(vol, axis=2)], axis=2)
    n = vol.shape[2]

    def at(p):  # cumulative sum at fractional position p (linear interpolation)
        p = np.clip(p, 0, n)
        i = np.minimum(np.floor(p).astype(int), n - 1)
        f = p - i
        return cs[..., i] * (1 - f) + cs[..., i + 1] * f
    a = start_vox + np.arange(n_slices) * spacing_vox
    return ((at(a + thickness_vox) - at(a)) / thickness_vox).astype(vol.dtype)


def dki_attenuation(b: float, adc_b1000, kurtosis):
    """S(b) / S(0) = exp(-b D + (b D)^2 K / 6) (Jensen 2005) for a tissue whose apparent ADC
    ln(S0/S(1000))/1000 is `adc_b1000` (mm^2/s, scalar or array) and whose kurtosis is `kurtosis`.
    D solves D - 1000 K D^2 / 6 = adc_b1000; b is limited to the model's monotonic range
    b < 3 / (D K)."""
    adc = np.asarray(adc_b1000, dtype=np.float64)
    k = float(kurtosis)
    if k <= 1e-9:
        return np.exp(-b * adc)
    c = 1000.0 * k / 6.0
    d = (1.0 - np.sqrt(np.clip(1.0 - 4.0 * c * adc, 0.0, None))) / (2.0 * c)
    b_eff = np.minimum(b, 3.0 / (np.maximum(d, 1e-12) * k))
    return np.exp(-b_eff * d + (b_eff * d) ** 2 * k / 6.0)


def draw_kurtosis(seed: int) -> Dict[str, float]:
    """Per-study mean kurtosis of each tissue and lesion kind (dimensionless), from its own
    random stream so the rest of a seed's study is unchanged by it. Ranges from DKI studies of
    the brain (white matter 0.8-1.2, grey matter 0.55-0.9; acute infarct raised, 1.1-1.8;
    vasogenic/chronic lesions and free water low)."""
    r = np.random.default_rng(seed + 11_000_001)
    return {"wm": r.uniform(0.8, 1.2), "gm": r.uniform(0.55, 0.9), "csf": 0.0, "fat": r.uniform(0.0, 0.5),
            "soft": r.uniform(0.3, 0.7), "infarct": r.uniform(1.1, 1.8), "t2_shine_through": r.uniform(0.4, 0.8),
            "chronic": r.uniform(0.2, 0.5), "wmh": r.uniform(0.5, 0.9)}


def make_study(seed: int, lesions: Optional[int] = None) -> Dict:
    """One domain-randomized study. Returns dict with dwi, adc (float32, (x, y, z)), truth
    (uint8), affine (4x4 RAS mm), params (json-able)."""
    rng = np.random.default_rng(seed + 7_000_003)
    t = template()
    p: Dict = {"seed": seed, "generator": "tools/phantom_dr.py"}
    if lesions is None:
        lesions = 0 if rng.random() < 0.2 else int(rng.integers(1, 5))
    les_frac, les_desc = draw_lesions(rng, t, lesions)
    mimics = draw_mimics(rng, t)
    coords = deform_coords(rng, t)

    fields = {n: warp(t.fields[i], coords) for i, n in enumerate(t.names)}
    les = [(warp(f, coords), d) for f, d in les_desc]
    mims = [(warp(f, coords), d) for f, d in mimics]
    vent = warp(t.ventricles.astype(np.float32), coords) > 0.5
    infra = warp(t.infratentorial, coords)

    # Tissue parameters, 10^-6 mm^2/s and arbitrary S0 units relative to white matter.
    b = float(rng.uniform(800, 1500))
    adc_t = {"wm": rng.uniform(600, 820), "gm": rng.uniform(720, 950), "csf": rng.uniform(2500, 3300),
             "fat": rng.uniform(20, 200), "soft": rng.uniform(1100, 1700)}
    fat_supp = rng.uniform(0.03, 0.6)  # residual fat signal after fat suppression
    s0_t = {"wm": 1.0, "gm": rng.uniform(1.05, 1.5), "csf": rng.uniform(1.8, 4.0),
            "fat": rng.uniform(0.8, 2.5) * fat_supp, "soft": rng.uniform(0.4, 1.0)}
    kurt = draw_kurtosis(seed)
    p.update({"b_value": round(b, 1), "adc_tissue": {k: round(float(v), 1) for k, v in adc_t.items()},
              "s0_tissue": {k: round(float(v), 3) for k, v in s0_t.items()},
              "kurtosis": {k: round(float(v), 3) for k, v in kurt.items()}})

    def att(adc_e6, tissue):  # S(b)/S(0) for ADC at b=1000 in 10^-6 mm^2/s
        return dki_attenuation(b, adc_e6 * 1e-6, kurt[tissue]).astype(np.float32)
    # Tissue ADC and S0 vary slowly across the brain (real tissue is not piecewise constant),
    # and the posterior fossa has its own values.
    tex = 1.0 + coarse_field(rng, t.shape, 5, rng.uniform(0.0, 0.08))
    infra_adc, infra_s0 = float(rng.uniform(0.82, 1.05)), float(rng.uniform(0.9, 1.5))
    p["infratentorial"] = {"adc_factor": round(infra_adc, 3), "s0_factor": round(infra_s0, 3)}
    adc_mod = tex * (1 + infra * (infra_adc - 1))
    s0_mod = 1 + infra * (infra_s0 - 1)
    # Attenuation of white and grey matter, used for the tissue signal and for the lesions' background.
    par_att = {n: att(adc_t[n] * adc_mod, n) for n in ("wm", "gm")}
    s0 = np.zeros(t.shape, np.float32)
    sb = np.zeros(t.shape, np.float32)
    for n in ("wm", "gm", "csf", "fat", "soft"):
        f = fields[n]
        if n in ("wm", "gm"):
            s0 += f * s0_t[n] * s0_mod
            sb += f * s0_t[n] * s0_mod * par_att[n]
        else:
            s0 += f * s0_t[n]
            sb += f * s0_t[n] * att(adc_t[n], n)
    par = np.clip(fields["wm"] + fields["gm"], 0, None)
    s0_par = (fields["wm"] * s0_t["wm"] + fields["gm"] * s0_t["gm"]) * s0_mod / np.maximum(par, 1e-3)
    # Parenchymal b-signal per unit parenchyma (white/grey mixture at their own ADC).
    sb_par = (fields["wm"] * s0_t["wm"] * par_att["wm"] + fields["gm"] * s0_t["gm"] * par_att["gm"]) * s0_mod \
        / np.maximum(par, 1e-3)

    def replace(frac, adc, s0_factor, het, kind):
        # A lesion replaces the parenchymal compartment (not CSF) over fraction `frac`.
        nonlocal s0, sb
        l = np.clip(frac, 0, 1) * np.clip(par, 0, 1)
        s_l = s0_par * s0_factor
        s0 = s0 + l * (s_l - s0_par)
        sb = sb + l * (s_l * att(adc * (1 + het), kind) - sb_par)
    het = smooth_noise(rng, t.shape, 2.0, 0.08)
    truth_frac = np.zeros(t.shape, np.float32)
    for f, d in les:
        # Absolute infarct ADC: relative ADC x the normal parenchyma's ADC under the lesion,
        # within 350-620 x 10^-6 mm^2/s (acute infarcts; RAPID's core threshold is 620).
        w = f * par
        ref = float((w * (fields["wm"] * adc_t["wm"] + fields["gm"] * adc_t["gm"]) * adc_mod).sum()
                    / max(float((w * (fields["wm"] + fields["gm"])).sum()), 1e-6))
        d["normal_adc"] = round(ref, 1)
        d["adc"] = round(float(np.clip(d["relative_adc"] * ref, 350, 620)), 1)
        replace(f, d["adc"], d["s0_factor"], het, "infarct")
        truth_frac = np.maximum(truth_frac, f * (par > 0.3))
    for f, d in mims:
        replace(f, d["adc"], d["s0_factor"], het, d["kind"])
    p["lesions"] = [d for _, d in les]
    p["mimics"] = [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in d.items()} for _, d in mims]

    # CSF pulsation / flow artefact: patchy signal in the ventricles on the b image; the
    # scanner's ADC there stays >= 1200 (clipped so it never looks like an infarct).
    if rng.random() < 0.3 and vent.any():
        patch = (smooth_noise(rng, t.shape, 2.0) > 1.0) & vent
        adc_min = rng.uniform(1200, 2000)
        k = np.exp(b * 1e-6 * (adc_t["csf"] - adc_min))
        sb = np.where(patch, sb * rng.uniform(1.5, k), sb)
        p["csf_pulsation"] = True

    # Skull stripped (brain mask, dilated) or whole head.
    stripped = rng.random() < 0.25
    if stripped:
        m = ndi.binary_dilation(fields["brain"] > 0.5, iterations=2)
        s0 *= m
        sb *= m
    p["skull_stripped"] = bool(stripped)

    # EPI distortion along the phase-encode axis (y, AP): smooth global field plus
    # susceptibility near the sinuses and skull base; intensity follows the Jacobian
    # (pile-up bright, stretch dark), identical for b=0 and b so the ADC is preserved.
    mm = [t.origin[a] + np.arange(t.shape[a]) * WORK_MM for a in range(3)]
    X, Y, Z = np.meshgrid(*mm, indexing="ij")
    disp = coarse_field(rng, t.shape, 4, rng.uniform(0, 1.5))  # mm
    sus_amp = rng.uniform(0, 8)
    for q in t.sinus_points_mm:
        qq = q + rng.normal(0, 5, 3)
        r2 = (X - qq[0]) ** 2 + (Y - qq[1]) ** 2 + (Z - qq[2]) ** 2
        disp += sus_amp * rng.uniform(0.3, 1.0) * np.exp(-r2 / (2 * rng.uniform(8, 15) ** 2))
    pe_sign = 1 if rng.random() < 0.5 else -1
    disp = (disp * pe_sign / WORK_MM).astype(np.float32)
    jac = np.clip(1 + np.gradient(disp, axis=1), 0.05, 6)
    idx = np.indices(t.shape, dtype=np.float32)
    idx[1] += disp
    s0 = ndi.map_coordinates(s0, idx, order=1, mode="constant") * jac
    sb = ndi.map_coordinates(sb, idx, order=1, mode="constant") * jac
    truth_frac = ndi.map_coordinates(truth_frac, idx, order=1, mode="constant")
    p["epi_distortion_mm"] = round(float(np.abs(disp).max() * WORK_MM), 2)
    del idx, X, Y, Z

    # Receive-coil sensitivity, the same for both images (so the ADC does not see it): a smooth
    # bias field plus surface-coil brightening near the head's surface, strongest on a random
    # side (posterior elements of a head coil, say): up to 3x brighter cortex on real arrays.
    bias = np.exp(coarse_field(rng, t.shape, 3, rng.uniform(0.05, 0.35))).astype(np.float32)
    head = (s0 > 0.05 * float(np.percentile(s0[s0 > 0], 50))) if (s0 > 0).any() else s0 > 0
    # Depth below the head's surface, mm (computed at half resolution: it only shapes a smooth gain).
    half = ndi.distance_transform_edt(ndi.binary_fill_holes(head[::2, ::2, ::2])) * 2 * WORK_MM
    depth = ndi.zoom(half, 2, order=1)[: t.shape[0], : t.shape[1], : t.shape[2]]
    depth = np.pad(depth, [(0, t.shape[a] - depth.shape[a]) for a in range(3)], mode="edge")
    gain_c = float(rng.uniform(0, 2.0)) if rng.random() < 0.7 else 0.0
    posterior = False
    if gain_c > 0:
        # A supine head rests on the coil's posterior (and neck) elements: the occiput and the
        # cerebellum are the brightest part of many real DWI (Siemens, Canon, Philips volunteers
        # in dcm_qa*), so the gain points posterior-inferior in most studies, anywhere otherwise.
        posterior = rng.random() < 0.6
        u = np.array([rng.normal(0, 0.35), -1.0, rng.normal(-0.5, 0.4)]) if posterior else rng.normal(size=3)
        u /= np.linalg.norm(u)
        cidx = [np.arange(t.shape[a], dtype=np.float32) - t.shape[a] / 2 for a in range(3)]
        proj = (cidx[0][:, None, None] * u[0] + cidx[1][None, :, None] * u[1] + cidx[2][None, None, :] * u[2])
        side = 0.5 + 0.5 * np.clip(proj / (0.4 * max(t.shape)), -1, 1)
        bias *= (1 + gain_c * side * np.exp(-depth / rng.uniform(15, 45))).astype(np.float32)
    p["coil_surface_gain"] = round(gain_c, 2)
    p["coil_gain_posterior"] = bool(posterior)
    s0 *= bias
    sb *= bias

    # Slice orientation: axial mostly, else coronal or sagittal (slices along y or x); the
    # arrays are transposed so the slice axis is the last one, as a scanner's volume would be.
    orient = ["axial"] * 15 + ["coronal"] * 2 + ["sagittal"] * 3
    orient = orient[int(rng.integers(len(orient)))]
    perm = {"axial": (0, 1, 2), "coronal": (0, 2, 1), "sagittal": (1, 2, 0)}[orient]
    s0, sb, truth_frac = (np.ascontiguousarray(v.transpose(perm)) for v in (s0, sb, truth_frac))
    shape = s0.shape
    origin = [t.origin[a] for a in perm]

    # Acquisition grid: random thickness/gap/coverage (sometimes a thin slab), in-plane k-space.
    thick = float(rng.uniform(2.5, 6.0))
    gap = float(rng.uniform(0, 1.5)) if rng.random() < 0.5 else 0.0
    acq = float(rng.uniform(1.5, 2.5))
    interp = rng.random() < 0.5
    fov_z = shape[2] * WORK_MM
    n_sl = int(rng.uniform(0.6, 0.95) * fov_z / (thick + gap))
    if rng.random() < 0.15:
        n_sl = min(n_sl, int(rng.integers(8, 21)))
    z0 = rng.uniform(0, max(fov_z - n_sl * (thick + gap), 0)) / WORK_MM
    s0z = slice_profile(s0, thick / WORK_MM, (thick + gap) / WORK_MM, n_sl, z0)
    sbz = slice_profile(sb, thick / WORK_MM, (thick + gap) / WORK_MM, n_sl, z0)
    trz = slice_profile(truth_frac, thick / WORK_MM, (thick + gap) / WORK_MM, n_sl, z0)
    nx, ny = shape[:2]
    n_acq = (int(round(nx * WORK_MM / acq)) // 2 * 2, int(round(ny * WORK_MM / acq)) // 2 * 2)
    n_out = (n_acq[0] * 2, n_acq[1] * 2) if interp else n_acq
    ghost = float(rng.uniform(0.01, 0.08)) if rng.random() < 0.5 else 0.0
    snr = float(rng.uniform(8, 40))  # white-matter DWI signal / noise sigma
    sig_ref = float(att(adc_t["wm"], "wm")) * float(np.median(bias))
    sigma = sig_ref / snr

    def acquire(vol):
        c = kspace_resample(vol.astype(np.complex64), n_acq, n_out)
        if ghost:
            c = c + ghost * np.roll(c, n_out[1] // 2, axis=1)
        # Noise is added in k-space on the acquired lines only: sigma per image voxel at the
        # acquired resolution (zero-filled interpolation correlates it, as on scanners).
        noise = (rng.standard_normal(c.shape) + 1j * rng.standard_normal(c.shape)).astype(np.complex64)
        if interp:
            noise = kspace_resample(noise, n_acq, n_out) * 2.0
        return np.abs(c + sigma * noise).astype(np.float32)
    b0_img = acquire(s0z)
    dwi = acquire(sbz)
    out_sp = (nx * WORK_MM / n_out[0], ny * WORK_MM / n_out[1], thick + gap)
    truth = ndi.zoom(trz, (n_out[0] / nx, n_out[1] / ny, 1), order=1) >= 0.5
    truth = truth[: n_out[0], : n_out[1]]
    if truth.shape[:2] != tuple(n_out):
        pad = [(0, n_out[0] - truth.shape[0]), (0, n_out[1] - truth.shape[1]), (0, 0)]
        truth = np.pad(truth, pad)

    # The scanner's ADC: ln(S0/Sb)/b, 0 where the b=0 signal is background noise.
    with np.errstate(divide="ignore", invalid="ignore"):
        adc = np.log(np.maximum(b0_img, 1e-6) / np.maximum(dwi, 1e-6)) / b * 1e6
    floor = rng.uniform(3, 8) * sigma
    adc = np.where(b0_img > floor, np.clip(adc, 0, 4000), 0).astype(np.float32)
    unit = ["1e-6 mm2/s"] * 7 + ["1e-3 mm2/s", "mm2/s"]
    unit = unit[int(rng.integers(len(unit)))]
    adc *= {"1e-6 mm2/s": 1.0, "1e-3 mm2/s": 1e-3, "mm2/s": 1e-6}[unit]
    gain = float(np.exp(rng.uniform(np.log(30), np.log(3000))))
    dwi = dwi / sig_ref * gain * 0.1
    masked = rng.random() < 0.3  # some scanners zero the DWI background as well
    if masked:
        dwi = np.where(b0_img > floor, dwi, 0).astype(np.float32)

    # Voxel (i, j, k) -> working-grid mm: the k-space resampling keeps sample 0 at working
    # voxel 0; slice k is centred on its box profile.
    affine = np.zeros((4, 4))
    affine[3, 3] = 1.0
    offs = [origin[0], origin[1], origin[2] + z0 * WORK_MM + thick / 2 - WORK_MM / 2]
    for a in range(3):
        affine[perm[a], a] = out_sp[a]
        affine[perm[a], 3] = offs[a]
    vox_ml = float(np.prod(out_sp)) / 1000.0
    p.update({"slice_thickness_mm": round(thick, 2), "slice_gap_mm": round(gap, 2),
              "acquired_in_plane_mm": round(acq, 2), "interpolated": bool(interp),
              "orientation": orient, "slices": n_sl, "dwi_background_masked": bool(masked),
              "spacing_mm": [round(float(s), 3) for s in out_sp], "shape": list(dwi.shape),
              "ghost": round(ghost, 3), "snr": round(snr, 1), "adc_unit": unit,
              "lesion_count": len(les), "total_lesion_volume_ml": round(float(truth.sum()) * vox_ml, 2)})
    return {"dwi": dwi.astype(np.float32), "adc": adc, "truth": truth.astype(np.uint8),
            "affine": affine, "params": p}


def write_study(study: Dict, out: str) -> None:
    os.makedirs(out, exist_ok=True)
    for name, key in (("image_0000.nii.gz", "dwi"), ("image_0001.nii.gz", "adc"), ("truth.nii.gz", "truth")):
        img = nib.Nifti1Image(study[key], study["affine"])
        img.header.set_xyzt_units("mm")
        nib.save(img, os.path.join(out, name))
    with open(os.path.join(out, "phantom.json"), "w") as f:
        json.dump(study["params"], f, indent=1)


def _job(args):
    seed, out, lesions = args
    if os.path.exists(os.path.join(out, "truth.nii.gz")):
        return seed, "exists", 0.0
    t0 = time.time()
    s = make_study(seed, lesions)
    write_study(s, out)
    return seed, f"{s['params']['lesion_count']} lesions {s['params']['total_lesion_volume_ml']} mL " \
                 f"{s['params']['shape']}", time.time() - t0


def parse_seeds(spec: str) -> List[int]:
    out: List[int] = []
    for part in spec.split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        elif part.strip():
            out.append(int(part))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder; studies go to OUT/seed_N (or seed_N_lesions0)")
    ap.add_argument("--seeds", required=True)
    ap.add_argument("--lesions", type=int, default=None, help="force this many infarcts (0: lesion-free)")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    suffix = "" if a.lesions is None else f"_lesions{a.lesions}"
    jobs = [(s, os.path.join(a.out, f"seed_{s}{suffix}"), a.lesions) for s in parse_seeds(a.seeds)]
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=a.jobs) as ex:
        for seed, msg, dt in ex.map(_job, jobs):
            print(f"seed {seed}: {msg} ({dt:.1f} s)", flush=True)
    print(f"{len(jobs)} studies in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
