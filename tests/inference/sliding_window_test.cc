// nnU-Net sliding window (inference/sliding_window.h) with fake PatchModels: steps and Gaussian
// against the goldens, padding, mirroring, fold averaging, fp16 accumulation, errors.
#include "inference/sliding_window.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <functional>

#include "tests/support/npy.h"
#include "tests/support/shared_data.h"

namespace inference {
namespace {

const std::string kGolden = std::string(STROKEBOX_SHARED_DIR) + "/golden";

// A PatchModel computing out[k][a][b][d] = f(k, a, b, d, input) on a fixed patch.
class FakeModel : public PatchModel {
 public:
  using Fn = std::function<float(int64_t k, int64_t a, int64_t b, int64_t d, const float* in)>;
  FakeModel(int64_t c, int64_t k, Shape3 patch, Fn fn) : c_(c), k_(k), p_(patch), fn_(std::move(fn)) {}
  std::array<int64_t, 5> input_shape() const override { return {1, c_, p_[0], p_[1], p_[2]}; }
  std::array<int64_t, 5> output_shape() const override { return {1, k_, p_[0], p_[1], p_[2]}; }
  base::Status run(const float* input, float* output) override {
    ++runs;
    if (fail_at_run > 0 && runs == fail_at_run) return base::internal_error("fake failure");
    for (int64_t k = 0; k < k_; ++k)
      for (int64_t a = 0; a < p_[0]; ++a)
        for (int64_t b = 0; b < p_[1]; ++b)
          for (int64_t d = 0; d < p_[2]; ++d) *output++ = fn_(k, a, b, d, input + (a * p_[1] + b) * p_[2] + d);
    return base::ok_status();
  }
  std::string backend() const override { return "fake"; }
  std::string precision() const override { return "fp32"; }
  int runs = 0;
  int fail_at_run = 0;

