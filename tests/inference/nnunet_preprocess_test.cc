// nnU-Net preprocessing against the goldens of ../shared/golden/preprocessing (nnU-Net's own
// DefaultPreprocessor.run_case on the NIfTI inputs), plus small behavioural tests.
#include "inference/nnunet_preprocess.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <string>

#include "image/nifti_io.h"
#include "tests/support/npy.h"
#include "tests/support/shared_data.h"

namespace inference {
namespace {

const std::string kGolden = std::string(STROKEBOX_SHARED_DIR) + "/golden";

nlohmann::json read_json(const std::string& path) {
  std::ifstream f(path);
  return nlohmann::json::parse(f);
}

// Reads the case's channel NIfTI files into (C, z, y, x) with spacing (z, y, x), as nnU-Net's
// NibabelIO does (array transposed (2,1,0) = our memory order, spacing = pixdim reversed).
Tensor4f read_case(const std::string& case_id, Spacing3* spacing_zyx) {
  Tensor4f t;
  for (int c = 0; c < 2; ++c) {
    const std::string path = kGolden + "/inputs/" + case_id + "/" + case_id + "_000" + std::to_string(c) + ".nii.gz";
    std::array<double, 3> pixdim{};
    auto vol = image::read_nifti(path, &pixdim);
    EXPECT_TRUE(vol.ok()) << vol.status().to_string();
    if (!vol.ok()) return t;
    if (c == 0) {
      t = Tensor4f(2, {vol->nk(), vol->nj(), vol->ni()});
      *spacing_zyx = {pixdim[2], pixdim[1], pixdim[0]};
    }
    std::copy(vol->data.begin(), vol->data.end(), t.channel(c));
  }
  return t;
}

struct GoldenCase {
  std::string folder;
  std::string case_id;
};

class PreprocessGolden : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(PreprocessGolden, MatchesNnunetRunCase) {
  SKIP_WITHOUT_GOLDEN();
  const std::string dir = kGolden + "/preprocessing/" + GetParam().folder;
  auto spec = spec_from_nnunet_plans(read_json(dir + "/plans.json"), read_json(dir + "/dataset.json"), "3d_fullres");
  ASSERT_TRUE(spec.ok()) << spec.status().to_string();
  const auto props = read_json(dir + "/properties.json");
  Spacing3 spacing{};
  const Tensor4f raw = read_case(GetParam().case_id, &spacing);
  ASSERT_EQ(raw.channels(), 2);
  for (int a = 0; a < 3; ++a) EXPECT_DOUBLE_EQ(spacing[a], props["spacing"][a].get<double>());

  auto pre = preprocess(raw, spacing, *spec, /*keep_intermediates=*/true);
  ASSERT_TRUE(pre.ok()) << pre.status().to_string();
  for (int a = 0; a < 3; ++a) {
    EXPECT_EQ(pre->shape_before_cropping[a], props["shape_before_cropping"][a].get<int64_t>()) << a;
    EXPECT_EQ(pre->bbox.lo[a], props["bbox_used_for_cropping"][a][0].get<int64_t>()) << a;
    EXPECT_EQ(pre->bbox.hi[a], props["bbox_used_for_cropping"][a][1].get<int64_t>()) << a;
    EXPECT_EQ(pre->shape_after_cropping[a], props["shape_after_cropping_and_before_resampling"][a].get<int64_t>());
  }
  const auto& sz = props["derived"]["determine_do_sep_z_and_axis"];
  EXPECT_EQ(pre->separate_z.do_separate_z, sz["do_separate_z"].get<bool>());
  if (!sz["axis"].is_null()) {
    EXPECT_EQ(pre->separate_z.axis, sz["axis"].get<int>());
  }

  // Intermediate: the non-zero mask (nnU-Net's seg: 0 inside, -1 outside).
  const auto seg = testing_support::read_npy(dir + "/nonzero_seg.npy");
  ASSERT_EQ(seg.data.size(), pre->mask_cropped.size());
  int64_t mask_mismatch = 0;
  for (size_t v = 0; v < seg.data.size(); ++v) mask_mismatch += (seg.data[v] >= 0) != (pre->mask_cropped[v] != 0);
  EXPECT_EQ(mask_mismatch, 0);

