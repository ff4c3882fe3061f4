// Tests of image/adc_map: the mono-exponential ADC from a b=0 and a b=1000 image, its unit
// (10^-6 mm^2/s) and its guards (background, zero and negative signal, clamping).
#include "image/adc_map.h"

#include <gtest/gtest.h>

#include <cmath>

namespace image {
namespace {

VolumeF volume_of(std::vector<float> values) {
  Grid g;
  g.dims = {static_cast<int64_t>(values.size()), 1, 1};
  VolumeF v(g);
  v.data = std::move(values);
  return v;
}

TEST(AdcMap, RecoversTheAdcOfAMonoExponentialSignalInMicroSquareMillimetresPerSecond) {
  // S(b) = S0 exp(-b ADC): ADC 0.0008 mm^2/s (grey matter) and 0.0003 mm^2/s (acute lesion).
  const float s0 = 1000.0f;
  VolumeF low = volume_of({s0, s0, s0});
  VolumeF high = volume_of({s0 * std::exp(-1000.0f * 0.0008f), s0 * std::exp(-1000.0f * 0.0003f),
                            s0 * std::exp(-1000.0f * 0.003f)});
  auto adc = derive_adc(low, high, 1000.0);
  ASSERT_TRUE(adc.ok()) << adc.status().to_string();
  EXPECT_NEAR(adc->at(0, 0, 0), 800.0f, 0.5f);
  EXPECT_NEAR(adc->at(1, 0, 0), 300.0f, 0.5f);
  EXPECT_NEAR(adc->at(2, 0, 0), 3000.0f, 0.5f);
}

TEST(AdcMap, UsesTheLowBValueWhenItIsNotZero) {
  // b 50 and 1000: ADC = ln(S50/S1000) / 950.
  VolumeF low = volume_of({1000.0f * std::exp(-50.0f * 0.001f)});
  VolumeF high = volume_of({1000.0f * std::exp(-1000.0f * 0.001f)});
  AdcOptions options;
  options.b_low = 50.0;
  options.background_fraction = 0.0;
  auto adc = derive_adc(low, high, 1000.0, options);
  ASSERT_TRUE(adc.ok());
  EXPECT_NEAR(adc->at(0, 0, 0), 1000.0f, 0.5f);
}

TEST(AdcMap, GuardsBackgroundZerosAndNegativeValues) {
  // 0: background (S0 far below the 99th percentile); 1: S0 = 0; 2: S0 < 0; 3: S1000 = 0 in
  // tissue; 4: S1000 > S0 (negative ADC); 5: normal tissue; 6: NaN.
  VolumeF low = volume_of({10.0f, 0.0f, -5.0f, 1000.0f, 1000.0f, 1000.0f, std::nanf("")});
  VolumeF high = volume_of({1.0f, 100.0f, 100.0f, 0.0f, 1200.0f, 449.3290f, 100.0f});
  auto adc = derive_adc(low, high, 1000.0);
  ASSERT_TRUE(adc.ok());
  EXPECT_EQ(adc->data[0], 0.0f);
  EXPECT_EQ(adc->data[1], 0.0f);
  EXPECT_EQ(adc->data[2], 0.0f);
  EXPECT_EQ(adc->data[3], 4000.0f);
  EXPECT_EQ(adc->data[4], 0.0f);
  EXPECT_NEAR(adc->data[5], 800.0f, 0.5f);
  EXPECT_EQ(adc->data[6], 0.0f);
  for (float v : adc->data) EXPECT_TRUE(std::isfinite(v));
}

TEST(AdcMap, RefusesDifferentGridsAndANonIncreasingBValue) {
  VolumeF a = volume_of({1, 2, 3});
  VolumeF b = volume_of({1, 2});
  EXPECT_EQ(derive_adc(a, b, 1000.0).status().code(), base::Code::kInvalidArgument);
  EXPECT_EQ(derive_adc(a, a, 0.0).status().code(), base::Code::kInvalidArgument);
}

TEST(AdcMap, StatsGiveAMedianForegroundAdcNearZeroWithoutDiffusionWeighting) {
  // b=0 images copied under a b=1000 tag: no attenuation anywhere, median ADC 0.
  std::vector<float> s0(100);
  for (size_t i = 0; i < s0.size(); ++i) s0[i] = 500.0f + static_cast<float>(i);
  VolumeF low = volume_of(s0);
  AdcStats same;
  ASSERT_TRUE(derive_adc(low, low, 1000.0, {}, &same).ok());
  EXPECT_NEAR(same.median_foreground_adc, 0.0, 1e-6);
  // Real tissue: 60 % at 800, 40 % at 3000 (CSF): the median is the tissue's.
  std::vector<float> s1(s0.size());
  for (size_t i = 0; i < s0.size(); ++i) s1[i] = s0[i] * std::exp(-1000.0f * (i < 60 ? 0.0008f : 0.003f));
  AdcStats real;
  ASSERT_TRUE(derive_adc(low, volume_of(s1), 1000.0, {}, &real).ok());
  EXPECT_NEAR(real.median_foreground_adc, 800.0, 1.0);
  // Not clamped: S_high above S_low everywhere gives a negative median, the map gives 0.
  AdcStats rising;
  std::vector<float> s2(s0.size());
  for (size_t i = 0; i < s0.size(); ++i) s2[i] = s0[i] * std::exp(0.2f);
  auto map = derive_adc(low, volume_of(s2), 1000.0, {}, &rising);
  ASSERT_TRUE(map.ok());
  EXPECT_NEAR(rising.median_foreground_adc, -200.0, 0.5);
  EXPECT_EQ(map->at(0, 0, 0), 0.0f);
  // No foreground (all background) gives 0.
  AdcStats none;
  none.median_foreground_adc = 123.0;
  ASSERT_TRUE(derive_adc(volume_of({0, 0, 0}), volume_of({0, 0, 0}), 1000.0, {}, &none).ok());
  EXPECT_EQ(none.median_foreground_adc, 0.0);
}

}  // namespace
}  // namespace image
