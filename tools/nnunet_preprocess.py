"""numpy/scipy re-implementation of nnU-Net v2's preprocessing and export (3d_fullres).

Used to train and validate the demo model on the same grid the appliance sees:
crop to nonzero, ZScore normalization, resampling to the target spacing (nnU-Net's
`resample_data_or_seg_to_shape`, separate-z rule), and the inverse path for
predictions (`convert_predicted_logits_to_segmentation_with_correct_shape`).
Semantics from nnunetv2/preprocessing/{cropping,normalization,resampling} as documented
in /work/shared/golden/README.md; checked bit for bit against the goldens there.

Array order everywhere: nnU-Net's (z, y, x) = NIfTI (k, j, i) = nibabel array transposed.
Spacings are in mm, same order. Transpose_forward is the identity for the demo model.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import nibabel as nib
import numpy as np
from scipy import ndimage

ANISO_THRESHOLD = 3.0  # nnunetv2.configuration.ANISO_THRESHOLD


@dataclass
class CaseProperties:
    """What nnU-Net keeps in `properties` to export a prediction back to the input grid."""
    spacing: Tuple[float, ...]                 # (z, y, x) mm, float32-derived doubles
    shape_before_cropping: Tuple[int, ...]
    bbox: List[List[int]]                      # per axis [start, end), half-open
    shape_after_cropping: Tuple[int, ...]
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))  # NIfTI affine of input


def read_nifti(path: str) -> Tuple[np.ndarray, Tuple[float, float, float], np.ndarray]:
    """Reads a 3D NIfTI as nnU-Net's NibabelIO does.

    Returns (array (z, y, x) float32 = get_fdata().transpose(2, 1, 0),
    spacing (z, y, x) = pixdim reversed as Python floats, affine 4x4).
    Raises ValueError for non-3D images.
    """
    img = nib.load(path)
    if len(img.shape) != 3:
        raise ValueError(f"{path}: expected a 3D image, got shape {img.shape}")
    arr = np.asarray(img.get_fdata(dtype=np.float32)).transpose(2, 1, 0)
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    return np.ascontiguousarray(arr), tuple(zooms[::-1]), img.affine


def write_nifti_like(seg_zyx: np.ndarray, affine: np.ndarray, path: str) -> None:
    """Writes a (z, y, x) uint8 label array as NIfTI (i, j, k) with the given affine."""
    img = nib.Nifti1Image(np.ascontiguousarray(seg_zyx.transpose(2, 1, 0)).astype(np.uint8),
                          affine)
    img.header.set_xyzt_units("mm")
    nib.save(img, path)


def crop_to_nonzero(data: np.ndarray, seg: Optional[np.ndarray] = None):
    """nnU-Net's crop_to_nonzero: mask = OR over channels of (x != 0), binary_fill_holes,
    crop to the tight bbox of the mask.

    data: (C, z, y, x). seg: (z, y, x) or None. Returns (data_cropped, seg_cropped or None,
    nonzero_mask_cropped (bool), bbox [[start, end), ...]). An all-zero image keeps the
    full extent.
    """
    mask = np.any(data != 0, axis=0)
    mask = ndimage.binary_fill_holes(mask)
    if not mask.any():
        bbox = [[0, s] for s in mask.shape]
    else:
        bbox = []
        for ax in range(mask.ndim):
            other = tuple(a for a in range(mask.ndim) if a != ax)
            nz = np.where(np.any(mask, axis=other))[0]
            bbox.append([int(nz[0]), int(nz[-1]) + 1])
    sl = tuple(slice(a, b) for a, b in bbox)
    data_c = data[(slice(None),) + sl]
    seg_c = None if seg is None else seg[sl]
    return data_c, seg_c, mask[sl], bbox


def zscore_normalize(channel: np.ndarray, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """nnU-Net's ZScoreNormalization: (x - mean) / max(std, 1e-8), population std.

    With `mask` (use_mask_for_norm) statistics come from masked voxels and voxels outside
    stay 0. Computed in float64, returned float32.
    """
    x = channel.astype(np.float64)
    if mask is not None:
        vals = x[mask]
        mean, std = vals.mean(), vals.std()
        out = np.zeros_like(x)
        out[mask] = (x[mask] - mean) / max(std, 1e-8)
    else:
        mean, std = x.mean(), x.std()
        out = (x - mean) / max(std, 1e-8)
    return out.astype(np.float32)


def ct_normalize(channel: np.ndarray, props: Dict[str, float]) -> np.ndarray:
    """nnU-Net's CTNormalization: clip to [percentile_00_5, percentile_99_5] of the dataset's
    foreground, then (x - mean) / max(std, 1e-8) with the dataset's foreground mean and std
    (nnunetv2/preprocessing/normalization/default_normalization_schemes.py). Fixed across
    studies, so absolute values survive: the scheme for quantitative channels (CT in HU, ADC in
    10^-6 mm^2/s). Computed in float64, returned float32."""
    x = np.clip(channel.astype(np.float64), props["percentile_00_5"], props["percentile_99_5"])
    return ((x - props["mean"]) / max(props["std"], 1e-8)).astype(np.float32)


def foreground_intensity_properties(values: np.ndarray) -> Dict[str, float]:
    """nnU-Net's dataset fingerprint of one channel (DatasetFingerprintExtractor): mean, median,
    std, min, max and the 0.5 / 99.5 percentiles of foreground (label > 0) voxels pooled over
    the training cases; CTNormalization reads mean, std and the two percentiles."""
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "median": float(np.median(v)), "std": float(v.std()),
            "min": float(v.min()), "max": float(v.max()),
            "percentile_99_5": float(np.percentile(v, 99.5)),
            "percentile_00_5": float(np.percentile(v, 0.5))}


def adc_unit_scale(adc: np.ndarray) -> float:
    """Factor that brings an ADC map to 10^-6 mm^2/s, recognised from the median of its positive
    voxels as the appliance does (image/lesion_plausibility.cc infer_adc_unit): [1.5e-4, 5e-3]
    mm^2/s, [0.15, 5] 10^-3 mm^2/s, [150, 5000] 10^-6 mm^2/s. Raises ValueError otherwise."""
    pos = adc[np.isfinite(adc) & (adc > 0)]
    if pos.size == 0:
        raise ValueError("the ADC map has no positive voxel: cannot tell its unit")
    m = float(np.median(pos))
    if 1.5e-4 <= m <= 5e-3:
        return 1e6
    if 0.15 <= m <= 5.0:
        return 1e3
    if 150.0 <= m <= 5000.0:
        return 1.0
    raise ValueError(f"the median positive ADC is {m:g}, which fits no known unit")


def compute_new_shape(shape: Sequence[int], spacing: Sequence[float],
                      new_spacing: Sequence[float]) -> Tuple[int, ...]:
    """nnU-Net's compute_new_shape: int(round(old_spacing / new_spacing * old_shape)),
    Python round (half to even)."""
    return tuple(int(round(s / n * d)) for d, s, n in zip(shape, spacing, new_spacing))


def _do_separate_z(spacing: Sequence[float]) -> bool:
    return (max(spacing) / min(spacing)) > ANISO_THRESHOLD


def _lowres_axes(spacing: Sequence[float]) -> List[int]:
    sp = np.array(spacing, dtype=np.float64)
    return list(np.where(max(spacing) / sp == 1)[0])


def determine_separate_z(current_spacing: Sequence[float], new_spacing: Sequence[float]
                         ) -> Optional[int]:
    """nnU-Net's determine_do_sep_z_and_axis with force_separate_z=None.

    Returns the low-resolution axis to treat separately, or None for plain 3D resampling.
    Tests the current spacing first, then the new one; 2-3 tied max axes -> None.
    """
    if _do_separate_z(current_spacing):
        axes = _lowres_axes(current_spacing)
    elif _do_separate_z(new_spacing):
        axes = _lowres_axes(new_spacing)
    else:
        return None
    return int(axes[0]) if len(axes) == 1 else None


def _resize(x: np.ndarray, new_shape: Sequence[int], order: int) -> np.ndarray:
    """skimage.transform.resize(x, new_shape, order, mode='edge', anti_aliasing=False)
    = scipy zoom (grid_mode, mode 'nearest') on float64 + clip to the input's range."""
    x = x.astype(np.float64, copy=False)
    if tuple(x.shape) == tuple(new_shape):
        return x.copy()
    zoom = [n / o for n, o in zip(new_shape, x.shape)]
    out = ndimage.zoom(x, zoom, order=order, mode="nearest", grid_mode=True)
    if tuple(out.shape) != tuple(new_shape):
        raise RuntimeError(f"zoom produced {out.shape}, expected {tuple(new_shape)}")
    if order > 0:
        np.clip(out, x.min(), x.max(), out=out)
    return out


