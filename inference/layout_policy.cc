#include "inference/layout_policy.h"

namespace inference {

IsaTraits isa_traits(const std::string& onednn_isa) {
  IsaTraits t;
  t.onednn_isa = onednn_isa;
  const bool avx512 = onednn_isa.rfind("avx512", 0) == 0;
  const bool avx2 = onednn_isa.rfind("avx2", 0) == 0;
  if (avx512) {
    t.fp32_lanes = 16;
    t.jit_convolution = true;
    t.native_bf16 = onednn_isa == "avx512_core_bf16" || onednn_isa == "avx512_core_amx";
    t.amx = onednn_isa == "avx512_core_amx";
  } else if (avx2) {
    t.fp32_lanes = 8;
    t.jit_convolution = true;
  }
  return t;
}

const char* activation_format_name(ActivationFormat f) {
  switch (f) {
    case ActivationFormat::kPlain: return "plain";
    case ActivationFormat::kBlocked8: return "blocked8";
    case ActivationFormat::kBlocked16: return "blocked16";
    case ActivationFormat::kChannelsLast: return "channels_last";
  }
  return "plain";
}

ActivationFormat activation_format(const IsaTraits& isa, bool bf16) {
  if (!isa.jit_convolution) return ActivationFormat::kPlain;
  if (bf16 || isa.fp32_lanes >= 16) return ActivationFormat::kChannelsLast;
  return ActivationFormat::kBlocked8;
}

bool concat_can_be_free(ActivationFormat f) { return f != ActivationFormat::kChannelsLast; }

KernelIsa kernel_isa(const IsaTraits& isa) {
  if (isa.fp32_lanes >= 16) return best_kernel_isa(KernelIsa::kAvx512);
  if (isa.fp32_lanes >= 8) return best_kernel_isa(KernelIsa::kAvx2);
  return KernelIsa::kGeneric;
}

bool is_slow_convolution(const std::string& impl) {
  return impl.rfind("ref", 0) == 0 || impl.find("gemm") != std::string::npos;
}

std::string slow_convolution_exception(const IsaTraits& isa, const std::string& kind, bool kernel_equals_stride) {
  if (!isa.jit_convolution) {
    return "oneDNN has no JIT convolutions for ISA " + isa.onednn_isa + ": its GEMM convolution is the fastest there";
  }
  if (kind == "deconv" && isa.fp32_lanes == 8 && !kernel_equals_stride) {
    return "oneDNN 2.6 has no JIT deconvolution on AVX2; only kernel == stride deconvolutions run as 1x1 "
           "convolutions";
  }
  return "";
}

}  // namespace inference
