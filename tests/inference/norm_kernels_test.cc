// The hand-written instance norm + activation kernel against a float64 reference, for every
// compiled copy this CPU runs (generic, AVX2, AVX-512), every layout the engine uses (plain,
// padded and full channel blocks, channels-last) and every storage pair (fp32, bf16).
#include "inference/norm_kernels.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace inference {
namespace {

uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
float from_bf16(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

struct Case {
  int64_t channels, spatial;
  int block;
  NormActivation act;
};

std::vector<KernelIsa> available_isas() {
  std::vector<KernelIsa> out = {KernelIsa::kGeneric};
  if (best_kernel_isa(KernelIsa::kAvx2) == KernelIsa::kAvx2) out.push_back(KernelIsa::kAvx2);
  if (best_kernel_isa(KernelIsa::kAvx512) == KernelIsa::kAvx512) out.push_back(KernelIsa::kAvx512);
  return out;
}

/// Runs one case and returns max |got - want| / (1 + |want|) over the real channels; checks
/// that the padding channels come out zero.
double run_case(const Case& c, NormStorage src_st, NormStorage dst_st, KernelIsa isa, bool in_place) {
  const int64_t padded = (c.channels + c.block - 1) / c.block * c.block;
  const size_t n = static_cast<size_t>(padded * c.spatial);
  std::mt19937 rng(static_cast<unsigned>(c.channels * 131 + c.spatial + c.block));
  std::normal_distribution<float> noise(0.0f, 1.0f);
  std::vector<float> x(n, 0.0f), scale(padded, 0.0f), shift(padded, 0.0f);
  auto at = [&](int64_t ch, int64_t s) { return static_cast<size_t>((ch / c.block) * c.spatial * c.block + s * c.block + ch % c.block); };
  for (int64_t ch = 0; ch < c.channels; ++ch) {
    scale[ch] = 0.5f + 0.1f * static_cast<float>(ch % 7);
    shift[ch] = -0.3f + 0.05f * static_cast<float>(ch % 5);
    const float offset = 40.0f * static_cast<float>(ch % 3);  // a large mean: the accuracy case
    for (int64_t s = 0; s < c.spatial; ++s) x[at(ch, s)] = offset + noise(rng) * (1.0f + 0.2f * static_cast<float>(ch % 4));
  }
  for (int64_t ch = c.channels; ch < padded; ++ch) {
    for (int64_t s = 0; s < c.spatial; ++s) x[at(ch, s)] = 123.0f;  // garbage in the padding
  }
  // The reference from what the kernel reads (bf16 source: the rounded values).
  std::vector<float> src_f(x);
  std::vector<uint16_t> src_h(n);
  for (size_t i = 0; i < n; ++i) {
    src_h[i] = to_bf16(x[i]);
    if (src_st == NormStorage::kBf16) src_f[i] = from_bf16(src_h[i]);
  }
  std::vector<float> dst_f(n, -1.0f);
  std::vector<uint16_t> dst_h(n, 0xFFFF);
  const void* src = src_st == NormStorage::kBf16 ? static_cast<const void*>(src_h.data()) : src_f.data();
  void* dst = dst_st == NormStorage::kBf16 ? static_cast<void*>(dst_h.data()) : dst_f.data();
  if (in_place) dst = const_cast<void*>(src);
  const std::vector<float> ref_src(src_f);  // the input, before an in-place run overwrites it
  instance_norm_activation(src, src_st, dst, dst_st, c.channels, c.spatial, c.block, scale.data(), shift.data(), 1e-5f,
                           c.act, 0.01f, isa);
  auto got = [&](size_t i) {
    if (dst_st == NormStorage::kBf16) return from_bf16(static_cast<const uint16_t*>(dst)[i]);
    return static_cast<const float*>(dst)[i];
  };
  double worst = 0.0;
  for (int64_t ch = 0; ch < c.channels; ++ch) {
    double mean = 0.0, var = 0.0;
    for (int64_t s = 0; s < c.spatial; ++s) mean += ref_src[at(ch, s)];
    mean /= static_cast<double>(c.spatial);
    for (int64_t s = 0; s < c.spatial; ++s) var += (ref_src[at(ch, s)] - mean) * (ref_src[at(ch, s)] - mean);
    var /= static_cast<double>(c.spatial);
    for (int64_t s = 0; s < c.spatial; ++s) {
      double y = (ref_src[at(ch, s)] - mean) / std::sqrt(var + 1e-5) * scale[ch] + shift[ch];
      if (c.act == NormActivation::kRelu) y = std::max(y, 0.0);
      if (c.act == NormActivation::kLeakyRelu) y = y >= 0 ? y : 0.01 * y;
      if (c.act == NormActivation::kSigmoid) y = 1.0 / (1.0 + std::exp(-y));
      worst = std::max(worst, std::fabs(got(at(ch, s)) - y) / (1.0 + std::fabs(y)));
    }
  }
  for (int64_t ch = c.channels; ch < padded; ++ch) {
    for (int64_t s = 0; s < c.spatial; ++s) EXPECT_EQ(got(at(ch, s)), 0.0f) << "padding channel " << ch;
  }
  return worst;
}

TEST(NormKernels, EveryCompiledCopyLayoutAndStorageMatchesTheFloat64Reference) {
  const std::vector<Case> cases = {
      {8, 1000, 1, NormActivation::kLeakyRelu},    // plain NCDHW
      {16, 777, 8, NormActivation::kLeakyRelu},    // nCdhw8c
      {5, 513, 8, NormActivation::kRelu},          // nCdhw8c with 3 padding channels
      {32, 4097, 16, NormActivation::kLeakyRelu},  // nCdhw16c, a partial last chunk
      {2, 300, 16, NormActivation::kNone},         // 2 channels padded to 16
      {48, 1500, 48, NormActivation::kLeakyRelu},  // channels-last, 16-lane groups
      {24, 999, 24, NormActivation::kSigmoid},     // channels-last, 8-lane groups
      {6, 640, 6, NormActivation::kLeakyRelu},     // channels-last, scalar lanes
  };
  for (KernelIsa isa : available_isas()) {
    for (const Case& c : cases) {
      const std::string what = std::string(kernel_isa_name(isa)) + " C=" + std::to_string(c.channels) +
                               " block=" + std::to_string(c.block);
      EXPECT_LT(run_case(c, NormStorage::kF32, NormStorage::kF32, isa, true), 1e-4) << what << " f32 in place";
      EXPECT_LT(run_case(c, NormStorage::kF32, NormStorage::kF32, isa, false), 1e-4) << what << " f32";
      // bf16 output: one rounding (8 significant bits) relative to the value.
      EXPECT_LT(run_case(c, NormStorage::kF32, NormStorage::kBf16, isa, false), 1.0 / 256) << what << " f32->bf16";
      EXPECT_LT(run_case(c, NormStorage::kBf16, NormStorage::kBf16, isa, true), 1.0 / 256) << what << " bf16";
    }
  }
  std::printf("[ info ] kernel copies checked on this CPU:");
  for (KernelIsa isa : available_isas()) std::printf(" %s", kernel_isa_name(isa));
  std::printf("\n");
}

TEST(NormKernels, BestKernelIsaRespectsTheCap) {
  EXPECT_EQ(best_kernel_isa(KernelIsa::kGeneric), KernelIsa::kGeneric);
  EXPECT_NE(best_kernel_isa(KernelIsa::kAvx2), KernelIsa::kAvx512);
#if !defined(__x86_64__)
  EXPECT_EQ(best_kernel_isa(), KernelIsa::kGeneric);
#endif
}

}  // namespace
}  // namespace inference
