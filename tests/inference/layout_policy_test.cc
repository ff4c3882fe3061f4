// The engine's layout and precision decisions for every ISA it may meet, whatever this
// machine's CPU is: they are pure functions of IsaTraits (inference/layout_policy.h).
#include "inference/layout_policy.h"

#include <gtest/gtest.h>

namespace inference {
namespace {

TEST(LayoutPolicy, TraitsOfEveryX86IsaAndOfNonX86Builds) {
  const IsaTraits avx2 = isa_traits("avx2");
  EXPECT_EQ(avx2.fp32_lanes, 8);
  EXPECT_TRUE(avx2.jit_convolution);
  EXPECT_FALSE(avx2.native_bf16);
  EXPECT_EQ(isa_traits("avx2_vnni").fp32_lanes, 8);
  const IsaTraits core = isa_traits("avx512_core");
  EXPECT_EQ(core.fp32_lanes, 16);
  EXPECT_FALSE(core.native_bf16);
  EXPECT_FALSE(isa_traits("avx512_core_vnni").native_bf16);
  const IsaTraits bf16 = isa_traits("avx512_core_bf16");
  EXPECT_EQ(bf16.fp32_lanes, 16);
  EXPECT_TRUE(bf16.native_bf16);
  EXPECT_FALSE(bf16.amx);
  const IsaTraits amx = isa_traits("avx512_core_amx");
  EXPECT_TRUE(amx.native_bf16);
  EXPECT_TRUE(amx.amx);
  for (const char* other : {"sse41", "avx", "generic", "aarch64", "isa_0"}) {
    const IsaTraits t = isa_traits(other);
    EXPECT_FALSE(t.jit_convolution) << other;
    EXPECT_FALSE(t.native_bf16) << other;
    EXPECT_EQ(t.onednn_isa, other);
  }
}

TEST(LayoutPolicy, ActivationFormatPerIsaAndPrecision) {
  EXPECT_EQ(activation_format(isa_traits("avx2"), false), ActivationFormat::kBlocked8);
  EXPECT_EQ(activation_format(isa_traits("avx512_core"), false), ActivationFormat::kChannelsLast);
  EXPECT_EQ(activation_format(isa_traits("avx512_core_bf16"), false), ActivationFormat::kChannelsLast);
  EXPECT_EQ(activation_format(isa_traits("avx512_core_bf16"), true), ActivationFormat::kChannelsLast);
  EXPECT_EQ(activation_format(isa_traits("avx512_core_amx"), false), ActivationFormat::kChannelsLast);
  EXPECT_EQ(activation_format(isa_traits("avx512_core_amx"), true), ActivationFormat::kChannelsLast);
  EXPECT_EQ(activation_format(isa_traits("sse41"), false), ActivationFormat::kPlain);
  EXPECT_EQ(activation_format(isa_traits("generic"), false), ActivationFormat::kPlain);
}

TEST(LayoutPolicy, FreeConcatOnlyWhereChannelSlicesAreContiguous) {
  EXPECT_TRUE(concat_can_be_free(ActivationFormat::kPlain));
  EXPECT_TRUE(concat_can_be_free(ActivationFormat::kBlocked8));
  EXPECT_TRUE(concat_can_be_free(ActivationFormat::kBlocked16));
  EXPECT_FALSE(concat_can_be_free(ActivationFormat::kChannelsLast));
  EXPECT_STREQ(activation_format_name(ActivationFormat::kChannelsLast), "channels_last");
}

TEST(LayoutPolicy, SlowConvolutionsAreRecognisedAndOnlyDocumentedExceptionsAllowThem) {
  EXPECT_TRUE(is_slow_convolution("ref:any"));
  EXPECT_TRUE(is_slow_convolution("x64:gemm:jit"));
  EXPECT_TRUE(is_slow_convolution("gemm:jit"));
  EXPECT_FALSE(is_slow_convolution("jit:avx2"));
  EXPECT_FALSE(is_slow_convolution("brgconv:avx512_core_bf16"));
  EXPECT_FALSE(is_slow_convolution("brgconv_1x1:avx512_core_amx_bf16"));
  EXPECT_FALSE(is_slow_convolution("jit_1x1:avx2"));
  // JIT ISAs: no exception for convolutions; AVX2 only for deconvolutions that are not
  // kernel == stride (those run as 1x1 convolutions).
  for (const char* isa : {"avx2", "avx512_core", "avx512_core_bf16", "avx512_core_amx"}) {
    EXPECT_EQ(slow_convolution_exception(isa_traits(isa), "conv", false), "") << isa;
    EXPECT_EQ(slow_convolution_exception(isa_traits(isa), "deconv", true), "") << isa;
  }
  EXPECT_NE(slow_convolution_exception(isa_traits("avx2"), "deconv", false), "");
  EXPECT_EQ(slow_convolution_exception(isa_traits("avx512_core"), "deconv", false), "");
  // Without JIT kernels GEMM is the best oneDNN has: allowed, with the reason.
  EXPECT_NE(slow_convolution_exception(isa_traits("sse41"), "conv", false).find("no JIT"), std::string::npos);
}

TEST(LayoutPolicy, HandWrittenKernelsNeverExceedTheOneDnnIsaNorTheCpu) {
  EXPECT_EQ(kernel_isa(isa_traits("generic")), KernelIsa::kGeneric);
  const KernelIsa for_avx2 = kernel_isa(isa_traits("avx2"));
  EXPECT_NE(for_avx2, KernelIsa::kAvx512);  // capped at AVX2 even on an AVX-512 CPU
  EXPECT_EQ(for_avx2, best_kernel_isa(KernelIsa::kAvx2));
  EXPECT_EQ(kernel_isa(isa_traits("avx512_core")), best_kernel_isa(KernelIsa::kAvx512));
}

TEST(LayoutPolicy, Bf16PolicyDefaultsKeepTheMeasuredLayersInFp32) {
  const Bf16Policy p;
  EXPECT_TRUE(p.first_conv_fp32);
  EXPECT_TRUE(p.head_fp32_output);
  EXPECT_TRUE(p.norm_input_fp32);
}

}  // namespace
}  // namespace inference