 private:
  int64_t c_, k_;
  Shape3 p_;
  Fn fn_;
};

Tensor4f ramp(int64_t c, Shape3 s) {
  Tensor4f t(c, s);
  for (size_t v = 0; v < t.data.size(); ++v) t.data[v] = std::sin(0.37 * (double)v) * 3.0f;
  return t;
}

TEST(SlidingWindowSteps, MatchNnunetForEveryGoldenCase) {
  SKIP_WITHOUT_GOLDEN();
  for (const char* c : {"case01__mirror", "case01__nomirror", "case02__nomirror", "case03__nomirror", "case04__nomirror"}) {
    std::ifstream f(kGolden + "/prediction/" + c + "/prediction.json");
    const auto j = nlohmann::json::parse(f);
    const Shape3 padded{j["padded_shape"][1], j["padded_shape"][2], j["padded_shape"][3]};
    const Shape3 patch{j["patch_size"][0], j["patch_size"][1], j["patch_size"][2]};
    const auto steps = compute_steps_for_sliding_window(padded, patch, j["tile_step_size"].get<double>());
    EXPECT_EQ(nlohmann::json(steps), j["steps_per_axis"]) << c;
  }
}

TEST(SlidingWindowSteps, RoundsHalfToEven) {
  // size 45, patch 32, step 0.5: 2 steps at 0 and 13; size 61: 3 steps, actual step 14.5 -> 0, 14, 29.
  EXPECT_EQ(compute_steps_for_sliding_window({45, 32, 61}, {32, 32, 32}, 0.5),
            (std::vector<std::vector<int64_t>>{{0, 13}, {0}, {0, 14, 29}}));
}

TEST(Gaussian, EqualsNnunetComputeGaussianBitForBit) {
  SKIP_WITHOUT_GOLDEN();
  const auto golden = testing_support::read_npy(kGolden + "/sliding_window/gaussian_32x32x32.npy");
  const auto g = compute_gaussian({32, 32, 32});
  ASSERT_EQ(g.size(), golden.data.size());
  int64_t mismatches = 0;
  for (size_t k = 0; k < g.size(); ++k) mismatches += g[k] != golden.data[k];
  EXPECT_EQ(mismatches, 0);
  EXPECT_EQ(g[(16 * 32 + 16) * 32 + 16], 10.0f);
  EXPECT_EQ(*std::min_element(g.begin(), g.end()), std::ldexp(1.0f, -24));  // zeros replaced
}

TEST(SlidingWindow, PointwiseModelIsReproducedIncludingPaddedAxes) {
  // A pointwise model's weighted average equals the pointwise function everywhere, so every
  // voxel checks gather, scatter, weighting, padding (axis 0 shorter than the patch) and crop.
  const Shape3 patch{8, 8, 8};
  FakeModel net(2, 2, patch, [](int64_t k, int64_t, int64_t, int64_t, const float* in) {
    const int64_t cs = 8 * 8 * 8;
    return k == 0 ? in[0] - in[cs] : 2.0f * in[0] + 1.0f;
  });
  const Tensor4f x = ramp(2, {5, 13, 21});
  SlidingWindowOptions o;
  o.patch_size = patch;
  o.return_weight_sum = true;
  auto r = predict_sliding_window(x, {&net}, o);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->padded_shape, (Shape3{8, 13, 21}));
  EXPECT_EQ(r->pad_low, (Shape3{1, 0, 0}));
  EXPECT_EQ(r->tiles, 1 * 3 * 5);
  EXPECT_EQ(net.runs, r->tiles);
  ASSERT_EQ(r->logits.shape, (std::array<int64_t, 4>{2, 5, 13, 21}));
  const int64_t n = x.channel_size();
  for (int64_t v = 0; v < n; ++v) {
    EXPECT_NEAR(r->logits.data[v], x.data[v] - x.data[n + v], 1e-5) << v;
    EXPECT_NEAR(r->logits.data[n + v], 2.0f * x.data[v] + 1.0f, 1e-5) << v;
  }
  ASSERT_EQ(r->weight_sum.size(), static_cast<size_t>(n));
  for (float w : r->weight_sum) EXPECT_GT(w, 0.0f);
}

TEST(SlidingWindow, WithoutGaussianIsThePlainMeanOfOverlappingTiles) {
  // Output = tile-local position along axis 2; without Gaussian every voxel gets the mean of
  // its tile-local positions. Size 12, patch 8, step 0.5 -> tiles at 0 and 4.
  const Shape3 patch{1, 1, 8};
  FakeModel net(1, 1, patch, [](int64_t, int64_t, int64_t, int64_t d, const float*) { return (float)d; });
  const Tensor4f x = ramp(1, {1, 1, 12});
  SlidingWindowOptions o;
  o.patch_size = patch;
  o.use_gaussian = false;
  auto r = predict_sliding_window(x, {&net}, o);
  ASSERT_TRUE(r.ok());
  const std::vector<float> want{0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7};
  for (int i = 0; i < 12; ++i) EXPECT_FLOAT_EQ(r->logits.data[i], want[i]) << i;
}

TEST(SlidingWindow, MirroringAveragesAllFlipCombinations) {
  // out = in + tile-local index along each mirrored axis. A flip along axis a maps local index i
  // to p-1-i, so the mean over {id, flip} is in + (p-1)/2 on that axis; along an axis that is
  // not mirrored the plain index stays. Axes (0, 2): 4 combinations, 3 extra runs per tile.
  const Shape3 patch{4, 4, 4};
  FakeModel net(1, 1, patch, [](int64_t, int64_t a, int64_t b, int64_t d, const float* in) {
    return in[0] + 100.0f * a + 10.0f * b + (float)d;
  });
  const Tensor4f x = ramp(1, {4, 4, 4});
  SlidingWindowOptions o;
  o.patch_size = patch;
  o.use_mirroring = true;
  o.mirroring_axes = {0, 2};
  auto r = predict_sliding_window(x, {&net}, o);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->tiles, 1);
  EXPECT_EQ(r->network_runs, 4);
  EXPECT_EQ(net.runs, 4);
  for (int64_t a = 0; a < 4; ++a)
    for (int64_t b = 0; b < 4; ++b)
      for (int64_t d = 0; d < 4; ++d)
        EXPECT_NEAR(r->logits.at(0, a, b, d), x.at(0, a, b, d) + 150.0f + 10.0f * b + 1.5f, 1e-4);
}

TEST(SlidingWindow, AllAxesMirroringRunsEightTimesPerTile) {
  const Shape3 patch{4, 4, 4};
  FakeModel net(1, 1, patch, [](int64_t, int64_t, int64_t, int64_t, const float* in) { return in[0]; });
  SlidingWindowOptions o;
  o.patch_size = patch;
  o.use_mirroring = true;
  auto r = predict_sliding_window(ramp(1, {4, 4, 6}), {&net}, o);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->tiles, 2);
  EXPECT_EQ(r->network_runs, 16);
}

