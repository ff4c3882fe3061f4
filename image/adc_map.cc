#include "image/adc_map.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace image {

base::Result<VolumeF> derive_adc(const VolumeF& low, const VolumeF& high, double b_high, const AdcOptions& options,
                                 AdcStats* stats) {
  if (!low.grid.same_as(high.grid) || low.data.size() != high.data.size()) {
    return base::invalid_argument("derive_adc: the b=" + std::to_string(options.b_low) + " and b=" +
                                  std::to_string(b_high) + " images are on different grids");
  }
  const double db = b_high - options.b_low;
  if (!(db > 0) || !std::isfinite(db)) {
    return base::invalid_argument("derive_adc: the high b-value (" + std::to_string(b_high) +
                                  ") must exceed the low one (" + std::to_string(options.b_low) + ")");
  }
  // Background threshold from the 99th percentile of the positive low-b signal.
  std::vector<float> positive;
  positive.reserve(low.data.size());
  for (float v : low.data) {
    if (v > 0 && std::isfinite(v)) positive.push_back(v);
  }
  double threshold = 0.0;
  if (!positive.empty()) {
    const size_t at = std::min(positive.size() - 1, static_cast<size_t>(0.99 * static_cast<double>(positive.size())));
    std::nth_element(positive.begin(), positive.begin() + static_cast<std::ptrdiff_t>(at), positive.end());
    threshold = options.background_fraction * positive[at];
  }
  VolumeF adc(low.grid, 0.0f);
  const double scale = 1e6 / db;  // mm^2/s -> 10^-6 mm^2/s
  std::vector<double> foreground_ln_ratio;  // for stats only
  for (size_t v = 0; v < low.data.size(); ++v) {
    const double s_low = low.data[v], s_high = high.data[v];
    if (!std::isfinite(s_low) || !std::isfinite(s_high) || s_low <= 0 || s_low <= threshold) continue;  // background
    // No high-b signal at all is the strongest attenuation (max_adc; ranked last in stats).
    const double ln_ratio = s_high > 0 ? std::log(s_low / s_high) : std::numeric_limits<double>::infinity();
    if (stats) foreground_ln_ratio.push_back(ln_ratio);
    const double value = s_high > 0 ? ln_ratio * scale : options.max_adc;
    adc.data[v] = static_cast<float>(std::clamp(value, 0.0, options.max_adc));
  }
  if (stats) {
    stats->median_foreground_adc = 0.0;
    if (!foreground_ln_ratio.empty()) {
      const auto mid = foreground_ln_ratio.begin() + static_cast<std::ptrdiff_t>(foreground_ln_ratio.size() / 2);
      std::nth_element(foreground_ln_ratio.begin(), mid, foreground_ln_ratio.end());
      stats->median_foreground_adc = *mid * scale;
    }
  }
  return adc;
}

}  // namespace image
