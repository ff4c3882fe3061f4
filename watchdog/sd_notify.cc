#include "watchdog/sd_notify.h"

#include <systemd/sd-daemon.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

namespace watchdog {

base::Status SdNotifier::notify(std::string_view state) {
  std::string message(state);  // sd_notify needs a NUL-terminated string
  int r = sd_notify(0, message.c_str());
  if (r < 0) {
    return base::unavailable("sd_notify(\"" + message + "\") failed: " + std::strerror(-r));
  }
  return base::ok_status();  // r == 0: not under systemd, nothing to send to
}

base::Result<std::optional<std::chrono::microseconds>> watchdog_timeout() {
  uint64_t usec = 0;
  int r = sd_watchdog_enabled(0, &usec);
  if (r < 0) {
    return base::invalid_argument(std::string("sd_watchdog_enabled: bad WATCHDOG_USEC or "
                                              "WATCHDOG_PID: ") + std::strerror(-r));
  }
  if (r == 0) return std::optional<std::chrono::microseconds>();
  return std::optional<std::chrono::microseconds>(
      std::chrono::microseconds(static_cast<int64_t>(usec)));
}

std::chrono::milliseconds ping_interval(std::chrono::microseconds timeout) {
  auto half = std::chrono::duration_cast<std::chrono::milliseconds>(timeout / 2);
  return std::max(half, std::chrono::milliseconds(1));
}

}  // namespace watchdog
