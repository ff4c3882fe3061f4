// The simulated board: a full backend with scriptable state and fault injection, used on
// development machines and by tests that run the firmware without a Jetson. Usage:
//   auto sim = hal::make_sim_board();  sim->set_temperature_mC("GPU-therm", 95'000);
//   run_firmware(*sim);                // a SimBoard is a hal::Board
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "hal/board.h"

namespace hal {

/// Names for fault injection of the devices that are not zones or rails.
inline constexpr std::string_view kSimFan = "fan";
inline constexpr std::string_view kSimGpuLoad = "gpu";
inline constexpr std::string_view kSimPowerMode = "power_mode";
inline constexpr std::string_view kSimLed = "led";
inline constexpr std::string_view kSimButton = "button";

/// What an injected fault does to a sensor.
enum class SimFault {
  kNone,     ///< behaves normally
  kMissing,  ///< disappears: left out of zones()/rails(), readings are kNotFound
  kError,    ///< present but failing: readings (and writes) are kUnavailable
};

/// Initial state: zones CPU-therm, GPU-therm, AUX-therm, AO-therm, PMIC-Die, thermal-fan-est
/// at 40'000 m°C; rails VDD_IN 5'000 mV / 1'200 mA, VDD_CPU_GPU_CV 5'000 mV / 400 mA,
/// VDD_SOC 5'000 mV / 300 mA; fan pwm 0; power mode 8 "MODE_20W_6CORE"; GPU load 0; LED off.
/// LED unlit, button not pressed. power_mode().set(id) accepts the Xavier NX ids 0..8.
/// All setters and readings are thread-safe.
class SimBoard final : public Board {
 public:
  SimBoard();
  ~SimBoard() override;

  /// Sets the zone's temperature; adds the zone (at the end of zones()) when it is new.
  void set_temperature_mC(std::string_view zone, int32_t temperature_mC);
  /// Sets the rail's voltage and current; adds the rail when it is new.
  void set_rail(std::string_view label, int32_t voltage_mV, int32_t current_mA);
  /// Sets the GPU load (not range-checked, so tests can feed the firmware bad values).
  void set_gpu_load_permille(int load_permille);
  /// Sets the mode as if changed outside the firmware (any id and name, unchecked).
  void set_power_mode(int id, std::string name);
  /// Presses the front-panel button once (latched until button().take_press() takes it).
  /// hal::LedDriver answers a press by showing the box state for a few seconds.
  void press_button();

  /// Injects `fault` into `sensor`: a zone type, a rail label, or kSimFan, kSimGpuLoad,
  /// kSimPowerMode, kSimLed, kSimButton. kNone clears it.
  void inject_fault(std::string_view sensor, SimFault fault);
  void clear_faults();

  /// Fan duty last written through fan().set_pwm() (or the initial 0).
  int fan_pwm() const;
  /// What the LED shows now: the last pattern accepted by led().set_pattern().
  LedPattern led_pattern() const;
  /// Whether the LED is lit now: the last level accepted by led().set_lit().
  bool led_lit() const;

  struct State;  // shared with the device objects

 private:
  explicit SimBoard(std::shared_ptr<State> state);
  std::shared_ptr<State> state_;
};

/// A simulated board in its initial state.
std::unique_ptr<SimBoard> make_sim_board();

}  // namespace hal
