// Board interfaces: one small pure-virtual interface per device (thermal zones, power rails,
// fan, power mode, GPU load, status LED) and hal::Board, which holds one of each. main()
// builds a Board with make_jetson_board(root) or make_sim_board() and passes it by reference.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace hal {

// Error conventions shared by every reading below (a missing sensor is never reported as 0):
//   kNotFound     the sensor does not exist on this board (unknown zone or rail, file absent)
//   kUnavailable  the sensor exists but could not be read now (I/O error, driver busy)
//   kDataLoss     the sensor returned something that is not a number in the documented range
// Every method is thread-safe: the telemetry sampler reads while other threads do too.

/// Temperature sensors, named by their kernel zone type ("CPU-therm", "GPU-therm", ...).
class ThermalZones {
 public:
  virtual ~ThermalZones() = default;
  /// Zone type names in kernel order (thermal_zone0 first). Empty when the board has none.
  virtual std::vector<std::string> zones() const = 0;
  /// Temperature of `zone` in milli-degrees Celsius (45'500 = 45.5 °C); may be negative.
  virtual base::Result<int32_t> temperature_mC(std::string_view zone) const = 0;
};

/// One instantaneous reading of a power rail (bus voltage and current sampled together).
struct RailReading {
  int32_t voltage_mV = 0;  ///< bus voltage, millivolts
  int32_t current_mA = 0;  ///< current, milliamperes
  /// Power in milliwatts: voltage_mV × current_mA / 1000 (truncated toward zero).
  int64_t power_mW() const { return int64_t{voltage_mV} * current_mA / 1000; }
};

/// Label of the rail that measures the whole module's input power (Jetson INA3221 channel 1).
inline constexpr std::string_view kRailModuleTotal = "VDD_IN";
/// Rail feeding CPU, GPU and CV accelerators together (Xavier NX INA3221 channel 2).
inline constexpr std::string_view kRailCpuGpuCv = "VDD_CPU_GPU_CV";
/// Rail feeding the SoC (memory controller, fabric; Xavier NX INA3221 channel 3).
inline constexpr std::string_view kRailSoc = "VDD_SOC";

/// Power rail monitors, named by channel label (kRailModuleTotal is the module total).
class PowerMonitor {
 public:
  virtual ~PowerMonitor() = default;
  /// Rail labels in channel order. Empty when the board has no power monitor.
  virtual std::vector<std::string> rails() const = 0;
  /// Voltage and current of rail `label`.
  virtual base::Result<RailReading> read(std::string_view label) const = 0;
};

/// Largest fan PWM duty value (255 = 100 %, 0 = stopped).
inline constexpr int kFanPwmMax = 255;

/// The cooling fan's PWM duty cycle, 0..kFanPwmMax.
class Fan {
 public:
  virtual ~Fan() = default;
  /// Current duty, 0..kFanPwmMax.
  virtual base::Result<int> pwm() const = 0;
  /// Sets the duty; kInvalidArgument outside 0..kFanPwmMax, kPermissionDenied when the
  /// process may not write it. A fan daemon (nvfancontrol) may overwrite it later.
  virtual base::Status set_pwm(int pwm) = 0;
};

/// An nvpmodel power mode: numeric id and NVIDIA's name ("MODE_20W_6CORE").
struct PowerModeInfo {
  int id = -1;
  std::string name;  ///< "unknown" when the id is not in the board's table
};

/// The power mode the board runs in (nvpmodel on Jetson).
class PowerMode {
 public:
  virtual ~PowerMode() = default;
  virtual base::Result<PowerModeInfo> current() const = 0;
  /// Switches to mode `id` (Jetson: `nvpmodel -m <id>`). Some mode changes only take effect
  /// after a reboot; current() tells. Errors: kInvalidArgument (id unknown to the board),
  /// kNotFound (no power mode control), kPermissionDenied / kUnavailable (the tool failed,
  /// with its output).
  virtual base::Status set(int id) = 0;
};

/// Largest GPU load value: loads are in per mille (1000 = 100 % busy).
inline constexpr int kGpuLoadMaxPermille = 1000;

/// GPU utilisation, as the driver's moving average.
class GpuLoad {
 public:
  virtual ~GpuLoad() = default;
  /// GPU busy fraction in per mille, 0..kGpuLoadMaxPermille.
  virtual base::Result<int> load_permille() const = 0;
};

