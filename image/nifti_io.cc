// NIfTI I/O adapter over libnifti2 (nifti2_io.h). See nifti_io.h for the contract.
#include "image/nifti_io.h"

#include <nifti2_io.h>
#include <sys/stat.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <mutex>

namespace image {
namespace {

struct NiftiImageDeleter {
  void operator()(nifti_image* nim) const { nifti_image_free(nim); }
};
using NiftiImagePtr = std::unique_ptr<nifti_image, NiftiImageDeleter>;

// libnifti2 prints its own diagnostics to stderr; the appliance reports errors as values.
void quiet_library() {
  static std::once_flag once;
  std::call_once(once, [] { nifti_set_debug_level(0); });
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// RAS <-> LPS: flip the first two rows of the affine (its own inverse).
Eigen::Matrix4d flip_ras_lps(const Eigen::Matrix4d& m) {
  Eigen::Matrix4d f = Eigen::Matrix4d::Identity();
  f(0, 0) = -1.0;
  f(1, 1) = -1.0;
  return f * m;
}

Eigen::Matrix4d from_dmat44(const nifti_dmat44& m) {
  Eigen::Matrix4d out;
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) out(r, c) = m.m[r][c];
  return out;
}

nifti_dmat44 to_dmat44(const Eigen::Matrix4d& m) {
  nifti_dmat44 out;
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) out.m[r][c] = m(r, c);
  return out;
}

template <typename T>
void convert(const void* src, size_t n, float* dst) {
  const T* p = static_cast<const T*>(src);
  for (size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(p[i]);
}

template <typename T>
base::Status write_typed(const std::string& path, const Volume<T>& volume, int datatype) {
  quiet_library();
  if (!ends_with(path, ".nii") && !ends_with(path, ".nii.gz")) {
    return base::invalid_argument("cannot write NIfTI file '" + path + "': the name must end in .nii or .nii.gz");
  }
  const auto& d = volume.grid.dims;
  if (d[0] <= 0 || d[1] <= 0 || d[2] <= 0) {
    return base::invalid_argument("cannot write NIfTI file '" + path + "': the volume is empty");
  }
  if (volume.data.size() != static_cast<size_t>(volume.grid.voxel_count())) {
    return base::invalid_argument("cannot write NIfTI file '" + path + "': " + std::to_string(volume.data.size()) +
                                  " voxels for a grid of " + std::to_string(volume.grid.voxel_count()));
  }
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty() && !std::filesystem::is_directory(parent, ec)) {
    return base::not_found("cannot write NIfTI file '" + path + "': folder '" + parent.string() + "' does not exist");
  }

  const int64_t dims[8] = {3, d[0], d[1], d[2], 1, 1, 1, 1};
  NiftiImagePtr nim(nifti_make_new_nim(dims, datatype, 1));
  if (!nim) return base::internal_error("cannot write NIfTI file '" + path + "': libnifti2 could not allocate the image");

  const Eigen::Matrix4d ras = flip_ras_lps(volume.grid.affine);
  const auto spacing = volume.grid.spacing_mm();
  nim->dx = nim->pixdim[1] = spacing[0];
  nim->dy = nim->pixdim[2] = spacing[1];
  nim->dz = nim->pixdim[3] = spacing[2];
  nim->xyz_units = NIFTI_UNITS_MM;
  nim->time_units = NIFTI_UNITS_SEC;
  nim->scl_slope = 1.0;
  nim->scl_inter = 0.0;
  nim->nifti_type = NIFTI_FTYPE_NIFTI1_1;

  nim->sform_code = NIFTI_XFORM_SCANNER_ANAT;
  nim->sto_xyz = to_dmat44(ras);
  nim->sto_ijk = nifti_dmat44_inverse(nim->sto_xyz);
  nim->qform_code = NIFTI_XFORM_SCANNER_ANAT;
  double dx, dy, dz;
  nifti_dmat44_to_quatern(nim->sto_xyz, &nim->quatern_b, &nim->quatern_c, &nim->quatern_d, &nim->qoffset_x,
                          &nim->qoffset_y, &nim->qoffset_z, &dx, &dy, &dz, &nim->qfac);
  nim->qto_xyz = nifti_quatern_to_dmat44(nim->quatern_b, nim->quatern_c, nim->quatern_d, nim->qoffset_x,
                                         nim->qoffset_y, nim->qoffset_z, spacing[0], spacing[1], spacing[2],
                                         nim->qfac);
  nim->qto_ijk = nifti_dmat44_inverse(nim->qto_xyz);

  if (nifti_set_filenames(nim.get(), path.c_str(), 0, 1) != 0) {
    return base::invalid_argument("cannot write NIfTI file '" + path + "': libnifti2 rejected the file name");
  }
  std::memcpy(nim->data, volume.data.data(), volume.data.size() * sizeof(T));

  // write_opts 3 = write the data and leave the file open, so that success is observable.
  znzFile fp = nifti_image_write_hdr_img(nim.get(), 3, "wb");
  if (znz_isnull(fp)) {
    return base::internal_error("cannot write NIfTI file '" + path + "': " + std::strerror(errno));
  }
  if (Xznzclose(&fp) != 0) {
    return base::internal_error("cannot write NIfTI file '" + path + "': closing failed (disk full?)");
  }
  return base::ok_status();
}

}  // namespace

