// Tests of image/grid_resample: resampling through the affines (identity, shifts, flips,
// rotations, coarser grids, outside value, argument errors).
#include "image/grid_resample.h"

#include <gtest/gtest.h>

#include <cmath>

namespace image {
namespace {

Grid make_grid(int64_t ni, int64_t nj, int64_t nk, double si = 1, double sj = 1, double sk = 1) {
  Grid g;
  g.dims = {ni, nj, nk};
  g.affine = Eigen::Matrix4d::Identity();
  g.affine(0, 0) = si;
  g.affine(1, 1) = sj;
  g.affine(2, 2) = sk;
  return g;
}

/// A volume whose value is a linear function of the patient position.
VolumeF linear_volume(const Grid& g) {
  VolumeF v(g);
  for (int64_t k = 0; k < g.dims[2]; ++k) {
    for (int64_t j = 0; j < g.dims[1]; ++j) {
      for (int64_t i = 0; i < g.dims[0]; ++i) {
        const Eigen::Vector3d p = g.to_patient(i, j, k);
        v.at(i, j, k) = static_cast<float>(1.0 + 2.0 * p.x() - 3.0 * p.y() + 0.5 * p.z());
      }
    }
  }
  return v;
}

TEST(GridResample, IdentityGridReturnsTheSameValues) {
  const Grid g = make_grid(4, 3, 2, 0.9, 1.1, 3.0);
  const VolumeF src = linear_volume(g);
  for (int order : {kNearest, kTrilinear}) {
    auto out = resample_to_grid(src, g, order);
    ASSERT_TRUE(out.ok());
    EXPECT_EQ(out->data, src.data) << "order " << order;
  }
}

TEST(GridResample, TrilinearReproducesALinearFieldOnACoarserGridInside) {
  Grid src_grid = make_grid(10, 10, 6, 1.0, 1.0, 2.0);
  src_grid.affine.block<3, 1>(0, 3) = Eigen::Vector3d(-5, 3, 7);
  const VolumeF src = linear_volume(src_grid);
  Grid target = make_grid(7, 6, 5, 1.3, 1.4, 2.1);
  target.affine.block<3, 1>(0, 3) = Eigen::Vector3d(-4.2, 3.9, 7.5);
  auto out = resample_to_grid(src, target, kTrilinear);
  ASSERT_TRUE(out.ok());
  for (int64_t k = 0; k < 5; ++k) {
    for (int64_t j = 0; j < 6; ++j) {
      for (int64_t i = 0; i < 7; ++i) {
        const Eigen::Vector3d p = target.to_patient(i, j, k);
        EXPECT_NEAR(out->at(i, j, k), 1.0 + 2.0 * p.x() - 3.0 * p.y() + 0.5 * p.z(), 1e-3) << i << j << k;
      }
    }
  }
}

TEST(GridResample, HalfVoxelShiftAveragesNeighbours) {
  const Grid g = make_grid(3, 1, 1);
  VolumeF src(g);
  src.data = {0.f, 10.f, 30.f};
  Grid shifted = make_grid(2, 1, 1);
  shifted.affine(0, 3) = 0.5;
  auto out = resample_to_grid(src, shifted, kTrilinear);
  ASSERT_TRUE(out.ok());
  EXPECT_FLOAT_EQ(out->data[0], 5.f);
  EXPECT_FLOAT_EQ(out->data[1], 20.f);
}

TEST(GridResample, FlippedAndRotatedGridsPermuteVoxelsExactly) {
  const Grid g = make_grid(3, 2, 2);
  VolumeF src(g);
  for (size_t v = 0; v < src.data.size(); ++v) src.data[v] = static_cast<float>(v);
  // Flip i: column 0 = -x, origin at the last voxel along x.
  Grid flipped = g;
  flipped.affine(0, 0) = -1;
  flipped.affine(0, 3) = 2;
  auto out = resample_to_grid(src, flipped, kNearest);
  ASSERT_TRUE(out.ok());
  for (int64_t k = 0; k < 2; ++k)
    for (int64_t j = 0; j < 2; ++j)
      for (int64_t i = 0; i < 3; ++i) EXPECT_EQ(out->at(i, j, k), src.at(2 - i, j, k));
  // Swap i and j: target i runs along y, target j along x.
  Grid swapped;
  swapped.dims = {2, 3, 2};
  swapped.affine = Eigen::Matrix4d::Identity();
  swapped.affine.block<3, 3>(0, 0) << 0, 1, 0, 1, 0, 0, 0, 0, 1;
  auto out2 = resample_to_grid(src, swapped, kTrilinear);
  ASSERT_TRUE(out2.ok());
  for (int64_t k = 0; k < 2; ++k)
    for (int64_t j = 0; j < 3; ++j)
      for (int64_t i = 0; i < 2; ++i) EXPECT_FLOAT_EQ(out2->at(i, j, k), src.at(j, i, k));
}

TEST(GridResample, VoxelsBeyondTheSourceGetTheOutsideValue) {
  const Grid g = make_grid(2, 2, 2);
  const VolumeF src(g, 7.f);
  Grid target = make_grid(4, 1, 1);
  target.affine(0, 3) = -1.0;  // voxel 0 at x=-1 (outside), 1..2 inside, 3 at x=2 (outside)
  for (int order : {kNearest, kTrilinear}) {
    auto out = resample_to_grid(src, target, order, -1.f);
    ASSERT_TRUE(out.ok());
    EXPECT_EQ(out->data, (std::vector<float>{-1.f, 7.f, 7.f, -1.f})) << "order " << order;
  }
}

TEST(GridResample, RejectsBadOrderSingularAffineAndSizeMismatch) {
  const Grid g = make_grid(2, 2, 2);
  VolumeF src(g, 1.f);
  EXPECT_EQ(resample_to_grid(src, g, 3).status().code(), base::Code::kInvalidArgument);
  VolumeF singular = src;
  singular.grid.affine(2, 2) = 0;
  EXPECT_EQ(resample_to_grid(singular, g, 1).status().code(), base::Code::kInvalidArgument);
  VolumeF short_data = src;
  short_data.data.pop_back();
  EXPECT_EQ(resample_to_grid(short_data, g, 1).status().code(), base::Code::kInvalidArgument);
}

}  // namespace
}  // namespace image
