// nnU-Net export (inference/nnunet_export.h): the goldens' logits.npy re-exported must give
// nnU-Net's segmentation voxel for voxel and its probabilities; plus region models and transposes.
#include "inference/nnunet_export.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "image/nifti_io.h"
#include "tests/support/npy.h"
#include "tests/support/shared_data.h"

namespace inference {
namespace {

const std::string kGolden = std::string(STROKEBOX_SHARED_DIR) + "/golden";
const std::string kModel = kGolden + "/model/Dataset990_GoldenTiny/nnUNetTrainer__nnUNetPlans__3d_fullres";

nlohmann::json read_json(const std::string& path) {
  std::ifstream f(path);
  return nlohmann::json::parse(f);
}

Tensor4f to_tensor(const testing_support::NpyArray& a) {
  Tensor4f t;
  for (int q = 0; q < 4; ++q) t.shape[q] = a.shape.at(q);
  t.data = a.data;
  return t;
}

class ExportGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(ExportGolden, ReproducesNnunetSegmentationAndProbabilities) {
  SKIP_WITHOUT_GOLDEN();
  const std::string dir = kGolden + "/prediction/" + GetParam();
  const auto pj = read_json(dir + "/prediction.json");
  auto spec = spec_from_nnunet_plans(read_json(kModel + "/plans.json"), read_json(kModel + "/dataset.json"), "3d_fullres");
  ASSERT_TRUE(spec.ok()) << spec.status().to_string();
  ASSERT_EQ(spec->accumulation, Accumulation::kFloat16);
  ExportGeometry g;
  for (int a = 0; a < 3; ++a) {
    g.shape_before_cropping[a] = pj["shape_before_cropping"][a];
    g.bbox.lo[a] = pj["bbox_used_for_cropping"][a][0];
    g.bbox.hi[a] = pj["bbox_used_for_cropping"][a][1];
    g.shape_after_cropping[a] = pj["shape_after_cropping_and_before_resampling"][a];
    g.spacing_transposed[a] = pj["spacing"][spec->transpose_forward[a]];
  }
  const Tensor4f logits = to_tensor(testing_support::read_npy(dir + "/logits.npy"));
  auto r = export_prediction(logits, g, *spec, /*return_probabilities=*/true);
  ASSERT_TRUE(r.ok()) << r.status().to_string();

  const std::string case_id = GetParam().substr(0, GetParam().find("__"));
  auto seg = image::read_nifti(dir + "/" + case_id + ".nii.gz");
  ASSERT_TRUE(seg.ok()) << seg.status().to_string();
  ASSERT_EQ(r->shape_zyx, (Shape3{seg->nk(), seg->nj(), seg->ni()}));
  ASSERT_EQ(r->labels.size(), seg->data.size());
  int64_t differ = 0, lesion = 0;
  for (size_t v = 0; v < r->labels.size(); ++v) {
    differ += r->labels[v] != static_cast<uint8_t>(seg->data[v]);
    lesion += r->labels[v] == 1;
  }
  EXPECT_EQ(differ, 0);
  EXPECT_EQ(lesion, pj["seg_voxels_per_label"]["1"].get<int64_t>());

