#!/usr/bin/python3
"""Generates an nnU-Net v2 PlainConvUNet with seeded random weights and exports it to ONNX,
for the engine benchmark (bench/engine_bench.sh) and the engine-vs-PyTorch equivalence test.

Default: the ISLES-size network (2 input channels, 2 classes, 6 stages, features
32,64,128,256,320,320, 3x3x3 kernels, stride 1 then 2, two convs per stage, patch 128^3;
~125 MB of ONNX, never committed). Weights: nnU-Net's He init for convolutions, and
(seeded) random InstanceNorm scales/shifts and biases so that every parameter is exercised.

  python3 tools/make_isles_net.py --out build/isles                      # model.onnx
  python3 tools/make_isles_net.py --out /tmp/small --features 8,16,32,64 --patch 64 --reference
      # also input.npy (1,2,64,64,64 float32, N(0,1)) and output.npy (PyTorch fp32 logits)
  python3 tools/make_isles_net.py --out /tmp/resenc --arch resenc --features 8,16,32,32 --patch 32 --reference
      # nnU-Net's ResidualEncoderUNet instead (tools/nnunet_architectures.py: BasicBlockD with
      # AvgPool + 1x1 conv skips, blocks per stage 1,3,4,6,6,6 truncated to the stage count)
  python3 tools/make_isles_net.py --out DIR --bench-torch fp32|bf16 --runs 5
      # times PyTorch on DIR's network instead (2 threads); prints one JSON line
"""

import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nnunet_net import PlainConvUNet, init_he  # noqa: E402


def build_resenc(features):
    """ResidualEncoderUNet with nnU-Net's ResEnc defaults (kernel 3, stride 1 then 2,
    blocks per stage 1,3,4,6,6,6, one decoder conv per stage, conv bias, InstanceNorm, LeakyReLU)."""
    from nnunet_architectures import RESENC_UNET, build_network
    n = len(features)
    kw = {"n_stages": n, "features_per_stage": features, "conv_op": "torch.nn.modules.conv.Conv3d",
          "kernel_sizes": [[3, 3, 3]] * n, "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
          "n_blocks_per_stage": [1, 3, 4, 6, 6, 6][:n], "n_conv_per_stage_decoder": [1] * (n - 1),
          "conv_bias": True, "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
          "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
          "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
    return build_network({"network_class_name": RESENC_UNET, "arch_kwargs": kw}, 2, 2)


def build(features, seed, arch="plain"):
    torch.manual_seed(seed)
    n = len(features)
    if arch == "resenc":
        net = build_resenc(features)
    else:
        net = PlainConvUNet(2, features, [3] * n, [1] + [2] * (n - 1), [2] * n, 2, [2] * (n - 1))
    init_he(net)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.InstanceNorm3d) and m.weight is not None:
                m.weight.copy_(1.0 + 0.1 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)) and m.bias is not None:
                m.bias.copy_(0.05 * torch.randn(m.bias.shape, generator=g))
    return net.eval()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for model.onnx (and .npy files)")
    p.add_argument("--features", default="32,64,128,256,320,320")
    p.add_argument("--patch", type=int, default=128, help="cubic patch edge")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--arch", choices=["plain", "resenc"], default="plain",
                   help="PlainConvUNet (default) or ResidualEncoderUNet")
    p.add_argument("--reference", action="store_true", help="write input.npy and PyTorch output.npy")
    p.add_argument("--bench-torch", choices=["fp32", "bf16"], help="time PyTorch instead of exporting")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    features = [int(f) for f in a.features.split(",")]
    torch.set_num_threads(a.threads)
    net = build(features, a.seed, a.arch)
    shape = (1, 2, a.patch, a.patch, a.patch)
    x = torch.from_numpy(np.random.default_rng(a.seed).standard_normal(shape).astype(np.float32))
    if a.bench_torch:
        times, cpu_times = [], []
        with torch.inference_mode():
            for i in range(a.warmup + a.runs):
                t0 = time.perf_counter()
                c0 = time.process_time()
                if a.bench_torch == "bf16":
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        net(x)
                else:
                    net(x)
                if i >= a.warmup:
                    times.append(time.perf_counter() - t0)
                    cpu_times.append(time.process_time() - c0)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        print(json.dumps({"backend": "pytorch " + torch.__version__, "precision": a.bench_torch,
                          "threads": a.threads, "runs": a.runs, "median_s": float(np.median(times)),
                          "median_cpu_s": float(np.median(cpu_times)),
                          "min_s": min(times), "peak_rss_mib": rss}))
        return
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "model.onnx")
    with torch.no_grad():
        torch.onnx.export(net, x, path, opset_version=17, input_names=["input"], output_names=["logits"],
                          do_constant_folding=True)
        if a.reference:
            np.save(os.path.join(a.out, "input.npy"), x.numpy())
            np.save(os.path.join(a.out, "output.npy"), net(x).numpy())
    print(path)


if __name__ == "__main__":
    main()