base::Result<VolumeF> read_nifti(const std::string& path, std::array<double, 3>* pixdim_mm) {
  quiet_library();
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return base::not_found("NIfTI file '" + path + "' does not exist");
  }
  if (!S_ISREG(st.st_mode)) {
    return base::invalid_argument("NIfTI path '" + path + "' is not a regular file");
  }
  NiftiImagePtr nim(nifti_image_read(path.c_str(), 1));
  if (!nim) {
    return base::data_loss("'" + path + "' is not a readable NIfTI file (bad header, wrong format or truncated data)");
  }
  if (nim->data == nullptr) {
    return base::data_loss("NIfTI file '" + path + "': the voxel data could not be read (truncated?)");
  }
  if (nim->nvox <= 0) {
    return base::invalid_argument("NIfTI file '" + path + "' holds no voxels");
  }
  const int64_t ni = std::max<int64_t>(nim->nx, 1), nj = std::max<int64_t>(nim->ny, 1),
                nk = std::max<int64_t>(nim->nz, 1);
  if (nim->nvox != ni * nj * nk) {
    return base::invalid_argument("NIfTI file '" + path + "' holds " + std::to_string(nim->nvox) +
                                  " voxels in more than 3 dimensions; only single 3D volumes are supported");
  }

  VolumeF out;
  out.grid.dims = {ni, nj, nk};
  out.data.resize(static_cast<size_t>(nim->nvox));
  const size_t n = out.data.size();
  float* dst = out.data.data();
  switch (nim->datatype) {
    case NIFTI_TYPE_UINT8: convert<uint8_t>(nim->data, n, dst); break;
    case NIFTI_TYPE_INT8: convert<int8_t>(nim->data, n, dst); break;
    case NIFTI_TYPE_INT16: convert<int16_t>(nim->data, n, dst); break;
    case NIFTI_TYPE_UINT16: convert<uint16_t>(nim->data, n, dst); break;
    case NIFTI_TYPE_INT32: convert<int32_t>(nim->data, n, dst); break;
    case NIFTI_TYPE_UINT32: convert<uint32_t>(nim->data, n, dst); break;
    case NIFTI_TYPE_INT64: convert<int64_t>(nim->data, n, dst); break;
    case NIFTI_TYPE_UINT64: convert<uint64_t>(nim->data, n, dst); break;
    case NIFTI_TYPE_FLOAT32: convert<float>(nim->data, n, dst); break;
    case NIFTI_TYPE_FLOAT64: convert<double>(nim->data, n, dst); break;
    default:
      return base::invalid_argument("NIfTI file '" + path + "' has datatype " +
                                    std::string(nifti_datatype_string(nim->datatype)) +
                                    "; only real scalar datatypes are supported");
  }
  const double slope = nim->scl_slope, inter = nim->scl_inter;
  if (std::isfinite(slope) && slope != 0.0 && !(slope == 1.0 && inter == 0.0)) {
    const double b = std::isfinite(inter) ? inter : 0.0;
    for (float& v : out.data) v = static_cast<float>(v * slope + b);
  }

  // NIfTI-1 pixdim is float32 on disk; libnifti2 widens it to double without rounding.
  const std::array<double, 3> pixdim{nim->pixdim[1], nim->pixdim[2], nim->pixdim[3]};
  if (pixdim_mm != nullptr) *pixdim_mm = pixdim;

  Eigen::Matrix4d ras;
  if (nim->sform_code > 0) {
    ras = from_dmat44(nim->sto_xyz);
  } else if (nim->qform_code > 0) {
    ras = from_dmat44(nim->qto_xyz);
  } else {
    ras = Eigen::Matrix4d::Identity();
    for (int a = 0; a < 3; ++a) ras(a, a) = pixdim[a] > 0.0 ? pixdim[a] : 1.0;
  }
  if (!ras.allFinite() || std::abs(ras.block<3, 3>(0, 0).determinant()) < 1e-12) {
    return base::invalid_argument("NIfTI file '" + path + "' has a degenerate voxel-to-world transform");
  }
  out.grid.affine = flip_ras_lps(ras);
  return out;
}

base::Status write_nifti(const std::string& path, const VolumeF& volume) {
  return write_typed(path, volume, NIFTI_TYPE_FLOAT32);
}

base::Status write_nifti(const std::string& path, const VolumeU8& volume) {
  return write_typed(path, volume, NIFTI_TYPE_UINT8);
}

}  // namespace image
