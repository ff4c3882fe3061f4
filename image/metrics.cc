#include "image/metrics.h"

#include <cmath>
#include <sstream>
#include <string>

#include "image/connected_components.h"

namespace image {
namespace {

std::string grid_text(const Grid& g) {
  std::ostringstream s;
  const auto sp = g.spacing_mm();
  s << g.dims[0] << " x " << g.dims[1] << " x " << g.dims[2] << " voxels of " << sp[0] << " x " << sp[1] << " x "
    << sp[2] << " mm, origin (" << g.affine(0, 3) << ", " << g.affine(1, 3) << ", " << g.affine(2, 3) << ")";
  return s.str();
}

double ratio(int64_t num, int64_t den, double if_empty) {
  return den == 0 ? if_empty : static_cast<double>(num) / static_cast<double>(den);
}

}  // namespace

base::Result<SegmentationMetrics> compute_metrics(const VolumeU8& pred, const VolumeU8& truth) {
  if (pred.data.size() != static_cast<size_t>(pred.grid.voxel_count()) ||
      truth.data.size() != static_cast<size_t>(truth.grid.voxel_count())) {
    return base::invalid_argument("compute_metrics: a mask's data size does not match its grid");
  }
  if (!pred.grid.same_as(truth.grid, 1e-3)) {
    return base::invalid_argument("the prediction and the truth are on different grids (prediction: " +
                                  grid_text(pred.grid) + "; truth: " + grid_text(truth.grid) +
                                  "); resample one onto the other first");
  }
  SegmentationMetrics m;
  for (size_t v = 0; v < pred.data.size(); ++v) {
    const bool p = pred.data[v] != 0, t = truth.data[v] != 0;
    if (p && t) ++m.tp;
    else if (p) ++m.fp;
    else if (t) ++m.fn;
    else ++m.tn;
  }
  const bool both_empty = m.tp + m.fp + m.fn == 0;
  m.dice = both_empty ? 1.0 : 2.0 * m.tp / static_cast<double>(2 * m.tp + m.fp + m.fn);
  m.iou = both_empty ? 1.0 : m.tp / static_cast<double>(m.tp + m.fp + m.fn);
  m.precision = ratio(m.tp, m.tp + m.fp, 1.0);
  m.recall = ratio(m.tp, m.tp + m.fn, 1.0);
  const double voxel_ml = pred.grid.voxel_volume_ml();
  m.pred_volume_ml = static_cast<double>(m.tp + m.fp) * voxel_ml;
  m.truth_volume_ml = static_cast<double>(m.tp + m.fn) * voxel_ml;
  m.abs_volume_diff_ml = std::abs(m.pred_volume_ml - m.truth_volume_ml);
  SB_ASSIGN_OR_RETURN(Components pc, label_components(pred));
  SB_ASSIGN_OR_RETURN(Components tc, label_components(truth));
  m.pred_lesions = pc.count();
  m.truth_lesions = tc.count();
  return m;
}

nlohmann::json to_json(const SegmentationMetrics& m) {
  nlohmann::json j = nlohmann::json::object();
  j["dice"] = m.dice;
  j["iou"] = m.iou;
  j["precision"] = m.precision;
  j["recall"] = m.recall;
  j["pred_volume_ml"] = m.pred_volume_ml;
  j["truth_volume_ml"] = m.truth_volume_ml;
  j["abs_volume_diff_ml"] = m.abs_volume_diff_ml;
  j["pred_lesions"] = m.pred_lesions;
  j["truth_lesions"] = m.truth_lesions;
  j["tp"] = m.tp;
  j["fp"] = m.fp;
  j["fn"] = m.fn;
  j["tn"] = m.tn;
  return j;
}

VolumeU8 binarize(const VolumeF& volume, float threshold) {
  VolumeU8 out(volume.grid, 0);
  for (size_t v = 0; v < volume.data.size() && v < out.data.size(); ++v) out.data[v] = volume.data[v] > threshold ? 1 : 0;
  return out;
}

}  // namespace image
