#include "image/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <utility>
#include <vector>
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

constexpr double kInf = std::numeric_limits<double>::infinity();

/// 1D squared distance transform along a line of n samples spaced `step` apart, in place:
/// d(p) = min_q f(q) + (step (p - q))^2 (Felzenszwalb & Huttenlocher, "Distance Transforms of
/// Sampled Functions", 2012). Infinite samples add no parabola.
void edt_1d(double* f, int64_t n, int64_t stride, double step, std::vector<double>& d, std::vector<int64_t>& v,
            std::vector<double>& z) {
  d.resize(n);
  v.resize(n);
  z.resize(n + 1);
  int64_t k = -1;
  for (int64_t q = 0; q < n; ++q) {
    const double fq = f[q * stride];
    if (fq == kInf) continue;
    const double xq = step * q;
    while (k >= 0) {
      const double xv = step * v[k];
      const double s = ((fq + xq * xq) - (f[v[k] * stride] + xv * xv)) / (2 * (xq - xv));
      if (s <= z[k]) {
        --k;
      } else {
        break;
      }
    }
    if (k < 0) {
      k = 0;
      v[0] = q;
      z[0] = -kInf;
      z[1] = kInf;
      continue;
    }
    const double xv = step * v[k];
    const double s = ((fq + xq * xq) - (f[v[k] * stride] + xv * xv)) / (2 * (xq - xv));
    ++k;
    v[k] = q;
    z[k] = s;
    z[k + 1] = kInf;
  }
  if (k < 0) return;  // no finite sample: the line stays infinite
  int64_t j = 0;
  for (int64_t p = 0; p < n; ++p) {
    const double xp = step * p;
    while (z[j + 1] < xp) ++j;
    const double dx = xp - step * v[j];
    d[p] = dx * dx + f[v[j] * stride];
  }
  for (int64_t p = 0; p < n; ++p) f[p * stride] = d[p];
}

/// Squared Euclidean distance (mm^2) from every voxel to the nearest voxel where `feature`.
std::vector<double> squared_edt(const std::vector<uint8_t>& feature, const Grid& grid) {
  const int64_t n[3] = {grid.dims[0], grid.dims[1], grid.dims[2]};
  const auto spacing = grid.spacing_mm();
  std::vector<double> f(feature.size());
  for (size_t i = 0; i < f.size(); ++i) f[i] = feature[i] ? 0.0 : kInf;
  std::vector<double> d;
  std::vector<int64_t> v;
  std::vector<double> z;
  const int64_t stride[3] = {1, n[0], n[0] * n[1]};
  for (int axis = 0; axis < 3; ++axis) {
    const int a1 = (axis + 1) % 3, a2 = (axis + 2) % 3;
    for (int64_t u = 0; u < n[a1]; ++u) {
      for (int64_t w = 0; w < n[a2]; ++w) {
        edt_1d(f.data() + u * stride[a1] + w * stride[a2], n[axis], stride[axis], spacing[axis], d, v, z);
      }
    }
  }
  return f;
}

/// Lesion voxels with a background or out-of-volume face neighbour.
std::vector<uint8_t> surface(const VolumeU8& m) {
  std::vector<uint8_t> s(m.data.size(), 0);
  const int64_t ni = m.ni(), nj = m.nj(), nk = m.nk();
  for (int64_t k = 0; k < nk; ++k) {
    for (int64_t j = 0; j < nj; ++j) {
      for (int64_t i = 0; i < ni; ++i) {
        if (m.at(i, j, k) == 0) continue;
        const bool border = i == 0 || j == 0 || k == 0 || i == ni - 1 || j == nj - 1 || k == nk - 1;
        if (border || !m.at(i - 1, j, k) || !m.at(i + 1, j, k) || !m.at(i, j - 1, k) || !m.at(i, j + 1, k) ||
            !m.at(i, j, k - 1) || !m.at(i, j, k + 1)) {
          s[m.index(i, j, k)] = 1;
        }
      }
    }
  }
  return s;
}

