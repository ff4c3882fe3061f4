// Manual fan control for boards without the platform's fan service: a temperature -> PWM
// curve (linear between points, flat outside them) and FanController, which applies it to
// hal::Fan with a little hysteresis so the fan does not hunt. The points come from
// firmware::parse_fan_curve() ([fan] curve = "40:0,55:80,70:160,80:255").
#pragma once

#include <optional>
#include <utility>
#include <vector>

#include "base/status.h"
#include "hal/board.h"

namespace hal {

/// A validated fan curve: (temperature in degrees C, pwm 0..kFanPwmMax) points.
class FanCurve {
 public:
  /// Errors (kInvalidArgument): no points, temperatures not strictly ascending, pwm outside
  /// 0..kFanPwmMax, a temperature that is not finite.
  static base::Result<FanCurve> make(std::vector<std::pair<double, int>> points);

  /// PWM for `temp_c`: the first point's pwm at or below the first temperature, the last
  /// point's at or above the last, linear interpolation between neighbours otherwise
  /// (rounded to the nearest integer).
  int pwm_at(double temp_c) const;

  const std::vector<std::pair<double, int>>& points() const { return points_; }

 private:
  explicit FanCurve(std::vector<std::pair<double, int>> points) : points_(std::move(points)) {}
  std::vector<std::pair<double, int>> points_;
};

/// Hottest readable thermal zone of `zones`, degrees C; nullopt when none can be read.
std::optional<double> hottest_zone_c(const ThermalZones& zones);

/// Applies a FanCurve to a fan. Raising follows the curve at once; lowering waits until the
/// temperature is `hysteresis_c` below the temperature that set the current duty. A missing
/// temperature drives the fan to kFanPwmMax (fail safe). Not thread-safe: call from one loop
/// (the telemetry sampler's rate, 1 Hz, is plenty).
class FanController {
 public:
  explicit FanController(FanCurve curve, double hysteresis_c = 2.0)
      : curve_(std::move(curve)), hysteresis_c_(hysteresis_c) {}

  /// The duty this temperature asks for, after hysteresis (does not touch any fan).
  int target_pwm(std::optional<double> hottest_c);

  /// target_pwm(hottest_c), written to `fan` when it differs from the last duty written.
  /// Returns the duty. Errors: the fan's (kNotFound, kPermissionDenied, kUnavailable).
  base::Result<int> update(Fan& fan, std::optional<double> hottest_c);

  /// update() with the hottest zone of `board`.
  base::Result<int> update(Board& board) { return update(board.fan(), hottest_zone_c(board.thermal())); }

 private:
  FanCurve curve_;
  double hysteresis_c_;
  std::optional<int> current_;        // duty in force
  double set_at_c_ = 0.0;             // temperature that set it
  std::optional<int> written_;        // last duty written to the fan
};

}  // namespace hal
