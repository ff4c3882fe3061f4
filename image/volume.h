// Volume<T>: a 3D voxel array on a grid with a voxel-to-patient affine (DICOM LPS, mm).
// Memory order: i fastest, then j, then k, i.e. a C-order array [k][j][i]. That is the NIfTI
// index order (i,j,k) and, read as a C array, nnU-Net's "(z, y, x)" array order.
#pragma once

#include <Eigen/Dense>
#include <array>
#include <cstdint>
#include <vector>

namespace image {

/// The sampling grid of a volume.
struct Grid {
  /// Number of voxels along (i, j, k); i varies fastest in memory.
  std::array<int64_t, 3> dims{0, 0, 0};
  /// Maps a homogeneous voxel index (i, j, k, 1) to patient coordinates in mm, DICOM LPS
  /// (x towards the patient's left, y posterior, z superior). Columns 0..2 are the voxel
  /// axes scaled by the spacing; column 3 is the centre of voxel (0, 0, 0).
  Eigen::Matrix4d affine = Eigen::Matrix4d::Identity();

  int64_t voxel_count() const { return dims[0] * dims[1] * dims[2]; }
  /// Voxel size along (i, j, k) in mm: the norms of the affine's first three columns.
  std::array<double, 3> spacing_mm() const {
    return {affine.block<3, 1>(0, 0).norm(), affine.block<3, 1>(0, 1).norm(),
            affine.block<3, 1>(0, 2).norm()};
  }
  /// Voxel volume in mL (mm^3 / 1000).
  double voxel_volume_ml() const { return std::abs(affine.block<3, 3>(0, 0).determinant()) / 1000.0; }
  /// Patient position (LPS, mm) of a (possibly fractional) voxel index.
  Eigen::Vector3d to_patient(double i, double j, double k) const {
    return (affine * Eigen::Vector4d(i, j, k, 1.0)).head<3>();
  }
  /// Same dims and affines equal within `tol_mm` per element.
  bool same_as(const Grid& o, double tol_mm = 1e-3) const {
    return dims == o.dims && (affine - o.affine).cwiseAbs().maxCoeff() <= tol_mm;
  }
};

/// A scalar volume. `data.size() == grid.voxel_count()`.
template <typename T>
struct Volume {
  Grid grid;
  std::vector<T> data;

  Volume() = default;
  explicit Volume(const Grid& g, T fill = T{}) : grid(g), data(static_cast<size_t>(g.voxel_count()), fill) {}

  int64_t ni() const { return grid.dims[0]; }
  int64_t nj() const { return grid.dims[1]; }
  int64_t nk() const { return grid.dims[2]; }
  size_t index(int64_t i, int64_t j, int64_t k) const {
    return static_cast<size_t>(i + grid.dims[0] * (j + grid.dims[1] * k));
  }
  T& at(int64_t i, int64_t j, int64_t k) { return data[index(i, j, k)]; }
  const T& at(int64_t i, int64_t j, int64_t k) const { return data[index(i, j, k)]; }
};

using VolumeF = Volume<float>;
using VolumeU8 = Volume<uint8_t>;

}  // namespace image
