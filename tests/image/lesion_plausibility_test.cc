// The lesion plausibility check: ADC unit recognition and restricted diffusion per lesion.
#include "image/lesion_plausibility.h"

#include <gtest/gtest.h>

namespace image {
namespace {

base::Result<std::vector<LesionAssessment>> assess(const VolumeU8& mask, const VolumeF& adc,
                                                   const PlausibilityOptions& options = {}) {
  SB_ASSIGN_OR_RETURN(Components cc, label_components(mask));
  return assess_lesions(cc, adc, options);
}

Grid grid_2mm(int64_t n) {
  Grid g;
  g.dims = {n, n, n};
  g.affine.diagonal() << 2.0, 2.0, 2.0, 1.0;
  return g;
}

/// A "brain": tissue ADC 800, a CSF ball of 3000, background 0 at the border.
VolumeF brain(int64_t n) {
  VolumeF adc(grid_2mm(n), 0.0f);
  for (int64_t k = 2; k < n - 2; ++k)
    for (int64_t j = 2; j < n - 2; ++j)
      for (int64_t i = 2; i < n - 2; ++i) adc.at(i, j, k) = 800.0f;
  for (int64_t k = 20; k < 24; ++k)
    for (int64_t j = 20; j < 24; ++j)
      for (int64_t i = 20; i < 24; ++i) adc.at(i, j, k) = 3000.0f;
  return adc;
}

void cube(VolumeU8* mask, VolumeF* adc, int64_t at, int64_t size, float value) {
  for (int64_t k = at; k < at + size; ++k)
    for (int64_t j = at; j < at + size; ++j)
      for (int64_t i = at; i < at + size; ++i) {
        mask->at(i, j, k) = 1;
        if (adc != nullptr) adc->at(i, j, k) = value;
      }
}

TEST(LesionPlausibility, AdcUnitIsRecognisedFromTissueValues) {
  VolumeF adc = brain(16);
  auto u = infer_adc_unit(adc);
  ASSERT_TRUE(u.ok()) << u.status().to_string();
  EXPECT_EQ(*u, AdcUnit::kMicroMm2PerS);
  for (float& v : adc.data) v *= 1e-3f;
  EXPECT_EQ(*infer_adc_unit(adc), AdcUnit::kMilliMm2PerS);
  EXPECT_NEAR(adc_to_micro(adc, AdcUnit::kMilliMm2PerS).at(8, 8, 8), 800.0f, 1e-3);
  for (float& v : adc.data) v *= 1e-3f;
  EXPECT_EQ(*infer_adc_unit(adc), AdcUnit::kMm2PerS);
  EXPECT_NEAR(adc_to_micro(adc, AdcUnit::kMm2PerS).at(8, 8, 8), 800.0f, 1e-2);
  // Not an ADC map: a DWI in arbitrary units, or nothing at all.
  for (float& v : adc.data) v = v > 0 ? 40000.0f : 0.0f;
  auto bad = infer_adc_unit(adc);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("fits no known unit"), std::string::npos);
  EXPECT_FALSE(infer_adc_unit(VolumeF(grid_2mm(4), 0.0f)).ok());
}

TEST(LesionPlausibility, AcuteInfarctIsPlausibleAndShineThroughIsFlagged) {
  VolumeF adc = brain(32);
  VolumeU8 mask(adc.grid, 0);
  cube(&mask, &adc, 5, 4, 450.0f);   // acute: restricted
  cube(&mask, &adc, 12, 3, 1100.0f);  // bright DWI, high ADC: T2 shine-through / chronic
  auto r = assess(mask, adc);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].label, 1);
  EXPECT_EQ((*r)[1].label, 2);
  const LesionAssessment& acute = (*r)[0];
  EXPECT_EQ(acute.voxels, 64);
  EXPECT_NEAR(acute.volume_ml, 64 * 0.008, 1e-9);
  EXPECT_NEAR(acute.median_adc, 450.0, 1e-6);
  EXPECT_NEAR(acute.core_volume_ml, acute.volume_ml, 1e-9);
  EXPECT_NEAR(acute.surrounding_median_adc, 800.0, 1e-6);  // tissue only: no CSF, no background
  EXPECT_NEAR(acute.adc_ratio, 450.0 / 800.0, 1e-6);
  EXPECT_TRUE(acute.plausible);
  EXPECT_TRUE(acute.reason.empty());
  EXPECT_NEAR(acute.centroid_lps_mm[0], 2.0 * 6.5, 1e-9);
  const LesionAssessment& chronic = (*r)[1];
  EXPECT_FALSE(chronic.plausible);
  EXPECT_EQ(chronic.core_volume_ml, 0.0);
  EXPECT_NE(chronic.reason.find("no restricted diffusion"), std::string::npos) << chronic.reason;
  EXPECT_NE(chronic.reason.find("1100"), std::string::npos) << chronic.reason;
}

