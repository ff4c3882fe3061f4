#!/usr/bin/python3
"""Combines trained model packages into one ensemble package, as nnU-Net ensembles its folds.

The box averages the networks' logits per tile (model.json "networks"; docs/model_package.md),
as nnU-Net's predict_from_raw_data averages the folds of one configuration. The members must
share everything the box does around the network: architecture, patch size, target spacing,
transposes, labels, resampling, b range and each channel's normalization scheme. Only the
CTNormalization intensity properties may differ, and only a little (two trainings on slightly
different data compute slightly different lesion-ADC statistics): the package keeps the first
member's, and a member whose mean, standard deviation or clipping percentiles differ by more
than --max-norm-shift standard deviations is refused. The shift is recorded in the provenance.

Usage:
  tools/ensemble_models.py --out models/demo --model-id strokebox-demo-2026.12.07-ensemble-pp \\
      --member model=data/model_hostL_s3 --member hosts_seed2=data/model_hostL_s2 \\
      --member fat_seed2=data/model_fat_s2 --member fat_seed3=data/model_fat_s3 \\
      --implausible-lesions exclude-below-tissue-adc
Each --member NAME=DIR (a package with one network) becomes NAME.onnx; NAME "model" keeps the
usual file name. Exit status 2 with the reason when the members are incompatible.
"""

import argparse
import json
import os
import shutil
import sys
from typing import Dict, List, Tuple

# Keys of model.json that every member must have equal (everything but the networks, the id,
# the provenance and the channels' intensity statistics).
SHARED_KEYS = ("format", "diffusion", "target_spacing_mm", "patch_size", "transpose_forward",
               "transpose_backward", "labels", "regions_class_order", "use_mirroring", "mirroring_axes",
               "tile_step_size", "resampling", "architecture")
# model.json postprocessing.implausible_lesions values (firmware/pipeline.h ImplausibleLesions).
IMPLAUSIBLE_LESIONS = ("keep", "exclude-below-tissue-adc", "exclude")
NORM_STATS = ("mean", "std", "percentile_00_5", "percentile_99_5")


class EnsembleError(ValueError):
    """Members that cannot be averaged; the message names the member and the key."""


def load_member(folder: str) -> Dict:
    path = os.path.join(folder, "model.json")
    if not os.path.exists(path):
        raise EnsembleError(f"{folder}: no model.json (not a model package)")
    with open(path) as f:
        pkg = json.load(f)
    nets = pkg.get("networks", ["model.onnx"])
    if len(nets) != 1:
        raise EnsembleError(f"{folder}: has {len(nets)} networks; members must have one each")
    if not os.path.exists(os.path.join(folder, nets[0])):
        raise EnsembleError(f"{folder}: {nets[0]} is missing")
    return pkg


def norm_shift(a: Dict, b: Dict) -> float:
    """Largest difference of the CTNormalization statistics (mean, std, 0.5/99.5 percentiles)
    of two channels, in units of the first channel's std; 0 for ZScore channels."""
    pa, pb = a.get("intensity_properties"), b.get("intensity_properties")
    if pa is None and pb is None:
        return 0.0
    if pa is None or pb is None:
        return float("inf")
    return max(abs(float(pa[k]) - float(pb[k])) for k in NORM_STATS) / float(pa["std"])


def check_members(members: List[Tuple[str, Dict]], max_shift: float) -> List[float]:
    """Raises EnsembleError when a member differs from the first in a shared key, a channel's
    name or scheme, or by more than max_shift std in a channel's statistics. Returns the largest
    shift per member (the first's is 0)."""
    (name0, first), shifts = members[0], []
    for name, pkg in members:
        for key in SHARED_KEYS:
            if pkg.get(key) != first.get(key):
                raise EnsembleError(f"member {name}: {key} differs from {name0}'s "
                                    f"({pkg.get(key)!r} against {first.get(key)!r})")
        ch, ch0 = pkg.get("channels", []), first.get("channels", [])
        if [(c["name"], c["normalization"]) for c in ch] != [(c["name"], c["normalization"]) for c in ch0]:
            raise EnsembleError(f"member {name}: channels or their normalization differ from {name0}'s")
        shift = max((norm_shift(c0, c) for c0, c in zip(ch0, ch)), default=0.0)
        if shift > max_shift:
            raise EnsembleError(f"member {name}: its ADC normalization statistics differ from {name0}'s by "
                                f"{shift:.4f} std (limit {max_shift}); train the members on the same data")
        shifts.append(shift)
    return shifts


