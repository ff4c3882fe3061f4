// Heartbeats: each long-lived thread owns one and calls beat() whenever it makes progress;
// the Supervisor checks every heartbeat against its own deadline. A thread that blocks on a
// queue should wait with a timeout shorter than its deadline and beat on every wake-up.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace watchdog {

using TimePoint = std::chrono::steady_clock::time_point;

/// A monotonic time source, injectable so that tests decide what "now" is.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint now() const = 0;
};

/// std::chrono::steady_clock (never jumps with wall-clock changes).
const Clock& steady_clock();

/// A clock that moves only when told to. Thread-safe; starts at time_since_epoch() == 0.
class ManualClock final : public Clock {
 public:
  TimePoint now() const override {
    return TimePoint(std::chrono::nanoseconds(ns_.load(std::memory_order_acquire)));
  }
  void advance(std::chrono::nanoseconds by) { ns_.fetch_add(by.count(), std::memory_order_acq_rel); }

 private:
  std::atomic<int64_t> ns_{0};
};

/// Progress marker of one thread. beat() is lock-free and wait-free (one atomic store of the
/// clock's time), so it is cheap enough for inner loops. A new heartbeat counts as having
/// beaten at creation: a thread that never starts goes stale after its deadline.
class Heartbeat {
 public:
  /// `clock` must outlive the heartbeat.
  Heartbeat(std::string name, std::chrono::milliseconds deadline, const Clock& clock);

  /// Records progress now.
  void beat() noexcept;

  const std::string& name() const { return name_; }
  /// Longest time allowed between two beats before the thread counts as stuck.
  std::chrono::milliseconds deadline() const { return deadline_; }
  TimePoint last_beat() const;
  /// Number of beat() calls so far.
  uint64_t beats() const { return beats_.load(std::memory_order_relaxed); }
  /// Time since the last beat at `now`, in whole milliseconds (0 if `now` is earlier).
  std::chrono::milliseconds age(TimePoint now) const;
  /// True when age(now) > deadline().
  bool stale(TimePoint now) const { return age(now) > deadline_; }

 private:
  static_assert(std::atomic<int64_t>::is_always_lock_free);
  std::string name_;
  std::chrono::milliseconds deadline_;
  const Clock& clock_;
  std::atomic<int64_t> last_ns_;  // clock time of the last beat, ns since the clock's epoch
  std::atomic<uint64_t> beats_{0};
};

/// What a check saw of one heartbeat.
struct HeartbeatState {
  std::string name;
  std::chrono::milliseconds deadline{0};
  std::chrono::milliseconds age{0};  ///< time since the last beat
  uint64_t beats = 0;
  bool stale = false;                ///< age > deadline
};

/// The set of heartbeats the Supervisor watches. Adding and removing take a mutex (rare);
/// beating does not touch the registry. Thread-safe.
class Registry {
 public:
  /// `clock` (the real steady clock by default) must outlive the registry and its heartbeats.
  explicit Registry(const Clock& clock = steady_clock());

  /// Registers a heartbeat and returns it to the thread that will beat it.
  /// Errors: kInvalidArgument for an empty name or a deadline <= 0; kAlreadyExists when the
  /// name is taken.
  base::Result<std::shared_ptr<Heartbeat>> add(std::string name,
                                               std::chrono::milliseconds deadline);
  /// Unregisters a heartbeat (a thread that ends on purpose). kNotFound when unknown.
  base::Status remove(std::string_view name);

  /// Every heartbeat as of the clock's now(), in registration order.
  std::vector<HeartbeatState> snapshot() const;
  size_t size() const;
  const Clock& clock() const { return clock_; }

 private:
  const Clock& clock_;
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<Heartbeat>> heartbeats_;
};

}  // namespace watchdog
