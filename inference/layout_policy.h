// The CPU engine's layout and precision decisions as pure functions of the instruction set
// oneDNN dispatches to, so that they can be unit-tested for every ISA on any machine.
//
// Measured with oneDNN 2.6.3 (the Debian 12 package) on 2 cores of an AMD EPYC Zen 5, each ISA
// capped with ONEDNN_MAX_CPU_ISA (docs/engine.md, "Layouts per ISA"):
// - AVX2: jit:avx2 convolutions want nCdhw8c; plain (ncdhw) and channels-last fall back to
//   x64:gemm:jit or ref. So 8-channel blocks; concat is free as channel slices of one buffer.
// - AVX-512 (fp32): brgconv:avx512_core takes channels-last (ndhwc) for every channel count,
//   jit:avx512_core wants nCdhw16c and falls back to ref when the channels do not fill a block
//   (the demo model's 8 channels: 18 s instead of 36 ms per layer). Channels-last also has a
//   JIT deconvolution (jit:avx512_core). So channels-last.
// - AVX512-BF16 and AMX (bf16): brgconv on channels-last runs 2x faster than jit_bf16 on
//   nCdhw16c (470 against 233 GFLOP/s for 32->32 channels at 64^3) and is the only
//   implementation that takes 8-channel tensors; oneDNN's own choice on AMX is
//   brgconv:avx512_core_amx_bf16 on channels-last. So channels-last.
// - Anything else (SSE4.1, arm64 builds of oneDNN without ACL): no JIT convolutions at all;
//   plain ncdhw and oneDNN's gemm convolution.
// Channels-last slices of a concat are not contiguous, and oneDNN 2.6's convolutions refuse
// strided channel slices (measured: ref:any, 46 s for one layer), so there a concat is one
// copy by oneDNN's concat primitive; with channel blocks it is free.
#pragma once

#include <string>

#include "inference/norm_kernels.h"

namespace inference {

/// What the layout and precision decisions depend on: properties of the instruction set oneDNN
/// dispatches to (after any ONEDNN_MAX_CPU_ISA cap). Plain data, so the decisions are testable
/// for every ISA on any CPU.
struct IsaTraits {
  std::string onednn_isa = "generic";  ///< cpu_isa_name(): "avx2", "avx512_core", "avx512_core_bf16", ...
  int fp32_lanes = 4;                  ///< floats in one vector register: 8 (AVX2), 16 (AVX-512)
  bool jit_convolution = false;        ///< oneDNN has JIT convolution kernels (x86-64 AVX2 and up)
  bool native_bf16 = false;            ///< bf16 dot products in hardware (AVX512-BF16 or AMX)
  bool amx = false;                    ///< Intel AMX tile unit
};

/// Traits of a oneDNN ISA name as returned by cpu_isa_name() ("sse41", "avx2", "avx2_vnni",
/// "avx512_core", "avx512_core_vnni", "avx512_core_bf16", "avx512_core_amx"); anything else
/// (non-x86 builds: "aarch64", "generic") gets the generic traits.
IsaTraits isa_traits(const std::string& onednn_isa);

/// How every activation tensor of an engine is laid out in memory (N = 1).
enum class ActivationFormat {
  kPlain,         ///< ncdhw
  kBlocked8,      ///< nCdhw8c: channels in blocks of 8 (channels that do not fill a block: padded)
  kBlocked16,     ///< nCdhw16c
  kChannelsLast,  ///< ndhwc
};

/// "plain", "blocked8", "blocked16" or "channels_last".
const char* activation_format_name(ActivationFormat f);

/// The activation format for an engine computing in bf16 (`bf16`) or fp32 on `isa` (see the
/// measurements at the top of this file).
ActivationFormat activation_format(const IsaTraits& isa, bool bf16);

/// Whether inputs of a concat in this format can be channel slices of one buffer (free
/// concat): true for plain and blocked formats when every input fills whole blocks.
bool concat_can_be_free(ActivationFormat f);

/// The hand-written kernels' ISA (norm_kernels.h) for this oneDNN ISA.
KernelIsa kernel_isa(const IsaTraits& isa);

/// True when a oneDNN implementation name is a slow fallback for a convolution: the reference
/// kernel ("ref:any") or an im2col + GEMM one ("x64:gemm:jit", "gemm:jit", "gemm:ref").
bool is_slow_convolution(const std::string& impl);

/// The documented exceptions to "no reference or GEMM convolution": empty when a slow
/// implementation of `kind` ("conv" or "deconv") is an error on this ISA, else the reason it is
/// accepted. `kernel_equals_stride`: a deconvolution with kernel == stride and no padding
/// (nnU-Net's upsampling), which the engine runs as a 1x1 convolution on AVX2.
std::string slow_convolution_exception(const IsaTraits& isa, const std::string& kind, bool kernel_equals_stride);

/// Mixed precision of a bf16 engine (like TensorRT's): which layers keep fp32.
struct Bf16Policy {
  /// The convolutions reading the network input compute in fp32 (input, weights and output);
  /// their output is rounded to bf16 after the norm.
  bool first_conv_fp32 = true;
  /// The convolution producing the network output (the segmentation head) writes fp32 logits.
  bool head_fp32_output = true;
  /// Convolutions followed by an instance norm write fp32, and the norm (statistics and
  /// normalization in fp32) writes the bf16 tensor: rounding before the mean subtraction would
  /// turn a rounding error relative to |x| into one relative to |x - mean|.
  bool norm_input_fp32 = true;
};

}  // namespace inference
