#include "image/lesion_plausibility.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "image/connected_components.h"

namespace image {
namespace {

double median_of(std::vector<float>& v) {
  if (v.empty()) return 0.0;
  const size_t mid = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(mid), v.end());
  double m = v[mid];
  if (v.size() % 2 == 0) {
    m = 0.5 * (m + *std::max_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(mid)));
  }
  return m;
}

std::string fmt(const char* f, double a, double b = 0.0) {
  char buf[200];
  std::snprintf(buf, sizeof(buf), f, a, b);
  return buf;
}

}  // namespace

const char* adc_unit_name(AdcUnit unit) {
  switch (unit) {
    case AdcUnit::kMm2PerS: return "mm2/s";
    case AdcUnit::kMilliMm2PerS: return "1e-3 mm2/s";
    case AdcUnit::kMicroMm2PerS: return "1e-6 mm2/s";
  }
  return "1e-6 mm2/s";
}

base::Result<AdcUnit> infer_adc_unit(const VolumeF& adc) {
  std::vector<float> positive;
  positive.reserve(adc.data.size() / 4);
  for (float v : adc.data) {
    if (v > 0.0f && std::isfinite(v)) positive.push_back(v);
  }
  if (positive.empty()) return base::invalid_argument("the ADC map has no positive voxel: cannot tell its unit");
  const double m = median_of(positive);
  if (m >= 1.5e-4 && m <= 5e-3) return AdcUnit::kMm2PerS;
  if (m >= 0.15 && m <= 5.0) return AdcUnit::kMilliMm2PerS;
  if (m >= 150.0 && m <= 5000.0) return AdcUnit::kMicroMm2PerS;
  return base::invalid_argument(fmt("the median positive ADC is %g, which fits no known unit (expected about "
                                    "1.5e-4..5e-3 mm2/s, 0.15..5 x 1e-3 mm2/s or 150..5000 x 1e-6 mm2/s): is this "
                                    "an ADC map?", m));
}

VolumeF adc_to_micro(const VolumeF& adc, AdcUnit unit) {
  const float scale = unit == AdcUnit::kMm2PerS ? 1e6f : unit == AdcUnit::kMilliMm2PerS ? 1e3f : 1.0f;
  VolumeF out = adc;
  if (scale != 1.0f) {
    for (float& v : out.data) v *= scale;
  }
  return out;
}

