// detect_board(): picks the Jetson backend when its sysfs is there, the simulator otherwise.
#include <system_error>
#include <utility>

#include "base/log.h"
#include "hal/board.h"
#include "hal/jetson_board.h"
#include "hal/sim_board.h"

namespace hal {

base::Result<std::unique_ptr<Board>> detect_board(const std::filesystem::path& root) {
  return detect_board(root, JetsonOptions{});
}

base::Result<std::unique_ptr<Board>> detect_board(const std::filesystem::path& root, JetsonOptions options) {
  std::error_code e1, e2;
  bool gpu = std::filesystem::is_directory(root / jetson_paths::kGpuDevice, e1);
  bool ina = std::filesystem::is_directory(root / jetson_paths::kIna3221, e2);
  if (gpu && ina) return make_jetson_board(root, std::move(options));
  SB_LOG(kInfo) << "no Jetson sysfs under " << root.string() << " (gpu.0 "
                << (gpu ? "present" : "absent") << ", ina3221 " << (ina ? "present" : "absent")
                << "): using the simulated board";
  return std::unique_ptr<Board>(make_sim_board());
}

}  // namespace hal
