// The status LED's language: which box state shows which pattern (a pure function), the
// on/off timing of each pattern, and LedDriver, which the daemon ticks to blink the LED through
// hal::StatusLed::set_lit() and which answers a button press by showing the state for a while.
// Usage: hal::LedDriver led(board);  led.set_condition({.processing = true}, now);  led.tick(now);
#pragma once

#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "base/status.h"
#include "hal/board.h"

namespace hal {

/// What the box is doing, as the LED tells it (most severe first: fault, degraded, processing,
/// idle).
enum class BoxState { kIdle, kProcessing, kDegraded, kFault };

/// Stable lower-case name: "idle", "processing", "degraded", "fault".
std::string_view box_state_name(BoxState state);

/// Inputs of box_state(), gathered by the daemon.
struct BoxCondition {
  bool fault = false;       ///< cannot work: a thread stuck, engine or database unusable
  bool hot = false;         ///< the thermal guard holds new jobs
  bool disk_low = false;    ///< data directory free space below storage.min_free_mb
  bool processing = false;  ///< a study is being processed now
  std::string detail;       ///< short human reason ("GPU-therm 87.5 C"), for the log and readout
};

/// fault -> kFault; else hot or disk_low -> kDegraded; else processing -> kProcessing; else kIdle.
BoxState box_state(const BoxCondition& condition);

/// The pattern of each state: idle kOn (steady), processing kBlink1Hz, degraded kDoubleBlink,
/// fault kBlink4Hz (fast).
LedPattern led_pattern_for(BoxState state);

/// One cycle of a pattern, ms: kBlink1Hz 1000 (lit 0-500), kBlink4Hz 250 (lit 0-125),
/// kDoubleBlink 1000 (lit 0-150 and 300-450), kOn and kOff 1000 (constant).
inline constexpr std::chrono::milliseconds kLedCycle1Hz{1000};
inline constexpr std::chrono::milliseconds kLedCycle4Hz{250};
inline constexpr std::chrono::milliseconds kLedCycleDoubleBlink{1000};

/// Whether `pattern` is lit `since_start` after the pattern began (negative counts as 0).
bool led_lit_at(LedPattern pattern, std::chrono::milliseconds since_start);

/// Time from `since_start` to the pattern's next on/off edge (a large value for kOn/kOff).
std::chrono::milliseconds led_time_to_next_edge(LedPattern pattern, std::chrono::milliseconds since_start);

struct LedDriverOptions {
  /// How long a button press shows the state (readout() and one log line).
  std::chrono::milliseconds reveal_for{5000};
};

/// Drives board.led() from the box condition. The caller supplies the time (steady clock), so
/// tests step time by hand. Thread-safe: set_condition() and tick() may come from different
/// threads. The board must outlive the driver.
class LedDriver {
 public:
  using Clock = std::chrono::steady_clock;

  explicit LedDriver(Board& board, LedDriverOptions options = {});

  /// Sets the condition. When the resulting pattern changes, it starts over at its first (lit)
  /// phase at `now`, is recorded with led().set_pattern() and logged.
  void set_condition(const BoxCondition& condition, Clock::time_point now);

  /// Polls the button and writes the LED level for `now` (only when it changes, and always on
  /// the first tick). Call at least every 50 ms for clean 4 Hz blinking, or sleep
  /// time_to_next_edge(). Errors: the LED's (kUnavailable); a failing button is logged once.
  base::Status tick(Clock::time_point now);

  /// Time until the LED must change next (capped at 250 ms so the button stays responsive).
  std::chrono::milliseconds time_to_next_edge(Clock::time_point now) const;

  BoxState state() const;
  LedPattern pattern() const;
  /// While a button press is being answered (options.reveal_for after it):
  /// "<state> (<pattern>)[: detail]", e.g. "degraded (double_blink): GPU-therm 87.5 C".
  std::optional<std::string> readout(Clock::time_point now) const;

 private:
  std::string describe_locked() const;

  Board& board_;
  LedDriverOptions options_;
  mutable std::mutex mu_;
  BoxCondition condition_;
  BoxState state_ = BoxState::kIdle;
  LedPattern pattern_ = LedPattern::kOn;
  Clock::time_point pattern_start_{};
  bool started_ = false;           // pattern_start_ set
  std::optional<bool> written_;    // last level written
  std::optional<Clock::time_point> reveal_until_;
  bool button_error_logged_ = false;
};

}  // namespace hal
