// The Supervisor: a thread that, every interval, checks each heartbeat against its own
// deadline and pings the systemd watchdog (WATCHDOG=1) only while all are fresh. When one is
// stale it stops pinging (systemd then restarts the service after WatchdogSec) and says why
// in STATUS. Usage: Supervisor s(registry, notifier, ping_interval(timeout)); s.start();
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/status.h"
#include "watchdog/heartbeat.h"
#include "watchdog/sd_notify.h"

namespace watchdog {

/// "READY=1": start-up is done (Type=notify services).
base::Status notify_ready(Notifier& notifier);
/// "STOPPING=1": an orderly shutdown has begun.
base::Status notify_stopping(Notifier& notifier);
/// "STATUS=<text>": one line shown by `systemctl status`.
base::Status notify_status(Notifier& notifier, std::string_view text);
/// "EXTEND_TIMEOUT_USEC=<n>": asks for `extra` more time for the current start-up or
/// shutdown phase (e.g. while the model loads); see sd_notify(3).
base::Status notify_extend_timeout(Notifier& notifier, std::chrono::microseconds extra);

/// "stuck: <name> (no progress for <age> ms)", joined with ", " for several stale heartbeats.
std::string stuck_status(const std::vector<HeartbeatState>& stale);

class Supervisor {
 public:
  /// `registry` and `notifier` must outlive the supervisor. Time comes from registry.clock();
  /// the checks are spaced `interval` apart in real time.
  Supervisor(Registry& registry, Notifier& notifier, std::chrono::milliseconds interval);
  ~Supervisor();  ///< stops the thread
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  /// Starts the checking thread (the first check runs at once). kInvalidArgument for an
  /// interval <= 0; kFailedPrecondition when already running.
  base::Status start();
  /// Stops and joins the thread; idempotent. Sends nothing.
  void stop();
  bool running() const;

  /// One check, as the thread does it: with no stale heartbeat sends "WATCHDOG=1" (plus
  /// "STATUS=running" after a recovery); otherwise sends no ping, and sends
  /// "STATUS=stuck: ..." when the set of stale heartbeats changed. Returns the stale ones.
  std::vector<HeartbeatState> check_once();

 private:
  void run();
  void send(std::string_view state);

  Registry& registry_;
  Notifier& notifier_;
  std::chrono::milliseconds interval_;

  std::mutex check_mu_;                 // serialises check_once()
  std::vector<std::string> stuck_names_;  // stale set at the last check (check_mu_)
  bool notify_failing_ = false;           // (check_mu_) to log a failing notifier once

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_requested_ = false;
  std::thread thread_;
};

}  // namespace watchdog