def build(out: str, model_id: str, specs: List[Tuple[str, str]], max_shift: float,
          implausible_lesions: str = None) -> Dict:
    """Writes the ensemble package into out (created; its .onnx and model.json replaced) and
    returns its model.json. implausible_lesions (one of IMPLAUSIBLE_LESIONS) sets the package's
    postprocessing (model.json "postprocessing", docs/model_package.md); None leaves it out."""
    if len(specs) < 2:
        raise EnsembleError("an ensemble needs at least two --member")
    names = [n for n, _ in specs]
    if len(set(names)) != len(names) or any(not n or "/" in n or n.startswith(".") for n in names):
        raise EnsembleError(f"member names must be distinct plain file names: {names}")
    members = [(name, load_member(folder)) for name, folder in specs]
    shifts = check_members(members, max_shift)
    os.makedirs(out, exist_ok=True)
    for old in os.listdir(out):
        if old.endswith(".onnx") or old.endswith(".engine"):  # stale networks and their engines
            os.remove(os.path.join(out, old))
    pkg = dict(members[0][1])
    pkg["model_id"] = model_id
    pkg["networks"] = [f"{n}.onnx" for n in names]
    pkg.pop("postprocessing", None)  # a property of the ensemble, chosen on its validation data
    if implausible_lesions is not None:
        if implausible_lesions not in IMPLAUSIBLE_LESIONS:
            raise EnsembleError(f"--implausible-lesions takes one of {', '.join(IMPLAUSIBLE_LESIONS)}, "
                                f"got {implausible_lesions!r}")
        pkg["postprocessing"] = {"implausible_lesions": implausible_lesions}
    pkg["provenance"] = {
        "source": "tools/ensemble_models.py",
        "ensemble": "logits averaged per tile over the networks, as nnU-Net averages folds",
        "normalization": f"channels from member {names[0]}; the others' ADC statistics differ by at most "
                         f"{max(shifts):.4f} std",
        "members": [{"network": f"{n}.onnx", "from": folder, "normalization_shift_std": round(s, 5),
                     "provenance": m.get("provenance", {})}
                    for (n, folder), (_, m), s in zip(specs, members, shifts)],
    }
    for (name, folder), (_, m) in zip(specs, members):
        shutil.copyfile(os.path.join(folder, m.get("networks", ["model.onnx"])[0]),
                        os.path.join(out, f"{name}.onnx"))
    with open(os.path.join(out, "model.json"), "w") as f:
        json.dump(pkg, f, indent=2)
        f.write("\n")
    return pkg


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="package folder to write")
    ap.add_argument("--model-id", required=True)
    ap.add_argument("--member", action="append", required=True, metavar="NAME=DIR")
    ap.add_argument("--max-norm-shift", type=float, default=0.02,
                    help="largest accepted difference of the members' CTNormalization statistics, in std "
                         "(default 0.02)")
    ap.add_argument("--implausible-lesions", choices=IMPLAUSIBLE_LESIONS, default=None,
                    help="the package's postprocessing (model.json postprocessing, docs/model_package.md): which "
                         "lesions the box's plausibility guard flags are left out of the mask and volume; default: "
                         "not set (keep)")
    a = ap.parse_args(argv)
    specs = []
    for m in a.member:
        name, sep, folder = m.partition("=")
        if not sep:
            ap.error(f"--member {m}: expected NAME=DIR")
        specs.append((name, folder))
    try:
        pkg = build(a.out, a.model_id, specs, a.max_norm_shift, a.implausible_lesions)
    except EnsembleError as e:
        print(f"ensemble_models: {e}", file=sys.stderr)
        return 2
    print(f"wrote {a.out}: {pkg['model_id']}, networks {pkg['networks']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
