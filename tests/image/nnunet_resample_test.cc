// nnU-Net resampling (image/nnunet_resample.h) against reference values computed with
// scipy 1.10 (scipy.ndimage.zoom(..., mode="nearest", grid_mode=True) + clip, and nnU-Net's
// separate-z path rebuilt from zoom + map_coordinates), and the shape/axis rules.
#include "image/nnunet_resample.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace image {
namespace {

std::vector<double> resize_line(const std::vector<double>& in, int64_t m, int order) {
  std::vector<double> out(m);
  EXPECT_TRUE(resize_volume(in.data(), {1, 1, (int64_t)in.size()}, out.data(), {1, 1, m}, order).ok());
  return out;
}

void expect_near_all(const std::vector<double>& got, const std::vector<double>& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t k = 0; k < got.size(); ++k) EXPECT_NEAR(got[k], want[k], tol) << "at " << k;
}

const std::vector<double> kLine{0., 1., 4., 9., 3., -2., 5.};

TEST(NnunetResize, Order0MatchesScipyZoomNearest) {
  expect_near_all(resize_line(kLine, 11, 0), {0.0, 0.0, 1.0, 4.0, 4.0, 9.0, 3.0, 3.0, -2.0, 5.0, 5.0}, 0.0);
}

TEST(NnunetResize, Order1MatchesScipyZoomLinear) {
  expect_near_all(resize_line(kLine, 11, 1),
                  {0.0, 0.4545454545454546, 1.2727272727272725, 3.181818181818181, 5.818181818181818, 9.0,
                   5.18181818181818, 1.6363636363636376, -1.5454545454545459, 1.8181818181818148, 5.0},
                  1e-12);
  expect_near_all(resize_line(kLine, 3, 1), {0.6666666666666667, 9.0, 0.3333333333333375}, 1e-12);
}

TEST(NnunetResize, Order3MatchesScipyCubicSplineWithEdgePrefilterAndClip) {
  // Upsampling: -2.0 at index 8 is the clip to the input minimum.
  expect_near_all(resize_line(kLine, 11, 3),
                  {-0.051925957983726886, 0.31771904813497487, 1.14023043393987, 2.7242901106150503,
                   6.322597611780038, 9.0, 6.117841241104621, 0.670826441574665, -2.0, 1.5845623941031481,
                   5.639904893414878},
                  1e-12);
  expect_near_all(resize_line(kLine, 4, 3),
                  {0.24379078227036388, 4.7506102834465285, 4.109362428071779, 2.276392848472238}, 1e-12);
}

TEST(NnunetResize, Order3In3DEqualsScipyTensorProductSpline) {
  const std::vector<double> x{-3.0, 1.0, 25.0, 45.0, -47.0, -36.0, 32.0, 44.0, -26.0, -19.0, 36.0, -8.0,
                              -23.0, 32.0, -25.0, -10.0, 14.0, 4.0, -42.0, -48.0, 36.0, 25.0, 33.0, 3.0,
                              31.0, -18.0, -5.0, 28.0, -38.0, -20.0, -38.0, -5.0, 47.0, -37.0, -12.0, -10.0,
                              40.0, -30.0, 0.0, -24.0, -49.0, 25.0, -44.0, -22.0, -1.0, -2.0, -39.0, 48.0,
                              24.0, 46.0, -41.0, 22.0, -21.0, 4.0, 42.0, -23.0, 22.0, -34.0, -18.0, 46.0};
  const std::vector<double> want{
      -35.357822528051855, -3.977082644433481,  34.09943077393519,   42.88007059303722,   18.12687990187004,
      -17.10658337487936,  -37.80360416328649,  26.24377490928003,   11.195095481077097,  -12.7358287552382,
      -20.207403050480636, 2.1630840518435144,  -10.348335528215312, -41.91734334789469,  -11.471850001927343,
      4.083152060630339,   29.54777459214824,   37.584120348161605,  6.363766944561919,   -17.53313240181098,
      -20.35647011438413,  4.566766793668447,   5.700751116325063,   2.800766470406862,   -2.2592585548992794,
      -2.184273179480145,  -17.669625381889176, -36.37407018566645,  12.330193448353882,  8.418593824563798,
      18.047140610298417,  26.517730278133577,  -6.856687716722642,  -12.918431383287892, 6.711521450612695,
      -27.53892235504054,  0.5077241619859235,  22.466699708728264,  10.543756939305208,  -11.571693409344604,
      -19.100080006645594, -15.29822168254319,  -4.685830884722788,  -7.645915445035417,  1.8397722786855197,
      14.12438787932648,   -2.661910019290836,  1.4591013742334067,  21.320178526134807,  -41.43165509378989,
      5.2093429773295,     23.082408110231892,  -16.434068584522024, -22.591891590614093, 2.4940080727910168,
      24.182431448113388,  -25.091463323520184, -21.721627430945762, -7.8191520766216875, 7.38856427578272,
      4.4722113584148175,  11.626181840440408,  25.247713257829034,  -43.345820077415446, 10.451659250818267,
      17.94764188281741,   -41.65203633351389,  -28.71097296142658,  20.15660416307352,   48.0};
  std::vector<double> got(5 * 2 * 7);
  ASSERT_TRUE(resize_volume(x.data(), {3, 4, 5}, got.data(), {5, 2, 7}, 3).ok());
  expect_near_all(got, want, 1e-10);
}