TEST(LesionPlausibility, AdcBelowAnyTissueIsFlaggedAsFatOrNoise) {
  // Scalp or orbital fat (ADC ~150) is "restricted" by the 620 threshold but below every brain
  // tissue and every infarct; a deep infarct at 300 stays plausible.
  VolumeF adc = brain(32);
  VolumeU8 mask(adc.grid, 0);
  cube(&mask, &adc, 5, 4, 150.0f);
  cube(&mask, &adc, 14, 3, 300.0f);
  auto r = assess(mask, adc);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  ASSERT_EQ(r->size(), 2u);
  const LesionAssessment& fat = (*r)[0];
  EXPECT_FALSE(fat.plausible);
  EXPECT_NEAR(fat.core_volume_ml, fat.volume_ml, 1e-9);
  EXPECT_NE(fat.reason.find("below any brain tissue"), std::string::npos) << fat.reason;
  EXPECT_NE(fat.reason.find("150"), std::string::npos) << fat.reason;
  EXPECT_TRUE((*r)[1].plausible) << (*r)[1].reason;
  PlausibilityOptions strict;
  strict.min_tissue_adc = 350.0;
  auto s = assess(mask, adc, strict);
  ASSERT_TRUE(s.ok());
  EXPECT_FALSE((*s)[1].plausible);
}

TEST(LesionPlausibility, PartlyRestrictedLesionCountsItsCore) {
  VolumeF adc = brain(32);
  VolumeU8 mask(adc.grid, 0);
  cube(&mask, &adc, 5, 5, 900.0f);  // 125 voxels, median 900
  for (int64_t i = 5; i < 10; ++i)
    for (int64_t j = 5; j < 10; ++j)
      for (int64_t k = 5; k < 7; ++k) adc.at(i, j, k) = 500.0f;  // 50 voxels (40 %) restricted
  auto r = assess(mask, adc);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 1u);
  EXPECT_NEAR((*r)[0].core_volume_ml, 50 * 0.008, 1e-9);
  EXPECT_TRUE((*r)[0].plausible);
  PlausibilityOptions strict;
  strict.min_core_fraction = 0.5;
  EXPECT_FALSE((*assess(mask, adc, strict))[0].plausible);
}

