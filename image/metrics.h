// Voxel-wise, surface and lesion-wise agreement between a predicted and a reference lesion mask
// (Dice, IoU, precision, recall, accuracy, F1, HD95, ASSD, volumes, ISLES 2022 lesion-wise F1
// and count difference, average precision of a probability map), as used by `strokebox evaluate`.
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
/// accuracy = (tp + tn) / all voxels; f1 = 2 precision recall / (precision + recall) (0 when
/// both are 0): equal to dice except under the one-sided empty-mask conventions above.
struct SegmentationMetrics {
  double dice = 0, iou = 0, precision = 0, recall = 0;
  double accuracy = 0, f1 = 0;
  double pred_volume_ml = 0, truth_volume_ml = 0, abs_volume_diff_ml = 0;
  /// Connected components (26-connectivity) of each mask.
  int pred_lesions = 0, truth_lesions = 0;
  int64_t tp = 0, fp = 0, fn = 0, tn = 0;
  /// 95th percentile Hausdorff distance between the two masks' surfaces in mm; empty when
  /// either mask is empty (undefined; JSON null).
  std::optional<double> hd95_mm;
  /// Average symmetric surface distance in mm (MedPy's assd: the mean of the two directed
  /// mean surface distances, same surfaces and distance transform as hd95_mm); empty when
  /// either mask is empty.
  std::optional<double> assd_mm;
  /// ISLES 2022 lesion-wise detection (isles22 `lesion_f1_score`, 26-connectivity): a truth
  /// lesion is a TP when any of its voxels is predicted, else an FN; a predicted lesion that
  /// touches no truth voxel is an FP. lesion_f1 = tp / (tp + (fp + fn) / 2), 1 when there are
  /// no lesions in either mask. lesion_count_diff = |pred_lesions - truth_lesions|.
  int lesion_tp = 0, lesion_fp = 0, lesion_fn = 0;
  double lesion_f1 = 0;
  int lesion_count_diff = 0;
  /// Voxel-wise average precision of a probability map against the truth (set by
  /// compute_metrics when a map is given and the truth is not empty).
  std::optional<double> average_precision;
};

/// Compares two binary masks (non-zero = lesion) on the same grid.
/// dice = 2 tp / (2 tp + fp + fn); iou = tp / (tp + fp + fn); precision = tp / (tp + fp);
/// recall = tp / (tp + fn). hd95_mm as in MedPy's hd95: surface voxels are lesion voxels with
/// a background (or out-of-volume) face neighbour; the distances from each surface voxel of one
/// mask to the nearest surface voxel of the other (exact Euclidean distance transform in mm,
/// Felzenszwalb & Huttenlocher 2012, axis spacings from the grid) give two sets; hd95 = max of
/// their 95th percentiles (linear interpolation, numpy's default). Errors: kInvalidArgument when the grids differ (dims, or affine
/// elements by more than 1e-3 mm) or a data size does not match its grid.
/// With `probability` (same grid, values in [0, 1]) average_precision is computed as well
/// (errors of average_precision apply).
base::Result<SegmentationMetrics> compute_metrics(const VolumeU8& pred, const VolumeU8& truth,
                                                  const VolumeF* probability = nullptr);

/// Voxel-wise average precision of `probability` (same grid as `truth`, each value in [0, 1])
/// against the binary `truth` (non-zero = lesion), as scikit-learn's average_precision_score:
/// AP = sum over the distinct scores t, in decreasing order, of (R(t) - R(t_prev)) P(t), with
/// P, R the precision and recall of `probability >= t`. Empty result when the truth has no
/// lesion voxel (undefined). Errors: kInvalidArgument when the grids differ, a data size does
/// not match its grid, or a value is NaN or outside [0, 1] (names the first such voxel).
base::Result<std::optional<double>> average_precision(const VolumeF& probability, const VolumeU8& truth);

/// {"dice":..,"iou":..,"precision":..,"recall":..,"accuracy":..,"f1":..,"pred_volume_ml":..,
///  "truth_volume_ml":..,"abs_volume_diff_ml":..,"pred_lesions":..,"truth_lesions":..,"tp":..,
///  "fp":..,"fn":..,"tn":..,"hd95_mm": number or null,"assd_mm": number or null,"lesion_f1":..,
///  "lesion_tp":..,"lesion_fp":..,"lesion_fn":..,"lesion_count_diff":..,
///  "average_precision": number, or null without a probability map or an empty truth}
nlohmann::json to_json(const SegmentationMetrics& m);

/// 1 where value > threshold, else 0 (NaN counts as 0), on the same grid.
VolumeU8 binarize(const VolumeF& volume, float threshold = 0.5f);

}  // namespace image
