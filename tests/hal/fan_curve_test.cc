// Manual fan curve: interpolation, validation, hysteresis and fail-safe on the sim board.
#include "hal/fan_curve.h"

#include <gtest/gtest.h>

#include <cmath>

#include "hal/sim_board.h"

namespace hal {
namespace {

// The configuration's default curve ("40:0,55:80,70:160,80:255").
FanCurve default_curve() { return FanCurve::make({{40, 0}, {55, 80}, {70, 160}, {80, 255}}).value(); }

TEST(FanCurve, FlatOutsideThePoints) {
  FanCurve c = default_curve();
  EXPECT_EQ(c.pwm_at(-10.0), 0);
  EXPECT_EQ(c.pwm_at(40.0), 0);
  EXPECT_EQ(c.pwm_at(80.0), 255);
  EXPECT_EQ(c.pwm_at(105.0), 255);
}

TEST(FanCurve, LinearBetweenNeighbours) {
  FanCurve c = default_curve();
  EXPECT_EQ(c.pwm_at(55.0), 80);
  EXPECT_EQ(c.pwm_at(47.5), 40);    // half way 0..80
  EXPECT_EQ(c.pwm_at(62.5), 120);   // half way 80..160
  EXPECT_EQ(c.pwm_at(75.0), 208);   // 160 + 0.5 * 95 = 207.5, rounded
  EXPECT_EQ(c.pwm_at(41.0), 5);     // 80 / 15 = 5.33
}

TEST(FanCurve, SinglePointIsConstant) {
  FanCurve c = FanCurve::make({{50, 128}}).value();
  EXPECT_EQ(c.pwm_at(0), 128);
  EXPECT_EQ(c.pwm_at(90), 128);
}

TEST(FanCurve, RejectsBadPoints) {
  EXPECT_EQ(FanCurve::make({}).status().code(), base::Code::kInvalidArgument);
  EXPECT_EQ(FanCurve::make({{40, 0}, {40, 10}}).status().code(), base::Code::kInvalidArgument);
  EXPECT_EQ(FanCurve::make({{50, 0}, {40, 10}}).status().code(), base::Code::kInvalidArgument);
  EXPECT_EQ(FanCurve::make({{40, 256}}).status().code(), base::Code::kInvalidArgument);
  EXPECT_EQ(FanCurve::make({{40, -1}}).status().code(), base::Code::kInvalidArgument);
  EXPECT_EQ(FanCurve::make({{NAN, 1}}).status().code(), base::Code::kInvalidArgument);
}

TEST(FanController, RaisesAtOnceAndLowersOnlyAfterHysteresis) {
  FanController f(default_curve(), 2.0);
  EXPECT_EQ(f.target_pwm(62.5), 120);
  EXPECT_EQ(f.target_pwm(70.0), 160);
  EXPECT_EQ(f.target_pwm(69.0), 160);  // within 2 C of 70: hold
  EXPECT_EQ(f.target_pwm(68.5), 160);
  EXPECT_EQ(f.target_pwm(68.0), 149);  // 2 C below: follow the curve down
}

TEST(FanController, MissingTemperatureMeansFullSpeed) {
  FanController f(default_curve());
  EXPECT_EQ(f.target_pwm(45.0), 27);
  EXPECT_EQ(f.target_pwm(std::nullopt), kFanPwmMax);
}

TEST(FanController, DrivesTheSimFanFromTheHottestZone) {
  auto sim = make_sim_board();
  sim->set_temperature_mC("GPU-therm", 62'500);  // the others stay at 40 C
  FanController f(default_curve());
  auto pwm = f.update(*sim);
  ASSERT_TRUE(pwm.ok()) << pwm.status().to_string();
  EXPECT_EQ(*pwm, 120);
  EXPECT_EQ(sim->fan_pwm(), 120);
}

TEST(FanController, EveryZoneUnreadableGoesFullSpeed) {
  auto sim = make_sim_board();
  for (const std::string& z : sim->thermal().zones()) sim->inject_fault(z, SimFault::kError);
  FanController f(default_curve());
  ASSERT_TRUE(f.update(*sim).ok());
  EXPECT_EQ(sim->fan_pwm(), kFanPwmMax);
}

TEST(FanController, FanErrorIsReturned) {
  auto sim = make_sim_board();
  sim->inject_fault(kSimFan, SimFault::kError);
  FanController f(default_curve());
  EXPECT_EQ(f.update(*sim).status().code(), base::Code::kUnavailable);
}

TEST(HottestZone, IgnoresUnreadableZones) {
  auto sim = make_sim_board();
  sim->set_temperature_mC("CPU-therm", 91'000);
  sim->set_temperature_mC("GPU-therm", 55'000);
  sim->inject_fault("CPU-therm", SimFault::kError);
  EXPECT_DOUBLE_EQ(hottest_zone_c(sim->thermal()).value(), 55.0);
}

}  // namespace
}  // namespace hal
