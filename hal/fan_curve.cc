#include "hal/fan_curve.h"

#include <cmath>
#include <string>

#include "base/log.h"

namespace hal {

base::Result<FanCurve> FanCurve::make(std::vector<std::pair<double, int>> points) {
  if (points.empty()) return base::invalid_argument("fan curve: no points");
  for (size_t i = 0; i < points.size(); ++i) {
    const auto& [t, pwm] = points[i];
    const std::string where = "fan curve point " + std::to_string(i + 1);
    if (!std::isfinite(t)) return base::invalid_argument(where + ": temperature is not a number");
    if (pwm < 0 || pwm > kFanPwmMax) {
      return base::invalid_argument(where + ": pwm " + std::to_string(pwm) + " outside 0.." +
                                    std::to_string(kFanPwmMax));
    }
    if (i > 0 && !(t > points[i - 1].first)) {
      return base::invalid_argument(where + ": temperatures must be strictly ascending");
    }
  }
  return FanCurve(std::move(points));
}

int FanCurve::pwm_at(double temp_c) const {
  if (temp_c <= points_.front().first) return points_.front().second;
  if (temp_c >= points_.back().first) return points_.back().second;
  for (size_t i = 1; i < points_.size(); ++i) {
    const auto& [t1, p1] = points_[i];
    if (temp_c > t1) continue;
    const auto& [t0, p0] = points_[i - 1];
    const double f = (temp_c - t0) / (t1 - t0);
    return static_cast<int>(std::lround(p0 + f * (p1 - p0)));
  }
  return points_.back().second;
}

std::optional<double> hottest_zone_c(const ThermalZones& zones) {
  std::optional<double> hottest;
  for (const std::string& zone : zones.zones()) {
    auto t = zones.temperature_mC(zone);
    if (!t.ok()) continue;
    const double c = *t / 1000.0;
    if (!hottest || c > *hottest) hottest = c;
  }
  return hottest;
}

int FanController::target_pwm(std::optional<double> hottest_c) {
  if (!hottest_c) {
    current_ = kFanPwmMax;
    set_at_c_ = curve_.points().back().first;
    return kFanPwmMax;
  }
  const int wanted = curve_.pwm_at(*hottest_c);
  if (!current_ || wanted > *current_ || *hottest_c <= set_at_c_ - hysteresis_c_) {
    current_ = wanted;
    set_at_c_ = *hottest_c;
  }
  return *current_;
}

base::Result<int> FanController::update(Fan& fan, std::optional<double> hottest_c) {
  if (!hottest_c && written_ != kFanPwmMax) {
    SB_LOG(kWarning) << "fan curve: no readable temperature, fan to full speed";
  }
  const int pwm = target_pwm(hottest_c);
  if (written_ == pwm) return pwm;
  SB_RETURN_IF_ERROR(fan.set_pwm(pwm));
  written_ = pwm;
  return pwm;
}

}  // namespace hal