def _resize_seg(seg: np.ndarray, new_shape: Sequence[int], order: int) -> np.ndarray:
    """nnU-Net's resize_segmentation: per label, resize the one-hot mask (order) and
    assign the label where >= 0.5; order 0 resizes the labels directly."""
    if tuple(seg.shape) == tuple(new_shape):
        return seg.copy()
    if order == 0:
        return _resize(seg.astype(np.float64), new_shape, 0).astype(seg.dtype)
    out = np.zeros(new_shape, dtype=seg.dtype)
    for label in np.unique(seg):
        m = _resize((seg == label).astype(np.float64), new_shape, order)
        out[m >= 0.5] = label
    return out


def _nearest_along_axis(x: np.ndarray, axis: int, new_len: int) -> np.ndarray:
    """map_coordinates(order=0, mode='nearest') along one axis at c = old/new*(i+0.5)-0.5:
    index floor(c + 0.5), clamped."""
    old = x.shape[axis]
    c = old / new_len * (np.arange(new_len) + 0.5) - 0.5
    idx = np.clip(np.floor(c + 0.5).astype(np.int64), 0, old - 1)
    return np.take(x, idx, axis=axis)


def resample_to_shape(data: np.ndarray, new_shape: Sequence[int],
                      current_spacing: Sequence[float], new_spacing: Sequence[float],
                      is_seg: bool = False, order: int = 3, order_z: int = 0) -> np.ndarray:
    """nnU-Net's resample_data_or_seg_to_shape (force_separate_z None).

    data: (C, z, y, x) float (or labels with is_seg). Returns (C, *new_shape) float32
    (labels keep their dtype). Separate-z: each slice across the low-resolution axis is
    resized in-plane (order), then that axis is resampled with order_z (only 0 supported).
    """
    if order_z != 0:
        raise NotImplementedError("only order_z = 0 is implemented (nnU-Net's default)")
    new_shape = tuple(int(s) for s in new_shape)
    axis = determine_separate_z(current_spacing, new_spacing)
    out_dtype = data.dtype if is_seg else np.float32
    out = np.empty((data.shape[0],) + new_shape, dtype=out_dtype)
    for c in range(data.shape[0]):
        x = data[c]
        if axis is None:
            r = _resize_seg(x, new_shape, order) if is_seg else _resize(x, new_shape, order)
        else:
            inplane = [s for a, s in enumerate(new_shape) if a != axis]
            slices = []
            for k in range(x.shape[axis]):
                sl = np.take(x, k, axis=axis)
                slices.append(_resize_seg(sl, inplane, order) if is_seg
                              else _resize(sl, inplane, order))
            r = np.stack(slices, axis=axis)
            if r.shape[axis] != new_shape[axis]:
                r = _nearest_along_axis(r, axis, new_shape[axis])
        out[c] = r
    return out


