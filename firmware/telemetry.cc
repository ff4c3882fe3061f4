#include "firmware/telemetry.h"

#include <sys/statvfs.h>
#include <time.h>

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "base/log.h"
#include "storage/index.h"

namespace firmware {
namespace {

// Loss-tolerant data in its own file (synchronous=NORMAL): a power cut may lose the last
// samples, never the job queue. `slot` = seq % ring_rows makes the table a ring.
constexpr std::string_view kTelemetryV1 = R"sql(
CREATE TABLE samples (
  slot                 INTEGER PRIMARY KEY,
  seq                  INTEGER NOT NULL,
  t_ms                 INTEGER NOT NULL,
  max_temp_c           REAL,
  vdd_in_mw            INTEGER,
  fan_pwm              INTEGER,
  gpu_load_pct         REAL,
  cpu_load_pct         REAL,
  mem_available_bytes  INTEGER,
  disk_free_bytes      INTEGER,
  temps_json           TEXT NOT NULL DEFAULT '{}',
  rails_json           TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX samples_by_seq ON samples(seq);
CREATE TABLE daemon_state (
  id                   INTEGER PRIMARY KEY CHECK (id = 1),
  pid                  INTEGER NOT NULL,
  version              TEXT NOT NULL,
  started_ms           INTEGER NOT NULL,
  updated_ms           INTEGER NOT NULL,
  board                TEXT NOT NULL,
  power_mode_id        INTEGER,
  power_mode_name      TEXT NOT NULL DEFAULT '',
  expected_power_mode  INTEGER NOT NULL DEFAULT -1,
  state_json           TEXT NOT NULL DEFAULT '{}'
);
)sql";
constexpr std::array<storage::Migration, 1> kTelemetryMigrations = {{{1, kTelemetryV1}}};

nlohmann::json opt(const std::optional<double>& v) { return v ? nlohmann::json(*v) : nlohmann::json(); }
template <typename T>
nlohmann::json opt_int(const std::optional<T>& v) {
  return v ? nlohmann::json(static_cast<int64_t>(*v)) : nlohmann::json();
}

template <typename T>
void bind_opt(storage::Statement& st, int i, const std::optional<T>& v) {
  if (!v) {
    st.bind_null(i);
  } else if constexpr (std::is_floating_point_v<T>) {
    st.bind(i, static_cast<double>(*v));
  } else {
    st.bind(i, static_cast<int64_t>(*v));
  }
}

// /proc/stat first line: "cpu user nice system idle iowait irq softirq steal ..." (proc(5)).
// Returns {busy, total} jiffies; busy excludes idle and iowait.
std::optional<std::pair<uint64_t, uint64_t>> read_cpu_jiffies(const std::string& proc_root) {
  std::ifstream in(proc_root + "/stat");
  std::string label;
  if (!(in >> label) || label != "cpu") return std::nullopt;
  uint64_t v[8] = {};
  int n = 0;
  while (n < 8 && in >> v[n]) ++n;
  if (n < 4) return std::nullopt;
  uint64_t total = 0;
  for (int i = 0; i < n; ++i) total += v[i];
  const uint64_t idle = v[3] + (n > 4 ? v[4] : 0);
  return std::make_pair(total - idle, total);
}

// /proc/meminfo "MemAvailable:  123456 kB".
std::optional<int64_t> read_mem_available(const std::string& proc_root) {
  std::ifstream in(proc_root + "/meminfo");
  std::string key;
  int64_t kb = 0;
  std::string unit;
  while (in >> key >> kb) {
    std::getline(in, unit);
    if (key == "MemAvailable:") return kb * 1024;
  }
  return std::nullopt;
}

double thread_cpu_s() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

}  // namespace

ThermalGuard::Change ThermalGuard::update(std::optional<double> hottest_c) {
  if (!hottest_c) return Change::kNone;
  if (!holding_ && *hottest_c > hold_above_c_) {
    holding_ = true;
    return Change::kHold;
  }
  if (holding_ && *hottest_c < resume_below_c()) {
    holding_ = false;
    return Change::kResume;
  }
  return Change::kNone;
}

Telemetry::Telemetry(TelemetryOptions options, hal::Board& board, std::unique_ptr<storage::Database> db,
                     int64_t next_seq)
    : options_(std::move(options)),
      board_(board),
      db_(std::move(db)),
      next_seq_(next_seq),
      guard_(options_.hold_above_c, options_.hysteresis_c) {}

Telemetry::~Telemetry() { stop(); }

base::Result<std::unique_ptr<Telemetry>> Telemetry::open(TelemetryOptions options, hal::Board& board) {
  if (options.interval.count() <= 0) return base::invalid_argument("telemetry interval must be positive");
  if (options.ring_rows < 1) return base::invalid_argument("telemetry ring must hold at least one row");
  storage::Database::Options db_options;
  db_options.synchronous = "NORMAL";
  SB_ASSIGN_OR_RETURN(std::unique_ptr<storage::Database> db, storage::Database::open(options.db_path, db_options));
  SB_RETURN_IF_ERROR(db->migrate(kTelemetryMigrations).with_context("telemetry database " + options.db_path));
  int64_t next_seq = 0;
  {
    SB_ASSIGN_OR_RETURN(storage::Statement st, db->prepare("SELECT COALESCE(MAX(seq) + 1, 0) FROM samples"));
    SB_ASSIGN_OR_RETURN(bool row, st.step());
    if (row) next_seq = st.column_int64(0);
  }
  return std::unique_ptr<Telemetry>(new Telemetry(std::move(options), board, std::move(db), next_seq));
}

TelemetrySample Telemetry::read_sensors() {
  TelemetrySample s;
  s.t_ms = storage::now_ms();
  for (const std::string& zone : board_.thermal().zones()) {
    auto t = board_.thermal().temperature_mC(zone);
    std::optional<double> c;
    if (t.ok()) c = *t / 1000.0;
    s.temps_c.emplace_back(zone, c);
    if (c && (!s.max_temp_c || *c > *s.max_temp_c)) s.max_temp_c = c;
  }
  for (const std::string& label : board_.power().rails()) {
    RailSample r;
    r.label = label;
    if (auto reading = board_.power().read(label); reading.ok()) {
      r.voltage_mV = reading->voltage_mV;
      r.current_mA = reading->current_mA;
      r.power_mW = reading->power_mW();
      if (label == hal::kRailModuleTotal) s.vdd_in_mW = r.power_mW;
    }
    s.rails.push_back(std::move(r));
  }
  if (auto pwm = board_.fan().pwm(); pwm.ok()) s.fan_pwm = *pwm;
  if (auto gpu = board_.gpu().load_permille(); gpu.ok()) s.gpu_load_pct = *gpu / 10.0;
  s.mem_available_bytes = read_mem_available(options_.proc_root);
  struct statvfs vfs {};
  if (!options_.disk_path.empty() && ::statvfs(options_.disk_path.c_str(), &vfs) == 0) {
    s.disk_free_bytes = static_cast<int64_t>(vfs.f_bavail) * static_cast<int64_t>(vfs.f_frsize);
  }
  auto cpu = read_cpu_jiffies(options_.proc_root);
  std::lock_guard lock(mu_);
  if (cpu && prev_cpu_ && cpu->second > prev_cpu_->second && cpu->first >= prev_cpu_->first) {
    s.cpu_load_pct = 100.0 * static_cast<double>(cpu->first - prev_cpu_->first) /
                     static_cast<double>(cpu->second - prev_cpu_->second);
  }
  if (cpu) prev_cpu_ = cpu;
  return s;
}

base::Status Telemetry::store(const TelemetrySample& s) {
  nlohmann::ordered_json temps = nlohmann::ordered_json::object();
  for (const auto& [zone, c] : s.temps_c) temps[zone] = opt(c);
  nlohmann::json rails = nlohmann::json::array();
  for (const RailSample& r : s.rails) {
    rails.push_back({{"label", r.label}, {"power_mw", opt_int(r.power_mW)}, {"voltage_mv", opt_int(r.voltage_mV)},
                     {"current_ma", opt_int(r.current_mA)}});
  }
  std::optional<DaemonStateRow> state;
  std::function<std::string()> provider;
  {
    std::lock_guard lock(mu_);
    state = state_;
    provider = state_provider_;
  }
  if (state && provider) state->state_json = provider();

  std::lock_guard lock(db_mu_);
  SB_ASSIGN_OR_RETURN(storage::Database::Transaction tx, db_->begin());
  {
    SB_ASSIGN_OR_RETURN(storage::Statement st,
                        db_->prepare("INSERT OR REPLACE INTO samples (slot, seq, t_ms, max_temp_c, vdd_in_mw, fan_pwm, "
                                     "gpu_load_pct, cpu_load_pct, mem_available_bytes, disk_free_bytes, temps_json, "
                                     "rails_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"));
    st.bind(1, next_seq_ % options_.ring_rows).bind(2, next_seq_).bind(3, s.t_ms);
    bind_opt(st, 4, s.max_temp_c);
    bind_opt(st, 5, s.vdd_in_mW);
    bind_opt(st, 6, s.fan_pwm);
    bind_opt(st, 7, s.gpu_load_pct);
    bind_opt(st, 8, s.cpu_load_pct);
    bind_opt(st, 9, s.mem_available_bytes);
    bind_opt(st, 10, s.disk_free_bytes);
    st.bind(11, temps.dump()).bind(12, rails.dump());
    SB_RETURN_IF_ERROR(st.run());
  }
  if (state) {
    SB_ASSIGN_OR_RETURN(storage::Statement st,
                        db_->prepare("INSERT OR REPLACE INTO daemon_state (id, pid, version, started_ms, updated_ms, "
                                     "board, power_mode_id, power_mode_name, expected_power_mode, state_json) "
                                     "VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"));
    st.bind(1, state->pid).bind(2, state->version).bind(3, state->started_ms).bind(4, s.t_ms).bind(5, state->board);
    bind_opt(st, 6, state->power_mode_id);
    st.bind(7, state->power_mode_name).bind(8, state->expected_power_mode).bind(9, state->state_json);
    SB_RETURN_IF_ERROR(st.run());
  }
  SB_RETURN_IF_ERROR(tx.commit());
  ++next_seq_;
  return base::Status();
}

base::Result<TelemetrySample> Telemetry::sample_now() {
  TelemetrySample s = read_sensors();
  ThermalGuard::Change change;
  std::function<void(bool, double)> callback;
  {
    std::lock_guard lock(mu_);
    latest_ = s;
    change = guard_.update(s.max_temp_c);
    holding_ = guard_.holding();
    callback = thermal_callback_;
    if (job_active_) {
      if (s.vdd_in_mW) {
        if (job_last_mW_ && s.t_ms > job_last_ms_) {
          job_energy_mJ_ += 0.5 * static_cast<double>(*job_last_mW_ + *s.vdd_in_mW) *
                            static_cast<double>(s.t_ms - job_last_ms_) / 1000.0;
        }
        job_last_mW_ = s.vdd_in_mW;
        job_last_ms_ = s.t_ms;
        ++job_power_samples_;
        const double mW = static_cast<double>(*s.vdd_in_mW);
        if (!job_peak_mW_ || mW > *job_peak_mW_) job_peak_mW_ = mW;
      }
      if (s.max_temp_c && (!job_peak_temp_c_ || *s.max_temp_c > *job_peak_temp_c_)) job_peak_temp_c_ = s.max_temp_c;
    }
  }
  if (change == ThermalGuard::Change::kHold) {
    SB_LOG(kWarning) << "thermal guard: hottest zone at " << *s.max_temp_c << " C (above " << options_.hold_above_c
                     << " C): holding new jobs; receiving continues";
  } else if (change == ThermalGuard::Change::kResume) {
    SB_LOG(kInfo) << "thermal guard: hottest zone at " << *s.max_temp_c << " C (below "
                  << options_.hold_above_c - options_.hysteresis_c << " C): resuming jobs";
  }
  if (change != ThermalGuard::Change::kNone && callback) callback(change == ThermalGuard::Change::kHold, *s.max_temp_c);
  SB_RETURN_IF_ERROR(store(s));
  return s;
}

void Telemetry::begin_job() {
  {
    std::lock_guard lock(mu_);
    job_active_ = true;
    job_start_ms_ = storage::now_ms();
    job_last_ms_ = job_start_ms_;
    job_last_mW_.reset();
    job_energy_mJ_ = 0;
    job_power_samples_ = 0;
    job_peak_mW_.reset();
    job_peak_temp_c_.reset();
  }
  if (auto s = sample_now(); !s.ok()) SB_LOG(kWarning) << "telemetry: " << s.status().to_string();
}

JobPower Telemetry::end_job() {
  if (auto s = sample_now(); !s.ok()) SB_LOG(kWarning) << "telemetry: " << s.status().to_string();
  std::lock_guard lock(mu_);
  JobPower p;
  job_active_ = false;
  if (job_power_samples_ > 0) {
    p.peak_power_mw = job_peak_mW_;
    p.energy_j = job_energy_mJ_ / 1000.0;
    const int64_t duration_ms = job_last_ms_ - job_start_ms_;
    // With one sample (or no time between samples) the mean is that sample.
    p.mean_power_mw = duration_ms > 0 && job_power_samples_ > 1 ? job_energy_mJ_ / (duration_ms / 1000.0)
                                                                 : static_cast<double>(*job_last_mW_);
  }
  p.peak_temp_c = job_peak_temp_c_;
  return p;
}

void Telemetry::on_thermal_change(std::function<void(bool, double)> callback) {
  std::lock_guard lock(mu_);
  thermal_callback_ = std::move(callback);
}

void Telemetry::set_daemon_state(DaemonStateRow row, std::function<std::string()> provider) {
  std::lock_guard lock(mu_);
  state_ = std::move(row);
  state_provider_ = std::move(provider);
}

std::optional<TelemetrySample> Telemetry::latest() const {
  std::lock_guard lock(mu_);
  return latest_;
}

double Telemetry::sampler_cpu_s() const {
  std::lock_guard lock(mu_);
  return sampler_cpu_s_;
}

base::Status Telemetry::start(std::shared_ptr<watchdog::Heartbeat> heartbeat) {
  std::lock_guard lock(run_mu_);
  if (thread_.joinable()) return base::failed_precondition("telemetry sampler already running");
  stop_requested_ = false;
  // The first sample (with the daemon_state row) is stored before start() returns, so a
  // status page read right after the daemon starts never shows it as "not running".
  sample_and_beat(heartbeat.get());
  thread_ = std::thread(&Telemetry::run, this, std::move(heartbeat));
  return base::Status();
}

void Telemetry::stop() {
  {
    std::lock_guard lock(run_mu_);
    stop_requested_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Telemetry::sample_and_beat(watchdog::Heartbeat* heartbeat) {
  const double cpu0 = thread_cpu_s();
  auto s = sample_now();
  const double used = thread_cpu_s() - cpu0;
  {
    std::lock_guard m(mu_);
    sampler_cpu_s_ += used;
  }
  ++sampler_samples_;
  if (!s.ok() && !store_failing_) SB_LOG(kWarning) << "telemetry: cannot store a sample: " << s.status().to_string();
  store_failing_ = !s.ok();
  if (heartbeat) heartbeat->beat();
}

void Telemetry::run(std::shared_ptr<watchdog::Heartbeat> heartbeat) {
  std::unique_lock lock(run_mu_);
  // start() took the first sample; this thread takes the next one an interval later.
  while (!cv_.wait_for(lock, options_.interval, [&] { return stop_requested_; })) {
    lock.unlock();
    sample_and_beat(heartbeat.get());
    lock.lock();
  }
}

base::Result<std::optional<TelemetrySample>> read_latest_sample(const std::string& db_path) {
  storage::Database::Options o;
  o.read_only = true;
  SB_ASSIGN_OR_RETURN(std::unique_ptr<storage::Database> db, storage::Database::open(db_path, o));
  SB_ASSIGN_OR_RETURN(storage::Statement st,
                      db->prepare("SELECT t_ms, max_temp_c, vdd_in_mw, fan_pwm, gpu_load_pct, cpu_load_pct, "
                                  "mem_available_bytes, disk_free_bytes, temps_json, rails_json FROM samples "
                                  "ORDER BY seq DESC LIMIT 1"));
  SB_ASSIGN_OR_RETURN(bool row, st.step());
  if (!row) return std::optional<TelemetrySample>();
  TelemetrySample s;
  s.t_ms = st.column_int64(0);
  s.max_temp_c = st.column_optional_double(1);
  s.vdd_in_mW = st.column_optional_int64(2);
  if (auto v = st.column_optional_int64(3)) s.fan_pwm = static_cast<int>(*v);
  s.gpu_load_pct = st.column_optional_double(4);
  s.cpu_load_pct = st.column_optional_double(5);
  s.mem_available_bytes = st.column_optional_int64(6);
  s.disk_free_bytes = st.column_optional_int64(7);
  auto temps = nlohmann::ordered_json::parse(st.column_text(8), nullptr, false);
  if (temps.is_object()) {
    for (auto it = temps.begin(); it != temps.end(); ++it) {
      s.temps_c.emplace_back(it.key(), it->is_number() ? std::optional<double>(it->get<double>()) : std::nullopt);
    }
  }
  auto rails = nlohmann::json::parse(st.column_text(9), nullptr, false);
  if (rails.is_array()) {
    for (const auto& r : rails) {
      RailSample rail;
      rail.label = r.value("label", "");
      if (r.contains("power_mw") && r["power_mw"].is_number()) rail.power_mW = r["power_mw"].get<int64_t>();
      if (r.contains("voltage_mv") && r["voltage_mv"].is_number()) rail.voltage_mV = r["voltage_mv"].get<int32_t>();
      if (r.contains("current_ma") && r["current_ma"].is_number()) rail.current_mA = r["current_ma"].get<int32_t>();
      s.rails.push_back(rail);
    }
  }
  return std::optional<TelemetrySample>(std::move(s));
}

base::Result<std::optional<DaemonStateRow>> read_daemon_state(const std::string& db_path) {
  storage::Database::Options o;
  o.read_only = true;
  SB_ASSIGN_OR_RETURN(std::unique_ptr<storage::Database> db, storage::Database::open(db_path, o));
  SB_ASSIGN_OR_RETURN(storage::Statement st,
                      db->prepare("SELECT pid, version, started_ms, updated_ms, board, power_mode_id, "
                                  "power_mode_name, expected_power_mode, state_json FROM daemon_state WHERE id = 1"));
  SB_ASSIGN_OR_RETURN(bool row, st.step());
  if (!row) return std::optional<DaemonStateRow>();
  DaemonStateRow r;
  r.pid = st.column_int64(0);
  r.version = st.column_text(1);
  r.started_ms = st.column_int64(2);
  r.updated_ms = st.column_int64(3);
  r.board = st.column_text(4);
  if (auto v = st.column_optional_int64(5)) r.power_mode_id = static_cast<int>(*v);
  r.power_mode_name = st.column_text(6);
  r.expected_power_mode = static_cast<int>(st.column_int64(7));
  r.state_json = st.column_text(8);
  return std::optional<DaemonStateRow>(std::move(r));
}

}  // namespace firmware
