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
};

/// Builds the Jetson board from the sysfs tree under `root` ("/" in production). Devices are
/// discovered once, here: a device that is absent (no pwmfan hwmon, no INA3221 channel)
/// becomes a null object whose readings are kNotFound with the path that was searched.
/// power_mode().set(id) runs `nvpmodel -m <id>` through options.run_command, then re-reads
/// kNvpmodelStatus: kFailedPrecondition when the board still reports another mode (the change
/// needs a reboot), kUnavailable (nvpmodel failed, with its output), kInvalidArgument (id
/// not 0..8). Errors: kNotFound when `root` is not a directory.
base::Result<std::unique_ptr<Board>> make_jetson_board(const std::filesystem::path& root,
                                                       JetsonOptions options = {});

}  // namespace hal
