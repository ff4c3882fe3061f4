// The Jetson Xavier NX backend (JetPack 5): every device read from sysfs under an injectable
// root directory, so tests drive it with a fake tree. Usage in main():
//   SB_ASSIGN_OR_RETURN(std::unique_ptr<hal::Board> board, hal::make_jetson_board("/"));
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "hal/board.h"
#include "hal/gpio.h"

namespace hal {

/// Paths below the root, as laid out on Xavier NX with JetPack 5 (L4T r35).
namespace jetson_paths {
/// thermal_zone<N>/type holds the zone name, thermal_zone<N>/temp the reading in m°C.
inline constexpr std::string_view kThermal = "sys/class/thermal";
/// <device>/hwmon/hwmon<M>/in<N>_label, in<N>_input (mV), curr<N>_input (mA).
inline constexpr std::string_view kIna3221 = "sys/bus/i2c/drivers/ina3221";
/// hwmon<M>/ whose `name` file is kFanHwmonName holds pwm1 (0..255).
inline constexpr std::string_view kPwmFanHwmon = "sys/devices/platform/pwm-fan/hwmon";
inline constexpr std::string_view kFanHwmonName = "pwmfan";
/// GPU load in per mille (0..1000), one integer.
inline constexpr std::string_view kGpuDevice = "sys/devices/gpu.0";
inline constexpr std::string_view kGpuLoad = "sys/devices/gpu.0/load";
/// nvpmodel's record of the current mode: a line "pmode:0008" (id, decimal, zero-padded).
inline constexpr std::string_view kNvpmodelStatus = "var/lib/nvpmodel/status";
}  // namespace jetson_paths

/// NVIDIA's name for an Xavier NX nvpmodel id (8 -> "MODE_20W_6CORE"), from the POWER_MODEL
/// entries of /etc/nvpmodel/nvpmodel_t194_p3668.conf (JetPack 4.6 / 5); "unknown" otherwise.
std::string_view xavier_nx_mode_name(int id);

/// What a finished program left: its exit status and its stdout and stderr together.
struct CommandOutput {
  int exit_code = -1;  ///< exit status; -1 when it was killed by a signal
  std::string output;
};

/// Runs a program given as argv (argv[0] searched in PATH), stdin from /dev/null, and waits
/// for it. Errors: kInvalidArgument (empty argv), kNotFound (program not found),
/// kUnavailable (it could not be started).
using CommandRunner = std::function<base::Result<CommandOutput>(const std::vector<std::string>& argv)>;

/// The real CommandRunner (posix_spawnp; output captured through a pipe).
base::Result<CommandOutput> run_command(const std::vector<std::string>& argv);

struct JetsonOptions {
  /// Runs `nvpmodel -m <id>` for power_mode().set(); tests inject a fake. Default: run_command.
  CommandRunner run_command;

  /// Status LED output line (parse_gpio_line_spec() format, e.g. "tegra194-gpio:105" or
  /// "PQ.05"); empty: no LED (the null LED). From [board] led_gpio.
  std::string led_gpio{};
  /// Front-panel button input line, same format; empty: no button. From [board] button_gpio.
  std::string button_gpio{};
  /// The LED lights when its line is driven low.
  bool led_active_low = false;
  /// A press pulls the button's line low (button to ground, pull-up): the usual wiring.
  bool button_active_low = true;
  /// Open the lines; tests inject fakes. Default: open_gpio_output / open_gpio_input (libgpiod).
  GpioOutputOpener open_led{};
  GpioInputOpener open_button{};
  /// When not null, make_jetson_board appends one line per configured device it could not open
  /// (the same text it logs), for a status readout. Must outlive the call only.
  std::vector<std::string>* device_warnings = nullptr;
};

/// The consumer name the LED and button lines are requested under (shown by `gpioinfo`).
inline constexpr std::string_view kGpioConsumer = "strokebox";

/// Builds the Jetson board from the sysfs tree under `root` ("/" in production). Devices are
/// discovered once, here: a device that is absent (no pwmfan hwmon, no INA3221 channel)
/// becomes a null object whose readings are kNotFound with the path that was searched.
/// power_mode().set(id) runs `nvpmodel -m <id>` through options.run_command, then re-reads
/// kNvpmodelStatus: kFailedPrecondition when the board still reports another mode (the change
/// needs a reboot), kUnavailable (nvpmodel failed, with its output), kInvalidArgument (id
/// not 0..8).
/// The status LED and button are opened through options.open_led / open_button when their spec
/// is non-empty. A line that cannot be opened (no chip, no line, busy, permission) does not stop
/// the board: a warning is logged (and added to options.device_warnings) and the null LED or
/// button is used, so the box keeps working without its front panel.
/// Errors: kNotFound when `root` is not a directory; kInvalidArgument when led_gpio or
/// button_gpio does not parse (parse_gpio_line_spec; the message names the [board] key).
base::Result<std::unique_ptr<Board>> make_jetson_board(const std::filesystem::path& root,
                                                       JetsonOptions options = {});

/// detect_board() (hal/board.h) with the options passed to make_jetson_board when the Jetson
/// sysfs is there; the simulated board ignores them.
base::Result<std::unique_ptr<Board>> detect_board(const std::filesystem::path& root, JetsonOptions options);

}  // namespace hal
