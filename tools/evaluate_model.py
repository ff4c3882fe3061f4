#!/usr/bin/python3
"""Evaluates model packages with the appliance itself (`strokebox segment`), side by side.

For each model and each study:
  * synthetic studies with truth (folders holding image_0000/0001.nii.gz and truth.nii.gz, from
    `strokebox phantom --format nifti` or tools/phantom_dr.py): Dice, HD95 (mm), volume error
    (predicted - true, mL), false-positive volume (predicted outside the truth, mL), sensitivity
    (the share of the true lesion predicted; in the JSON), and how many studies with a lesion
    have a predicted volume within 0.5x-2x of the truth;
  * real healthy DICOM studies (every folder of --realdicom; the Siemens XA30 ADC and TRACEW
    series are one study): predicted volume, which should be ~0, and the volume the
    plausibility check flags. Studies whose b-value lies outside the model's accepted range are
    segmented with --allow-b-outside-range and marked. --healthy GLOB adds more healthy DICOM
    study folders (one study per folder), e.g. dcm2niix's public dcm_qa_* series fetched
    locally (docs/dicom_inputs.md lists those checked).

Usage:
  tools/evaluate_model.py --model old=DIR --model new=DIR --studies 'data/phantoms/seed_90*' \\
      --realdicom ../shared/realdicom --json out.json
  --model-args NAME='--implausible-lesions keep' gives that model's `strokebox segment` more
  options, so one package can be measured two ways. "Flagged" volumes are in the prediction when
  the package keeps implausible lesions, and left out of it when it excludes them.
Prints a Markdown table per model (means) and per study.
"""

import argparse
import glob
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

import nibabel as nib
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_demo import hd95_mm  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def segment(binary, model, args, out, precision):
    cmd = [binary, "segment", "--model", model, "--out", out, "--precision", precision] + args
    p = subprocess.run(cmd, capture_output=True, text=True)
    try:
        rep = json.load(open(os.path.join(out, "report.json")))
    except (OSError, ValueError):
        rep = {"status": "failed", "reason": (p.stderr or p.stdout)[-300:]}
    return p.returncode, rep


def flagged_ml(report) -> float:
    """Volume (mL) of the lesions the plausibility check flags (report.json `plausibility`)."""
    return round(sum(l["volume_ml"] for l in report.get("plausibility", {}).get("lesions", [])
                     if not l.get("plausible", True)), 2)


def eval_synthetic(binary, model, folder, tmp, precision, extra=()):
    out = os.path.join(tmp, "syn_" + os.path.basename(folder))
    shutil.rmtree(out, ignore_errors=True)
    rc, rep = segment(binary, model, ["--image", os.path.join(folder, "image_0000.nii.gz"),
                                      "--image", os.path.join(folder, "image_0001.nii.gz")] + list(extra),
                      out, precision)
    if rc != 0:
        return {"status": "failed", "reason": rep.get("reason")}
    pimg = nib.load(os.path.join(out, "lesion_mask.nii.gz"))
    pred = np.asarray(pimg.dataobj) > 0
    truth = np.asarray(nib.load(os.path.join(folder, "truth.nii.gz")).dataobj) > 0
    sp = [float(z) for z in pimg.header.get_zooms()[:3]]
    vml = float(np.prod(sp)) / 1000.0
    r = {"truth_ml": round(truth.sum() * vml, 2), "pred_ml": round(pred.sum() * vml, 2),
         "fp_ml": round((pred & ~truth).sum() * vml, 2),
         "volume_error_ml": round((pred.sum() - truth.sum()) * vml, 2),
         "implausible_ml": flagged_ml(rep)}
    if truth.any():
        r["dice"] = round(2 * (pred & truth).sum() / (pred.sum() + truth.sum()), 4)
        r["sensitivity"] = round((pred & truth).sum() / truth.sum(), 4)  # share of the truth found
        h = hd95_mm(pred, truth, sp)
        r["hd95_mm"] = None if h is None else round(h, 2)
    return r


def real_studies(root):
    """(name, [folders]) per study: the XA30 ADC + TRACEW exports are one study."""
    out, xa = [], []
    for d in sorted(os.listdir(root)):
        p = os.path.join(root, d)
        if not os.path.isdir(p):
            continue
        if d.startswith("dcm_qa_xa30i__"):
            xa.append(p)
        else:
            out.append((d, [p]))
    if xa:
        out.append(("dcm_qa_xa30i (ADC + TRACEW)", xa))
    return out


def volumes_in_range(rows, low=0.5, high=2.0):
    """(k, m): of the m studies with a lesion (truth_ml > 0), the k whose predicted volume lies
    within [low, high] x the true volume, ends included: issue 14's per-case target (each
    predicted volume within 0.5x-2x of the truth). Lesion-free studies do not count."""
    with_lesion = [r for r in rows if r.get("truth_ml", 0) > 0]
    k = sum(1 for r in with_lesion if low * r["truth_ml"] <= r["pred_ml"] <= high * r["truth_ml"])
    return k, len(with_lesion)


