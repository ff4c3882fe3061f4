#include "hal/led_pattern.h"

#include <algorithm>

#include "base/log.h"

namespace hal {
namespace {

using std::chrono::milliseconds;

// Lit intervals [on, off) within one cycle of each blinking pattern, ms.
struct Phase {
  int64_t on, off;
};
constexpr Phase k1Hz[] = {{0, 500}};
constexpr Phase k4Hz[] = {{0, 125}};
constexpr Phase kDouble[] = {{0, 150}, {300, 450}};

struct Timing {
  int64_t cycle_ms;
  const Phase* phases;
  size_t count;
};

std::optional<Timing> timing(LedPattern p) {
  switch (p) {
    case LedPattern::kBlink1Hz: return Timing{kLedCycle1Hz.count(), k1Hz, std::size(k1Hz)};
    case LedPattern::kBlink4Hz: return Timing{kLedCycle4Hz.count(), k4Hz, std::size(k4Hz)};
    case LedPattern::kDoubleBlink: return Timing{kLedCycleDoubleBlink.count(), kDouble, std::size(kDouble)};
    case LedPattern::kOn:
    case LedPattern::kOff: return std::nullopt;
  }
  return std::nullopt;
}

constexpr milliseconds kSteady{3'600'000};  // "no edge soon" for constant patterns
constexpr milliseconds kMaxSleep{250};      // button poll period at most

}  // namespace

std::string_view box_state_name(BoxState state) {
  switch (state) {
    case BoxState::kIdle: return "idle";
    case BoxState::kProcessing: return "processing";
    case BoxState::kDegraded: return "degraded";
    case BoxState::kFault: return "fault";
  }
  return "unknown";
}

BoxState box_state(const BoxCondition& c) {
  if (c.fault) return BoxState::kFault;
  if (c.hot || c.disk_low) return BoxState::kDegraded;
  if (c.processing) return BoxState::kProcessing;
  return BoxState::kIdle;
}

LedPattern led_pattern_for(BoxState state) {
  switch (state) {
    case BoxState::kIdle: return LedPattern::kOn;
    case BoxState::kProcessing: return LedPattern::kBlink1Hz;
    case BoxState::kDegraded: return LedPattern::kDoubleBlink;
    case BoxState::kFault: return LedPattern::kBlink4Hz;
  }
  return LedPattern::kBlink4Hz;
}

bool led_lit_at(LedPattern pattern, milliseconds since_start) {
  if (pattern == LedPattern::kOn) return true;
  if (pattern == LedPattern::kOff) return false;
  auto t = timing(pattern);
  if (!t) return false;
  const int64_t in_cycle = std::max<int64_t>(0, since_start.count()) % t->cycle_ms;
  for (size_t i = 0; i < t->count; ++i) {
    if (in_cycle >= t->phases[i].on && in_cycle < t->phases[i].off) return true;
  }
  return false;
}

milliseconds led_time_to_next_edge(LedPattern pattern, milliseconds since_start) {
  auto t = timing(pattern);
  if (!t) return kSteady;
  const int64_t in_cycle = std::max<int64_t>(0, since_start.count()) % t->cycle_ms;
  int64_t next = t->cycle_ms;  // the start of the next cycle is an edge (lit again)
  for (size_t i = 0; i < t->count; ++i) {
    for (int64_t edge : {t->phases[i].on, t->phases[i].off}) {
      if (edge > in_cycle) next = std::min(next, edge);
    }
  }
  return milliseconds(next - in_cycle);
}

LedDriver::LedDriver(Board& board, LedDriverOptions options) : board_(board), options_(options) {}

void LedDriver::set_condition(const BoxCondition& condition, Clock::time_point now) {
  std::lock_guard lock(mu_);
  condition_ = condition;
  const BoxState state = box_state(condition);
  const LedPattern pattern = led_pattern_for(state);
  const bool changed = pattern != pattern_ || state != state_;
  state_ = state;
  if (pattern != pattern_ || !started_) {
    pattern_ = pattern;
    pattern_start_ = now;
    started_ = true;
    if (base::Status st = board_.led().set_pattern(pattern); !st.ok()) {
      SB_LOG(kWarning) << "status LED: " << st.to_string();
    }
  }
  if (changed) {
    SB_LOG(kInfo) << "status LED: " << describe_locked();
  }
}

base::Status LedDriver::tick(Clock::time_point now) {
  std::lock_guard lock(mu_);
  if (!started_) {
    pattern_start_ = now;
    started_ = true;
    if (base::Status st = board_.led().set_pattern(pattern_); !st.ok()) return st;
  }
  auto pressed = board_.button().take_press();
  if (!pressed.ok()) {
    if (!button_error_logged_) {
      SB_LOG(kWarning) << "status button: " << pressed.status().to_string();
    }
    button_error_logged_ = true;
  } else {
    button_error_logged_ = false;
    if (*pressed) {
      reveal_until_ = now + options_.reveal_for;
      SB_LOG(kInfo) << "button pressed: " << describe_locked();
    }
  }
  const bool lit = led_lit_at(pattern_, std::chrono::duration_cast<milliseconds>(now - pattern_start_));
  if (written_ == lit) return base::ok_status();
  SB_RETURN_IF_ERROR(board_.led().set_lit(lit));
  written_ = lit;
  return base::ok_status();
}

milliseconds LedDriver::time_to_next_edge(Clock::time_point now) const {
  std::lock_guard lock(mu_);
  if (!started_) return milliseconds(0);
  const auto since = std::chrono::duration_cast<milliseconds>(now - pattern_start_);
  return std::min(kMaxSleep, led_time_to_next_edge(pattern_, since));
}

BoxState LedDriver::state() const {
  std::lock_guard lock(mu_);
  return state_;
}

LedPattern LedDriver::pattern() const {
  std::lock_guard lock(mu_);
  return pattern_;
}

std::optional<std::string> LedDriver::readout(Clock::time_point now) const {
  std::lock_guard lock(mu_);
  if (!reveal_until_ || now >= *reveal_until_) return std::nullopt;
  return describe_locked();
}

std::string LedDriver::describe_locked() const {
  std::string s = std::string(box_state_name(state_)) + " (" + std::string(led_pattern_name(pattern_)) + ")";
  if (!condition_.detail.empty()) s += ": " + condition_.detail;
  return s;
}

}  // namespace hal