double percentile_95(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const double pos = 0.95 * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (pos - static_cast<double>(lo)) * (values[hi] - values[lo]);
}

/// MedPy-style hd95 and assd between two non-empty masks on one grid.
std::pair<double, double> hd95_and_assd_mm(const VolumeU8& a, const VolumeU8& b) {
  const std::vector<uint8_t> sa = surface(a), sb = surface(b);
  const std::vector<double> to_a = squared_edt(sa, a.grid), to_b = squared_edt(sb, b.grid);
  std::vector<double> ab, ba;
  for (size_t v = 0; v < sa.size(); ++v) {
    if (sa[v]) ab.push_back(std::sqrt(to_b[v]));
    if (sb[v]) ba.push_back(std::sqrt(to_a[v]));
  }
  const auto mean = [](const std::vector<double>& d) {
    double sum = 0.0;
    for (double x : d) sum += x;
    return sum / static_cast<double>(d.size());
  };
  const double assd = 0.5 * (mean(ab) + mean(ba));
  return {std::max(percentile_95(std::move(ab)), percentile_95(std::move(ba))), assd};
}

/// ISLES 2022 lesion-wise counts: truth components hit / missed, prediction components
/// touching no truth voxel.
void lesion_detection(const Components& truth_cc, const Components& pred_cc, const VolumeU8& pred,
                      const VolumeU8& truth, SegmentationMetrics& m) {
  std::vector<uint8_t> truth_hit(truth_cc.sizes.size(), 0), pred_hit(pred_cc.sizes.size(), 0);
  for (size_t v = 0; v < pred.data.size(); ++v) {
    if (pred.data[v] == 0 || truth.data[v] == 0) continue;
    truth_hit[truth_cc.labels.data[v] - 1] = 1;
    pred_hit[pred_cc.labels.data[v] - 1] = 1;
  }
  m.lesion_tp = static_cast<int>(std::count(truth_hit.begin(), truth_hit.end(), 1));
  m.lesion_fn = static_cast<int>(truth_hit.size()) - m.lesion_tp;
  m.lesion_fp = static_cast<int>(std::count(pred_hit.begin(), pred_hit.end(), 0));
  const int n = m.lesion_tp + m.lesion_fp + m.lesion_fn;
  m.lesion_f1 = n == 0 ? 1.0 : m.lesion_tp / (m.lesion_tp + 0.5 * (m.lesion_fp + m.lesion_fn));
  m.lesion_count_diff = std::abs(m.pred_lesions - m.truth_lesions);
}

}  // namespace

