// Voxel-wise and lesion-wise agreement between a predicted and a reference lesion mask
// (Dice, IoU, precision, recall, volumes, lesion counts), as used by `strokebox evaluate`.
// Usage: SB_ASSIGN_OR_RETURN(auto m, image::compute_metrics(pred, truth)); print to_json(m).
#pragma once

#include <cstdint>
#include <optional>

#include <nlohmann/json.hpp>

#include "base/status.h"
#include "image/volume.h"

namespace image {

/// Counts are voxels; volumes are mL (voxel count x Grid::voxel_volume_ml()).
/// Conventions for empty masks (0/0 ratios): when both masks are empty, dice = iou =
/// precision = recall = 1 (perfect agreement on "no lesion"). When only the truth is empty,
/// dice = iou = precision = 0 and recall = 1 (nothing was missed); when only the prediction is
/// empty, dice = iou = recall = 0 and precision = 1 (nothing false was claimed).
struct SegmentationMetrics {
  double dice = 0, iou = 0, precision = 0, recall = 0;
  double pred_volume_ml = 0, truth_volume_ml = 0, abs_volume_diff_ml = 0;
  /// Connected components (26-connectivity) of each mask.
  int pred_lesions = 0, truth_lesions = 0;
  int64_t tp = 0, fp = 0, fn = 0, tn = 0;
  /// 95th percentile Hausdorff distance between the two masks' surfaces in mm; empty when
  /// either mask is empty (undefined; JSON null).
  std::optional<double> hd95_mm;
};

/// Compares two binary masks (non-zero = lesion) on the same grid.
/// dice = 2 tp / (2 tp + fp + fn); iou = tp / (tp + fp + fn); precision = tp / (tp + fp);
/// recall = tp / (tp + fn). hd95_mm as in MedPy's hd95: surface voxels are lesion voxels with
/// a background (or out-of-volume) face neighbour; the distances from each surface voxel of one
/// mask to the nearest surface voxel of the other (exact Euclidean distance transform in mm,
/// Felzenszwalb & Huttenlocher 2012, axis spacings from the grid) give two sets; hd95 = max of
/// their 95th percentiles (linear interpolation, numpy's default). Errors: kInvalidArgument when the grids differ (dims, or affine
/// elements by more than 1e-3 mm) or a data size does not match its grid.
base::Result<SegmentationMetrics> compute_metrics(const VolumeU8& pred, const VolumeU8& truth);

/// {"dice":..,"iou":..,"precision":..,"recall":..,"pred_volume_ml":..,"truth_volume_ml":..,
///  "abs_volume_diff_ml":..,"pred_lesions":..,"truth_lesions":..,"tp":..,"fp":..,"fn":..,"tn":..,
///  "hd95_mm": number or null}
nlohmann::json to_json(const SegmentationMetrics& m);

/// 1 where value > threshold, else 0 (NaN counts as 0), on the same grid.
VolumeU8 binarize(const VolumeF& volume, float threshold = 0.5f);

}  // namespace image