  // Intermediate: cropped and normalized (nnU-Net reduces in float32; we in float64).
  const auto cn = testing_support::read_npy(dir + "/cropped_normalized.npy");
  ASSERT_EQ(cn.shape, (std::vector<int64_t>{pre->cropped_normalized.shape.begin(), pre->cropped_normalized.shape.end()}));
  double max_cn = 0.0;
  for (size_t v = 0; v < cn.data.size(); ++v)
    max_cn = std::max(max_cn, (double)std::fabs(cn.data[v] - pre->cropped_normalized.data[v]));
  EXPECT_LE(max_cn, 1e-4);

  // The golden: data.npy.
  const auto golden = testing_support::read_npy(dir + "/data.npy");
  ASSERT_EQ(golden.shape, (std::vector<int64_t>{pre->data.shape.begin(), pre->data.shape.end()}));
  double max_diff = 0.0;
  for (size_t v = 0; v < golden.data.size(); ++v)
    max_diff = std::max(max_diff, (double)std::fabs(golden.data[v] - pre->data.data[v]));
  EXPECT_LE(max_diff, 1e-3);
  RecordProperty("max_abs_diff_data", std::to_string(max_diff));
  std::printf("[ %s ] max |data - golden| = %.3g, max |cropped_normalized - golden| = %.3g\n",
              GetParam().folder.c_str(), max_diff, max_cn);
}

INSTANTIATE_TEST_SUITE_P(AllCases, PreprocessGolden,
                         ::testing::Values(GoldenCase{"case01__P1mm_nomask", "case01"},
                                           GoldenCase{"case02__P1mm_mask", "case02"},
                                           GoldenCase{"case02__P1mm_nomask", "case02"},
                                           GoldenCase{"case03__P2mm_mask", "case03"},
                                           GoldenCase{"case04__PT201_mixed", "case04"}),
                         [](const auto& info) { return info.param.folder; });

TEST(FillHoles, FillsEnclosedCavityButNotOpenOne) {
  // 5x5x5 hollow cube shell: its centre is enclosed and gets filled.
  const Shape3 s{5, 5, 5};
  std::vector<uint8_t> m(125, 0);
  for (int a = 0; a < 5; ++a)
    for (int b = 0; b < 5; ++b)
      for (int d = 0; d < 5; ++d) {
        const bool inside = a >= 1 && a <= 3 && b >= 1 && b <= 3 && d >= 1 && d <= 3;
        const bool core = a == 2 && b == 2 && d == 2;
        m[(a * 5 + b) * 5 + d] = inside && !core;
      }
  auto filled = m;
  fill_holes_3d(filled, s);
  EXPECT_EQ(filled[(2 * 5 + 2) * 5 + 2], 1);
  // Open one face voxel next to the core: the core now connects to the outside.
  m[(2 * 5 + 2) * 5 + 3] = 0;
  filled = m;
  fill_holes_3d(filled, s);
  EXPECT_EQ(filled[(2 * 5 + 2) * 5 + 2], 0);
}

TEST(FillHoles, DiagonalGapDoesNotConnect) {
  // A cavity connected to the outside only diagonally stays enclosed under 6-connectivity.
  const Shape3 s{3, 4, 4};
  std::vector<uint8_t> m(48, 1);
  m[(1 * 4 + 1) * 4 + 1] = 0;  // cavity
  // Remove the edge-adjacent voxels? Keep all faces closed: only diagonal neighbours are outside.
  auto filled = m;
  fill_holes_3d(filled, s);
  EXPECT_EQ(filled[(1 * 4 + 1) * 4 + 1], 1);
}

TEST(Normalize, ZScoreWithMaskLeavesOutsideUntouchedAndUsesPopulationStd) {
  Tensor4f t(1, {1, 1, 4});
  t.data = {0.0f, 1.0f, 3.0f, 0.0f};
  std::vector<uint8_t> mask{0, 1, 1, 0};
  ChannelSpec ch;
  ch.use_mask_for_norm = true;
  ASSERT_TRUE(normalize(t, mask, {ch}).ok());
  EXPECT_FLOAT_EQ(t.data[0], 0.0f);
  EXPECT_FLOAT_EQ(t.data[1], -1.0f);  // mean 2, population std 1
  EXPECT_FLOAT_EQ(t.data[2], 1.0f);
  EXPECT_FLOAT_EQ(t.data[3], 0.0f);
}

TEST(Normalize, ZScoreConstantImageDoesNotDivideByZero) {
  Tensor4f t(1, {1, 1, 3}, 5.0f);
  ChannelSpec ch;
  ASSERT_TRUE(normalize(t, {}, {ch}).ok());
  for (float v : t.data) EXPECT_FLOAT_EQ(v, 0.0f);
}

TEST(Normalize, CTClipsThenStandardizes) {
  Tensor4f t(1, {1, 1, 3});
  t.data = {-1000.0f, 50.0f, 3000.0f};
  ChannelSpec ch;
  ch.normalization = Normalization::kCT;
  ch.intensity_properties = IntensityProperties{100.0, 50.0, 0.0, 200.0};
  ASSERT_TRUE(normalize(t, {}, {ch}).ok());
  EXPECT_FLOAT_EQ(t.data[0], -2.0f);
  EXPECT_FLOAT_EQ(t.data[1], -1.0f);
  EXPECT_FLOAT_EQ(t.data[2], 2.0f);
}

TEST(Normalize, CTWithoutIntensityPropertiesIsAnError) {
  Tensor4f t(1, {1, 1, 3});
  ChannelSpec ch;
  ch.normalization = Normalization::kCT;
  EXPECT_EQ(normalize(t, {}, {ch}).code(), base::Code::kInvalidArgument);
}

TEST(Normalize, RescaleTo01MapsMinMaxToZeroOne) {
  Tensor4f t(1, {1, 1, 3});
  t.data = {2.0f, 4.0f, 6.0f};
  ChannelSpec ch;
  ch.normalization = Normalization::kRescaleTo01;
  ASSERT_TRUE(normalize(t, {}, {ch}).ok());
  EXPECT_FLOAT_EQ(t.data[0], 0.0f);
  EXPECT_FLOAT_EQ(t.data[1], 0.5f);
  EXPECT_FLOAT_EQ(t.data[2], 1.0f);
}

TEST(Transpose, PermutesAxesLikeNumpyTranspose) {
  Tensor4f t(1, {2, 3, 4});
  for (size_t v = 0; v < t.data.size(); ++v) t.data[v] = (float)v;
  const Tensor4f u = transpose_spatial(t, {2, 0, 1});  // out axes = (in2, in0, in1)
  ASSERT_EQ(u.spatial(), (Shape3{4, 2, 3}));
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 3; ++b)
      for (int d = 0; d < 4; ++d) EXPECT_EQ(u.at(0, d, a, b), t.at(0, a, b, d));
  // transpose_backward [1, 2, 0] undoes [2, 0, 1].
  const Tensor4f back = transpose_spatial(u, {1, 2, 0});
  EXPECT_EQ(back.data, t.data);
}

TEST(Preprocess, AllZeroInputIsAClearError) {
  ModelSpec spec;
  spec.channels.resize(1);
  spec.labels = {{"background", {0}}, {"lesion", {1}}};
  Tensor4f t(1, {4, 4, 4});
  auto r = preprocess(t, {1, 1, 1}, spec);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), base::Code::kInvalidArgument);
}

TEST(Preprocess, WrongChannelCountIsAnError) {
  ModelSpec spec;
  spec.channels.resize(2);
  Tensor4f t(1, {4, 4, 4}, 1.0f);
  EXPECT_EQ(preprocess(t, {1, 1, 1}, spec).status().code(), base::Code::kInvalidArgument);
}

}  // namespace
}  // namespace inference
