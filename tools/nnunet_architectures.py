"""nnU-Net v2 network architectures rebuilt from a plans.json `architecture` entry.

Written from the documented structure of MIC-DKFZ dynamic-network-architectures
(`PlainConvUNet`, `ResidualEncoderUNet` with `BasicBlockD`), with the same module tree and
therefore the same state-dict names, so an nnU-Net checkpoint's `network_weights` loads with
`strict=True` once its `.all_modules.` and `decoder.encoder.` aliases are dropped
(`clean_state_dict`). Used by tools/import_nnunet.py.

Tensor layout: (N, C, *spatial) in nnU-Net's transposed array order, e.g. (N, C, z, y, x).
"""

from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

# plans' `arch_kwargs_requires_import` names -> torch classes. Only inference-relevant
# behaviour matters: dropout is the identity in eval mode.
_CONV_OPS = {
    "torch.nn.modules.conv.Conv3d": nn.Conv3d, "torch.nn.Conv3d": nn.Conv3d,
    "torch.nn.modules.conv.Conv2d": nn.Conv2d, "torch.nn.Conv2d": nn.Conv2d,
}
_NORM_OPS = {
    "torch.nn.modules.instancenorm.InstanceNorm3d": nn.InstanceNorm3d,
    "torch.nn.InstanceNorm3d": nn.InstanceNorm3d,
    "torch.nn.modules.instancenorm.InstanceNorm2d": nn.InstanceNorm2d,
    "torch.nn.InstanceNorm2d": nn.InstanceNorm2d,
    "torch.nn.modules.batchnorm.BatchNorm3d": nn.BatchNorm3d, "torch.nn.BatchNorm3d": nn.BatchNorm3d,
    "torch.nn.modules.batchnorm.BatchNorm2d": nn.BatchNorm2d, "torch.nn.BatchNorm2d": nn.BatchNorm2d,
}
_DROPOUT_OPS = {
    "torch.nn.modules.dropout.Dropout3d": nn.Dropout3d, "torch.nn.Dropout3d": nn.Dropout3d,
    "torch.nn.modules.dropout.Dropout2d": nn.Dropout2d, "torch.nn.Dropout2d": nn.Dropout2d,
    "torch.nn.modules.dropout.Dropout": nn.Dropout, "torch.nn.Dropout": nn.Dropout,
}
_NONLINS = {
    "torch.nn.LeakyReLU": nn.LeakyReLU, "torch.nn.modules.activation.LeakyReLU": nn.LeakyReLU,
    "torch.nn.ReLU": nn.ReLU, "torch.nn.modules.activation.ReLU": nn.ReLU,
    "torch.nn.GELU": nn.GELU, "torch.nn.modules.activation.GELU": nn.GELU,
    "torch.nn.PReLU": nn.PReLU, "torch.nn.modules.activation.PReLU": nn.PReLU,
}

PLAIN_UNET = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
RESENC_UNET = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"


class ArchitectureError(ValueError):
    """A plans architecture entry this module cannot rebuild (message names the field)."""


def _lookup(table: Dict[str, Any], name: Optional[str], field: str, optional: bool = False):
    if name is None:
        if optional:
            return None
        raise ArchitectureError(f"arch_kwargs.{field} is required")
    if name not in table:
        raise ArchitectureError(f"arch_kwargs.{field}: unsupported '{name}' "
                                f"(supported: {', '.join(sorted(table))})")
    return table[name]


def _seq(v, dim: int) -> List[int]:
    if isinstance(v, int):
        return [v] * dim
    out = [int(x) for x in v]
    if len(out) != dim:
        raise ArchitectureError(f"expected {dim} values, got {v!r}")
    return out


