// Tests of image/metrics: hand-computed Dice/IoU/precision/recall/accuracy/F1/volumes on tiny
// masks, the empty-mask conventions, lesion counts, ISLES 2022 lesion-wise F1, ASSD, average
// precision, HD95 against brute force and HD95/ASSD against two concentric spheres (analytic).
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
  EXPECT_DOUBLE_EQ(m->accuracy, 3.0 / 5.0);  // tp 2 + tn 1 of 5
  EXPECT_DOUBLE_EQ(m->f1, 2.0 / 3.0);        // 2 (2/3)(2/3) / (4/3)
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
                          "abs_volume_diff_ml", "pred_lesions", "truth_lesions", "tp", "fp", "fn", "tn", "accuracy",
                          "f1", "hd95_mm", "assd_mm", "lesion_f1", "lesion_tp", "lesion_fp", "lesion_fn",
                          "lesion_count_diff", "average_precision"}) {
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

TEST(Metrics, LesionWiseF1CountsDetectedTruthLesionsAndUnmatchedPredictions) {
  // truth lesions [0,1], [3], [7]; predicted lesions [0], [4,5], [8].
  // [0,1] is hit (TP); [3] and [7] are missed (FN 2); [4,5] and [8] touch no truth voxel (FP 2).
  const VolumeU8 pred = mask(9, 1, 1, {1, 0, 0, 0, 1, 1, 0, 0, 1});
  const VolumeU8 truth = mask(9, 1, 1, {1, 1, 0, 1, 0, 0, 0, 1, 0});
  auto m = compute_metrics(pred, truth);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->lesion_tp, 1);
  EXPECT_EQ(m->lesion_fn, 2);
  EXPECT_EQ(m->lesion_fp, 2);
  EXPECT_DOUBLE_EQ(m->lesion_f1, 1.0 / (1.0 + 0.5 * 4.0));
  EXPECT_EQ(m->lesion_count_diff, 0);  // 3 vs 3: counts agree although detection is poor
}

TEST(Metrics, LesionWiseMetricsOnTheLesionCountCase) {
  const VolumeU8 pred = mask(7, 1, 1, {1, 0, 1, 0, 1, 1, 0});   // 3 lesions
  const VolumeU8 truth = mask(7, 1, 1, {1, 1, 0, 0, 0, 0, 0});  // 1 lesion, hit by pred[0]
  auto m = compute_metrics(pred, truth);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->lesion_tp, 1);
  EXPECT_EQ(m->lesion_fn, 0);
  EXPECT_EQ(m->lesion_fp, 2);
  EXPECT_DOUBLE_EQ(m->lesion_f1, 0.5);
  EXPECT_EQ(m->lesion_count_diff, 2);
}

TEST(Metrics, LesionsAreTwentySixConnected) {
  // Two voxels touching only at a corner (i, j, k all differ by 1) are one lesion.
  std::vector<uint8_t> v(8, 0);
  v[0] = 1;                  // (0,0,0)
  v[1 + 2 * 1 + 4 * 1] = 1;  // (1,1,1)
  auto m = compute_metrics(mask(2, 2, 2, v), mask(2, 2, 2, v));
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->pred_lesions, 1);
  EXPECT_EQ(m->lesion_tp, 1);
  EXPECT_DOUBLE_EQ(m->lesion_f1, 1.0);
}

TEST(Metrics, LesionWiseF1IsOneWithoutLesionsAnywhere) {
  auto m = compute_metrics(mask(3, 1, 1, {0, 0, 0}), mask(3, 1, 1, {0, 0, 0}));
  ASSERT_TRUE(m.ok());
  EXPECT_DOUBLE_EQ(m->lesion_f1, 1.0);
  EXPECT_EQ(m->lesion_count_diff, 0);
  EXPECT_DOUBLE_EQ(m->accuracy, 1.0);
  EXPECT_FALSE(m->assd_mm.has_value());
  auto missed = compute_metrics(mask(3, 1, 1, {0, 0, 0}), mask(3, 1, 1, {0, 1, 0}));
  ASSERT_TRUE(missed.ok());
  EXPECT_DOUBLE_EQ(missed->lesion_f1, 0.0);
  EXPECT_EQ(missed->lesion_count_diff, 1);
}

TEST(Metrics, AssdIsTheMeanOfTheTwoDirectedMeanSurfaceDistances) {
  // Voxels of 2 mm along i. pred {0, 1}, truth {3}: pred->truth 6 and 4 mm (mean 5);
  // truth->pred 4 mm (mean 4); assd = 4.5. hd95: directed 95th percentiles 4 + 0.95 x 2 = 5.9
  // and 4, so 5.9.
  auto m = compute_metrics(mask(5, 1, 1, {1, 1, 0, 0, 0}), mask(5, 1, 1, {0, 0, 0, 1, 0}));
  ASSERT_TRUE(m.ok());
  ASSERT_TRUE(m->assd_mm.has_value());
  EXPECT_DOUBLE_EQ(*m->assd_mm, 4.5);
  EXPECT_NEAR(*m->hd95_mm, 5.9, 1e-12);
}