TEST(SlidingWindow, FoldsAreAveraged) {
  const Shape3 patch{4, 4, 4};
  FakeModel a(1, 2, patch, [](int64_t k, int64_t, int64_t, int64_t, const float*) { return k == 0 ? 1.0f : -4.0f; });
  FakeModel b(1, 2, patch, [](int64_t k, int64_t, int64_t, int64_t, const float*) { return k == 0 ? 3.0f : 2.0f; });
  SlidingWindowOptions o;
  o.patch_size = patch;
  for (auto acc : {Accumulation::kFloat32, Accumulation::kFloat16}) {
    o.accumulation = acc;
    auto r = predict_sliding_window(ramp(1, {5, 6, 7}), {&a, &b}, o);
    ASSERT_TRUE(r.ok());
    for (int64_t v = 0; v < r->logits.channel_size(); ++v) {
      ASSERT_NEAR(r->logits.channel(0)[v], 2.0f, 1e-2);  // fp16: ~1e-3 relative
      ASSERT_NEAR(r->logits.channel(1)[v], -1.0f, 1e-2);
    }
  }
}

TEST(SlidingWindow, Fp16AccumulationGivesHalfValuesCloseToFp32) {
  const Shape3 patch{8, 8, 8};
  FakeModel net(1, 2, patch, [](int64_t k, int64_t a, int64_t, int64_t d, const float* in) {
    return k == 0 ? 7.3f * in[0] + 0.1f * a : -in[0] + 0.01f * d;
  });
  const Tensor4f x = ramp(1, {11, 9, 14});
  SlidingWindowOptions o;
  o.patch_size = patch;
  o.return_weight_sum = true;
  auto r32 = predict_sliding_window(x, {&net}, o);
  o.accumulation = Accumulation::kFloat16;
  auto r16 = predict_sliding_window(x, {&net}, o);
  ASSERT_TRUE(r32.ok() && r16.ok());
  for (size_t v = 0; v < r16->logits.data.size(); ++v) {
    EXPECT_EQ(r16->logits.data[v], image::fp16_round(r16->logits.data[v]));
    if (r32->weight_sum[v % r32->weight_sum.size()] >= 1e-2f) {
      EXPECT_NEAR(r16->logits.data[v], r32->logits.data[v], 0.05);
    }
  }
}

TEST(SlidingWindow, RejectsNetworkWithWrongInputShape) {
  FakeModel net(3, 2, {8, 8, 8}, [](int64_t, int64_t, int64_t, int64_t, const float*) { return 0.0f; });
  SlidingWindowOptions o;
  o.patch_size = {8, 8, 8};
  auto r = predict_sliding_window(ramp(2, {8, 8, 8}), {&net}, o);
  EXPECT_EQ(r.status().code(), base::Code::kInvalidArgument);
  o.patch_size = {8, 8, 16};
  EXPECT_EQ(predict_sliding_window(ramp(3, {8, 8, 8}), {&net}, o).status().code(), base::Code::kInvalidArgument);
}

TEST(SlidingWindow, NetworkFailureIsReturnedWithTheTile) {
  FakeModel net(1, 1, {4, 4, 4}, [](int64_t, int64_t, int64_t, int64_t, const float*) { return 0.0f; });
  net.fail_at_run = 2;
  SlidingWindowOptions o;
  o.patch_size = {4, 4, 4};
  auto r = predict_sliding_window(ramp(1, {4, 4, 8}), {&net}, o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), base::Code::kInternal);
  EXPECT_NE(r.status().message().find("tile at (0, 0, 2)"), std::string::npos) << r.status().message();
}

// A workspace made once serves studies of different sizes, with and without padding and
// mirroring, and gives bit-for-bit the result of buffers made for each call: nothing of an
// earlier, larger study leaks into a later one.
TEST(SlidingWindowWorkspace, ReusedAcrossVolumesGivesTheSameLogitsAsFreshBuffers) {
  const Shape3 patch{4, 4, 4};
  FakeModel net(2, 2, patch, [](int64_t k, int64_t a, int64_t b, int64_t d, const float* in) {
    return (k == 0 ? 1.5f : -0.5f) * in[0] + 0.1f * a - 0.2f * b + 0.05f * d;
  });
  auto ws = SlidingWindowWorkspace::create({2, 2, patch, 12 * 10 * 9, false, true});
  ASSERT_TRUE(ws.ok()) << ws.status().to_string();
  EXPECT_GE((*ws)->bytes(), (2 + 2 + 1) * 12 * 10 * 9 * sizeof(float));
  for (const Shape3 s : {Shape3{12, 10, 9}, Shape3{3, 7, 5}, Shape3{9, 9, 9}, Shape3{4, 4, 4}}) {
    for (const bool mirroring : {false, true}) {
      SlidingWindowOptions o;
      o.patch_size = patch;
      o.use_mirroring = mirroring;
      const Tensor4f x = ramp(2, s);
      auto fresh = predict_sliding_window(x, {&net}, o);
      auto reused = predict_sliding_window(x, {&net}, o, ws->get());
      ASSERT_TRUE(fresh.ok() && reused.ok()) << reused.status().to_string();
      ASSERT_EQ(fresh->logits.data.size(), reused->logits.data.size());
      int64_t differ = 0;
      for (size_t v = 0; v < fresh->logits.data.size(); ++v) differ += fresh->logits.data[v] != reused->logits.data[v];
      EXPECT_EQ(differ, 0) << s[0] << "x" << s[1] << "x" << s[2] << " mirroring " << mirroring;
    }
  }
}

