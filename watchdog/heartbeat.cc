#include "watchdog/heartbeat.h"

#include <algorithm>
#include <utility>

namespace watchdog {
namespace {

class SteadyClock final : public Clock {
 public:
  TimePoint now() const override { return std::chrono::steady_clock::now(); }
};

int64_t to_ns(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

}  // namespace

const Clock& steady_clock() {
  static const SteadyClock clock;
  return clock;
}

Heartbeat::Heartbeat(std::string name, std::chrono::milliseconds deadline, const Clock& clock)
    : name_(std::move(name)), deadline_(deadline), clock_(clock), last_ns_(to_ns(clock.now())) {}

void Heartbeat::beat() noexcept {
  last_ns_.store(to_ns(clock_.now()), std::memory_order_release);
  beats_.fetch_add(1, std::memory_order_relaxed);
}

TimePoint Heartbeat::last_beat() const {
  return TimePoint(std::chrono::duration_cast<TimePoint::duration>(
      std::chrono::nanoseconds(last_ns_.load(std::memory_order_acquire))));
}

std::chrono::milliseconds Heartbeat::age(TimePoint now) const {
  auto age = std::chrono::duration_cast<std::chrono::milliseconds>(now - last_beat());
  return std::max(age, std::chrono::milliseconds(0));
}

Registry::Registry(const Clock& clock) : clock_(clock) {}

base::Result<std::shared_ptr<Heartbeat>> Registry::add(std::string name,
                                                       std::chrono::milliseconds deadline) {
  if (name.empty()) return base::invalid_argument("heartbeat name is empty");
  if (deadline <= std::chrono::milliseconds(0)) {
    return base::invalid_argument("heartbeat '" + name + "': deadline must be > 0 ms, got " +
                                  std::to_string(deadline.count()));
  }
  std::lock_guard lock(mu_);
  for (const auto& h : heartbeats_) {
    if (h->name() == name) {
      return base::already_exists("heartbeat '" + name + "' is already registered");
    }
  }
  auto h = std::make_shared<Heartbeat>(std::move(name), deadline, clock_);
  heartbeats_.push_back(h);
  return h;
}

base::Status Registry::remove(std::string_view name) {
  std::lock_guard lock(mu_);
  auto it = std::find_if(heartbeats_.begin(), heartbeats_.end(),
                         [&](const auto& h) { return h->name() == name; });
  if (it == heartbeats_.end()) {
    return base::not_found("no heartbeat named '" + std::string(name) + "'");
  }
  heartbeats_.erase(it);
  return base::ok_status();
}

std::vector<HeartbeatState> Registry::snapshot() const {
  std::lock_guard lock(mu_);
  TimePoint now = clock_.now();
  std::vector<HeartbeatState> out;
  out.reserve(heartbeats_.size());
  for (const auto& h : heartbeats_) {
    out.push_back({h->name(), h->deadline(), h->age(now), h->beats(), h->stale(now)});
  }
  return out;
}

size_t Registry::size() const {
  std::lock_guard lock(mu_);
  return heartbeats_.size();
}

}  // namespace watchdog