/// n^3 grid of `h` mm with a ball of radius r (mm) centred in the middle.
VolumeU8 ball(int64_t n, double h, double r) {
  Grid g;
  g.dims = {n, n, n};
  g.affine = Eigen::Matrix4d::Identity();
  for (int a = 0; a < 3; ++a) g.affine(a, a) = h;
  VolumeU8 v(g, 0);
  const double c = 0.5 * (n - 1);
  for (int64_t k = 0; k < n; ++k)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = 0; i < n; ++i) {
        const double d = h * std::sqrt((i - c) * (i - c) + (j - c) * (j - c) + (k - c) * (k - c));
        if (d <= r) v.at(i, j, k) = 1;
      }
  return v;
}

TEST(Metrics, Hd95AndAssdOfConcentricSpheresAreTheRadiusDifference) {
  // Every point of one sphere is |r1 - r2| = 4 mm from the other sphere; the voxel surfaces
  // deviate from the spheres by less than a voxel (0.5 mm).
  const VolumeU8 outer = ball(56, 0.5, 11.0), inner = ball(56, 0.5, 7.0);
  auto m = compute_metrics(inner, outer);
  ASSERT_TRUE(m.ok());
  ASSERT_TRUE(m->hd95_mm && m->assd_mm);
  EXPECT_NEAR(*m->hd95_mm, 4.0, 0.5);
  EXPECT_NEAR(*m->assd_mm, 4.0, 0.25);
  // Sanity: the metrics can tell spheres 4 mm apart from spheres 2 mm apart.
  auto closer = compute_metrics(ball(56, 0.5, 9.0), outer);
  ASSERT_TRUE(closer.ok());
  EXPECT_NEAR(*closer->assd_mm, 2.0, 0.25);
}

VolumeF probabilities(std::vector<float> values) {
  Grid g;
  g.dims = {static_cast<int64_t>(values.size()), 1, 1};
  g.affine = Eigen::Matrix4d::Identity();
  g.affine(0, 0) = 2.0;
  g.affine(1, 1) = 2.0;
  g.affine(2, 2) = 2.5;
  VolumeF v(g);
  v.data = std::move(values);
  return v;
}

TEST(Metrics, AveragePrecisionHandComputed) {
  // Ranked 0.9 (lesion), 0.8, 0.7 (lesion), 0.6, 0.5: AP = 0.5 x 1 + 0.5 x 2/3 = 5/6.
  const VolumeU8 truth = mask(5, 1, 1, {1, 0, 1, 0, 0});
  auto ap = average_precision(probabilities({0.9f, 0.8f, 0.7f, 0.6f, 0.5f}), truth);
  ASSERT_TRUE(ap.ok());
  ASSERT_TRUE(ap->has_value());
  EXPECT_NEAR(**ap, 5.0 / 6.0, 1e-12);
  // Tied scores form one threshold: {0.5 lesion, 0.5} then {0.2 lesion}: 0.5 x 0.5 + 0.5 x 2/3.
  auto tied = average_precision(probabilities({0.5f, 0.5f, 0.2f}), mask(3, 1, 1, {1, 0, 1}));
  ASSERT_TRUE(tied.ok());
  EXPECT_NEAR(**tied, 0.25 + 1.0 / 3.0, 1e-12);
  // A perfect ranking gives 1; compute_metrics passes the map through.
  const VolumeF perfect = probabilities({1.f, 0.f, 0.9f, 0.1f, 0.f});
  auto m = compute_metrics(truth, truth, &perfect);
  ASSERT_TRUE(m.ok());
  ASSERT_TRUE(m->average_precision.has_value());
  EXPECT_DOUBLE_EQ(*m->average_precision, 1.0);
}

TEST(Metrics, AveragePrecisionRefusesNonProbabilitiesAndIsUndefinedWithoutLesions) {
  const VolumeU8 truth = mask(3, 1, 1, {1, 0, 0});
  auto bad = average_precision(probabilities({0.5f, 1.5f, 0.f}), truth);
  EXPECT_EQ(bad.status().code(), base::Code::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("[0, 1]"), std::string::npos) << bad.status().message();
  auto nan = average_precision(probabilities({0.5f, std::nanf(""), 0.f}), truth);
  EXPECT_EQ(nan.status().code(), base::Code::kInvalidArgument);
  auto wrong_grid = average_precision(probabilities({0.5f, 0.f}), truth);
  EXPECT_EQ(wrong_grid.status().code(), base::Code::kInvalidArgument);
  auto empty = average_precision(probabilities({0.5f, 0.2f, 0.f}), mask(3, 1, 1, {0, 0, 0}));
  ASSERT_TRUE(empty.ok());
  EXPECT_FALSE(empty->has_value());
}

}  // namespace
}  // namespace image
