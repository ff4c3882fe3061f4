// A thin adapter over libsystemd's sd_notify(3) and sd_watchdog_enabled(3), behind the small
// Notifier interface so the Supervisor can be tested with a recording fake. Outside systemd
// (no NOTIFY_SOCKET) notifications are silently dropped, so the daemon runs the same anywhere.
#pragma once

#include <chrono>
#include <optional>
#include <string_view>

#include "base/status.h"

namespace watchdog {

/// Sends service state to the service manager: newline-separated "KEY=VALUE" assignments
/// ("READY=1", "WATCHDOG=1", "STATUS=..."), as in sd_notify(3).
class Notifier {
 public:
  virtual ~Notifier() = default;
  virtual base::Status notify(std::string_view state) = 0;
};

/// Notifier over sd_notify(0, state). OK when sent or when there is no NOTIFY_SOCKET (not
/// under systemd); kUnavailable with the errno text when sending fails.
class SdNotifier final : public Notifier {
 public:
  base::Status notify(std::string_view state) override;
};

/// The service watchdog timeout (WatchdogSec=, from $WATCHDOG_USEC / $WATCHDOG_PID via
/// sd_watchdog_enabled(3)); std::nullopt when the watchdog is off or meant for another
/// process. kInvalidArgument when the environment is malformed.
base::Result<std::optional<std::chrono::microseconds>> watchdog_timeout();

/// How often to check and ping for a watchdog `timeout`: half of it, as sd_watchdog_enabled(3)
/// recommends, at least 1 ms.
std::chrono::milliseconds ping_interval(std::chrono::microseconds timeout);

}  // namespace watchdog