TEST(SlidingWindowWorkspace, VolumeLargerThanPreallocatedIsRefusedNamingTheLimit) {
  const Shape3 patch{4, 4, 4};
  FakeModel net(1, 1, patch, [](int64_t, int64_t, int64_t, int64_t, const float* in) { return in[0]; });
  auto ws = SlidingWindowWorkspace::create({1, 1, patch, 8 * 8 * 8, false, false});
  ASSERT_TRUE(ws.ok());
  SlidingWindowOptions o;
  o.patch_size = patch;
  auto r = predict_sliding_window(ramp(1, {8, 8, 9}), {&net}, o, ws->get());
  ASSERT_EQ(r.status().code(), base::Code::kResourceExhausted);
  EXPECT_NE(r.status().message().find("8x8x9 (576 voxels)"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("model.max_preprocessed_voxels"), std::string::npos);
  EXPECT_EQ(net.runs, 0);  // refused before any work
  // What the workspace was not made for is refused too: mirroring, several networks, a patch.
  o.use_mirroring = true;
  EXPECT_EQ(predict_sliding_window(ramp(1, {8, 8, 8}), {&net}, o, ws->get()).status().code(),
            base::Code::kResourceExhausted);
  o.use_mirroring = false;
  EXPECT_EQ(predict_sliding_window(ramp(1, {8, 8, 8}), {&net, &net}, o, ws->get()).status().code(),
            base::Code::kResourceExhausted);
  FakeModel other(1, 1, {2, 4, 4}, [](int64_t, int64_t, int64_t, int64_t, const float* in) { return in[0]; });
  o.patch_size = {2, 4, 4};
  EXPECT_EQ(predict_sliding_window(ramp(1, {8, 8, 8}), {&other}, o, ws->get()).status().code(),
            base::Code::kResourceExhausted);
  // And the workspace still serves a volume that fits.
  o.patch_size = patch;
  EXPECT_TRUE(predict_sliding_window(ramp(1, {8, 8, 8}), {&net}, o, ws->get()).ok());
}

TEST(SlidingWindowWorkspace, CreateRejectsSizesItCannotServe) {
  EXPECT_EQ(SlidingWindowWorkspace::create({0, 1, {4, 4, 4}, 64, false, false}).status().code(),
            base::Code::kInvalidArgument);
  EXPECT_EQ(SlidingWindowWorkspace::create({1, 1, {4, 4, 4}, 63, false, false}).status().code(),
            base::Code::kInvalidArgument);
  // An allocation the machine cannot give is an error, not a crash.
  auto huge = SlidingWindowWorkspace::create({64, 64, {4, 4, 4}, int64_t{1} << 40, true, true});
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.status().code(), base::Code::kResourceExhausted);
  EXPECT_NE(huge.status().message().find("MiB"), std::string::npos) << huge.status().message();
}

TEST(SlidingWindow, ReportsProgressAfterEveryNetworkRun) {
  const Shape3 patch{4, 4, 4};
  FakeModel a(1, 1, patch, [](int64_t, int64_t, int64_t, int64_t, const float* in) { return in[0]; });
  FakeModel b(1, 1, patch, [](int64_t, int64_t, int64_t, int64_t, const float* in) { return in[0]; });
  SlidingWindowOptions o;
  o.patch_size = patch;
  o.use_mirroring = true;
  o.mirroring_axes = {2};
  std::vector<std::pair<int64_t, int64_t>> seen;
  o.progress = [&](std::string_view stage, int64_t done, int64_t total) {
    EXPECT_EQ(stage, "inference");
    seen.emplace_back(done, total);
  };
  auto r = predict_sliding_window(ramp(1, {4, 4, 6}), {&a, &b}, o);
  ASSERT_TRUE(r.ok());
  // 2 tiles x 2 (mirroring over one axis) x 2 networks.
  ASSERT_EQ(r->network_runs, 8);
  ASSERT_EQ(seen.size(), 8u);
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i], (std::pair<int64_t, int64_t>(i + 1, 8)));
}

}  // namespace
}  // namespace inference
