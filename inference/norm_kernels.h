// Hand-written CPU kernels the engine runs between oneDNN primitives: instance norm fused
// with its activation in one vectorized pass over a channel-outer activation (plain NCDHW,
// channel-blocked nCdhw8c / nCdhw16c, or channels-last NDHWC, which is the same thing with one
// block of all channels), in fp32 or bf16 storage with fp32 arithmetic; and the depth-to-space
// copy of a kernel == stride deconvolution. Written with GCC vector extensions, so they compile
// and are correct on every target (arm64 included); on x86-64 the same code is also compiled
// for AVX2 + FMA and for AVX-512 and picked at run time (KernelIsa).
#pragma once

#include <cstddef>
#include <cstdint>

namespace inference {

/// Pointwise activation applied after the norm (graph.h's Activation, as an int-free enum).
enum class NormActivation { kNone, kRelu, kLeakyRelu, kSigmoid };

/// Storage type of the activation the norm kernel reads and writes (arithmetic is fp32).
enum class NormStorage { kF32, kBf16 };

/// Which compiled copy of the kernels runs: the portable one, or one compiled for AVX2 + FMA
/// or AVX-512 (x86-64 only). best_kernel_isa() gives the best one this CPU runs.
enum class KernelIsa { kGeneric, kAvx2, kAvx512 };

/// The best KernelIsa this CPU supports (kGeneric on anything but x86-64), capped at `cap`.
KernelIsa best_kernel_isa(KernelIsa cap = KernelIsa::kAvx512);
/// "generic", "avx2" or "avx512".
const char* kernel_isa_name(KernelIsa isa);

/// Instance normalization plus activation of one N = 1 tensor stored channel-outer with
/// channel block `block`; channels are padded up to a multiple of the block
/// (padded = ceil(channels / block) * block) and element (c, s) lives at
/// [(c / block) * spatial * block + s * block + c % block]. block = 1 is plain NCDHW, 8 / 16 are
/// nCdhw8c / nCdhw16c, block = channels is channels-last NDHWC.
///   dst = act((src - mean_c) / sqrt(var_c + epsilon) * scale[c] + shift[c])
/// with mean_c and the biased var_c over the `spatial` voxels (ONNX InstanceNormalization,
/// torch.nn.InstanceNorm3d in eval mode without running stats). `src` and `dst` have the same
/// layout and may be the same memory (in place, same storage); reading fp32 and writing bf16 is
/// how a bf16 engine keeps the norm's input in fp32. `scale` and `shift` hold `padded` values;
/// padding channels must have scale = shift = 0, which writes zeros there. Statistics are
/// accumulated per chunk of voxels in fp32 (chunk mean, then squared deviations from it, both
/// from L1) and merged in double (Chan et al.'s pairwise update), so large volumes keep full
/// accuracy; bf16 is widened to fp32 on load and rounded to nearest even on store. Two passes
/// over memory. OpenMP over channel groups; `alpha` is the LeakyRelu slope. No allocation.
void instance_norm_activation(const void* src, NormStorage src_storage, void* dst, NormStorage dst_storage,
                              int64_t channels, int64_t spatial, int block, const float* scale, const float* shift,
                              float epsilon, NormActivation activation, float alpha, KernelIsa isa);

/// Depth-to-space step of a ConvTranspose with kernel == stride and no padding, computed as a
/// 1x1 convolution to taps * C_out channels (channel t * C_out + c for tap t = (a, b, e) in C
/// order over the kernel) followed by this copy. `src` is (1, T * C_out, d, h, w) and `dst`
/// (1, C_out, d * kd, h * kh, w * kw), both fp32 channel-outer with channel block `block`
/// (C_out % block == 0): dst[c][(z * kd + a, y * kh + b, x * kw + e)] = src[t * C_out + c][(z, y, x)].
/// For 2D pass d = kd = 1. OpenMP over channel blocks and rows; no allocation.
void depth_to_space(const float* src, float* dst, int64_t c_out, int block, const int64_t in[3],
                    const int64_t kernel[3]);

/// The same copy for channels-last tensors of `elem_bytes`-byte elements (fp32: 4, bf16: 2):
/// src is (d, h, w, T * C_out) and dst (d * kd, h * kh, w * kw, C_out), so each tap of each
/// input voxel moves one contiguous run of C_out elements. OpenMP over output rows; no allocation.
void depth_to_space_channels_last(const void* src, void* dst, int64_t c_out, size_t elem_bytes, const int64_t in[3],
                                  const int64_t kernel[3]);

}  // namespace inference
