// Board telemetry for the daemon: a sampler thread reads the board (hal::Board) and the OS
// (/proc/stat, /proc/meminfo, statvfs) at a fixed rate into a bounded ring in its own SQLite
// file (`<data_dir>/telemetry.db`, synchronous=NORMAL: loss-tolerant), integrates VDD_IN power
// over each study, drives the thermal guard, and keeps the daemon's state row that
// `strokebox status` reads. A sensor that is missing or unreadable is NULL, never 0.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/status.h"
#include "hal/board.h"
#include "storage/database.h"
#include "watchdog/heartbeat.h"

namespace firmware {

/// One power rail as sampled; each value is nullopt when unreadable.
struct RailSample {
  std::string label;
  std::optional<int64_t> power_mW;
  std::optional<int32_t> voltage_mV, current_mA;
};

/// One telemetry sample. Every optional is nullopt when the sensor is missing or failed.
struct TelemetrySample {
  int64_t t_ms = 0;                                    // Unix epoch, ms
  std::vector<std::pair<std::string, std::optional<double>>> temps_c;  // zone type -> °C
  std::optional<double> max_temp_c;                    // hottest readable zone
  std::vector<RailSample> rails;
  std::optional<int64_t> vdd_in_mW;                    // module input power (hal::kRailModuleTotal)
  std::optional<int> fan_pwm;                          // 0..hal::kFanPwmMax
  std::optional<double> gpu_load_pct;                  // 0..100
  std::optional<double> cpu_load_pct;                  // 0..100 since the previous sample (/proc/stat)
  std::optional<int64_t> mem_available_bytes;          // /proc/meminfo MemAvailable
  std::optional<int64_t> disk_free_bytes;              // statvfs f_bavail * f_frsize of the data dir
};

/// Power and temperature over one study (Telemetry::begin_job .. end_job).
struct JobPower {
  std::optional<double> energy_j;       // trapezoidal integral of VDD_IN power over time
  std::optional<double> mean_power_mw;  // energy / duration (or the only sample)
  std::optional<double> peak_power_mw;
  std::optional<double> peak_temp_c;
};

/// Thermal hold with hysteresis: holds above `hold_above_c`, resumes strictly below
/// `hold_above_c - hysteresis_c`. A missing temperature changes nothing. Not thread-safe.
class ThermalGuard {
 public:
  enum class Change { kNone, kHold, kResume };
  ThermalGuard(double hold_above_c, double hysteresis_c) : hold_above_c_(hold_above_c), hysteresis_c_(hysteresis_c) {}
  Change update(std::optional<double> hottest_c);
  bool holding() const { return holding_; }
  double hold_above_c() const { return hold_above_c_; }
  double resume_below_c() const { return hold_above_c_ - hysteresis_c_; }

 private:
  double hold_above_c_, hysteresis_c_;
  bool holding_ = false;
};

/// What the daemon publishes about itself (one row, rewritten at every sample).
struct DaemonStateRow {
  int64_t pid = 0;
  std::string version;
  int64_t started_ms = 0;
  int64_t updated_ms = 0;  // last sample: the daemon's heartbeat for `status`
  std::string board;
  std::optional<int> power_mode_id;
  std::string power_mode_name;
  int expected_power_mode = -1;
  std::string state_json = "{}";  // threads, thermal hold, current job, engine (daemon-defined)
};

struct TelemetryOptions {
  std::string db_path;                           // telemetry.db
  std::string disk_path;                         // filesystem whose free space is reported
  std::string proc_root = "/proc";               // injectable for tests
  std::chrono::milliseconds interval{1000};      // sampling period
  int ring_rows = 86400;                         // samples kept
  double hold_above_c = 85.0;
  double hysteresis_c = 5.0;
};

class Telemetry {
 public:
  /// Opens (creates, migrates) the telemetry database. `board` must outlive the object.
  /// Errors: kInvalidArgument (interval <= 0, ring_rows < 1), the storage layer's errors.
  static base::Result<std::unique_ptr<Telemetry>> open(TelemetryOptions options, hal::Board& board);
  ~Telemetry();  // stop()

  /// Takes and stores the first sample (and the daemon_state row) before returning, then
  /// starts the sampler thread; it beats `heartbeat` (may be null) after every sample.
  /// kFailedPrecondition when already running.
  base::Status start(std::shared_ptr<watchdog::Heartbeat> heartbeat);
  void stop();

  /// Reads every sensor, stores the sample in the ring, updates the thermal guard and the
  /// running job's power figures. Thread-safe. Errors only from storing (the sample is still
  /// used for the guard and the job).
  base::Result<TelemetrySample> sample_now();

  /// Starts / ends the power integration of one study; each takes a sample itself so even a
  /// study shorter than the interval gets two points.
  void begin_job();
  JobPower end_job();

  /// True while the thermal guard holds new jobs.
  bool holding_jobs() const { return holding_.load(); }
  /// Called (from the sampling thread) when the guard holds or resumes, after logging.
  void on_thermal_change(std::function<void(bool holding, double temp_c)> callback);

  /// The daemon state row; `provider` fills state_json at each sample.
  void set_daemon_state(DaemonStateRow row, std::function<std::string()> provider);

  std::optional<TelemetrySample> latest() const;
  /// Samples taken by the sampler thread, and the CPU time it used for them (seconds,
  /// CLOCK_THREAD_CPUTIME_ID), for the overhead figure.
  uint64_t sampler_samples() const { return sampler_samples_.load(); }
  double sampler_cpu_s() const;

 private:
  Telemetry(TelemetryOptions options, hal::Board& board, std::unique_ptr<storage::Database> db, int64_t next_seq);
  TelemetrySample read_sensors();
  base::Status store(const TelemetrySample& s);
  void run(std::shared_ptr<watchdog::Heartbeat> heartbeat);
  // One sample: stores it, accounts the sampler's CPU time, logs the first of a run of store
  // failures, beats `heartbeat` (may be null). Called by start() and then only by the thread.
  void sample_and_beat(watchdog::Heartbeat* heartbeat);

  TelemetryOptions options_;
  hal::Board& board_;
  std::mutex db_mu_;
  std::unique_ptr<storage::Database> db_;
  int64_t next_seq_;

  mutable std::mutex mu_;  // everything below
  std::optional<TelemetrySample> latest_;
  std::optional<std::pair<uint64_t, uint64_t>> prev_cpu_;  // busy, total jiffies
  ThermalGuard guard_;
  std::function<void(bool, double)> thermal_callback_;
  std::optional<DaemonStateRow> state_;
  std::function<std::string()> state_provider_;
  bool job_active_ = false;
  int64_t job_start_ms_ = 0, job_last_ms_ = 0;
  std::optional<int64_t> job_last_mW_;
  double job_energy_mJ_ = 0;
  int job_power_samples_ = 0;
  std::optional<double> job_peak_mW_, job_peak_temp_c_;
  double sampler_cpu_s_ = 0;

  std::atomic<bool> holding_{false};
  std::atomic<uint64_t> sampler_samples_{0};
  bool store_failing_ = false;  // start() and then the sampler thread only
  std::mutex run_mu_;
  std::condition_variable cv_;
  bool stop_requested_ = false;
  std::thread thread_;
};

/// Reading side for `strokebox status` (read-only, beside a running daemon). nullopt when the
/// daemon has written nothing yet. Errors: kNotFound (no telemetry.db), storage errors.
base::Result<std::optional<TelemetrySample>> read_latest_sample(const std::string& db_path);
base::Result<std::optional<DaemonStateRow>> read_daemon_state(const std::string& db_path);

}  // namespace firmware