  std::ifstream probs_file(dir + "/probabilities.npy");
  if (probs_file.good()) {
    const auto golden = testing_support::read_npy(dir + "/probabilities.npy");
    ASSERT_EQ(golden.shape, (std::vector<int64_t>{r->probabilities.shape.begin(), r->probabilities.shape.end()}));
    double max_diff = 0.0;
    for (size_t v = 0; v < golden.data.size(); ++v)
      max_diff = std::max(max_diff, (double)std::fabs(golden.data[v] - r->probabilities.data[v]));
    EXPECT_LE(max_diff, 1e-3);
    std::printf("[ %s ] max |probabilities - golden| = %.3g\n", GetParam().c_str(), max_diff);
  }
}

INSTANTIATE_TEST_SUITE_P(AllCases, ExportGolden,
                         ::testing::Values("case01__mirror", "case01__nomirror", "case02__nomirror",
                                           "case03__nomirror", "case04__nomirror"));

ModelSpec two_class_spec() {
  ModelSpec s;
  s.channels.resize(1);
  s.labels = {{"background", {0}}, {"lesion", {1}}};
  s.target_spacing_mm = {1.0, 1.0, 1.0};
  return s;
}

TEST(Export, ArgmaxTiesGoToTheLowestClass) {
  Tensor4f p(3, {1, 1, 3});
  p.data = {0.2f, 0.5f, 0.3f, /*class 1*/ 0.2f, 0.5f, 0.4f, /*class 2*/ 0.6f, 0.0f, 0.3f};
  ModelSpec s = two_class_spec();
  s.labels.push_back({"other", {2}});
  EXPECT_EQ(probabilities_to_segmentation(p, s), (std::vector<uint8_t>{2, 0, 1}));
}

TEST(Export, RegionModelUsesSigmoidAndRegionsClassOrder) {
  ModelSpec s;
  s.channels.resize(1);
  s.labels = {{"background", {0}}, {"whole", {1, 2}}, {"core", {2}}};
  s.regions_class_order = std::vector<int>{1, 2};
  s.target_spacing_mm = {1.0, 1.0, 1.0};
  Tensor4f logits(2, {1, 1, 3});
  logits.data = {-3.0f, 2.0f, 2.0f, /*core*/ 5.0f, -1.0f, 1.0f};
  ExportGeometry g{{1, 1, 3}, Bbox3{{0, 0, 0}, {1, 1, 3}}, {1, 1, 3}, {1.0, 1.0, 1.0}};
  auto r = export_prediction(logits, g, s);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  // Later regions overwrite earlier ones: voxel 0 has only "core" > 0.5.
  EXPECT_EQ(r->labels, (std::vector<uint8_t>{2, 1, 2}));
}

TEST(Export, PastesIntoBboxAndUndoesTranspose) {
  ModelSpec s = two_class_spec();
  s.transpose_forward = {2, 0, 1};
  s.transpose_backward = {1, 2, 0};
  // Transposed frame (d0, d1, d2) = (x, z, y); uncropped (4, 2, 3), bbox [1,3) x [0,2) x [1,2).
  ExportGeometry g{{4, 2, 3}, Bbox3{{1, 0, 1}, {3, 2, 2}}, {2, 2, 1}, {1.0, 1.0, 1.0}};
  Tensor4f logits(2, {2, 2, 1});
  logits.data = {0, 0, 0, 0, /*lesion*/ 1, -1, -1, 1};  // lesion at (0,0,0) and (1,1,0)
  auto r = export_prediction(logits, g, s, true);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  ASSERT_EQ(r->shape_zyx, (Shape3{2, 3, 4}));  // (z, y, x)
  // Transposed index (x, z, y) = (1, 0, 1) and (2, 1, 1) -> reader (z, y, x) = (0, 1, 1), (1, 1, 2).
  for (int64_t z = 0; z < 2; ++z)
    for (int64_t y = 0; y < 3; ++y)
      for (int64_t x = 0; x < 4; ++x) {
        const bool want = (z == 0 && y == 1 && x == 1) || (z == 1 && y == 1 && x == 2);
        EXPECT_EQ(r->labels[(z * 3 + y) * 4 + x], want ? 1 : 0) << z << y << x;
      }
  // Background probability is 1 outside the bbox.
  EXPECT_FLOAT_EQ(r->probabilities.at(0, 0, 0, 0), 1.0f);
  EXPECT_FLOAT_EQ(r->probabilities.at(1, 0, 0, 0), 0.0f);
}

TEST(Export, RejectsWrongChannelCount) {
  ModelSpec s = two_class_spec();
  ExportGeometry g{{1, 1, 3}, Bbox3{{0, 0, 0}, {1, 1, 3}}, {1, 1, 3}, {1.0, 1.0, 1.0}};
  Tensor4f logits(3, {1, 1, 3});
  EXPECT_EQ(export_prediction(logits, g, s).status().code(), base::Code::kInvalidArgument);
}

}  // namespace
}  // namespace inference