def preprocess_case(channels: Sequence[np.ndarray], spacing: Sequence[float],
                    target_spacing: Sequence[float], seg: Optional[np.ndarray] = None,
                    use_mask_for_norm: Sequence[bool] = (False, False),
                    affine: Optional[np.ndarray] = None,
                    ct_properties: Optional[Sequence[Optional[Dict[str, float]]]] = None):
    """nnU-Net's DefaultPreprocessor.run_case for ZScore and CT channels, identity transpose.

    channels: list of (z, y, x) arrays; spacing (z, y, x) mm. ct_properties[c], when given and
    not None, makes channel c CTNormalization with those foreground intensity properties
    (foreground_intensity_properties); the others are ZScore. Returns (data (C, ...) float32
    on the target grid, seg (...) uint8 or None, CaseProperties). Label -1 (outside the
    nonzero mask) is mapped to background as nnU-Net's training transforms do.
    """
    data = np.stack([np.asarray(c, dtype=np.float32) for c in channels])
    shape_before = data.shape[1:]
    data, seg_c, mask, bbox = crop_to_nonzero(data, seg)
    for c in range(data.shape[0]):
        if ct_properties is not None and ct_properties[c] is not None:
            data[c] = ct_normalize(data[c], ct_properties[c])
        else:
            data[c] = zscore_normalize(data[c], mask if use_mask_for_norm[c] else None)
    new_shape = compute_new_shape(data.shape[1:], spacing, target_spacing)
    out = resample_to_shape(data, new_shape, spacing, target_spacing, False, 3, 0)
    seg_out = None
    if seg_c is not None:
        seg_out = resample_to_shape(seg_c[None].astype(np.int16), new_shape, spacing,
                                    target_spacing, True, 1, 0)[0]
        seg_out = np.clip(seg_out, 0, None).astype(np.uint8)
    props = CaseProperties(tuple(spacing), tuple(shape_before), bbox, tuple(data.shape[1:]),
                           np.eye(4) if affine is None else affine)
    return out, seg_out, props


