// Status LED: state -> pattern mapping, pattern timing, and LedDriver on the sim board with
// time stepped by hand (no sleeping).
#include "hal/led_pattern.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "hal/sim_board.h"

namespace hal {
namespace {

using std::chrono::milliseconds;
using Clock = LedDriver::Clock;

BoxCondition cond(bool fault, bool hot, bool disk_low, bool processing, std::string detail) {
  BoxCondition c;
  c.fault = fault;
  c.hot = hot;
  c.disk_low = disk_low;
  c.processing = processing;
  c.detail = std::move(detail);
  return c;
}

TEST(BoxState, FaultWinsOverEverything) {
  EXPECT_EQ(box_state(cond(true, true, true, true, "")), BoxState::kFault);
}

TEST(BoxState, HotOrDiskLowIsDegradedEvenWhileProcessing) {
  EXPECT_EQ(box_state(cond(false, true, false, true, "")), BoxState::kDegraded);
  EXPECT_EQ(box_state(cond(false, false, true, false, "")), BoxState::kDegraded);
}

TEST(BoxState, ProcessingElseIdle) {
  EXPECT_EQ(box_state(cond(false, false, false, true, "")), BoxState::kProcessing);
  EXPECT_EQ(box_state(BoxCondition()), BoxState::kIdle);
}

TEST(LedPatternFor, EachStateHasItsOwnPattern) {
  EXPECT_EQ(led_pattern_for(BoxState::kIdle), LedPattern::kOn);
  EXPECT_EQ(led_pattern_for(BoxState::kProcessing), LedPattern::kBlink1Hz);
  EXPECT_EQ(led_pattern_for(BoxState::kDegraded), LedPattern::kDoubleBlink);
  EXPECT_EQ(led_pattern_for(BoxState::kFault), LedPattern::kBlink4Hz);
  EXPECT_EQ(led_pattern_name(LedPattern::kDoubleBlink), "double_blink");
  EXPECT_EQ(box_state_name(BoxState::kDegraded), "degraded");
}

// The lit/unlit sequence of a pattern sampled every `step` ms over `total` ms.
std::vector<bool> sample(LedPattern p, int step, int total) {
  std::vector<bool> out;
  for (int t = 0; t < total; t += step) out.push_back(led_lit_at(p, milliseconds(t)));
  return out;
}

TEST(LedLitAt, SteadyAndOffNeverChange) {
  EXPECT_EQ(sample(LedPattern::kOn, 100, 2000), std::vector<bool>(20, true));
  EXPECT_EQ(sample(LedPattern::kOff, 100, 2000), std::vector<bool>(20, false));
}

TEST(LedLitAt, Blink1HzIsHalfSecondOnHalfSecondOff) {
  EXPECT_EQ(sample(LedPattern::kBlink1Hz, 250, 2000),
            (std::vector<bool>{true, true, false, false, true, true, false, false}));
}

TEST(LedLitAt, Blink4HzTogglesEvery125Ms) {
  EXPECT_EQ(sample(LedPattern::kBlink4Hz, 125, 1000),
            (std::vector<bool>{true, false, true, false, true, false, true, false}));
}

TEST(LedLitAt, DoubleBlinkFlashesTwiceThenPauses) {
  EXPECT_EQ(sample(LedPattern::kDoubleBlink, 150, 1050),
            (std::vector<bool>{true, false, true, false, false, false, false}));
  // Repeats every second.
  EXPECT_EQ(sample(LedPattern::kDoubleBlink, 50, 1000), [] {
    std::vector<bool> second;
    for (int t = 1000; t < 2000; t += 50) second.push_back(led_lit_at(LedPattern::kDoubleBlink, milliseconds(t)));
    return second;
  }());
}

TEST(LedTimeToNextEdge, PointsAtTheNextToggle) {
  EXPECT_EQ(led_time_to_next_edge(LedPattern::kBlink1Hz, milliseconds(100)), milliseconds(400));
  EXPECT_EQ(led_time_to_next_edge(LedPattern::kBlink1Hz, milliseconds(600)), milliseconds(400));
  EXPECT_EQ(led_time_to_next_edge(LedPattern::kDoubleBlink, milliseconds(200)), milliseconds(100));
  EXPECT_EQ(led_time_to_next_edge(LedPattern::kDoubleBlink, milliseconds(500)), milliseconds(500));
  EXPECT_GT(led_time_to_next_edge(LedPattern::kOn, milliseconds(0)), milliseconds(60'000));
}

class LedDriverTest : public ::testing::Test {
 protected:
  std::unique_ptr<SimBoard> sim_ = make_sim_board();
  Clock::time_point t0_ = Clock::time_point() + std::chrono::hours(1);
};

TEST_F(LedDriverTest, IdleBoxShowsSteadyLight) {
  LedDriver d(*sim_);
  ASSERT_TRUE(d.tick(t0_).ok());
  EXPECT_TRUE(sim_->led_lit());
  EXPECT_EQ(sim_->led_pattern(), LedPattern::kOn);
  ASSERT_TRUE(d.tick(t0_ + milliseconds(700)).ok());
  EXPECT_TRUE(sim_->led_lit());
}

TEST_F(LedDriverTest, ProcessingBlinksAtOneHertzOnTheInjectedClock) {
  LedDriver d(*sim_);
  d.set_condition(cond(false, false, false, true, ""), t0_);
  EXPECT_EQ(sim_->led_pattern(), LedPattern::kBlink1Hz);
  std::vector<bool> seen;
  for (int t = 0; t < 2000; t += 250) {
    ASSERT_TRUE(d.tick(t0_ + milliseconds(t)).ok());
    seen.push_back(sim_->led_lit());
  }
  EXPECT_EQ(seen, (std::vector<bool>{true, true, false, false, true, true, false, false}));
}

TEST_F(LedDriverTest, PatternRestartsLitWhenTheStateChanges) {
  LedDriver d(*sim_);
  d.set_condition(cond(false, false, false, true, ""), t0_);
  ASSERT_TRUE(d.tick(t0_ + milliseconds(600)).ok());
  EXPECT_FALSE(sim_->led_lit());
  d.set_condition(cond(false, true, false, false, "GPU-therm 87.5 C"), t0_ + milliseconds(600));
  EXPECT_EQ(d.state(), BoxState::kDegraded);
  EXPECT_EQ(sim_->led_pattern(), LedPattern::kDoubleBlink);
  ASSERT_TRUE(d.tick(t0_ + milliseconds(610)).ok());
  EXPECT_TRUE(sim_->led_lit());
  ASSERT_TRUE(d.tick(t0_ + milliseconds(800)).ok());  // 190 ms into the double blink: gap
  EXPECT_FALSE(sim_->led_lit());
}

TEST_F(LedDriverTest, SameConditionDoesNotRestartThePattern) {
  LedDriver d(*sim_);
  d.set_condition(cond(true, false, false, false, ""), t0_);
  d.set_condition(cond(true, false, false, false, ""), t0_ + milliseconds(125));  // re-sent every sample
  ASSERT_TRUE(d.tick(t0_ + milliseconds(130)).ok());
  EXPECT_FALSE(sim_->led_lit());  // still on the 4 Hz grid that began at t0
}

TEST_F(LedDriverTest, ButtonPressShowsTheStateForAFewSeconds) {
  LedDriverOptions options;
  options.reveal_for = milliseconds(5000);
  LedDriver d(*sim_, options);
  d.set_condition(cond(false, false, true, false, "disk 300 MiB free"), t0_);
  ASSERT_TRUE(d.tick(t0_).ok());
  EXPECT_FALSE(d.readout(t0_).has_value());
  sim_->press_button();
  ASSERT_TRUE(d.tick(t0_ + milliseconds(1000)).ok());
  auto shown = d.readout(t0_ + milliseconds(1000));
  ASSERT_TRUE(shown.has_value());
  EXPECT_EQ(*shown, "degraded (double_blink): disk 300 MiB free");
  EXPECT_TRUE(d.readout(t0_ + milliseconds(5999)).has_value());
  EXPECT_FALSE(d.readout(t0_ + milliseconds(6000)).has_value());
}

TEST_F(LedDriverTest, BrokenLedIsReportedAndBrokenButtonIsNot) {
  LedDriver d(*sim_);
  sim_->inject_fault(kSimButton, SimFault::kError);
  EXPECT_TRUE(d.tick(t0_).ok());
  sim_->inject_fault(kSimLed, SimFault::kError);
  d.set_condition(cond(false, false, false, true, ""), t0_);
  EXPECT_EQ(d.tick(t0_ + milliseconds(600)).code(), base::Code::kUnavailable);
  sim_->clear_faults();
  EXPECT_TRUE(d.tick(t0_ + milliseconds(700)).ok());
  EXPECT_FALSE(sim_->led_lit());
}

TEST_F(LedDriverTest, TimeToNextEdgeIsCappedForButtonPolling) {
  LedDriver d(*sim_);
  ASSERT_TRUE(d.tick(t0_).ok());
  EXPECT_EQ(d.time_to_next_edge(t0_), milliseconds(250));  // steady: poll the button
  d.set_condition(cond(false, false, false, true, ""), t0_);
  EXPECT_EQ(d.time_to_next_edge(t0_ + milliseconds(400)), milliseconds(100));
}

}  // namespace
}  // namespace hal