/// What the status LED shows. Which box state maps to which pattern: hal/led_pattern.h.
/// Timing of each pattern (on/off phases): led_lit_at() in hal/led_pattern.h.
enum class LedPattern { kOff, kOn, kBlink1Hz, kBlink4Hz, kDoubleBlink };

/// Stable lower-case name ("off", "on", "blink_1hz", "blink_4hz", "double_blink").
std::string_view led_pattern_name(LedPattern pattern);

/// The front-panel status LED. hal::LedDriver (hal/led_pattern.h) records the pattern with
/// set_pattern() and switches the light itself with set_lit() on every tick, so a backend
/// only needs an on/off output (a GPIO line).
class StatusLed {
 public:
  virtual ~StatusLed() = default;
  /// Records the pattern being shown (for status and the sim board); does not light anything.
  virtual base::Status set_pattern(LedPattern pattern) = 0;
  /// The last pattern successfully set (kOff initially).
  virtual LedPattern pattern() const = 0;
  /// Switches the light on or off now. Errors: kUnavailable (the output failed).
  virtual base::Status set_lit(bool lit) = 0;
  /// The last level successfully set (false initially).
  virtual bool lit() const = 0;
};

/// The front-panel push button (one GPIO input). A press asks the box to show its state.
class Button {
 public:
  virtual ~Button() = default;
  /// True once for each press since the previous call (presses are latched by the backend,
  /// so a poll every few hundred ms misses none); false when there was none.
  /// Errors: kUnavailable (the input failed), kNotFound (no button on this board).
  virtual base::Result<bool> take_press() = 0;
};

/// All devices of one board. A device passed as nullptr is replaced by a null object whose
/// readings are kNotFound ("no <device> on this board") and whose LED accepts every pattern,
/// so callers never test for null (a null button is never pressed). Not copyable or movable:
/// hold it by unique_ptr or reference.
class Board {
 public:
  Board(std::string name, std::unique_ptr<ThermalZones> thermal,
        std::unique_ptr<PowerMonitor> power, std::unique_ptr<Fan> fan,
        std::unique_ptr<PowerMode> power_mode, std::unique_ptr<GpuLoad> gpu,
        std::unique_ptr<StatusLed> led, std::unique_ptr<Button> button = nullptr);
  virtual ~Board();
  Board(const Board&) = delete;
  Board& operator=(const Board&) = delete;

  /// "jetson-xavier-nx" or "sim".
  const std::string& name() const { return name_; }
  ThermalZones& thermal() const { return *thermal_; }
  PowerMonitor& power() const { return *power_; }
  Fan& fan() const { return *fan_; }
  PowerMode& power_mode() const { return *power_mode_; }
  GpuLoad& gpu() const { return *gpu_; }
  StatusLed& led() const { return *led_; }
  Button& button() const { return *button_; }

 private:
  std::string name_;
  std::unique_ptr<ThermalZones> thermal_;
  std::unique_ptr<PowerMonitor> power_;
  std::unique_ptr<Fan> fan_;
  std::unique_ptr<PowerMode> power_mode_;
  std::unique_ptr<GpuLoad> gpu_;
  std::unique_ptr<StatusLed> led_;
  std::unique_ptr<Button> button_;
};

/// Null objects, for backends that lack a device. `reason` ends up in every error message.
std::unique_ptr<ThermalZones> make_null_thermal(std::string reason);
std::unique_ptr<PowerMonitor> make_null_power(std::string reason);
std::unique_ptr<Fan> make_null_fan(std::string reason);
std::unique_ptr<PowerMode> make_null_power_mode(std::string reason);
std::unique_ptr<GpuLoad> make_null_gpu(std::string reason);
/// An LED that is not there: every pattern and level is accepted (and remembered) and nothing
/// lights.
std::unique_ptr<StatusLed> make_null_led();
/// A button that is not there: take_press() is always false (never an error, so the LED
/// driver polls it without special cases).
std::unique_ptr<Button> make_null_button();

/// The Jetson backend when `<root>/sys/devices/gpu.0` and an INA3221 driver directory
/// (`<root>/sys/bus/i2c/drivers/ina3221`) exist, else the simulated board. `root` is "/" in
/// production and a fake tree in tests. Errors come from make_jetson_board.
base::Result<std::unique_ptr<Board>> detect_board(const std::filesystem::path& root);

}  // namespace hal
