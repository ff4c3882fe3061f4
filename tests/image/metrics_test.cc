// Tests of image/metrics: hand-computed Dice/IoU/precision/recall/volumes on tiny masks, the
// empty-mask conventions, lesion counts and the grid check.
#include "image/metrics.h"

#include <gtest/gtest.h>

namespace image {
namespace {

/// ni x nj x nk mask with voxels of 2 x 2 x 2.5 mm = 10 mm^3 = 0.01 mL.
VolumeU8 mask(int64_t ni, int64_t nj, int64_t nk, std::vector<uint8_t> values) {
  Grid g;
  g.dims = {ni, nj, nk};
  g.affine = Eigen::Matrix4d::Identity();
  g.affine(0, 0) = 2.0;
  g.affine(1, 1) = 2.0;
  g.affine(2, 2) = 2.5;
  VolumeU8 v(g, 0);
  v.data = std::move(values);
  return v;
}

TEST(Metrics, HandComputedOverlap) {
  const VolumeU8 pred = mask(5, 1, 1, {1, 1, 1, 0, 0});
  const VolumeU8 truth = mask(5, 1, 1, {0, 1, 1, 1, 0});
  auto m = compute_metrics(pred, truth);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->tp, 2);
  EXPECT_EQ(m->fp, 1);
  EXPECT_EQ(m->fn, 1);
  EXPECT_EQ(m->tn, 1);
  EXPECT_DOUBLE_EQ(m->dice, 4.0 / 6.0);
  EXPECT_DOUBLE_EQ(m->iou, 2.0 / 4.0);
  EXPECT_DOUBLE_EQ(m->precision, 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(m->recall, 2.0 / 3.0);
  EXPECT_NEAR(m->pred_volume_ml, 0.03, 1e-12);
  EXPECT_NEAR(m->truth_volume_ml, 0.03, 1e-12);
  EXPECT_NEAR(m->abs_volume_diff_ml, 0.0, 1e-12);
  EXPECT_EQ(m->pred_lesions, 1);
  EXPECT_EQ(m->truth_lesions, 1);
}

TEST(Metrics, CountsLesionsAndVolumeDifference) {
  const VolumeU8 pred = mask(7, 1, 1, {1, 0, 1, 0, 1, 1, 0});   // 3 lesions, 4 voxels
  const VolumeU8 truth = mask(7, 1, 1, {1, 1, 0, 0, 0, 0, 0});  // 1 lesion, 2 voxels
  auto m = compute_metrics(pred, truth);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->pred_lesions, 3);
  EXPECT_EQ(m->truth_lesions, 1);
  EXPECT_NEAR(m->abs_volume_diff_ml, 0.02, 1e-12);
  EXPECT_DOUBLE_EQ(m->dice, 2.0 / 6.0);
}

TEST(Metrics, EmptyVersusEmptyIsPerfectAgreement) {
  auto m = compute_metrics(mask(3, 1, 1, {0, 0, 0}), mask(3, 1, 1, {0, 0, 0}));
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->dice, 1.0);
  EXPECT_EQ(m->iou, 1.0);
  EXPECT_EQ(m->precision, 1.0);
  EXPECT_EQ(m->recall, 1.0);
  EXPECT_EQ(m->tn, 3);
}

TEST(Metrics, OneSidedEmptyMasksFollowTheDocumentedConventions) {
  auto missed = compute_metrics(mask(3, 1, 1, {0, 0, 0}), mask(3, 1, 1, {0, 1, 0}));
  ASSERT_TRUE(missed.ok());
  EXPECT_EQ(missed->dice, 0.0);
  EXPECT_EQ(missed->recall, 0.0);
  EXPECT_EQ(missed->precision, 1.0);
  auto false_alarm = compute_metrics(mask(3, 1, 1, {1, 0, 0}), mask(3, 1, 1, {0, 0, 0}));
  ASSERT_TRUE(false_alarm.ok());
  EXPECT_EQ(false_alarm->dice, 0.0);
  EXPECT_EQ(false_alarm->precision, 0.0);
  EXPECT_EQ(false_alarm->recall, 1.0);
}

TEST(Metrics, DifferentGridsAreRefused) {
  VolumeU8 truth = mask(3, 1, 1, {0, 1, 0});
  auto dims = compute_metrics(mask(3, 1, 1, {0, 1, 0}), mask(1, 3, 1, {0, 1, 0}));
  ASSERT_EQ(dims.status().code(), base::Code::kInvalidArgument);
  EXPECT_NE(dims.status().message().find("different grids"), std::string::npos);
  VolumeU8 shifted = truth;
  shifted.grid.affine(0, 3) = 1.0;
  EXPECT_EQ(compute_metrics(shifted, truth).status().code(), base::Code::kInvalidArgument);
}

TEST(Metrics, JsonHasEveryField) {
  auto m = compute_metrics(mask(2, 1, 1, {1, 0}), mask(2, 1, 1, {1, 0}));
  ASSERT_TRUE(m.ok());
  const nlohmann::json j = to_json(*m);
  for (const char* key : {"dice", "iou", "precision", "recall", "pred_volume_ml", "truth_volume_ml",
                          "abs_volume_diff_ml", "pred_lesions", "truth_lesions", "tp", "fp", "fn", "tn"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j["dice"].get<double>(), 1.0);
  EXPECT_EQ(j["tp"].get<int64_t>(), 1);
}

TEST(Metrics, BinarizeThresholdsAboveHalf) {
  Grid g;
  g.dims = {4, 1, 1};
  VolumeF v(g);
  v.data = {0.2f, 0.5f, 0.51f, 3.f};
  EXPECT_EQ(binarize(v).data, (std::vector<uint8_t>{0, 0, 1, 1}));
}

}  // namespace
}  // namespace image