Tensor4f small_volume() {
  const std::vector<float> x{33.0,  -24.0, -40.0, -21.0, -9.0,  31.0,  -5.0,  -41.0, -17.0, 10.0,  31.0,  22.0,
                             49.0,  -32.0, 38.0,  -45.0, 5.0,   -23.0, -30.0, 15.0,  -20.0, 6.0,   -24.0, -35.0,
                             24.0,  -7.0,  17.0,  16.0,  44.0,  -8.0,  -29.0, 13.0,  43.0,  46.0,  36.0,  18.0,
                             -12.0, -11.0, -47.0, -32.0, -17.0, -16.0, 7.0,   1.0,   19.0,  39.0,  37.0,  27.0,
                             47.0,  -19.0, 40.0,  42.0,  -28.0, -3.0,  6.0,   19.0,  20.0,  -40.0, -3.0,  -40.0};
  Tensor4f t(1, {3, 4, 5});
  t.data = x;
  return t;
}

TEST(NnunetResample, SeparateZAxis0InPlaneCubicThenNearestAlongZ) {
  const Tensor4f t = small_volume();
  auto r = resample_data_or_seg(t, {7, 6, 3}, 3, SeparateZ{true, 0}, 0);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  const std::vector<float> slice0{16.87040138244629,  -37.658714294433594, -12.29411506652832,  18.3917236328125,
                                  -45.0,              -4.512564182281494,  25.34708023071289,   -26.655288696289062,
                                  6.269728660583496,  28.42698860168457,   42.58211898803711,   10.52499771118164,
                                  -1.845284104347229, 22.070209503173828,  6.0447306632995605,  -32.08700180053711,
                                  -30.436132431030273, 0.8040903806686401};
  const std::vector<float> slice6{-22.82730484008789, 4.381110191345215,  13.619494438171387, 9.428136825561523,
                                  22.203367233276367, 6.525526523590088,  45.92339324951172,  21.655569076538086,
                                  3.6274242401123047, 47.0,               -19.08291244506836, 8.015666007995605,
                                  34.375999450683594, -40.0,              -8.590500831604004, 23.068429946899414,
                                  -39.6773796081543,  -27.380346298217773};
  // Output z = 0, 1 come from input slice 0 (c = 3/7 * (i + 0.5) - 0.5 -> 0), 5, 6 from slice 2.
  for (int k = 0; k < 18; ++k) {
    EXPECT_NEAR(r->data[k], slice0[k], 1e-5) << k;
    EXPECT_NEAR(r->data[18 + k], slice0[k], 1e-5) << k;
    EXPECT_NEAR(r->data[6 * 18 + k], slice6[k], 1e-5) << k;
  }
}

TEST(NnunetResample, SeparateZAxis2InPlaneLinear) {
  const Tensor4f t = small_volume();
  auto r = resample_data_or_seg(t, {2, 3, 8}, 1, SeparateZ{true, 2}, 0);
  ASSERT_TRUE(r.ok());
  const std::vector<float> want{
      20.04166603088379,  20.04166603088379,  -13.666666984558105, -34.45833206176758,  -34.45833206176758,
      -20.70833396911621, 0.2916666567325592, 0.2916666567325592,  18.75,               18.75,
      10.125,             10.375,             10.375,              -7.125,              21.5,
      21.5,               -21.70833396911621, -21.70833396911621,  3.9166667461395264,  -8.75,
      -8.75,              -30.625,            8.958333015441895,   8.958333015441895,   -10.208333015441895,
      -10.208333015441895, -3.4166667461395264, 3.4166667461395264, 3.4166667461395264, 1.0416666269302368,
      14.166666984558105, 14.166666984558105, 25.125,              25.125,              33.375,
      7.0,                7.0,                27.75,               -1.375,              -1.375,
      19.41666603088379,  19.41666603088379,  15.791666984558105,  -29.0,               -29.0,
      -10.125,            -29.41666603088379, -29.41666603088379};
  ASSERT_EQ(r->data.size(), want.size());
  for (size_t k = 0; k < want.size(); ++k) EXPECT_NEAR(r->data[k], want[k], 1e-5) << k;
}

TEST(NnunetResample, SameShapeReturnsInputUnchanged) {
  const Tensor4f t = small_volume();
  auto r = resample_data_or_seg(t, t.spatial(), 3, {}, 0);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->data, t.data);
}

