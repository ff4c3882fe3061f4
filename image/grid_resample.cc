#include "image/grid_resample.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace image {
namespace {

std::string dims_text(const Grid& g) {
  return std::to_string(g.dims[0]) + " x " + std::to_string(g.dims[1]) + " x " + std::to_string(g.dims[2]);
}

}  // namespace

base::Result<VolumeF> resample_to_grid(const VolumeF& src, const Grid& target, int order, float outside) {
  if (order != kNearest && order != kTrilinear) {
    return base::invalid_argument("resample_to_grid: order must be 0 (nearest) or 1 (trilinear), got " +
                                  std::to_string(order));
  }
  if (src.grid.voxel_count() <= 0 || target.voxel_count() <= 0) {
    return base::invalid_argument("resample_to_grid: empty grid (source " + dims_text(src.grid) + ", target " +
                                  dims_text(target) + ")");
  }
  if (src.data.size() != static_cast<size_t>(src.grid.voxel_count())) {
    return base::invalid_argument("resample_to_grid: source holds " + std::to_string(src.data.size()) +
                                  " values for a " + dims_text(src.grid) + " grid");
  }
  const Eigen::Matrix3d linear = src.grid.affine.block<3, 3>(0, 0);
  if (!std::isfinite(linear.determinant()) || std::abs(linear.determinant()) < 1e-12) {
    return base::invalid_argument("resample_to_grid: the source affine is singular");
  }
  // Target voxel -> source voxel: M = A_src^-1 * A_target (both map voxel -> patient LPS).
  const Eigen::Matrix4d m = src.grid.affine.inverse() * target.affine;
  const Eigen::Vector3d di = m.block<3, 1>(0, 0), dj = m.block<3, 1>(0, 1), dk = m.block<3, 1>(0, 2);
  const Eigen::Vector3d q0 = m.block<3, 1>(0, 3);

  const int64_t n[3] = {src.grid.dims[0], src.grid.dims[1], src.grid.dims[2]};
  constexpr double kEps = 1e-6;
  VolumeF out(target, outside);
  const float* s = src.data.data();
  const int64_t sx = 1, sy = n[0], sz = n[0] * n[1];
  size_t o = 0;
  for (int64_t k = 0; k < target.dims[2]; ++k) {
    for (int64_t j = 0; j < target.dims[1]; ++j) {
      const Eigen::Vector3d row = q0 + dj * static_cast<double>(j) + dk * static_cast<double>(k);
      for (int64_t i = 0; i < target.dims[0]; ++i, ++o) {
        const Eigen::Vector3d q = row + di * static_cast<double>(i);
        bool inside = true;
        for (int a = 0; a < 3; ++a) {
          if (!(q[a] >= -0.5 - kEps && q[a] <= static_cast<double>(n[a]) - 0.5 + kEps)) inside = false;
        }
        if (!inside) continue;
        if (order == kNearest) {
          int64_t idx[3];
          for (int a = 0; a < 3; ++a) {
            idx[a] = std::clamp<int64_t>(static_cast<int64_t>(std::floor(q[a] + 0.5)), 0, n[a] - 1);
          }
          out.data[o] = s[idx[0] * sx + idx[1] * sy + idx[2] * sz];
          continue;
        }
        int64_t lo[3], hi[3];
        double f[3];
        for (int a = 0; a < 3; ++a) {
          const double c = std::clamp(q[a], 0.0, static_cast<double>(n[a] - 1));
          lo[a] = std::min<int64_t>(static_cast<int64_t>(std::floor(c)), n[a] - 1);
          hi[a] = std::min<int64_t>(lo[a] + 1, n[a] - 1);
          f[a] = c - static_cast<double>(lo[a]);
        }
        const auto at = [&](int64_t x, int64_t y, int64_t z) { return static_cast<double>(s[x * sx + y * sy + z * sz]); };
        const double c00 = at(lo[0], lo[1], lo[2]) * (1 - f[0]) + at(hi[0], lo[1], lo[2]) * f[0];
        const double c10 = at(lo[0], hi[1], lo[2]) * (1 - f[0]) + at(hi[0], hi[1], lo[2]) * f[0];
        const double c01 = at(lo[0], lo[1], hi[2]) * (1 - f[0]) + at(hi[0], lo[1], hi[2]) * f[0];
        const double c11 = at(lo[0], hi[1], hi[2]) * (1 - f[0]) + at(hi[0], hi[1], hi[2]) * f[0];
        const double c0 = c00 * (1 - f[1]) + c10 * f[1];
        const double c1 = c01 * (1 - f[1]) + c11 * f[1];
        out.data[o] = static_cast<float>(c0 * (1 - f[2]) + c1 * f[2]);
      }
    }
  }
  return out;
}

}  // namespace image
