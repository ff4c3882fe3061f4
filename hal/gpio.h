// GPIO lines through libgpiod 1.6 (the kernel's GPIO character device /dev/gpiochip*): the line
// spec of [board] led_gpio / button_gpio, a thin line interface that tests fake, and the status
// LED and front-panel button built on it. Usage:
//   SB_ASSIGN_OR_RETURN(hal::GpioLineSpec spec, hal::parse_gpio_line_spec("tegra194-gpio:105"));
//   SB_ASSIGN_OR_RETURN(auto out, hal::open_gpio_output(spec, false, "strokebox"));
//   hal::GpioStatusLed led(std::move(out));
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "hal/board.h"

namespace hal {

/// Where a GPIO line is: a chip and a line on it, or a line name looked up on every chip.
struct GpioLineSpec {
  /// "gpiochip0" (name), "/dev/gpiochip0" (path), "0" (number) or a label ("tegra194-gpio").
  /// Empty: `line` is a line name searched over all chips, as `gpiofind` does.
  std::string chip;
  /// A decimal line offset on `chip` ("105") or a line name ("PQ.05").
  std::string line;

  /// The offset when `line` is all decimal digits, else nullopt (a line name).
  std::optional<unsigned> offset() const;
  /// "CHIP:LINE" or "LINE", as parse_gpio_line_spec() accepts it back.
  std::string to_string() const;
};

/// Parses "CHIP:LINE" (CHIP a gpiochip name, /dev path, number or label; LINE a decimal offset
/// or a line name) or "LINE_NAME" alone. Surrounding blanks are ignored. Errors:
/// kInvalidArgument naming the offending text and the expected format (empty text, empty chip
/// or line, a second ':', a sign or blank inside, an offset above 65535).
base::Result<GpioLineSpec> parse_gpio_line_spec(std::string_view spec);

/// One requested output line. Levels are logical: `active` lights the LED; the electrical
/// level depends on the active_low the line was requested with.
class GpioOutput {
 public:
  virtual ~GpioOutput() = default;
  /// Drives the line. Errors: kUnavailable (the kernel refused the write).
  virtual base::Status set_value(bool active) = 0;
  /// Human description for logs: "tegra194-gpio:105 (active low)".
  virtual std::string describe() const = 0;
};

/// One edge seen on an input line, from the kernel's event queue.
struct GpioEdge {
  /// Kernel timestamp of the edge (CLOCK_MONOTONIC on current kernels; only differences are
  /// used).
  std::chrono::nanoseconds timestamp{0};
  /// True when the line became active (for an active-low button: pulled low = pressed).
  bool to_active = false;
};

/// One requested input line with edge detection on both edges. The kernel queues edges while
/// nobody reads, so a press between two polls is not lost. The v1 uAPI queue holds 16 events;
/// when it is full the kernel drops the NEWER edges (seen against gpio-mockup in
/// GpioKernel.*), so beyond 8 presses between two polls the later ones are lost.
class GpioInput {
 public:
  virtual ~GpioInput() = default;
  /// Every edge queued since the previous call, oldest first; empty when none. Never blocks.
  /// Errors: kUnavailable (reading the event queue failed).
  virtual base::Result<std::vector<GpioEdge>> read_edges() = 0;
  virtual std::string describe() const = 0;
};

/// Opens and requests a line; `consumer` is the name other tools (gpioinfo) show as its user.
using GpioOutputOpener = std::function<base::Result<std::unique_ptr<GpioOutput>>(
    const GpioLineSpec& spec, bool active_low, std::string consumer)>;
using GpioInputOpener = std::function<base::Result<std::unique_ptr<GpioInput>>(
    const GpioLineSpec& spec, bool active_low, std::string consumer)>;

/// Requests `spec` as an output through libgpiod, initially inactive (LED dark), with
/// FLAG_ACTIVE_LOW when `active_low`. Every libgpiod exception becomes a Status naming the spec:
///   kNotFound          no such chip, no such line on it, or no line of that name on any chip
///   kPermissionDenied  /dev/gpiochipN not accessible to the process (EACCES/EPERM)
///   kUnavailable       the line is requested by another consumer (EBUSY; names it), other errors
base::Result<std::unique_ptr<GpioOutput>> open_gpio_output(const GpioLineSpec& spec, bool active_low,
                                                           std::string consumer);

/// Requests `spec` as an input reporting both edges, with FLAG_ACTIVE_LOW when `active_low`
/// and the internal pull-up (active low) or pull-down (active high) bias; when the kernel
/// refuses a bias (EINVAL/EOPNOTSUPP, pre-5.5 kernels) the line is requested without it and a
/// warning is logged. Errors as open_gpio_output().
base::Result<std::unique_ptr<GpioInput>> open_gpio_input(const GpioLineSpec& spec, bool active_low,
                                                         std::string consumer);

/// A status LED on one output line. set_lit() writes the line; set_pattern() only records.
/// Thread-safe. On destruction the LED is switched off (best effort), so a stopped daemon does
/// not leave a steady "idle" light behind.
class GpioStatusLed final : public StatusLed {
 public:
  explicit GpioStatusLed(std::unique_ptr<GpioOutput> output);
  ~GpioStatusLed() override;

  base::Status set_pattern(LedPattern pattern) override;
  LedPattern pattern() const override;
  /// Errors: kUnavailable (with the line's message); lit() keeps the previous level then.
  base::Status set_lit(bool lit) override;
  bool lit() const override;

 private:
  mutable std::mutex mu_;
  std::unique_ptr<GpioOutput> output_;
  LedPattern pattern_ = LedPattern::kOff;
  bool lit_ = false;
};

/// Contacts bounce for a few ms; edges closer than this are one press or release.
inline constexpr std::chrono::milliseconds kButtonDebounce{30};

/// The front-panel button on one input line, latching presses from the kernel's edge events.
/// Debounce (on event timestamps, not on poll times): an edge to the active level is a press
/// when the line was quiet, no edge of either kind, for at least `debounce` before it. So the
/// chatter of one press and the chatter of its release (which holds edges to active too) count
/// once, while two real presses 100 ms apart count twice. take_press() returns true once per
/// press: two presses between polls give true, then true, then false. Thread-safe.
class GpioButton final : public Button {
 public:
  explicit GpioButton(std::unique_ptr<GpioInput> input,
                      std::chrono::nanoseconds debounce = kButtonDebounce);

  /// Errors: kUnavailable (the input failed; presses latched before stay latched).
  base::Result<bool> take_press() override;

 private:
  std::mutex mu_;
  std::unique_ptr<GpioInput> input_;
  std::chrono::nanoseconds debounce_;
  std::optional<std::chrono::nanoseconds> last_edge_;  // timestamp of the last edge of any kind
  int64_t pending_ = 0;                                // presses not yet taken
};

}  // namespace hal
