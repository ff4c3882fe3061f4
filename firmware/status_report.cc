#include "firmware/status_report.h"

#include <signal.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <set>

#include "storage/database.h"

namespace firmware {
namespace {

using nlohmann::json;

// The daemon counts as running when its state row is fresh and its pid exists.
constexpr int64_t kStaleStateMs = 15'000;

template <typename T>
json opt(const std::optional<T>& v) {
  return v ? json(*v) : json();
}

base::Result<std::unique_ptr<storage::Database>> open_read_only(const std::string& path) {
  storage::Database::Options o;
  o.read_only = true;
  return storage::Database::open(path, o);
}

// Samples of the last `minutes`, oldest first, straight from the telemetry ring.
base::Result<std::vector<HistoryPoint>> read_history(const std::string& db_path, int64_t since_ms) {
  SB_ASSIGN_OR_RETURN(auto db, open_read_only(db_path));
  SB_ASSIGN_OR_RETURN(storage::Statement st, db->prepare("SELECT t_ms, max_temp_c, vdd_in_mw FROM samples "
                                                         "WHERE t_ms >= ? ORDER BY seq"));
  st.bind(1, since_ms);
  std::vector<HistoryPoint> out;
  for (;;) {
    SB_ASSIGN_OR_RETURN(bool row, st.step());
    if (!row) break;
    out.push_back(HistoryPoint{st.column_int64(0), st.column_optional_double(1), st.column_optional_int64(2)});
  }
  return out;
}

// Delivery state per destination, read from the outbox tables (firmware/outbox.cc's schema)
// without Outbox::open, which would create them. `present` is false when there are none.
base::Result<std::vector<DestinationState>> read_destinations(storage::Database& db, const Config& config,
                                                              bool& present) {
  present = false;
  SB_ASSIGN_OR_RETURN(storage::Statement tables,
                      db.prepare("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND "
                                 "name IN ('outbox', 'outbox_destination')"));
  SB_ASSIGN_OR_RETURN(bool has, tables.step());
  const bool both = has && tables.column_int64(0) == 2;
  std::vector<std::string> names;
  for (const DestinationConfig& d : config.destinations) names.push_back(d.name);
  if (!both) {
    std::vector<DestinationState> out;
    for (const std::string& n : names) {
      DestinationState s;
      s.name = n;
      out.push_back(std::move(s));
    }
    return out;
  }
  present = true;
  {
    SB_ASSIGN_OR_RETURN(storage::Statement st,
                        db.prepare("SELECT destination FROM outbox UNION SELECT name FROM outbox_destination "
                                   "ORDER BY 1"));
    for (;;) {
      SB_ASSIGN_OR_RETURN(bool row, st.step());
      if (!row) break;
      std::string n = st.column_text(0);
      if (std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
    }
  }
  std::vector<DestinationState> out;
  for (const std::string& name : names) {
    SB_ASSIGN_OR_RETURN(DestinationState s, read_destination_state(db, name));
    out.push_back(std::move(s));
  }
  return out;
}

std::string mib_text(int64_t bytes) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.0f MiB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

// The LED as the daemon would drive it, from the facts gathered (see hal::box_state()).
LedFacts derive_led(const StatusReport& r) {
  hal::BoxCondition c;
  std::vector<std::string> why;
  if (r.daemon && !r.daemon_running) {
    c.fault = true;
    why.push_back("daemon not running");
  }
  auto extra = r.daemon ? json::parse(r.daemon->state_json, nullptr, false) : json();
  if (extra.is_object()) {
    for (const auto& t : extra.value("threads", json::array())) {
      if (t.value("stale", false)) {
        c.fault = true;
        why.push_back("thread " + t.value("name", "?") + " stuck");
      }
    }
    if (extra.value("thermal_hold", false)) {
      c.hot = true;
      why.push_back("thermal hold");
    }
    c.processing = !extra.value("current_study", "").empty();
  }
  if (r.disk_free_bytes && r.min_free_mb > 0 && *r.disk_free_bytes < r.min_free_mb * (int64_t{1} << 20)) {
    c.disk_low = true;
    why.push_back("disk " + mib_text(*r.disk_free_bytes) + " free");
  }
  const hal::BoxState state = hal::box_state(c);
  LedFacts led;
  led.state = hal::box_state_name(state);
  led.pattern = hal::led_pattern_name(hal::led_pattern_for(state));
  for (size_t i = 0; i < why.size(); ++i) led.detail += (i ? ", " : "") + why[i];
  return led;
}

json result_json(const storage::ResultRow& r) {
  json j;
  j["status"] = r.status;
  if (!r.reason.empty()) j["reason"] = r.reason;
  j["lesion_volume_ml"] = r.lesion_volume_ml;
  j["lesion_count"] = r.lesion_count;
  j["model_id"] = r.model_id;
  j["backend"] = r.backend;
  j["precision"] = r.precision;
  j["timings_ms"] = json::parse(r.timings_json, nullptr, false);
  j["processing_ms"] = processing_ms(r.timings_json);
  j["report_path"] = r.report_path;
  j["finished_at"] = local_time_text(r.finished_at_ms);
  j["energy_j"] = opt(r.energy_j);
  j["mean_power_mw"] = opt(r.mean_power_mw);
  j["peak_power_mw"] = opt(r.peak_power_mw);
  j["peak_temp_c"] = opt(r.peak_temp_c);
  return j;
}

std::string text_or_dash(const json& v, const char* format, double scale = 1.0) {
  if (!v.is_number()) return "-";
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, v.get<double>() * scale);
  return buf;
}

std::string epoch_s_text(double s) { return s > 0 ? local_time_text(static_cast<int64_t>(s * 1000)) : "never"; }

}  // namespace

std::string local_time_text(int64_t ms) {
  if (ms <= 0) return "-";
  std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

double processing_ms(const std::string& timings_json) {
  auto timings = json::parse(timings_json, nullptr, /*allow_exceptions=*/false);
  if (!timings.is_object()) return 0.0;
  double total = 0.0;
  for (auto it = timings.begin(); it != timings.end(); ++it) {
    if (it.key() != "receive" && it->is_number()) total += it->get<double>();
  }
  return total;
}

base::Result<StatusReport> collect_status(const Config& config, const StatusOptions& options) {
  StatusReport r;
  r.version = STROKEBOX_VERSION;
  r.data_dir = config.storage.data_dir;
  r.collected_ms = options.now_ms > 0 ? options.now_ms : storage::now_ms();
  r.show_patient_names = options.show_patient_names.value_or(config.status.show_patient_names);
  r.min_free_mb = config.storage.min_free_mb;

  SB_ASSIGN_OR_RETURN(auto index, storage::Index::open_read_only(config.database_path()));
  auto read = [&](const base::Status& st) {
    return st.with_context("reading " + config.database_path());
  };
  auto studies = index->study_counts();
  if (!studies.ok()) return read(studies.status());
  r.studies = std::move(studies).value();
  auto jobs = index->job_counts();
  if (!jobs.ok()) return read(jobs.status());
  r.jobs = std::move(jobs).value();
  auto recent = index->recent_studies(options.recent_studies);
  if (!recent.ok()) return read(recent.status());
  r.recent = std::move(recent).value();
  auto failures = index->recent_failures(options.recent_failures);
  if (!failures.ok()) return read(failures.status());
  r.failures = std::move(failures).value();
  index.reset();

  // Outbox: same file, its own tables (absent until the daemon opened the outbox).
  if (auto db = open_read_only(config.database_path()); db.ok()) {
    auto dest = read_destinations(**db, config, r.outbox_present);
    if (dest.ok()) {
      r.destinations = std::move(dest).value();
    } else {
      r.notes.push_back("outbox: " + dest.status().to_string());
    }
  }

  // Daemon and board facts: telemetry.db (loss-tolerant; absent before the first start).
  const std::string tpath = config.telemetry_path();
  auto state = read_daemon_state(tpath);
  if (state.ok()) {
    r.daemon = std::move(state).value();
  } else if (state.status().code() != base::Code::kNotFound) {
    r.notes.push_back("telemetry: " + state.status().to_string());
  }
  if (r.daemon) {
    const int64_t fresh_ms =
        std::max<int64_t>(kStaleStateMs, 3 * static_cast<int64_t>(config.telemetry.interval_s * 1000));
    r.daemon_running = r.collected_ms - r.daemon->updated_ms < fresh_ms &&
                       ::kill(static_cast<pid_t>(r.daemon->pid), 0) == 0;
  }
  if (auto sample = read_latest_sample(tpath); sample.ok()) r.latest = std::move(sample).value();
  if (options.history_minutes > 0 && r.daemon) {
    auto h = read_history(tpath, r.collected_ms - int64_t{options.history_minutes} * 60'000);
    if (h.ok()) {
      r.history = std::move(h).value();
    } else {
      r.notes.push_back("telemetry history: " + h.status().to_string());
    }
  }

  struct statvfs vfs {};
  if (::statvfs(config.storage.data_dir.c_str(), &vfs) == 0) {
    r.disk_free_bytes = static_cast<int64_t>(vfs.f_bavail) * static_cast<int64_t>(vfs.f_frsize);
  } else if (r.latest) {
    r.disk_free_bytes = r.latest->disk_free_bytes;
  }

  r.led = derive_led(r);
  if (r.daemon && r.daemon_running) {
    auto extra = json::parse(r.daemon->state_json, nullptr, false);
    if (extra.is_object() && extra.contains("led") && extra["led"].is_object()) {
      const json& l = extra["led"];
      r.led.state = l.value("state", r.led.state);
      r.led.pattern = l.value("pattern", r.led.pattern);
      r.led.detail = l.value("detail", r.led.detail);
      r.led.from_daemon = true;
    }
  }
  return r;
}

json to_json(const StatusReport& r) {
  json j;
  j["version"] = r.version;
  j["data_dir"] = r.data_dir;
  j["collected"] = local_time_text(r.collected_ms);
  json daemon;
  daemon["running"] = r.daemon_running;
  json engine = json::object();
  if (r.daemon) {
    const DaemonStateRow& d = *r.daemon;
    daemon["pid"] = d.pid;
    daemon["version"] = d.version;
    daemon["started"] = local_time_text(d.started_ms);
    daemon["last_seen"] = local_time_text(d.updated_ms);
    daemon["uptime_s"] = r.daemon_running ? json((r.collected_ms - d.started_ms) / 1000) : json();
    j["board"] = {{"name", d.board},
                  {"power_mode_id", opt(d.power_mode_id)},
                  {"power_mode_name", d.power_mode_name},
                  {"expected_power_mode", d.expected_power_mode},
                  {"power_mode_ok", d.expected_power_mode < 0 || d.power_mode_id == d.expected_power_mode}};
    auto extra = json::parse(d.state_json, nullptr, false);
    if (extra.is_object()) {
      daemon["threads"] = extra.value("threads", json::array());
      daemon["thermal_hold"] = extra.value("thermal_hold", false);
      daemon["current_study"] = extra.value("current_study", "");
      daemon["current_stage"] = extra.value("current_stage", "");
      j["board"]["warnings"] = extra.value("board_warnings", json::array());
      if (extra.contains("engine") && extra["engine"].is_object()) engine = extra["engine"];
    }
  } else {
    j["board"] = nullptr;
  }
  j["daemon"] = daemon;
  // Backend and precision actually used: the latest result's.
  for (const auto& s : r.recent) {
    if (s.result && !s.result->backend.empty()) {
      engine["backend"] = s.result->backend;
      engine["precision_used"] = s.result->precision;
      engine["model_id"] = s.result->model_id;
      break;
    }
  }
  j["engine"] = engine;
  if (r.latest) {
    const TelemetrySample& t = *r.latest;
    nlohmann::ordered_json temps = nlohmann::ordered_json::object();
    for (const auto& [zone, c] : t.temps_c) temps[zone] = opt(c);
    nlohmann::ordered_json rails = nlohmann::ordered_json::object();
    for (const auto& rail : t.rails) rails[rail.label] = opt(rail.power_mW);
    j["telemetry"] = {{"time", local_time_text(t.t_ms)},         {"temperatures_c", temps},
                      {"max_temp_c", opt(t.max_temp_c)},         {"fan_pwm", opt(t.fan_pwm)},
                      {"power_mw", rails},                       {"vdd_in_mw", opt(t.vdd_in_mW)},
                      {"gpu_load_pct", opt(t.gpu_load_pct)},     {"cpu_load_pct", opt(t.cpu_load_pct)},
                      {"mem_available_bytes", opt(t.mem_available_bytes)},
                      {"disk_free_bytes", opt(t.disk_free_bytes)}};
  } else {
    j["telemetry"] = nullptr;
  }
  j["studies"] = r.studies;
  j["jobs"] = r.jobs;
  j["recent"] = json::array();
  for (const auto& s : r.recent) {
    json e;
    e["study_uid"] = s.study.study_uid;
    e["patient_id"] = r.show_patient_names ? s.study.patient_id : std::string("hidden");
    e["state"] = s.study.state;
    e["instances"] = s.study.instance_count;
    e["attempts"] = s.study.attempts;
    e["first_received"] = local_time_text(s.study.first_received_ms);
    e["last_received"] = local_time_text(s.study.last_received_ms);
    e["result"] = s.result ? result_json(*s.result) : json();
    j["recent"].push_back(e);
  }
  j["failures"] = json::array();
  for (const auto& f : r.failures) {
    json e = result_json(f);
    e["study_uid"] = f.study_uid;
    j["failures"].push_back(e);
  }
  j["outbox_present"] = r.outbox_present;
  j["destinations"] = json::array();
  for (const auto& d : r.destinations) {
    j["destinations"].push_back({{"name", d.name},
                                 {"pending", d.pending},
                                 {"delivered", d.delivered},
                                 {"last_error", d.last_error},
                                 {"last_error_at", d.last_error_at > 0 ? json(epoch_s_text(d.last_error_at)) : json()},
                                 {"last_success_at", d.last_success_at > 0 ? json(epoch_s_text(d.last_success_at)) : json()},
                                 {"next_attempt_at", d.next_attempt_at > 0 ? json(epoch_s_text(d.next_attempt_at)) : json()}});
  }
  const bool low = r.disk_free_bytes && r.min_free_mb > 0 && *r.disk_free_bytes < r.min_free_mb * (int64_t{1} << 20);
  j["disk"] = {{"free_bytes", opt(r.disk_free_bytes)}, {"min_free_mb", r.min_free_mb}, {"low", low}};
  j["led"] = {{"state", r.led.state}, {"pattern", r.led.pattern}, {"detail", r.led.detail},
              {"from_daemon", r.led.from_daemon}};
  j["notes"] = r.notes;
  if (!r.history.empty()) {
    json h = json::array();
    for (const auto& p : r.history) h.push_back({p.t_ms, opt(p.max_temp_c), opt(p.vdd_in_mW)});
    j["history"] = {{"columns", {"t_ms", "max_temp_c", "vdd_in_mw"}}, {"rows", h}};
  }
  return j;
}

std::string to_text(const StatusReport& r) {
  const json a = to_json(r);
  std::string out;
  auto line = [&](const char* format, auto... args) {
    if constexpr (sizeof...(args) == 0) {  // no arguments: no format string (-Wformat-security)
      out += format;
    } else {
      char buf[1024];
      std::snprintf(buf, sizeof buf, format, args...);
      out += buf;
    }
  };
  const auto& d = a["daemon"];
  line("strokebox %s\n", r.version.c_str());
  if (r.daemon_running) {
    const int64_t up = d["uptime_s"].get<int64_t>();
    line("daemon: running (pid %lld, version %s), up %lldd %02lld:%02lld:%02lld since %s\n",
         static_cast<long long>(r.daemon->pid), r.daemon->version.c_str(), static_cast<long long>(up / 86400),
         static_cast<long long>(up / 3600 % 24), static_cast<long long>(up / 60 % 60), static_cast<long long>(up % 60),
         d["started"].get<std::string>().c_str());
  } else if (r.daemon) {
    line("daemon: NOT RUNNING (last seen %s)\n", d["last_seen"].get<std::string>().c_str());
  } else {
    line("daemon: no state recorded (has it run with this data dir?)\n");
  }
  if (a["board"].is_object()) {
    const auto& b = a["board"];
    const std::string mismatch =
        b["power_mode_ok"].get<bool>() ? "" : "  MISMATCH: expected " + std::to_string(b["expected_power_mode"].get<int>());
    line("board: %s, power mode %s (%s)%s\n", b["name"].get<std::string>().c_str(),
         text_or_dash(b["power_mode_id"], "%.0f").c_str(), b["power_mode_name"].get<std::string>().c_str(),
         mismatch.c_str());
    for (const auto& w : b.value("warnings", json::array())) {
      if (w.is_string()) line("board: %s\n", w.get<std::string>().c_str());
    }
  }
  if (a["telemetry"].is_object()) {
    const auto& t = a["telemetry"];
    std::string temps;
    for (auto it = t["temperatures_c"].begin(); it != t["temperatures_c"].end(); ++it) {
      temps += " " + it.key() + " " + text_or_dash(*it, "%.1f");
    }
    line("temperatures (C):%s\n", temps.c_str());
    line("fan: %s   power: VDD_IN %s W", text_or_dash(t["fan_pwm"], "%.0f%%", 100.0 / 255.0).c_str(),
         text_or_dash(t["vdd_in_mw"], "%.2f", 1e-3).c_str());
    for (auto it = t["power_mw"].begin(); it != t["power_mw"].end(); ++it) {
      if (it.key() != "VDD_IN") line(", %s %s W", it.key().c_str(), text_or_dash(*it, "%.2f", 1e-3).c_str());
    }
    line("\nload: CPU %s  GPU %s   memory free %s   (sampled %s)\n", text_or_dash(t["cpu_load_pct"], "%.0f%%").c_str(),
         text_or_dash(t["gpu_load_pct"], "%.0f%%").c_str(),
         text_or_dash(t["mem_available_bytes"], "%.0f MiB", 1.0 / (1 << 20)).c_str(), t["time"].get<std::string>().c_str());
  }
  line("disk free: %s (minimum %lld MiB)%s\n", text_or_dash(a["disk"]["free_bytes"], "%.1f GiB", 1.0 / (1 << 30)).c_str(),
       static_cast<long long>(r.min_free_mb), a["disk"]["low"].get<bool>() ? "  LOW" : "");
  const auto& e = a["engine"];
  line("engine: backend %s, precision %s, model %s\n", e.value("backend", "-").c_str(),
       e.value("precision_used", e.value("precision", "-")).c_str(),
       e.value("model_id", e.value("model_dir", "-")).c_str());
  if (d.contains("threads")) {
    std::string threads;
    for (const auto& h : d["threads"]) threads += " " + h.value("name", "?") + (h.value("stale", false) ? " STUCK" : " ok");
    std::string current = d.value("current_study", "");
    if (!current.empty() && !d.value("current_stage", "").empty()) current += " (" + d.value("current_stage", "") + ")";
    line("threads:%s%s%s\n", threads.c_str(), d.value("thermal_hold", false) ? "   THERMAL HOLD" : "",
         current.empty() ? "" : ("   processing " + current).c_str());
  }
  line("status LED: %s (%s)%s%s\n", r.led.state.c_str(), r.led.pattern.c_str(), r.led.detail.empty() ? "" : ": ",
       r.led.detail.c_str());
  line("data: %s\n", r.data_dir.c_str());
  auto count = [&](const char* k) {
    auto it = r.studies.find(k);
    return static_cast<long long>(it == r.studies.end() ? 0 : it->second);
  };
  line("studies: received %lld, queued %lld, running %lld, done %lld, failed %lld\n", count("received"),
       count("queued"), count("running"), count("done"), count("failed"));
  out += "\nlast studies (newest first):\n";
  if (r.recent.empty()) out += "  (none received yet)\n";
  for (const auto& s : r.recent) {
    std::string l = "  " + local_time_text(s.study.last_received_ms) + "  " + s.study.study_uid + "  " + s.study.state;
    if (r.show_patient_names && !s.study.patient_id.empty()) l += "  patient " + s.study.patient_id;
    l += "  " + std::to_string(s.study.instance_count) + " instance(s)";
    if (s.result && s.result->status == "done") {
      char buf[96];
      std::snprintf(buf, sizeof(buf), "  lesion %.1f ml (%d)  processing %.1f s", s.result->lesion_volume_ml,
                    s.result->lesion_count, processing_ms(s.result->timings_json) / 1000.0);
      l += buf;
      if (s.result->energy_j) {
        std::snprintf(buf, sizeof(buf), "  %.0f J", *s.result->energy_j);
        l += buf;
      }
    }
    out += l + "\n";
  }
  out += "\nsending results:\n";
  if (r.destinations.empty()) out += "  (no destinations)\n";
  for (const auto& dst : r.destinations) {
    line("  %s: %lld pending, %lld delivered, last success %s", dst.name.c_str(), static_cast<long long>(dst.pending),
         static_cast<long long>(dst.delivered), epoch_s_text(dst.last_success_at).c_str());
    if (!dst.last_error.empty()) line(", last error %s: %s", epoch_s_text(dst.last_error_at).c_str(), dst.last_error.c_str());
    if (dst.pending > 0 && dst.next_attempt_at > 0) line(", next try %s", epoch_s_text(dst.next_attempt_at).c_str());
    out += "\n";
  }
  out += "\nrecent failures:\n";
  if (r.failures.empty()) out += "  (none)\n";
  for (const auto& f : r.failures) {
    line("  %s  %s  %s\n", local_time_text(f.finished_at_ms).c_str(), f.study_uid.c_str(), f.reason.c_str());
  }
  for (const auto& n : r.notes) line("note: %s\n", n.c_str());
  return out;
}

}  // namespace firmware
