#include "watchdog/supervisor.h"

#include <string>
#include <utility>

#include "base/log.h"

namespace watchdog {

base::Status notify_ready(Notifier& notifier) { return notifier.notify("READY=1"); }

base::Status notify_stopping(Notifier& notifier) { return notifier.notify("STOPPING=1"); }

base::Status notify_status(Notifier& notifier, std::string_view text) {
  std::string line(text);
  for (char& c : line) {
    if (c == '\n') c = ' ';  // a newline would start a new assignment
  }
  return notifier.notify("STATUS=" + line);
}

base::Status notify_extend_timeout(Notifier& notifier, std::chrono::microseconds extra) {
  if (extra.count() <= 0) {
    return base::invalid_argument("EXTEND_TIMEOUT_USEC must be > 0, got " +
                                  std::to_string(extra.count()));
  }
  return notifier.notify("EXTEND_TIMEOUT_USEC=" + std::to_string(extra.count()));
}

std::string stuck_status(const std::vector<HeartbeatState>& stale) {
  std::string s = "stuck: ";
  for (size_t i = 0; i < stale.size(); ++i) {
    if (i > 0) s += ", ";
    s += stale[i].name + " (no progress for " + std::to_string(stale[i].age.count()) + " ms)";
  }
  return s;
}

Supervisor::Supervisor(Registry& registry, Notifier& notifier, std::chrono::milliseconds interval)
    : registry_(registry), notifier_(notifier), interval_(interval) {}

Supervisor::~Supervisor() { stop(); }

base::Status Supervisor::start() {
  if (interval_ <= std::chrono::milliseconds(0)) {
    return base::invalid_argument("supervisor interval must be > 0 ms, got " +
                                  std::to_string(interval_.count()));
  }
  std::lock_guard lock(mu_);
  if (thread_.joinable()) return base::failed_precondition("supervisor already running");
  stop_requested_ = false;
  thread_ = std::thread([this] { run(); });
  return base::ok_status();
}

void Supervisor::stop() {
  std::thread t;
  {
    std::lock_guard lock(mu_);
    stop_requested_ = true;
    t = std::move(thread_);
  }
  cv_.notify_all();
  if (t.joinable()) t.join();
}

bool Supervisor::running() const {
  std::lock_guard lock(mu_);
  return thread_.joinable();
}

void Supervisor::run() {
  std::unique_lock lock(mu_);
  while (!stop_requested_) {
    lock.unlock();
    (void)check_once();
    lock.lock();
    cv_.wait_for(lock, interval_, [this] { return stop_requested_; });
  }
}

void Supervisor::send(std::string_view state) {
  base::Status s = notifier_.notify(state);
  if (!s.ok() && !notify_failing_) {
    SB_LOG(kWarning) << "watchdog notification failed: " << s.to_string();
  }
  notify_failing_ = !s.ok();
}

std::vector<HeartbeatState> Supervisor::check_once() {
  std::lock_guard lock(check_mu_);
  std::vector<HeartbeatState> stale;
  for (HeartbeatState& h : registry_.snapshot()) {
    if (h.stale) stale.push_back(std::move(h));
  }
  std::vector<std::string> names;
  for (const HeartbeatState& h : stale) names.push_back(h.name);

  if (stale.empty()) {
    if (!stuck_names_.empty()) {
      SB_LOG(kInfo) << "watchdog: all heartbeats fresh again; resuming pings";
      send("STATUS=running");
    }
    send("WATCHDOG=1");
  } else if (names != stuck_names_) {
    std::string status = stuck_status(stale);
    SB_LOG(kError) << "watchdog: " << status << "; no longer pinging systemd";
    send("STATUS=" + status);
  }
  stuck_names_ = std::move(names);
  return stale;
}

}  // namespace watchdog