def eval_real(binary, model, name, folders, tmp, precision, extra=()):
    study = folders[0]
    if len(folders) > 1:  # one folder holding a copy of every file (the study search skips links)
        study = os.path.join(tmp, "study_" + str(abs(hash(name))))
        if not os.path.isdir(study):
            os.makedirs(study)
            for f in folders:
                for dirpath, _, files in os.walk(f):
                    for fn in files:
                        shutil.copyfile(os.path.join(dirpath, fn),
                                        os.path.join(study, os.path.basename(f) + "_" + fn))
    out = os.path.join(tmp, "real_" + os.path.basename(model.rstrip("/")) + str(abs(hash(name))))
    shutil.rmtree(out, ignore_errors=True)
    rc, rep = segment(binary, model, ["--study", study] + list(extra), out, precision)
    flag = False
    if rc != 0 and "range" in str(rep.get("reason", "")):
        rc, rep = segment(binary, model, ["--study", study, "--allow-b-outside-range"] + list(extra), out, precision)
        flag = True
    if rc != 0:
        return {"status": "failed", "reason": str(rep.get("reason"))[:200]}
    return {"pred_ml": round(rep.get("lesion_volume_ml", 0.0), 2),
            "implausible_ml": flagged_ml(rep),
            "b_outside_range": flag, "b_value": rep.get("diffusion", {}).get("b_value_s_mm2")}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, help="NAME=DIR (repeatable)")
    ap.add_argument("--model-args", action="append", default=[], metavar="NAME=ARGS",
                    help="more `strokebox segment` options for model NAME, e.g. NAME='--implausible-lesions keep'")
    ap.add_argument("--studies", action="append", default=[], help="glob of synthetic study folders")
    ap.add_argument("--realdicom", default=None)
    ap.add_argument("--healthy", action="append", default=[],
                    help="glob of further healthy DICOM study folders, one study each (repeatable)")
    ap.add_argument("--strokebox", default=os.path.join(REPO, "build", "strokebox"))
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    synth = sorted({f for g in a.studies for f in glob.glob(g) if os.path.exists(os.path.join(f, "truth.nii.gz"))})
    real = real_studies(a.realdicom) if a.realdicom else []
    real += [(os.path.basename(f.rstrip("/")), [os.path.realpath(f)])
             for f in sorted({f for g in a.healthy for f in glob.glob(g) if os.path.isdir(f)})]
    extra = {}
    for spec in a.model_args:
        name, args = spec.split("=", 1)
        extra[name] = shlex.split(args)
    results = {}
    with tempfile.TemporaryDirectory(prefix="strokebox-eval-") as tmp:
        for spec in a.model:
            name, model = spec.split("=", 1)
            t0 = time.time()
            res = {"synthetic": {}, "real": {}}
            for f in synth:
                res["synthetic"][os.path.relpath(f, REPO)] = eval_synthetic(a.strokebox, model, f, tmp, a.precision,
                                                                          extra.get(name, ()))
            for rn, folders in real:
                res["real"][rn] = eval_real(a.strokebox, model, rn, folders, tmp, a.precision, extra.get(name, ()))
            res["seconds"] = round(time.time() - t0, 1)
            results[name] = res
            print(f"{name}: {len(synth)} synthetic, {len(real)} real studies in {res['seconds']} s", file=sys.stderr)
    names = list(results)

    def mean(vals):
        v = [x for x in vals if x is not None]
        return f"{np.mean(v):.3f}" if v else "-"
    groups = {}
    for f in synth:
        key = os.path.relpath(os.path.dirname(f), REPO)
        key += " (lesion-free)" if "lesions0" in f else ""
        groups.setdefault(key, []).append(os.path.relpath(f, REPO))
    print("| studies | n | model | Dice | HD95 mm | abs volume error mL | FP volume mL | volume in 0.5x-2x |")
    print("|---|---|---|---|---|---|---|---|")
    for g, fs in groups.items():
        for n in names:
            rs = [results[n]["synthetic"][f] for f in fs]
            k, m = volumes_in_range(rs)
            print(f"| {g} | {len(fs)} | {n} | {mean([r.get('dice') for r in rs])} | "
                  f"{mean([r.get('hd95_mm') for r in rs])} | "
                  f"{mean([abs(r['volume_error_ml']) if 'volume_error_ml' in r else None for r in rs])} | "
                  f"{mean([r.get('fp_ml') for r in rs])} | {k} of {m} |")
    if real:
        print()
        print("| real healthy study | " + " | ".join(f"{n}: predicted mL (flagged implausible)" for n in names) + " |")
        print("|---|" + "---|" * len(names))
        for rn, _ in real:
            cells = []
            for n in names:
                r = results[n]["real"][rn]
                if r.get("status") == "failed":
                    cells.append("failed: " + r["reason"][:60])
                else:
                    cells.append(f"{r['pred_ml']:.2f} ({r['implausible_ml']:.2f})" + (" [b outside range]" if r["b_outside_range"] else ""))
            print(f"| {rn} | " + " | ".join(cells) + " |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
