#include "image/adc_map.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace image {

namespace {

// The checks shared by derive_adc() and median_foreground_adc(); returns b_high - b_low.
base::Result<double> check_pair(const VolumeF& low, const VolumeF& high, double b_high, const AdcOptions& options) {
  if (!low.grid.same_as(high.grid) || low.data.size() != high.data.size()) {
    return base::invalid_argument("derive_adc: the b=" + std::to_string(options.b_low) + " and b=" +
                                  std::to_string(b_high) + " images are on different grids");
  }
  const double db = b_high - options.b_low;
  if (!(db > 0) || !std::isfinite(db)) {
    return base::invalid_argument("derive_adc: the high b-value (" + std::to_string(b_high) +
                                  ") must exceed the low one (" + std::to_string(options.b_low) + ")");
  }
  return db;
}

// Background threshold: a fraction of the 99th percentile of the positive low-b signal.
double background_threshold(const VolumeF& low, const AdcOptions& options) {
  std::vector<float> positive;
  positive.reserve(low.data.size());
  for (float v : low.data) {
    if (v > 0 && std::isfinite(v)) positive.push_back(v);
  }
  if (positive.empty()) return 0.0;
  const size_t at = std::min(positive.size() - 1, static_cast<size_t>(0.99 * static_cast<double>(positive.size())));
  std::nth_element(positive.begin(), positive.begin() + static_cast<std::ptrdiff_t>(at), positive.end());
  return options.background_fraction * positive[at];
}

bool is_foreground(double s_low, double s_high, double threshold) {
  return std::isfinite(s_low) && std::isfinite(s_high) && s_low > 0 && s_low > threshold;
}

}  // namespace

base::Result<VolumeF> derive_adc(const VolumeF& low, const VolumeF& high, double b_high, const AdcOptions& options) {
  SB_ASSIGN_OR_RETURN(const double db, check_pair(low, high, b_high, options));
  const double threshold = background_threshold(low, options);
  VolumeF adc(low.grid, 0.0f);
  const double scale = 1e6 / db;  // mm^2/s -> 10^-6 mm^2/s
  for (size_t v = 0; v < low.data.size(); ++v) {
    const double s_low = low.data[v], s_high = high.data[v];
    if (!is_foreground(s_low, s_high, threshold)) continue;  // background
    double value;
    if (s_high <= 0) {
      value = options.max_adc;
    } else {
      value = std::log(s_low / s_high) * scale;
    }
    adc.data[v] = static_cast<float>(std::clamp(value, 0.0, options.max_adc));
  }
  return adc;
}

base::Result<double> median_foreground_adc(const VolumeF& low, const VolumeF& high, double b_high,
                                           const AdcOptions& options) {
  SB_ASSIGN_OR_RETURN(const double db, check_pair(low, high, b_high, options));
  const double threshold = background_threshold(low, options);
  std::vector<double> log_ratio;
  for (size_t v = 0; v < low.data.size(); ++v) {
    const double s_low = low.data[v], s_high = high.data[v];
    if (!is_foreground(s_low, s_high, threshold)) continue;
    // No high-b signal at all is the strongest attenuation: rank it last, as +infinity.
    log_ratio.push_back(s_high > 0 ? std::log(s_low / s_high) : std::numeric_limits<double>::infinity());
  }
  if (log_ratio.empty()) return 0.0;
  const auto mid = log_ratio.begin() + static_cast<std::ptrdiff_t>(log_ratio.size() / 2);
  std::nth_element(log_ratio.begin(), mid, log_ratio.end());
  return *mid * 1e6 / db;
}

}  // namespace image