base::Result<std::optional<double>> average_precision(const VolumeF& probability, const VolumeU8& truth) {
  if (probability.data.size() != static_cast<size_t>(probability.grid.voxel_count()) ||
      truth.data.size() != static_cast<size_t>(truth.grid.voxel_count())) {
    return base::invalid_argument("average_precision: a volume's data size does not match its grid");
  }
  if (!probability.grid.same_as(truth.grid, 1e-3)) {
    return base::invalid_argument("the probability map and the truth are on different grids (probability: " +
                                  grid_text(probability.grid) + "; truth: " + grid_text(truth.grid) + ")");
  }
  std::vector<std::pair<float, uint8_t>> scored(probability.data.size());
  int64_t positives = 0;
  for (size_t v = 0; v < probability.data.size(); ++v) {
    const float p = probability.data[v];
    if (!(p >= 0.0f && p <= 1.0f)) {
      std::ostringstream s;
      s << "probability map: voxel " << v << " (memory order) has value " << p
        << ", expected a probability in [0, 1]";
      return base::invalid_argument(s.str());
    }
    const uint8_t t = truth.data[v] != 0;
    positives += t;
    scored[v] = {p, t};
  }
  if (positives == 0) return std::optional<double>();
  std::sort(scored.begin(), scored.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  double ap = 0.0, prev_recall = 0.0;
  int64_t tp = 0, seen = 0;
  for (size_t n = 0; n < scored.size();) {
    // One threshold per distinct score: take every voxel with this score at once.
    const float score = scored[n].first;
    for (; n < scored.size() && scored[n].first == score; ++n) {
      tp += scored[n].second;
      ++seen;
    }
    const double recall = static_cast<double>(tp) / static_cast<double>(positives);
    const double precision = static_cast<double>(tp) / static_cast<double>(seen);
    ap += (recall - prev_recall) * precision;
    prev_recall = recall;
  }
  return std::optional<double>(ap);
}

base::Result<SegmentationMetrics> compute_metrics(const VolumeU8& pred, const VolumeU8& truth,
                                                  const VolumeF* probability) {
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
  m.accuracy = ratio(m.tp + m.tn, m.tp + m.tn + m.fp + m.fn, 1.0);
  m.f1 = m.precision + m.recall > 0 ? 2.0 * m.precision * m.recall / (m.precision + m.recall) : 0.0;
  const double voxel_ml = pred.grid.voxel_volume_ml();
  m.pred_volume_ml = static_cast<double>(m.tp + m.fp) * voxel_ml;
  m.truth_volume_ml = static_cast<double>(m.tp + m.fn) * voxel_ml;
  m.abs_volume_diff_ml = std::abs(m.pred_volume_ml - m.truth_volume_ml);
  SB_ASSIGN_OR_RETURN(Components pc, label_components(pred));
  SB_ASSIGN_OR_RETURN(Components tc, label_components(truth));
  m.pred_lesions = pc.count();
  m.truth_lesions = tc.count();
  lesion_detection(tc, pc, pred, truth, m);
  const auto spacing = pred.grid.spacing_mm();
  const bool valid_spacing = spacing[0] > 0 && spacing[1] > 0 && spacing[2] > 0;
  if (valid_spacing && m.tp + m.fp > 0 && m.tp + m.fn > 0) {
    const auto [hd95, assd] = hd95_and_assd_mm(pred, truth);
    m.hd95_mm = hd95;
    m.assd_mm = assd;
  }
  if (probability != nullptr) {
    SB_ASSIGN_OR_RETURN(m.average_precision, average_precision(*probability, truth));
  }
  return m;
}

nlohmann::json to_json(const SegmentationMetrics& m) {
  nlohmann::json j = nlohmann::json::object();
  j["dice"] = m.dice;
  j["iou"] = m.iou;
  j["precision"] = m.precision;
  j["recall"] = m.recall;
  j["accuracy"] = m.accuracy;
  j["f1"] = m.f1;
  j["pred_volume_ml"] = m.pred_volume_ml;
  j["truth_volume_ml"] = m.truth_volume_ml;
  j["abs_volume_diff_ml"] = m.abs_volume_diff_ml;
  j["pred_lesions"] = m.pred_lesions;
  j["truth_lesions"] = m.truth_lesions;
  j["tp"] = m.tp;
  j["fp"] = m.fp;
  j["fn"] = m.fn;
  j["tn"] = m.tn;
  j["hd95_mm"] = m.hd95_mm ? nlohmann::json(*m.hd95_mm) : nlohmann::json(nullptr);
  j["assd_mm"] = m.assd_mm ? nlohmann::json(*m.assd_mm) : nlohmann::json(nullptr);
  j["lesion_f1"] = m.lesion_f1;
  j["lesion_tp"] = m.lesion_tp;
  j["lesion_fp"] = m.lesion_fp;
  j["lesion_fn"] = m.lesion_fn;
  j["lesion_count_diff"] = m.lesion_count_diff;
  j["average_precision"] = m.average_precision ? nlohmann::json(*m.average_precision) : nlohmann::json(nullptr);
  return j;
}

VolumeU8 binarize(const VolumeF& volume, float threshold) {
  VolumeU8 out(volume.grid, 0);
  for (size_t v = 0; v < volume.data.size() && v < out.data.size(); ++v) out.data[v] = volume.data[v] > threshold ? 1 : 0;
  return out;
}

}  // namespace image
