// Hand-written CPU kernels the engine runs between oneDNN primitives: instance norm fused
// with its activation in one vectorized pass over a channel-blocked activation (nCdhw8c on
// AVX2, any channel-outer layout otherwise), OpenMP over channel blocks.
#pragma once

#include <cstdint>

namespace inference {

/// Pointwise activation applied after the norm (graph.h's Activation, as an int-free enum).
enum class NormActivation { kNone, kRelu, kLeakyRelu, kSigmoid };

/// In-place instance normalization plus activation of one N = 1 tensor stored channel-outer
/// with channel block `block` (1 = plain NCDHW, 8 = nCdhw8c, 16 = nCdhw16c; C % block == 0):
/// element (c, s) lives at data[(c / block) * spatial * block + s * block + c % block].
///   y = act((x - mean_c) / sqrt(var_c + epsilon) * scale[c] + shift[c])
/// with mean_c and the biased var_c over the `spatial` voxels (ONNX InstanceNormalization,
/// torch.nn.InstanceNorm3d in eval mode without running stats). Statistics are accumulated
/// per chunk of voxels in float (chunk mean, then squared deviations from it, both from L1)
/// and merged in double (Chan et al.'s pairwise update), so large volumes keep full accuracy.
/// Two passes over memory: statistics, then normalize + activate. Uses the OpenMP threads.
/// `alpha` is the LeakyRelu slope. No allocation.
void instance_norm_activation(float* data, int64_t channels, int64_t spatial, int block, const float* scale,
                              const float* shift, float epsilon, NormActivation activation, float alpha);

/// True when the AVX2 + FMA path of instance_norm_activation is used for `block` on this CPU.
bool instance_norm_is_vectorized(int block);

}  // namespace inference

namespace inference {

/// Depth-to-space step of a ConvTranspose with kernel == stride and no padding, computed as a
/// 1x1 convolution to taps * C_out channels (channel t * C_out + c for tap t = (a, b, e) in C
/// order over the kernel) followed by this copy. `src` is (1, T * C_out, d, h, w) and `dst`
/// (1, C_out, d * kd, h * kh, w * kw), both channel-outer with channel block `block`
/// (C_out % block == 0): dst[c][(z * kd + a, y * kh + b, x * kw + e)] = src[t * C_out + c][(z, y, x)].
/// For 2D pass d = kd = 1. OpenMP over channel blocks and rows; no allocation.
void depth_to_space(const float* src, float* dst, int64_t c_out, int block, const int64_t in[3],
                    const int64_t kernel[3]);

}  // namespace inference
