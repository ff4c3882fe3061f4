#!/usr/bin/python3
"""Converts an nnU-Net v2 results folder into a strokebox model package.

    tools/import_nnunet.py RESULTS_FOLDER --out MODEL_DIR [--folds 0,1]
                           [--configuration 3d_fullres] [--checkpoint checkpoint_final.pth]
                           [--no-mirroring] [--tile-step-size 0.5] [--model-id ID]

RESULTS_FOLDER is nnU-Net's `<Dataset>/<trainer>__<plans>__<configuration>` folder with
`plans.json`, `dataset.json` and `fold_N/checkpoint_final.pth`. For each fold the network is
rebuilt from the plans' `architecture` (tools/nnunet_architectures.py: PlainConvUNet,
ResidualEncoderUNet), the checkpoint's `network_weights` are loaded (aliases de-duplicated),
deep supervision is off, and the network is exported to `fold_N.onnx` (opset 17, fixed input
`input` [1, C, *patch_size] float32, output `logits` [1, K, *patch_size], raw logits).
Each export is checked: `onnx.checker`, the graph's shapes, and the ONNX graph re-executed
op by op in float64 (torch functional ops; Debian has no onnxruntime) against the torch
module on a random patch (max |diff| must be <= 1e-3). model.json (docs/model_package.md)
comes from plans.json + dataset.json + the checkpoint (mirroring axes, trainer name), with
`accumulation: "fp16"` as nnU-Net v2 accumulates the sliding window in half precision.

Exit codes: 0 ok, 1 conversion failed (reason on stderr), 2 bad usage.
Uses Debian's python3-torch and python3-onnx only; CPU.
"""

import argparse
import hashlib
import json
import os
import re
import sys
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nnunet_architectures as arch  # noqa: E402

MODEL_FORMAT = "strokebox-model/1"
ONNX_OPSET = 17
MAX_ONNX_DIFF = 1e-3


class ConversionError(Exception):
    """Conversion failed; the message says what and where."""


def read_json(path: str) -> Dict[str, Any]:
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ConversionError(f"{path}: not found (is this an nnU-Net v2 results folder?)")
    except json.JSONDecodeError as e:
        raise ConversionError(f"{path}: not valid JSON: {e}")


def configuration_of(plans: Dict[str, Any], name: str) -> Dict[str, Any]:
    """plans["configurations"][name] with `inherits_from` resolved (child keys win)."""
    configs = plans.get("configurations", {})
    if name not in configs:
        raise ConversionError(f"plans.json: no configuration '{name}' "
                              f"(available: {', '.join(configs)})")
    cfg = dict(configs[name])
    seen = {name}
    while "inherits_from" in cfg:
        parent = cfg.pop("inherits_from")
        if parent in seen or parent not in configs:
            raise ConversionError(f"plans.json: configuration '{name}' inherits from "
                                  f"unknown or cyclic '{parent}'")
        seen.add(parent)
        merged = dict(configs[parent])
        merged.update(cfg)
        if "inherits_from" not in configs[parent]:
            merged.pop("inherits_from", None)
        cfg = merged
    return cfg


def label_outputs(dataset: Dict[str, Any]) -> Tuple[int, bool]:
    """(number of network outputs, region based?) from dataset.json labels."""
    labels = dataset.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise ConversionError("dataset.json: 'labels' missing or empty")
    regions = any(isinstance(v, (list, tuple)) for v in labels.values())
    if regions or "regions_class_order" in dataset:
        if "regions_class_order" not in dataset:
            raise ConversionError("dataset.json: region labels need 'regions_class_order'")
        n = sum(1 for k, v in labels.items() if not (v == 0 or v == [0] or k == "background"))
        return n, True
    return len(labels), False


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# ONNX re-execution in float64 with torch functional ops (independent of the torch module tree).

def _attrs(node) -> Dict[str, Any]:
    import onnx
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _sym_pad(x: torch.Tensor, pads: List[int], dim: int) -> Tuple[torch.Tensor, List[int]]:
    """ONNX pads [b0, b1, .., e0, e1, ..] -> symmetric part + explicit F.pad for the rest."""
    if not pads:
        return x, [0] * dim
    begin, end = pads[:dim], pads[dim:]
    if begin == end:
        return x, list(begin)
    extra = []
    for b, e in zip(reversed(begin), reversed(end)):  # F.pad wants last axis first
        extra += [b, e]
    return F.pad(x, extra), [0] * dim