TEST(NnunetResample, RejectsUnsupportedOrder) {
  const Tensor4f t = small_volume();
  EXPECT_EQ(resample_data_or_seg(t, {4, 4, 4}, 2, {}, 0).status().code(), base::Code::kInvalidArgument);
}

TEST(NnunetResample, Fp16OutputRoundsToHalfValues) {
  const Tensor4f t = small_volume();
  auto r = resample_data_or_seg(t, {4, 5, 6}, 1, {}, 0, /*round_output_to_fp16=*/true);
  ASSERT_TRUE(r.ok());
  for (float v : r->data) EXPECT_EQ(v, fp16_round(v));
}

TEST(NnunetResample, LargeCubicResampleCompletes) {
  // 2 x 30 x 200 x 200 -> 2 x 75 x 120 x 120, order 3 (the brief's speed case; timed in bench).
  Tensor4f t(2, {30, 200, 200});
  for (size_t v = 0; v < t.data.size(); ++v) t.data[v] = (float)std::sin(0.001 * (double)v);
  auto r = resample_data_or_seg(t, {75, 120, 120}, 3, {}, 0);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->shape, (std::array<int64_t, 4>{2, 75, 120, 120}));
  for (float v : r->data) ASSERT_TRUE(v >= -1.0f && v <= 1.0f);  // clipped to the input range
}

TEST(ComputeNewShape, RoundsHalfToEvenInDoubleLikePython) {
  // 0.8999999761581421 / 1.2 * 90 = 67.4999... -> 67 (nnU-Net golden case04).
  EXPECT_EQ(compute_new_shape({90, 14, 106}, {0.8999999761581421, 3.0, 0.8999999761581421}, {1.2, 2.0, 1.2}),
            (Shape3{67, 21, 79}));
  // Exact halves go to even: 2.5 -> 2, 3.5 -> 4.
  EXPECT_EQ(compute_new_shape({5, 7, 1}, {1.0, 1.0, 1.0}, {2.0, 2.0, 1.0}), (Shape3{2, 4, 1}));
}

TEST(DetermineSeparateZ, UsesCurrentSpacingFirstThenTarget) {
  auto r = determine_do_sep_z_and_axis(std::nullopt, {4.0, 1.2000000476837158, 1.2000000476837158}, {1, 1, 1});
  EXPECT_TRUE(r.do_separate_z);
  EXPECT_EQ(r.axis, 0);
  // Current isotropic, target anisotropic: axis from the target.
  r = determine_do_sep_z_and_axis(std::nullopt, {1, 1, 1}, {1, 4, 1});
  EXPECT_TRUE(r.do_separate_z);
  EXPECT_EQ(r.axis, 1);
  // Ratio exactly 3 is not > 3.
  r = determine_do_sep_z_and_axis(std::nullopt, {3, 1, 1}, {1, 1, 1});
  EXPECT_FALSE(r.do_separate_z);
  // Two axes share the max spacing: no separate z.
  r = determine_do_sep_z_and_axis(std::nullopt, {0.24, 1.25, 1.25}, {1, 1, 1});
  EXPECT_FALSE(r.do_separate_z);
  EXPECT_EQ(r.axis, -1);
  // Forced.
  r = determine_do_sep_z_and_axis(true, {1, 2, 1}, {1, 1, 1});
  EXPECT_TRUE(r.do_separate_z);
  EXPECT_EQ(r.axis, 1);
  r = determine_do_sep_z_and_axis(false, {5, 1, 1}, {1, 1, 1});
  EXPECT_FALSE(r.do_separate_z);
}

TEST(Fp16, RoundsToNearestEvenIncludingSubnormalsAndOverflow) {
  EXPECT_EQ(fp16_round(1.0), 1.0f);
  EXPECT_EQ(fp16_round(1.0 + 1.0 / 2048), 1.0f);                   // tie -> even
  EXPECT_EQ(fp16_round(1.0 + 3.0 / 2048), 1.0f + 2.0f / 1024);     // tie -> even (up)
  EXPECT_EQ(fp16_round(1.0 + 1.0 / 2048 + 1e-9), 1.0f + 1.0f / 1024);
  EXPECT_EQ(fp16_round(65504.0), 65504.0f);
  EXPECT_TRUE(std::isinf(fp16_round(65520.0)));
  EXPECT_EQ(fp16_round(std::ldexp(1.0, -24)), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(fp16_round(std::ldexp(1.0, -25)), 0.0f);                   // tie -> even (0)
  EXPECT_EQ(fp16_round(std::ldexp(1.5, -25)), std::ldexp(1.0f, -24));
  EXPECT_EQ(fp16_round(-2.5), -2.5f);
  EXPECT_EQ(fp16_round(0.1), 0.0999755859375f);
}

}  // namespace
}  // namespace image
