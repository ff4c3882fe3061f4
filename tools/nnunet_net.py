"""nnU-Net v2's PlainConvUNet (3D), written from its documented structure.

Same topology and parameter names as MIC-DKFZ dynamic-network-architectures'
`PlainConvUNet` (conv -> InstanceNorm -> LeakyReLU blocks, strided first conv per
stage, transposed-conv upsampling, concat [upsampled, skip]), so that nnU-Net
checkpoints can be loaded with `load_nnunet_state_dict` (tools/import_nnunet.py).

Tensor layout: (N, C, z, y, x) = nnU-Net's transposed array order.
"""

from typing import Dict, List, Sequence, Union

import torch
from torch import nn

IntOrSeq = Union[int, Sequence[int]]


def _triple(v: IntOrSeq) -> List[int]:
    if isinstance(v, int):
        return [v, v, v]
    out = [int(x) for x in v]
    if len(out) != 3:
        raise ValueError(f"expected 3 values, got {v!r}")
    return out


class ConvNormNonlin(nn.Module):
    """Conv3d(k, stride, bias) -> InstanceNorm3d(eps 1e-5, affine) -> LeakyReLU(0.01).

    Parameter names `conv.*` and `norm.*` match dynamic-network-architectures'
    `ConvDropoutNormReLU` (its `all_modules.*` aliases are dropped on load).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: IntOrSeq, stride: IntOrSeq):
        super().__init__()
        k = _triple(kernel)
        s = _triple(stride)
        pad = [(x - 1) // 2 for x in k]
        self.conv = nn.Conv3d(in_ch, out_ch, k, s, pad, bias=True)
        self.norm = nn.InstanceNorm3d(out_ch, eps=1e-5, affine=True)
        self.nonlin = nn.LeakyReLU(negative_slope=0.01, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlin(self.norm(self.conv(x)))


class StackedConvBlocks(nn.Module):
    """`n` ConvNormNonlin blocks in `self.convs`; only the first one is strided."""

    def __init__(self, n: int, in_ch: int, out_ch: int, kernel: IntOrSeq,
                 first_stride: IntOrSeq):
        super().__init__()
        blocks = [ConvNormNonlin(in_ch, out_ch, kernel, first_stride)]
        for _ in range(n - 1):
            blocks.append(ConvNormNonlin(out_ch, out_ch, kernel, 1))
        self.convs = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)


class PlainConvEncoder(nn.Module):
    """Encoder: `stages[s]` = Sequential(StackedConvBlocks) with the stage stride.

    forward returns the list of every stage's output (skips), highest resolution first.
    """

    def __init__(self, in_ch: int, features: Sequence[int], kernels: Sequence[IntOrSeq],
                 strides: Sequence[IntOrSeq], n_conv: Sequence[int]):
        super().__init__()
        stages = []
        prev = in_ch
        for s, f in enumerate(features):
            stages.append(nn.Sequential(
                StackedConvBlocks(n_conv[s], prev, f, kernels[s], strides[s])))
            prev = f
        self.stages = nn.Sequential(*stages)
        self.output_channels = list(features)
        self.strides = [_triple(s) for s in strides]
        self.kernels = [_triple(k) for k in kernels]

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class UNetDecoder(nn.Module):
    """Decoder: for s = 0..n-2 (lowest resolution first) `transpconvs[s]` (kernel = stride
    = the encoder stride of stage n-1-s), concat (upsampled, skip) along channels,
    `stages[s]` (StackedConvBlocks, stride 1), and `seg_layers[s]` (1x1x1 conv to classes).

    Without deep supervision only the last seg layer (full resolution) is evaluated.
    """

    def __init__(self, encoder: PlainConvEncoder, num_classes: int,
                 n_conv_per_stage: Sequence[int], deep_supervision: bool = False):
        super().__init__()
        self.deep_supervision = deep_supervision
        n_enc = len(encoder.output_channels)
        transpconvs, stages, seg_layers = [], [], []
        for s in range(1, n_enc):
            below = encoder.output_channels[-s]
            skip = encoder.output_channels[-(s + 1)]
            stride = encoder.strides[-s]
            transpconvs.append(nn.ConvTranspose3d(below, skip, stride, stride, bias=True))
            stages.append(StackedConvBlocks(n_conv_per_stage[s - 1], 2 * skip, skip,
                                            encoder.kernels[-(s + 1)], 1))
            seg_layers.append(nn.Conv3d(skip, num_classes, 1, 1, 0, bias=True))
        self.transpconvs = nn.ModuleList(transpconvs)
        self.stages = nn.ModuleList(stages)
        self.seg_layers = nn.ModuleList(seg_layers)

    def forward(self, skips: List[torch.Tensor]):
        x = skips[-1]
        outputs = []
        n = len(self.stages)
        for s in range(n):
            x = self.transpconvs[s](x)
            x = torch.cat((x, skips[-(s + 2)]), 1)
            x = self.stages[s](x)
            if self.deep_supervision:
                outputs.append(self.seg_layers[s](x))
            elif s == n - 1:
                outputs.append(self.seg_layers[-1](x))
        outputs = outputs[::-1]  # highest resolution first
        return outputs if self.deep_supervision else outputs[0]


class PlainConvUNet(nn.Module):
    """nnU-Net v2's PlainConvUNet. Input (N, in_ch, z, y, x); output raw logits
    (N, num_classes, z, y, x), or with deep_supervision a list (full resolution first).

    Spatial sizes must be divisible by the product of the strides per axis.
    """

    def __init__(self, in_ch: int, features: Sequence[int], kernels: Sequence[IntOrSeq],
                 strides: Sequence[IntOrSeq], n_conv_per_stage: Sequence[int],
                 num_classes: int, n_conv_per_stage_decoder: Sequence[int],
                 deep_supervision: bool = False):
        super().__init__()
        n = len(features)
        if not (len(kernels) == len(strides) == len(n_conv_per_stage) == n):
            raise ValueError("features, kernels, strides, n_conv_per_stage must have equal length")
        if len(n_conv_per_stage_decoder) != n - 1:
            raise ValueError("n_conv_per_stage_decoder must have n_stages - 1 entries")
        self.encoder = PlainConvEncoder(in_ch, features, kernels, strides, n_conv_per_stage)
        self.decoder = UNetDecoder(self.encoder, num_classes, n_conv_per_stage_decoder,
                                   deep_supervision)

    def forward(self, x: torch.Tensor):
        return self.decoder(self.encoder(x))


def init_he(module: nn.Module) -> None:
    """nnU-Net's InitWeights_He(1e-2): kaiming_normal_(a=0.01) on conv weights, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(m.weight, a=1e-2)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def build_from_arch(arch: Dict, in_ch: int, num_classes: int,
                    deep_supervision: bool = False) -> PlainConvUNet:
    """Build from an nnU-Net v2 plans `architecture.arch_kwargs` dict (PlainConvUNet only)."""
    return PlainConvUNet(in_ch, arch["features_per_stage"], arch["kernel_sizes"],
                         arch["strides"], arch["n_conv_per_stage"], num_classes,
                         arch["n_conv_per_stage_decoder"], deep_supervision)


def load_nnunet_state_dict(net: PlainConvUNet, state: Dict[str, torch.Tensor]) -> None:
    """Load an nnU-Net checkpoint's `network_weights`, dropping the duplicated
    `.all_modules.` and `decoder.encoder.` aliases. Raises RuntimeError on mismatch."""
    clean = {k: v for k, v in state.items()
             if ".all_modules." not in k and not k.startswith("decoder.encoder.")}
    net.load_state_dict(clean, strict=True)