def run_onnx_float64(model, x: np.ndarray) -> np.ndarray:
    """Executes `model` (onnx.ModelProto, one input, one output) in float64. Raises
    ConversionError on an operator it does not know."""
    from onnx import numpy_helper
    env: Dict[str, torch.Tensor] = {}
    def tensor(arr: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(arr.astype(np.float64) if arr.dtype.kind == "f" else arr.copy())
    for init in model.graph.initializer:
        env[init.name] = tensor(numpy_helper.to_array(init))
    env[model.graph.input[0].name] = torch.from_numpy(x.astype(np.float64))
    for node in model.graph.node:
        a = _attrs(node)
        ins = [env[i] if i else None for i in node.input]
        op = node.op_type
        if op == "Conv" or op == "ConvTranspose":
            w = ins[1]
            dim = w.dim() - 2
            b = ins[2] if len(ins) > 2 else None
            strides = a.get("strides", [1] * dim)
            dil = a.get("dilations", [1] * dim)
            group = a.get("group", 1)
            if op == "Conv":
                xin, pad = _sym_pad(ins[0], a.get("pads", []), dim)
                fn = F.conv3d if dim == 3 else F.conv2d
                y = fn(xin, w, b, strides, pad, dil, group)
            else:
                pads = a.get("pads", [0] * (2 * dim))
                if pads[:dim] != pads[dim:]:
                    raise ConversionError("ConvTranspose with asymmetric pads is not supported")
                fn = F.conv_transpose3d if dim == 3 else F.conv_transpose2d
                y = fn(ins[0], w, b, strides, pads[:dim], a.get("output_padding", [0] * dim),
                       group, dil)
        elif op == "InstanceNormalization":
            y = F.instance_norm(ins[0], weight=ins[1], bias=ins[2], eps=a.get("epsilon", 1e-5))
        elif op == "BatchNormalization":
            y = F.batch_norm(ins[0], ins[3], ins[4], ins[1], ins[2], False, 0.0,
                             a.get("epsilon", 1e-5))
        elif op == "LeakyRelu":
            y = F.leaky_relu(ins[0], a.get("alpha", 0.01))
        elif op == "Relu":
            y = F.relu(ins[0])
        elif op == "Concat":
            y = torch.cat(ins, dim=a["axis"])
        elif op == "Add":
            y = ins[0] + ins[1]
        elif op == "Mul":
            y = ins[0] * ins[1]
        elif op == "Div":
            y = ins[0] / ins[1]
        elif op == "Erf":
            y = torch.erf(ins[0])
        elif op == "Identity":
            y = ins[0]
        elif op == "Constant":
            y = tensor(numpy_helper.to_array(a["value"]))
        elif op == "Pad":
            mode = a.get("mode", b"constant")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            pads = [int(p) for p in ins[1].tolist()]
            value = float(ins[2].item()) if len(ins) > 2 and ins[2] is not None else 0.0
            nd = len(pads) // 2
            tp = []
            for ax in reversed(range(nd)):
                tp += [pads[ax], pads[ax + nd]]
            if mode != "constant":
                raise ConversionError(f"cannot verify ONNX Pad mode '{mode}'")
            y = F.pad(ins[0], tp, value=value)
        elif op == "AveragePool":
            k = a["kernel_shape"]
            dim = len(k)
            xin, pad = _sym_pad(ins[0], a.get("pads", []), dim)
            fn = F.avg_pool3d if dim == 3 else F.avg_pool2d
            y = fn(xin, k, a.get("strides", k), pad, bool(a.get("ceil_mode", 0)),
                   bool(a.get("count_include_pad", 0)))
        else:
            raise ConversionError(f"cannot verify ONNX operator '{op}' (node {node.name})")
        env[node.output[0]] = y
    return env[model.graph.output[0].name].numpy()


def _shape_of(value_info) -> List[int]:
    return [d.dim_value if d.HasField("dim_value") else -1
            for d in value_info.type.tensor_type.shape.dim]


# ---------------------------------------------------------------------------------------------

def export_fold(cfg: Dict[str, Any], checkpoint_path: str, in_ch: int, n_out: int,
                onnx_path: str, seed: int) -> Dict[str, Any]:
    """Rebuilds, loads, exports and checks one fold; returns facts for the provenance."""
    import onnx
    try:
        ckpt = torch.load(checkpoint_path, map_location="cpu")
    except FileNotFoundError:
        raise ConversionError(f"{checkpoint_path}: not found")
    except Exception as e:  # torch raises many types for a corrupt pickle
        raise ConversionError(f"{checkpoint_path}: cannot be read by torch.load: {e}")
    if not isinstance(ckpt, dict) or "network_weights" not in ckpt:
        raise ConversionError(f"{checkpoint_path}: no 'network_weights' (not an nnU-Net v2 "
                              "checkpoint)")
    try:
        net = arch.build_network(cfg["architecture"], in_ch, n_out)
        arch.load_weights(net, ckpt["network_weights"])
    except arch.ArchitectureError as e:
        raise ConversionError(f"{checkpoint_path}: {e}")
    except KeyError as e:
        raise ConversionError(f"plans.json architecture: missing key {e}")
    net.eval()
    patch = [int(p) for p in cfg["patch_size"]]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn([1, in_ch] + patch, generator=gen, dtype=torch.float32)
    with torch.no_grad():
        y_torch = net(x).numpy()
        torch.onnx.export(net, x, onnx_path, opset_version=ONNX_OPSET, input_names=["input"],
                          output_names=["logits"], do_constant_folding=True)
    model = onnx.load(onnx_path)
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise ConversionError(f"{onnx_path}: onnx.checker: {e}")
    in_shape = _shape_of(model.graph.input[0])
    out_shape = _shape_of(model.graph.output[0])
    if in_shape != [1, in_ch] + patch or out_shape != [1, n_out] + patch:
        raise ConversionError(f"{onnx_path}: exported shapes {in_shape} -> {out_shape}, expected "
                              f"{[1, in_ch] + patch} -> {[1, n_out] + patch}")
    y_onnx = run_onnx_float64(model, x.numpy())
    diff = float(np.max(np.abs(y_onnx - y_torch.astype(np.float64))))
    if not diff <= MAX_ONNX_DIFF:
        raise ConversionError(f"{onnx_path}: ONNX graph (float64) differs from torch by {diff:.3g} "
                              f"(limit {MAX_ONNX_DIFF})")
    argmax_agree = float(np.mean(np.argmax(y_onnx, 1) == np.argmax(y_torch, 1)))
    return {
        "checkpoint": os.path.relpath(checkpoint_path, os.path.dirname(os.path.dirname(checkpoint_path))),
        "checkpoint_sha256": sha256_file(checkpoint_path),
        "onnx_sha256": sha256_file(onnx_path),
        "trainer_name": ckpt.get("trainer_name"),
        "epoch": ckpt.get("current_epoch"),
        "inference_allowed_mirroring_axes": ckpt.get("inference_allowed_mirroring_axes"),
        "onnx_vs_torch_max_abs_diff": diff,
        "onnx_vs_torch_argmax_agreement": argmax_agree,
        "ops": sorted({n.op_type for n in model.graph.node}),
    }


def build_model_json(plans: Dict[str, Any], dataset: Dict[str, Any], cfg: Dict[str, Any],
                     configuration: str, networks: List[str], mirror_axes: Optional[List[int]],
                     use_mirroring: bool, tile_step_size: float, model_id: str,
                     provenance: Dict[str, Any]) -> Dict[str, Any]:
    """model.json (docs/model_package.md) from the plans' configuration and dataset.json."""
    patch = cfg.get("patch_size")
    if not isinstance(patch, list) or len(patch) != 3:
        raise ConversionError(f"plans.json: configuration '{configuration}' has patch_size "
                              f"{patch}: only 3D configurations are supported")
    names = dataset.get("channel_names", dataset.get("modality", {}))
    schemes = cfg["normalization_schemes"]
    masks = cfg["use_mask_for_norm"]
    props = plans.get("foreground_intensity_properties_per_channel", {})
    channels = []
    for c, scheme in enumerate(schemes):
        key = str(c)
        ch = {"name": names.get(key, key), "normalization": scheme,
              "use_mask_for_norm": bool(masks[c])}
        if key in props:
            p = props[key]
            ch["intensity_properties"] = {k: p[k] for k in
                                          ("mean", "std", "percentile_00_5", "percentile_99_5")}
        elif scheme == "CTNormalization":
            raise ConversionError(f"plans.json: channel {c} uses CTNormalization but "
                                  "foreground_intensity_properties_per_channel has no entry")
        channels.append(ch)
    dk = cfg.get("resampling_fn_data_kwargs", {})
    pk = cfg.get("resampling_fn_probabilities_kwargs", {})
    return {
        "format": MODEL_FORMAT,
        "model_id": model_id,
        "networks": networks,
        "channels": channels,
        "target_spacing_mm": cfg["spacing"],
        "patch_size": patch,
        "transpose_forward": plans.get("transpose_forward", [0, 1, 2]),
        "transpose_backward": plans.get("transpose_backward", [0, 1, 2]),
        "labels": dataset["labels"],
        "regions_class_order": dataset.get("regions_class_order"),
        "use_mirroring": bool(use_mirroring and mirror_axes),
        "mirroring_axes": list(mirror_axes) if mirror_axes else [0, 1, 2],
        "tile_step_size": tile_step_size,
        "resampling": {
            "data_order": dk.get("order", 3), "data_order_z": dk.get("order_z", 0),
            "probabilities_order": pk.get("order", 1),
            "probabilities_order_z": pk.get("order_z", 0),
            "force_separate_z": dk.get("force_separate_z"),
        },
        "accumulation": "fp16",
        "provenance": provenance,
    }


def parse_folds(spec: Optional[str], results: str) -> List[int]:
    if spec:
        try:
            return [int(f) for f in spec.split(",") if f.strip()]
        except ValueError:
            raise ConversionError(f"--folds: expected a comma-separated list of integers, got '{spec}'")
    found = sorted(int(m.group(1)) for d in os.listdir(results)
                   if (m := re.fullmatch(r"fold_(\d+)", d)))
    if not found:
        raise ConversionError(f"{results}: no fold_N folders")
    return found


def convert(args) -> Dict[str, Any]:
    results = os.path.abspath(args.results_folder)
    plans = read_json(os.path.join(results, "plans.json"))
    dataset = read_json(os.path.join(results, "dataset.json"))
    cfg = configuration_of(plans, args.configuration)
    if "architecture" not in cfg:
        raise ConversionError(f"plans.json: configuration '{args.configuration}' has no "
                              "'architecture' (nnU-Net older than v2.2 plans are not supported)")
    folds = parse_folds(args.folds, results)
    in_ch = len(cfg["normalization_schemes"])
    n_out, regions = label_outputs(dataset)
    os.makedirs(args.out, exist_ok=True)
    networks, fold_facts, axes = [], {}, None
    for f in folds:
        ckpt = os.path.join(results, f"fold_{f}", args.checkpoint)
        name = f"fold_{f}.onnx"
        facts = export_fold(cfg, ckpt, in_ch, n_out, os.path.join(args.out, name), seed=f)
        fold_axes = facts.pop("inference_allowed_mirroring_axes")
        fold_axes = list(fold_axes) if fold_axes is not None else None
        if networks and fold_axes != axes:
            raise ConversionError(f"fold {f}: inference_allowed_mirroring_axes {fold_axes} differ "
                                  f"from the first fold's {axes}")
        axes = fold_axes
        networks.append(name)
        fold_facts[name] = facts
        print(f"fold {f}: {name} written, ONNX vs torch max |diff| "
              f"{facts['onnx_vs_torch_max_abs_diff']:.3g}, ops {','.join(facts['ops'])}",
              file=sys.stderr)
    trainers = {v["trainer_name"] for v in fold_facts.values()}
    model_id = args.model_id or "__".join([plans.get("dataset_name", "nnunet"),
                                           os.path.basename(results)] +
                                          ([f"folds{''.join(map(str, folds))}"]))
    provenance = {
        "source": "tools/import_nnunet.py",
        "results_folder": os.path.basename(results),
        "dataset_name": plans.get("dataset_name"),
        "plans_name": plans.get("plans_name"),
        "configuration": args.configuration,
        "network_class_name": cfg["architecture"].get("network_class_name"),
        "trainer_name": sorted(t for t in trainers if t)[0] if len(trainers) == 1 else sorted(
            str(t) for t in trainers),
        "checkpoint": args.checkpoint,
        "folds": folds,
        "region_based": regions,
        "plans_sha256": sha256_file(os.path.join(results, "plans.json")),
        "dataset_sha256": sha256_file(os.path.join(results, "dataset.json")),
        "networks": fold_facts,
        "torch": torch.__version__,
        "onnx_opset": ONNX_OPSET,
    }
    doc = build_model_json(plans, dataset, cfg, args.configuration, networks, axes,
                           not args.no_mirroring, args.tile_step_size, model_id, provenance)
    tmp = os.path.join(args.out, "model.json.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, os.path.join(args.out, "model.json"))
    return doc


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results_folder", help="nnU-Net v2 <trainer>__<plans>__<configuration> folder")
    p.add_argument("--out", required=True, help="model package folder to write")
    p.add_argument("--folds", help="comma-separated folds (default: every fold_N folder)")
    p.add_argument("--configuration", default="3d_fullres")
    p.add_argument("--checkpoint", default="checkpoint_final.pth")
    p.add_argument("--no-mirroring", action="store_true",
                   help="write use_mirroring false (nnU-Net's default is test-time mirroring)")
    p.add_argument("--tile-step-size", type=float, default=0.5)
    p.add_argument("--model-id")
    args = p.parse_args(argv)
    if not 0.0 < args.tile_step_size <= 1.0:
        p.error("--tile-step-size must be in (0, 1]")
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    try:
        doc = convert(args)
    except ConversionError as e:
        print(f"import_nnunet: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"out": os.path.abspath(args.out), "model_id": doc["model_id"],
                      "networks": doc["networks"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
