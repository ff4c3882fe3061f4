// A diffusion series as a set of volumes: the images of one series (classic files, Enhanced MR
// frames or Siemens mosaic tiles) grouped by b-value, gradient direction and the trace/ADC
// flags, so that b0, each direction, the scanner's trace (isotropic) image and its ADC come
// apart even when several images share a position and InstanceNumbers are scrambled. Usage:
//   SB_ASSIGN_OR_RETURN(auto volumes, image::split_diffusion_volumes(series));
//   for (const auto& v : volumes) if (v.kind == DiffusionImageKind::kTrace) ... assemble_volume(v.images)
#pragma once

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "image/dicom_series.h"
#include "image/volume.h"

namespace image {

/// What one diffusion image is.
enum class DiffusionImageKind {
  kB0,           ///< b <= b0_max (s/mm^2), or untagged in a series whose other images carry b
  kTrace,        ///< the scanner's trace/isotropic image: ImageType TRACEW/TRACE, Diffusion
                 ///< Directionality ISOTROPIC, Philips (2001,xx04) 'I', or b > b0_max with a
                 ///< zero gradient vector (GE, UIH)
  kDirectional,  ///< one gradient direction: Directionality DIRECTIONAL or a non-zero vector
  kAdc,          ///< the scanner's ADC map (ImageType ADC)
  kUnspecified,  ///< b > b0_max (or no b at all) and nothing says trace or direction
};

/// "b0", "trace", "directional", "adc", "unspecified".
const char* kind_name(DiffusionImageKind kind);

/// Classifies one image. `series_has_b`: some image of its series carries a b-value (then an
/// untagged image is b0, as Canon/Toshiba send their b0).
DiffusionImageKind classify_diffusion_image(const DicomInstance& inst, bool series_has_b, double b0_max_s_mm2);

/// One volume of a diffusion series.
struct DiffusionVolume {
  DiffusionImageKind kind = DiffusionImageKind::kUnspecified;
  /// b-value in s/mm^2 rounded to 1; empty when the images carry none (kUnspecified, kAdc).
  std::optional<double> b_value;
  /// Gradient direction (rounded to 1e-3) for kDirectional; empty otherwise.
  std::optional<std::array<double, 3>> direction;
  /// True when these images carry no b-value and were taken as b0 because other images of the
  /// series carry one.
  bool b_untagged = false;
  /// 0 for the first volume with this (kind, b, direction), 1, 2, ... for repeats (same key
  /// at the same positions), in acquisition order (AcquisitionNumber, InstanceNumber, frame).
  int repeat = 0;
  /// The series restricted to this volume's images, at most one per position; ready for
  /// sort_slices()/assemble_volume().
  DicomSeries images;
};

/// One line for logs: "b=1000 directional (0.49, 0.84, -0.21), 9 images".
std::string describe_volume(const DiffusionVolume& volume);

/// Splits `series` into volumes keyed by (kind, b-value, direction, matrix size); images of one key at the
/// same position (rounded to 0.01 mm) become repeats. Volumes are ordered by kind (b0, trace,
/// directional, unspecified, ADC), then b-value, then first appearance, then repeat.
/// Errors: kInvalidArgument when the series has no images or an image has no position.
base::Result<std::vector<DiffusionVolume>> split_diffusion_volumes(const DicomSeries& series,
                                                                   double b0_max_s_mm2 = 50.0);

/// The trace-weighted image computed from directional images of one b-value: the voxelwise
/// geometric mean (prod S_i)^(1/n), which is what scanners compute for their trace image
/// (S_trace = S0 exp(-b * trace(D) / 3)). A voxel that is <= 0 in any input is 0.
/// All volumes must share one grid (the result's). Errors: kInvalidArgument for no volumes or
/// different grids.
base::Result<VolumeF> geometric_mean(const std::vector<VolumeF>& volumes);

/// geometric_mean() one volume at a time, so that a 64-direction series never holds more than
/// one direction in memory besides the running sum: add() each volume, then result().
class GeometricMeanAccumulator {
 public:
  /// Adds one volume. Errors: kInvalidArgument when its grid differs from the first volume's.
  base::Status add(const VolumeF& volume);
  /// The geometric mean of the volumes added so far. Errors: kInvalidArgument when none was.
  base::Result<VolumeF> result() const;
  int count() const { return count_; }

 private:
  Grid grid_;
  std::vector<double> log_sum_;
  std::vector<bool> positive_;
  int count_ = 0;
};

/// The voxelwise arithmetic mean of repeated volumes on one grid (repeated b0 images).
/// Errors: kInvalidArgument for no volumes or different grids.
base::Result<VolumeF> arithmetic_mean(const std::vector<VolumeF>& volumes);

}  // namespace image