base::Result<std::vector<LesionAssessment>> assess_lesions(const Components& cc, const VolumeF& adc_micro,
                                                           const PlausibilityOptions& options) {
  const Grid& grid = cc.labels.grid;
  if (!grid.same_as(adc_micro.grid) || adc_micro.data.size() != cc.labels.data.size()) {
    return base::invalid_argument("assess_lesions: the lesion labels and the ADC map are on different grids");
  }
  const auto dims = grid.dims;
  const auto spacing = grid.spacing_mm();
  const double voxel_ml = grid.voxel_volume_ml();
  std::vector<LesionAssessment> out(static_cast<size_t>(cc.count()));
  std::vector<std::vector<float>> inside(out.size());
  std::vector<std::array<int64_t, 6>> box(out.size(), {dims[0], dims[1], dims[2], -1, -1, -1});
  std::vector<std::array<double, 3>> sum(out.size(), {0.0, 0.0, 0.0});
  for (int64_t k = 0; k < dims[2]; ++k) {
    for (int64_t j = 0; j < dims[1]; ++j) {
      for (int64_t i = 0; i < dims[0]; ++i) {
        const int32_t l = cc.labels.at(i, j, k);
        if (l <= 0) continue;
        const size_t q = static_cast<size_t>(l - 1);
        inside[q].push_back(adc_micro.at(i, j, k));
        auto& b = box[q];
        b = {std::min(b[0], i), std::min(b[1], j), std::min(b[2], k), std::max(b[3], i), std::max(b[4], j),
             std::max(b[5], k)};
        sum[q][0] += static_cast<double>(i);
        sum[q][1] += static_cast<double>(j);
        sum[q][2] += static_cast<double>(k);
      }
    }
  }
  // Shell: voxels within shell_mm of the lesion (ellipsoidal neighbourhood in voxel units per
  // axis), outside every lesion, that look like normal tissue.
  const std::array<int64_t, 3> reach = {static_cast<int64_t>(std::ceil(options.shell_mm / spacing[0])),
                                        static_cast<int64_t>(std::ceil(options.shell_mm / spacing[1])),
                                        static_cast<int64_t>(std::ceil(options.shell_mm / spacing[2]))};
  for (size_t q = 0; q < out.size(); ++q) {
    LesionAssessment& a = out[q];
    a.label = static_cast<int>(q + 1);
    a.voxels = cc.sizes[q];
    a.volume_ml = static_cast<double>(a.voxels) * voxel_ml;
    const Eigen::Vector3d c = grid.to_patient(sum[q][0] / a.voxels, sum[q][1] / a.voxels, sum[q][2] / a.voxels);
    a.centroid_lps_mm = {c.x(), c.y(), c.z()};
    int64_t core = 0;
    for (float v : inside[q]) core += v < options.core_threshold;
    a.core_volume_ml = static_cast<double>(core) * voxel_ml;
    a.median_adc = median_of(inside[q]);
    // Dilate the lesion inside its grown bounding box: a voxel is in the shell when a lesion
    // voxel of this label lies within the ellipsoid of radius shell_mm around it.
    const auto& b = box[q];
    std::vector<float> shell;
    for (int64_t k = std::max<int64_t>(0, b[2] - reach[2]); k <= std::min(dims[2] - 1, b[5] + reach[2]); ++k) {
      for (int64_t j = std::max<int64_t>(0, b[1] - reach[1]); j <= std::min(dims[1] - 1, b[4] + reach[1]); ++j) {
        for (int64_t i = std::max<int64_t>(0, b[0] - reach[0]); i <= std::min(dims[0] - 1, b[3] + reach[0]); ++i) {
          if (cc.labels.at(i, j, k) != 0) continue;
          const float v = adc_micro.at(i, j, k);
          if (!(v > 0.0f) || v > options.max_tissue_adc) continue;
          bool near = false;
          for (int64_t dk = -reach[2]; dk <= reach[2] && !near; ++dk) {
            const int64_t kk = k + dk;
            if (kk < b[2] || kk > b[5]) continue;
            for (int64_t dj = -reach[1]; dj <= reach[1] && !near; ++dj) {
              const int64_t jj = j + dj;
              if (jj < b[1] || jj > b[4]) continue;
              for (int64_t di = -reach[0]; di <= reach[0] && !near; ++di) {
                const int64_t ii = i + di;
                if (ii < b[0] || ii > b[3]) continue;
                const double d2 = std::pow(di * spacing[0], 2) + std::pow(dj * spacing[1], 2) +
                                  std::pow(dk * spacing[2], 2);
                near = d2 <= options.shell_mm * options.shell_mm && cc.labels.at(ii, jj, kk) == a.label;
              }
            }
          }
          if (near) shell.push_back(v);
        }
      }
    }
    a.surrounding_median_adc = median_of(shell);
    a.adc_ratio = a.surrounding_median_adc > 0.0 ? a.median_adc / a.surrounding_median_adc : 0.0;
    int64_t shell_core = 0;
    for (float v : shell) shell_core += v < options.core_threshold;
    a.surrounding_core_fraction = shell.empty() ? 0.0 : static_cast<double>(shell_core) / shell.size();
    const double core_fraction = a.volume_ml > 0.0 ? a.core_volume_ml / a.volume_ml : 0.0;
    // A core share counts only where it stands out from what noise gives the tissue around it.
    const bool core_stands_out = core_fraction >= options.min_core_fraction &&
                                 core_fraction - a.surrounding_core_fraction >= options.min_core_fraction;
    const bool relatively_restricted = a.adc_ratio > 0.0 && a.adc_ratio < options.max_adc_ratio;
    const bool restricted = a.median_adc < options.core_threshold || core_stands_out || relatively_restricted;
    const bool below_tissue = a.median_adc < options.min_tissue_adc;
    a.plausible = restricted && !below_tissue;
    a.below_tissue_adc = below_tissue;
    if (below_tissue) {
      a.reason = fmt("ADC below any brain tissue: median %.0f x 1e-6 mm2/s", a.median_adc) +
                 fmt(" (below %.0f; an acute infarct is 350-620): fat or the noise floor, not an infarct",
                     options.min_tissue_adc);
    } else if (!a.plausible) {
      a.reason = fmt("no restricted diffusion: median ADC %.0f x 1e-6 mm2/s", a.median_adc) +
                 fmt(" and %.0f %% of the lesion below ", 100.0 * core_fraction) +
                 fmt("%.0f (an acute infarct is below it", options.core_threshold) +
                 (shell.empty() ? std::string(")")
                                : fmt("; %.0f %% of the normal-appearing shell is too)",
                                      100.0 * a.surrounding_core_fraction));
      // The relative test's figure only where it was applied (max_adc_ratio 0 turns it off).
      if (options.max_adc_ratio > 0.0) {
        a.reason += a.adc_ratio > 0.0 ? fmt(", %.2f of the tissue around it", a.adc_ratio) +
                                            fmt(" (an acute infarct is below %.2f)", options.max_adc_ratio)
                                      : std::string(", no normal tissue around it to compare");
      }
      a.reason += "; T2 shine-through, a chronic lesion or an artefact?";
    }
  }
  return out;
}

}  // namespace image