class Ops:
    """The operator classes and their kwargs of one architecture (resolved plans names)."""

    def __init__(self, kw: Dict[str, Any]):
        self.conv = _lookup(_CONV_OPS, kw.get("conv_op"), "conv_op")
        self.dim = 3 if self.conv is nn.Conv3d else 2
        self.transpconv = nn.ConvTranspose3d if self.dim == 3 else nn.ConvTranspose2d
        self.avgpool = nn.AvgPool3d if self.dim == 3 else nn.AvgPool2d
        self.norm = _lookup(_NORM_OPS, kw.get("norm_op"), "norm_op", optional=True)
        self.norm_kwargs = dict(kw.get("norm_op_kwargs") or {})
        self.dropout = _lookup(_DROPOUT_OPS, kw.get("dropout_op"), "dropout_op", optional=True)
        self.dropout_kwargs = dict(kw.get("dropout_op_kwargs") or {})
        self.nonlin = _lookup(_NONLINS, kw.get("nonlin"), "nonlin", optional=True)
        self.nonlin_kwargs = dict(kw.get("nonlin_kwargs") or {})
        self.conv_bias = bool(kw.get("conv_bias", False))
        self.nonlin_first = bool(kw.get("nonlin_first", False))


class ConvDropoutNormReLU(nn.Module):
    """conv -> [dropout] -> [norm] -> [nonlin]; padding (k-1)//2. Children `conv`, `dropout`,
    `norm`, `nonlin` and the `all_modules` Sequential over the same modules (the checkpoint's
    duplicated names)."""

    def __init__(self, ops: Ops, in_ch: int, out_ch: int, kernel, stride, bias: bool,
                 use_dropout: bool = True, use_norm: bool = True, use_nonlin: bool = True):
        super().__init__()
        k = _seq(kernel, ops.dim)
        s = _seq(stride, ops.dim)
        self.conv = ops.conv(in_ch, out_ch, k, s, padding=[(x - 1) // 2 for x in k], bias=bias)
        modules = [self.conv]
        if use_dropout and ops.dropout is not None:
            self.dropout = ops.dropout(**ops.dropout_kwargs)
            modules.append(self.dropout)
        if use_norm and ops.norm is not None:
            self.norm = ops.norm(out_ch, **ops.norm_kwargs)
            modules.append(self.norm)
        if use_nonlin and ops.nonlin is not None:
            self.nonlin = ops.nonlin(**ops.nonlin_kwargs)
            modules.append(self.nonlin)
            if ops.nonlin_first and use_norm and ops.norm is not None:
                modules[-1], modules[-2] = modules[-2], modules[-1]
        self.all_modules = nn.Sequential(*modules)

    def forward(self, x):
        return self.all_modules(x)


class StackedConvBlocks(nn.Module):
    """`n` ConvDropoutNormReLU in `convs`; only the first is strided."""

    def __init__(self, ops: Ops, n: int, in_ch: int, out_ch: int, kernel, first_stride):
        super().__init__()
        blocks = [ConvDropoutNormReLU(ops, in_ch, out_ch, kernel, first_stride, ops.conv_bias)]
        for _ in range(n - 1):
            blocks.append(ConvDropoutNormReLU(ops, out_ch, out_ch, kernel, 1, ops.conv_bias))
        self.convs = nn.Sequential(*blocks)

    def forward(self, x):
        return self.convs(x)


class PlainConvEncoder(nn.Module):
    """`stages[s]` = Sequential(StackedConvBlocks(stride s)); forward returns every stage's
    output (skips), highest resolution first."""

    def __init__(self, ops: Ops, in_ch: int, features: Sequence[int], kernels, strides,
                 n_conv: Sequence[int]):
        super().__init__()
        stages, prev = [], in_ch
        for s, f in enumerate(features):
            stages.append(nn.Sequential(StackedConvBlocks(ops, n_conv[s], prev, f, kernels[s],
                                                          strides[s])))
            prev = f
        self.stages = nn.Sequential(*stages)
        self.output_channels = list(features)
        self.strides = [_seq(s, ops.dim) for s in strides]
        self.kernel_sizes = [_seq(k, ops.dim) for k in kernels]

    def forward(self, x):
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class BasicBlockD(nn.Module):
    """Residual block: conv1 (strided, nonlin) -> conv2 (no nonlin) + skip, then nonlin2.
    skip = [AvgPool(stride) if strided] + [1x1 conv (no bias) + norm if channels change]."""

    def __init__(self, ops: Ops, in_ch: int, out_ch: int, kernel, stride):
        super().__init__()
        st = _seq(stride, ops.dim)
        self.conv1 = ConvDropoutNormReLU(ops, in_ch, out_ch, kernel, st, ops.conv_bias)
        self.conv2 = ConvDropoutNormReLU(ops, out_ch, out_ch, kernel, 1, ops.conv_bias,
                                         use_dropout=False, use_nonlin=False)
        self.nonlin2 = ops.nonlin(**ops.nonlin_kwargs) if ops.nonlin else nn.Identity()
        has_stride = any(s != 1 for s in st)
        skip_ops = []
        if has_stride:
            skip_ops.append(ops.avgpool(st, st))
        if in_ch != out_ch:
            skip_ops.append(ConvDropoutNormReLU(ops, in_ch, out_ch, 1, 1, False,
                                                use_dropout=False, use_nonlin=False))
        self.skip = nn.Sequential(*skip_ops) if skip_ops else nn.Identity()

    def forward(self, x):
        return self.nonlin2(self.conv2(self.conv1(x)) + self.skip(x))


class StackedResidualBlocks(nn.Module):
    def __init__(self, ops: Ops, n: int, in_ch: int, out_ch: int, kernel, first_stride):
        super().__init__()
        blocks = [BasicBlockD(ops, in_ch, out_ch, kernel, first_stride)]
        for _ in range(n - 1):
            blocks.append(BasicBlockD(ops, out_ch, out_ch, kernel, 1))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x):
        return self.blocks(x)


class ResidualEncoder(nn.Module):
    """`stem` (one conv block, stride 1, stem_channels = features[0] unless given) then
    `stages[s]` = StackedResidualBlocks; returns the skips."""

    def __init__(self, ops: Ops, in_ch: int, features: Sequence[int], kernels, strides,
                 n_blocks: Sequence[int], stem_channels: Optional[int] = None):
        super().__init__()
        stem_ch = stem_channels or features[0]
        self.stem = StackedConvBlocks(ops, 1, in_ch, stem_ch, kernels[0], 1)
        stages, prev = [], stem_ch
        for s, f in enumerate(features):
            stages.append(StackedResidualBlocks(ops, n_blocks[s], prev, f, kernels[s], strides[s]))
            prev = f
        self.stages = nn.Sequential(*stages)
        self.output_channels = list(features)
        self.strides = [_seq(s, ops.dim) for s in strides]
        self.kernel_sizes = [_seq(k, ops.dim) for k in kernels]

    def forward(self, x):
        x = self.stem(x)
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class UNetDecoder(nn.Module):
    """For s = 0..n-2 (lowest resolution first): `transpconvs[s]` (kernel = stride = encoder
    stride of stage n-1-s, bias = conv_bias), concat (upsampled, skip), `stages[s]`
    (StackedConvBlocks, stride 1), `seg_layers[s]` (1x1 conv to classes, bias). Without deep
    supervision only the full-resolution seg layer is evaluated."""

    def __init__(self, ops: Ops, encoder, num_classes: int, n_conv_per_stage: Sequence[int]):
        super().__init__()
        n_enc = len(encoder.output_channels)
        if len(n_conv_per_stage) != n_enc - 1:
            raise ArchitectureError("n_conv_per_stage_decoder must have n_stages - 1 entries")
        transpconvs, stages, seg_layers = [], [], []
        for s in range(1, n_enc):
            below = encoder.output_channels[-s]
            skip = encoder.output_channels[-(s + 1)]
            st = encoder.strides[-s]
            transpconvs.append(ops.transpconv(below, skip, st, st, bias=ops.conv_bias))
            stages.append(StackedConvBlocks(ops, n_conv_per_stage[s - 1], 2 * skip, skip,
                                            encoder.kernel_sizes[-(s + 1)], 1))
            seg_layers.append(ops.conv(skip, num_classes, 1, 1, 0, bias=True))
        self.transpconvs = nn.ModuleList(transpconvs)
        self.stages = nn.ModuleList(stages)
        self.seg_layers = nn.ModuleList(seg_layers)

    def forward(self, skips):
        x = skips[-1]
        for s in range(len(self.stages)):
            x = self.transpconvs[s](x)
            x = torch.cat((x, skips[-(s + 2)]), 1)
            x = self.stages[s](x)
        return self.seg_layers[-1](x)


class UNet(nn.Module):
    """encoder + decoder; forward returns the full-resolution logits (N, classes, *spatial)
    (deep supervision is always off: inference only)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, x):
        return self.decoder(self.encoder(x))


def build_network(architecture: Dict[str, Any], in_channels: int, num_outputs: int) -> UNet:
    """Builds the network of a plans `configurations[c]["architecture"]` entry
    (`network_class_name`, `arch_kwargs`). Raises ArchitectureError for unsupported classes,
    operators or inconsistent kwargs."""
    cls = architecture.get("network_class_name")
    kw = architecture.get("arch_kwargs")
    if not isinstance(kw, dict):
        raise ArchitectureError("architecture.arch_kwargs is missing")
    ops = Ops(kw)
    n = int(kw["n_stages"])
    feats = [int(f) for f in kw["features_per_stage"]]
    kernels, strides = kw["kernel_sizes"], kw["strides"]
    if not (len(feats) == len(kernels) == len(strides) == n):
        raise ArchitectureError("features_per_stage, kernel_sizes, strides need n_stages entries")
    if cls == PLAIN_UNET or (cls or "").endswith(".PlainConvUNet"):
        n_conv = kw["n_conv_per_stage"]
        encoder = PlainConvEncoder(ops, in_channels, feats, kernels, strides, n_conv)
    elif cls == RESENC_UNET or (cls or "").endswith(".ResidualEncoderUNet"):
        block = kw.get("block", "BasicBlockD")
        if block not in (None, "BasicBlockD") and not str(block).endswith("BasicBlockD"):
            raise ArchitectureError(f"arch_kwargs.block: unsupported '{block}' (BasicBlockD only)")
        if kw.get("bottleneck_channels") is not None:
            raise ArchitectureError("arch_kwargs.bottleneck_channels is not supported")
        encoder = ResidualEncoder(ops, in_channels, feats, kernels, strides,
                                  kw["n_blocks_per_stage"], kw.get("stem_channels"))
    else:
        raise ArchitectureError(f"architecture.network_class_name: unsupported '{cls}' "
                                f"(supported: {PLAIN_UNET}, {RESENC_UNET})")
    decoder = UNetDecoder(ops, encoder, num_outputs, kw["n_conv_per_stage_decoder"])
    return UNet(encoder, decoder)


def clean_state_dict(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Drops the aliases dynamic-network-architectures stores twice: `...all_modules.N...`
    (ConvDropoutNormReLU's Sequential over its own children) and `decoder.encoder.*` (the
    decoder's reference to the encoder); also strips a `module.` / `_orig_mod.` prefix.
    Raises ArchitectureError if an alias differs from its original."""
    out: Dict[str, torch.Tensor] = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        if ".all_modules." in k or k.startswith("decoder.encoder."):
            continue
        out[k] = v
    for k, v in state.items():
        if k.startswith("decoder.encoder."):
            orig = k[len("decoder."):]
            if orig in out and not torch.equal(out[orig], v):
                raise ArchitectureError(f"checkpoint alias {k} differs from {orig}")
    return out


def load_weights(net: UNet, state: Dict[str, torch.Tensor]) -> None:
    """Loads a checkpoint's `network_weights` (aliases removed) with strict name/shape checks.
    Raises ArchitectureError naming missing/unexpected keys or a shape mismatch."""
    clean = clean_state_dict(state)
    own = net.state_dict()
    # Our modules register all_modules too; compare on the de-duplicated names.
    own_keys = {k for k in own if ".all_modules." not in k}
    missing = sorted(own_keys - set(clean))
    unexpected = sorted(set(clean) - own_keys)
    if missing or unexpected:
        raise ArchitectureError(f"checkpoint does not match the plans' architecture: "
                                f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                                f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    for k in own_keys:
        if tuple(own[k].shape) != tuple(clean[k].shape):
            raise ArchitectureError(f"checkpoint tensor {k}: shape {tuple(clean[k].shape)}, "
                                    f"architecture expects {tuple(own[k].shape)}")
    net.load_state_dict(clean, strict=False)