TEST(LesionPlausibility, LesionRestrictedRelativeToItsTissueIsPlausible) {
  // Tissue at 800: an infarct at 630 lies above the absolute 620 threshold but at 0.79 of the
  // tissue around it (restricted); a bright region at 700 (0.875) is not restricted either way.
  VolumeF adc = brain(32);
  VolumeU8 mask(adc.grid, 0);
  cube(&mask, &adc, 5, 4, 630.0f);
  cube(&mask, &adc, 13, 4, 700.0f);
  auto r = assess(mask, adc);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  ASSERT_EQ(r->size(), 2u);
  const LesionAssessment& relative = (*r)[0];
  EXPECT_EQ(relative.core_volume_ml, 0.0);
  EXPECT_NEAR(relative.adc_ratio, 630.0 / 800.0, 1e-6);
  EXPECT_TRUE(relative.plausible) << relative.reason;
  const LesionAssessment& mild = (*r)[1];
  EXPECT_NEAR(mild.adc_ratio, 700.0 / 800.0, 1e-6);
  EXPECT_FALSE(mild.plausible);
  EXPECT_NE(mild.reason.find("0.88 of the tissue around it"), std::string::npos) << mild.reason;
  // The relative test can be turned off; and without normal tissue around it (a lesion in
  // CSF-only surroundings) only the absolute tests apply.
  PlausibilityOptions absolute_only;
  absolute_only.max_adc_ratio = 0.0;
  const LesionAssessment off = (*assess(mask, adc, absolute_only))[0];
  EXPECT_FALSE(off.plausible);
  EXPECT_EQ(off.reason.find("tissue around it"), std::string::npos) << off.reason;
  VolumeF csf(adc.grid, 3000.0f);
  VolumeU8 one(adc.grid, 0);
  cube(&one, &csf, 5, 4, 630.0f);
  auto c = assess(one, csf);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)[0].adc_ratio, 0.0);
  EXPECT_FALSE((*c)[0].plausible);
  EXPECT_NE((*c)[0].reason.find("no normal tissue around it"), std::string::npos) << (*c)[0].reason;
}

TEST(LesionPlausibility, CoreShareMustStandOutFromTheNoiseOfItsTissue) {
  // Noisy tissue at 720 where a quarter of the voxels read 560 (as at a trace SNR of 5): a
  // region with the same look has 25 % "core" but is not restricted; one with half its voxels
  // at 560 stands out from its surroundings and is.
  VolumeF adc = brain(32);
  for (int64_t k = 2; k < 30; ++k)
    for (int64_t j = 2; j < 30; ++j)
      for (int64_t i = 2; i < 30; ++i) {
        if (adc.at(i, j, k) != 800.0f) continue;  // keep the CSF ball
        adc.at(i, j, k) = (i + j + k) % 4 == 0 ? 560.0f : 720.0f;
      }
  VolumeU8 mask(adc.grid, 0);
  cube(&mask, nullptr, 5, 4, 0.0f);  // like its tissue
  cube(&mask, nullptr, 12, 4, 0.0f);
  for (int64_t k = 12; k < 16; ++k)
    for (int64_t j = 12; j < 16; ++j)
      for (int64_t i = 12; i < 16; ++i) adc.at(i, j, k) = (i + j + k) % 2 == 0 ? 560.0f : 720.0f;
  auto r = assess(mask, adc);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  ASSERT_EQ(r->size(), 2u);
  const LesionAssessment& noise = (*r)[0];
  EXPECT_NEAR(noise.core_volume_ml / noise.volume_ml, 0.25, 0.02);
  EXPECT_NEAR(noise.surrounding_core_fraction, 0.25, 0.03);
  EXPECT_FALSE(noise.plausible);
  EXPECT_NE(noise.reason.find("of the normal-appearing shell is too"), std::string::npos) << noise.reason;
  const LesionAssessment& core = (*r)[1];
  EXPECT_NEAR(core.core_volume_ml / core.volume_ml, 0.5, 1e-9);
  EXPECT_TRUE(core.plausible) << core.reason;
  // In clean tissue the shell has no core and the absolute share decides
  // (PartlyRestrictedLesionCountsItsCore).
}

TEST(LesionPlausibility, EmptyMaskAndMismatchedGrids) {
  VolumeF adc = brain(8);
  auto none = assess(VolumeU8(adc.grid, 0), adc);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  VolumeU8 other(grid_2mm(9), 0);
  EXPECT_FALSE(assess(other, adc).ok());
}

}  // namespace
}  // namespace image