def export_logits(logits: np.ndarray, props: CaseProperties,
                  target_spacing: Sequence[float]) -> np.ndarray:
    """nnU-Net's convert_predicted_logits_to_segmentation_with_correct_shape (float32 path):
    resample logits (K, ...) back to the cropped input shape (order 1, order_z 0, current /
    new spacing swapped), argmax over classes (ties -> lower class), paste into the
    uncropped shape. Returns (z, y, x) uint8 labels."""
    res = resample_to_shape(logits.astype(np.float32), props.shape_after_cropping,
                            target_spacing, props.spacing, False, 1, 0)
    seg = np.argmax(res, axis=0).astype(np.uint8)
    full = np.zeros(props.shape_before_cropping, dtype=np.uint8)
    full[tuple(slice(a, b) for a, b in props.bbox)] = seg
    return full


# ---------------------------------------------------------------- sliding window


def compute_gaussian(patch: Sequence[int], sigma_scale: float = 1.0 / 8,
                     value_scaling_factor: float = 10.0) -> np.ndarray:
    """nnU-Net's compute_gaussian (float32 here instead of fp16): unit impulse at patch//2,
    gaussian_filter with sigma = patch * sigma_scale (mode constant), scaled to max
    `value_scaling_factor`, zeros replaced by the smallest nonzero value."""
    tmp = np.zeros(patch, dtype=np.float64)
    tmp[tuple(p // 2 for p in patch)] = 1
    g = ndimage.gaussian_filter(tmp, [p * sigma_scale for p in patch], 0, mode="constant",
                                cval=0)
    g = g / g.max() * value_scaling_factor
    g = g.astype(np.float32)
    g[g == 0] = g[g != 0].min()
    return g


def compute_steps(image_size: Sequence[int], patch: Sequence[int], step: float
                  ) -> List[List[int]]:
    """nnU-Net's compute_steps_for_sliding_window (image_size >= patch per axis)."""
    steps = []
    for i, k in zip(image_size, patch):
        n = int(np.ceil((i - k) / (k * step))) + 1
        actual = (i - k) / (n - 1) if n > 1 else 99999999999
        steps.append([int(np.round(actual * j)) for j in range(n)])
    return steps


def pad_to_patch(data: np.ndarray, patch: Sequence[int]):
    """acvl_utils.pad_nd_image (constant 0) to at least `patch` on the spatial axes,
    centred, extra voxel on the high side. Returns (padded, slicer to undo)."""
    pads = [(0, 0)]
    slicer = [slice(None)]
    for s, p in zip(data.shape[1:], patch):
        d = max(p - s, 0)
        lo = d // 2
        pads.append((lo, d - lo))
        slicer.append(slice(lo, lo + s))
    return np.pad(data, pads, mode="constant"), tuple(slicer)


def sliding_window_logits(predict, data: np.ndarray, patch: Sequence[int],
                          num_classes: int, step: float = 0.5) -> np.ndarray:
    """Gaussian-weighted sliding window like nnU-Net's predict_sliding_window_return_logits
    (no mirroring, float32 accumulation). predict: f((1, C, *patch) float32) ->
    (1, K, *patch) logits. data: (C, z, y, x). Returns (K, z, y, x) float32 logits."""
    padded, unpad = pad_to_patch(data, patch)
    g = compute_gaussian(patch)
    acc = np.zeros((num_classes,) + padded.shape[1:], dtype=np.float32)
    wsum = np.zeros(padded.shape[1:], dtype=np.float32)
    steps = compute_steps(padded.shape[1:], patch, step)
    for s0 in steps[0]:
        for s1 in steps[1]:
            for s2 in steps[2]:
                sl = (slice(s0, s0 + patch[0]), slice(s1, s1 + patch[1]),
                      slice(s2, s2 + patch[2]))
                tile = np.ascontiguousarray(padded[(slice(None),) + sl][None])
                pred = np.asarray(predict(tile), dtype=np.float32)[0]
                acc[(slice(None),) + sl] += pred * g
                wsum[sl] += g
    acc /= wsum[None]
    return acc[unpad]
