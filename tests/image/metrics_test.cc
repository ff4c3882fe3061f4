// Tests of image/metrics: hand-computed Dice/IoU/precision/recall/volumes on tiny masks, the
// empty-mask conventions, lesion counts and the grid check.
#include "image/metrics.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

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

TEST(Metrics, Hd95OfTwoSingleVoxelsIsTheirDistanceInMm) {
  auto m = compute_metrics(mask(5, 1, 1, {1, 0, 0, 0, 0}), mask(5, 1, 1, {0, 0, 0, 1, 0}));
  ASSERT_TRUE(m.ok());
  ASSERT_TRUE(m->hd95_mm.has_value());
  EXPECT_DOUBLE_EQ(*m->hd95_mm, 6.0);  // 3 voxels of 2 mm
  auto same = compute_metrics(mask(3, 1, 1, {0, 1, 1}), mask(3, 1, 1, {0, 1, 1}));
  ASSERT_TRUE(same.ok());
  EXPECT_DOUBLE_EQ(*same->hd95_mm, 0.0);
}

TEST(Metrics, Hd95IsUndefinedWhenAMaskIsEmpty) {
  auto m = compute_metrics(mask(3, 1, 1, {0, 0, 0}), mask(3, 1, 1, {0, 1, 0}));
  ASSERT_TRUE(m.ok());
  EXPECT_FALSE(m->hd95_mm.has_value());
  EXPECT_TRUE(to_json(*m)["hd95_mm"].is_null());
}

/// Brute force: distances between all surface voxel pairs, MedPy's definition.
double brute_hd95(const VolumeU8& a, const VolumeU8& b) {
  const auto surface = [](const VolumeU8& m) {
    std::vector<Eigen::Vector3d> out;
    for (int64_t k = 0; k < m.nk(); ++k)
      for (int64_t j = 0; j < m.nj(); ++j)
        for (int64_t i = 0; i < m.ni(); ++i) {
          if (!m.at(i, j, k)) continue;
          const auto fg = [&](int64_t x, int64_t y, int64_t z) {
            return x >= 0 && y >= 0 && z >= 0 && x < m.ni() && y < m.nj() && z < m.nk() && m.at(x, y, z);
          };
          if (!fg(i - 1, j, k) || !fg(i + 1, j, k) || !fg(i, j - 1, k) || !fg(i, j + 1, k) || !fg(i, j, k - 1) ||
              !fg(i, j, k + 1)) {
            out.push_back(m.grid.to_patient(i, j, k));
          }
        }
    return out;
  };
  const auto sa = surface(a), sb = surface(b);
  const auto directed = [](const std::vector<Eigen::Vector3d>& from, const std::vector<Eigen::Vector3d>& to) {
    std::vector<double> d;
    for (const auto& p : from) {
      double best = 1e300;
      for (const auto& q : to) best = std::min(best, (p - q).norm());
      d.push_back(best);
    }
    std::sort(d.begin(), d.end());
    const double pos = 0.95 * (d.size() - 1);
    const size_t lo = static_cast<size_t>(pos);
    const size_t hi = std::min(lo + 1, d.size() - 1);
    return d[lo] + (pos - lo) * (d[hi] - d[lo]);
  };
  return std::max(directed(sa, sb), directed(sb, sa));
}

TEST(Metrics, Hd95MatchesBruteForceOnRandomAnisotropicMasks) {
  std::mt19937 rng(12345);
  for (int trial = 0; trial < 5; ++trial) {
    std::vector<uint8_t> a(9 * 7 * 5), b(9 * 7 * 5);
    for (auto& v : a) v = rng() % 4 == 0;
    for (auto& v : b) v = rng() % 5 == 0;
    const VolumeU8 pa = mask(9, 7, 5, a), pb = mask(9, 7, 5, b);
    auto m = compute_metrics(pa, pb);
    ASSERT_TRUE(m.ok());
    ASSERT_TRUE(m->hd95_mm.has_value());
    EXPECT_NEAR(*m->hd95_mm, brute_hd95(pa, pb), 1e-9) << "trial " << trial;
  }
}

}  // namespace
}  // namespace image
