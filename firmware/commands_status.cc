// `strokebox status`: the technician's read-only view of the appliance: version, daemon uptime,
// board and power mode, temperatures, fan, power, disk, engine, threads (from telemetry.db),
// then studies per state, the last studies with their result, recent failures with reasons.
// Safe to run while the daemon is running (SQLite WAL readers never block the writer).
#include <signal.h>

#include <cstdio>
#include <ctime>
#include <string>

#include <nlohmann/json.hpp>

#include "firmware/args.h"
#include "firmware/commands.h"
#include "firmware/config.h"
#include "firmware/telemetry.h"
#include "storage/index.h"

namespace firmware {
namespace {

constexpr const char* kStatusUsage = R"(Usage: strokebox status [--config FILE | --data-dir DIR] [--json]

Read-only view of the appliance: version, daemon uptime, board and power mode, temperatures,
fan, power now, memory and disk free, engine, thread health, studies per state, the last 10
studies (time, status, lesion volume, processing time, energy), recent failures with reasons.
  --config FILE   take storage.data_dir from the daemon's configuration
  --data-dir DIR  the data directory (default: the configuration's default)
  --json          one JSON object instead of text
)";

constexpr int kRecentStudies = 10;
constexpr int kRecentFailures = 5;

std::string local_time(int64_t ms) {
  if (ms <= 0) return "-";
  std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

// Processing time: the sum of the pipeline stages (everything but "receive"), in ms.
double processing_ms(const std::string& timings_json) {
  auto timings = nlohmann::json::parse(timings_json, nullptr, /*allow_exceptions=*/false);
  if (!timings.is_object()) return 0.0;
  double total = 0.0;
  for (auto it = timings.begin(); it != timings.end(); ++it) {
    if (it.key() != "receive" && it->is_number()) total += it->get<double>();
  }
  return total;
}

nlohmann::json result_json(const storage::ResultRow& r) {
  nlohmann::json j;
  j["status"] = r.status;
  if (!r.reason.empty()) j["reason"] = r.reason;
  j["lesion_volume_ml"] = r.lesion_volume_ml;
  j["lesion_count"] = r.lesion_count;
  j["model_id"] = r.model_id;
  j["backend"] = r.backend;
  j["precision"] = r.precision;
  j["timings_ms"] = nlohmann::json::parse(r.timings_json, nullptr, false);
  j["processing_ms"] = processing_ms(r.timings_json);
  j["report_path"] = r.report_path;
  j["finished_at"] = local_time(r.finished_at_ms);
  j["energy_j"] = r.energy_j ? nlohmann::json(*r.energy_j) : nlohmann::json();
  j["mean_power_mw"] = r.mean_power_mw ? nlohmann::json(*r.mean_power_mw) : nlohmann::json();
  j["peak_power_mw"] = r.peak_power_mw ? nlohmann::json(*r.peak_power_mw) : nlohmann::json();
  j["peak_temp_c"] = r.peak_temp_c ? nlohmann::json(*r.peak_temp_c) : nlohmann::json();
  return j;
}

template <typename T>
nlohmann::json opt(const std::optional<T>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json();
}

// The daemon counts as running when its state row is fresh and its pid exists.
constexpr int64_t kStaleStateMs = 15'000;

// Board, daemon and telemetry facts from telemetry.db; null members when unknown.
nlohmann::json appliance_json(const Config& config, const std::vector<storage::StudySummary>& recent) {
  nlohmann::json j;
  j["version"] = STROKEBOX_VERSION;
  auto state = read_daemon_state(config.telemetry_path());
  auto sample = read_latest_sample(config.telemetry_path());
  nlohmann::json daemon;
  daemon["running"] = false;
  nlohmann::json engine = nlohmann::json::object();
  if (state.ok() && state->has_value()) {
    const DaemonStateRow& d = **state;
    const int64_t now = storage::now_ms();
    const bool alive = now - d.updated_ms < std::max<int64_t>(kStaleStateMs, 3 * static_cast<int64_t>(
                                                                                     config.telemetry.interval_s * 1000)) &&
                       ::kill(static_cast<pid_t>(d.pid), 0) == 0;
    daemon["running"] = alive;
    daemon["pid"] = d.pid;
    daemon["version"] = d.version;
    daemon["started"] = local_time(d.started_ms);
    daemon["last_seen"] = local_time(d.updated_ms);
    daemon["uptime_s"] = alive ? nlohmann::json((now - d.started_ms) / 1000) : nlohmann::json();
    j["board"] = {{"name", d.board},
                  {"power_mode_id", opt(d.power_mode_id)},
                  {"power_mode_name", d.power_mode_name},
                  {"expected_power_mode", d.expected_power_mode},
                  {"power_mode_ok", d.expected_power_mode < 0 || d.power_mode_id == d.expected_power_mode}};
    auto extra = nlohmann::json::parse(d.state_json, nullptr, false);
    if (extra.is_object()) {
      daemon["threads"] = extra.value("threads", nlohmann::json::array());
      daemon["thermal_hold"] = extra.value("thermal_hold", false);
      daemon["current_study"] = extra.value("current_study", "");
      if (extra.contains("engine") && extra["engine"].is_object()) engine = extra["engine"];
    }
  } else {
    j["board"] = nullptr;
  }
  j["daemon"] = daemon;
  // Backend and precision actually used: the latest result's.
  for (const auto& s : recent) {
    if (s.result && !s.result->backend.empty()) {
      engine["backend"] = s.result->backend;
      engine["precision_used"] = s.result->precision;
      engine["model_id"] = s.result->model_id;
      break;
    }
  }
  j["engine"] = engine;
  if (sample.ok() && sample->has_value()) {
    const TelemetrySample& t = **sample;
    nlohmann::ordered_json temps = nlohmann::ordered_json::object();
    for (const auto& [zone, c] : t.temps_c) temps[zone] = opt(c);
    nlohmann::ordered_json rails = nlohmann::ordered_json::object();
    for (const auto& r : t.rails) rails[r.label] = opt(r.power_mW);
    j["telemetry"] = {{"time", local_time(t.t_ms)},       {"temperatures_c", temps},
                      {"max_temp_c", opt(t.max_temp_c)},  {"fan_pwm", opt(t.fan_pwm)},
                      {"power_mw", rails},                {"vdd_in_mw", opt(t.vdd_in_mW)},
                      {"gpu_load_pct", opt(t.gpu_load_pct)}, {"cpu_load_pct", opt(t.cpu_load_pct)},
                      {"mem_available_bytes", opt(t.mem_available_bytes)},
                      {"disk_free_bytes", opt(t.disk_free_bytes)}};
  } else {
    j["telemetry"] = nullptr;
  }
  return j;
}

std::string text_or_dash(const nlohmann::json& v, const char* format, double scale = 1.0) {
  if (!v.is_number()) return "-";
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, v.get<double>() * scale);
  return buf;
}

void print_appliance(const nlohmann::json& a) {
  const auto& d = a["daemon"];
  std::printf("strokebox %s\n", a["version"].get<std::string>().c_str());
  if (d.value("running", false)) {
    const int64_t up = d["uptime_s"].get<int64_t>();
    std::printf("daemon: running (pid %lld, version %s), up %lldd %02lld:%02lld:%02lld since %s\n",
                static_cast<long long>(d["pid"].get<int64_t>()), d["version"].get<std::string>().c_str(),
                static_cast<long long>(up / 86400), static_cast<long long>(up / 3600 % 24),
                static_cast<long long>(up / 60 % 60), static_cast<long long>(up % 60),
                d["started"].get<std::string>().c_str());
  } else if (d.contains("last_seen")) {
    std::printf("daemon: NOT RUNNING (last seen %s)\n", d["last_seen"].get<std::string>().c_str());
  } else {
    std::printf("daemon: no state recorded (has it run with this data dir?)\n");
  }
  if (a["board"].is_object()) {
    const auto& b = a["board"];
    std::printf("board: %s, power mode %s (%s)%s\n", b["name"].get<std::string>().c_str(),
                text_or_dash(b["power_mode_id"], "%.0f").c_str(), b["power_mode_name"].get<std::string>().c_str(),
                b["power_mode_ok"].get<bool>()
                    ? ""
                    : ("  MISMATCH: expected " + std::to_string(b["expected_power_mode"].get<int>())).c_str());
  }
  if (a["telemetry"].is_object()) {
    const auto& t = a["telemetry"];
    std::string temps;
    for (auto it = t["temperatures_c"].begin(); it != t["temperatures_c"].end(); ++it) {
      temps += " " + it.key() + " " + text_or_dash(*it, "%.1f");
    }
    std::printf("temperatures (C):%s\n", temps.c_str());
    std::printf("fan: %s   power: VDD_IN %s W", text_or_dash(t["fan_pwm"], "%.0f%%", 100.0 / 255.0).c_str(),
                text_or_dash(t["vdd_in_mw"], "%.2f", 1e-3).c_str());
    for (auto it = t["power_mw"].begin(); it != t["power_mw"].end(); ++it) {
      if (it.key() != "VDD_IN") std::printf(", %s %s W", it.key().c_str(), text_or_dash(*it, "%.2f", 1e-3).c_str());
    }
    std::printf("\nload: CPU %s  GPU %s   memory free %s   disk free %s   (sampled %s)\n",
                text_or_dash(t["cpu_load_pct"], "%.0f%%").c_str(), text_or_dash(t["gpu_load_pct"], "%.0f%%").c_str(),
                text_or_dash(t["mem_available_bytes"], "%.0f MiB", 1.0 / (1 << 20)).c_str(),
                text_or_dash(t["disk_free_bytes"], "%.1f GiB", 1.0 / (1 << 30)).c_str(),
                t["time"].get<std::string>().c_str());
  }
  const auto& e = a["engine"];
  std::printf("engine: backend %s, precision %s, model %s\n", e.value("backend", "-").c_str(),
              e.value("precision_used", e.value("precision", "-")).c_str(), e.value("model_id", e.value("model_dir", "-")).c_str());
  if (d.contains("threads")) {
    std::string threads;
    for (const auto& h : d["threads"]) {
      threads += " " + h.value("name", "?") + (h.value("stale", false) ? " STUCK" : " ok");
    }
    std::printf("threads:%s%s%s\n", threads.c_str(), d.value("thermal_hold", false) ? "   THERMAL HOLD" : "",
                d.value("current_study", "").empty() ? "" : ("   processing " + d["current_study"].get<std::string>()).c_str());
  }
}

}  // namespace

int cmd_status(int argc, char** argv) {
  auto args = Args::parse(argc, argv, 2, {"config", "data-dir"}, {"json", "help"});
  if (!args.ok()) {
    std::fprintf(stderr, "strokebox status: %s\n\n%s", args.status().message().c_str(), kStatusUsage);
    return 2;
  }
  if (args->has("help")) {
    std::fputs(kStatusUsage, stdout);
    return 0;
  }
  if (args->has("config") && args->has("data-dir")) {
    std::fprintf(stderr, "strokebox status: give --config or --data-dir, not both\n");
    return 2;
  }
  Config config;
  if (auto path = args->get("config")) {
    auto loaded = load_config(*path);
    if (!loaded.ok()) {
      std::fprintf(stderr, "strokebox status: %s\n", loaded.status().message().c_str());
      return 1;
    }
    config = std::move(loaded).value();
  }
  if (auto dir = args->get("data-dir")) config.storage.data_dir = *dir;

  auto index = storage::Index::open_read_only(config.database_path());
  if (!index.ok()) {
    std::fprintf(stderr, "strokebox status: %s\n", index.status().message().c_str());
    return 1;
  }
  auto studies = (*index)->study_counts();
  auto jobs = (*index)->job_counts();
  auto recent = (*index)->recent_studies(kRecentStudies);
  auto failures = (*index)->recent_failures(kRecentFailures);
  for (const base::Status& st : {studies.status(), jobs.status(), recent.status(), failures.status()}) {
    if (!st.ok()) {
      std::fprintf(stderr, "strokebox status: reading %s: %s\n", config.database_path().c_str(), st.to_string().c_str());
      return 1;
    }
  }

  const nlohmann::json appliance = appliance_json(config, *recent);
  if (args->has("json")) {
    nlohmann::json out = appliance;
    out["data_dir"] = config.storage.data_dir;
    out["studies"] = *studies;
    out["jobs"] = *jobs;
    out["recent"] = nlohmann::json::array();
    for (const auto& s : *recent) {
      nlohmann::json j;
      j["study_uid"] = s.study.study_uid;
      j["patient_id"] = s.study.patient_id;
      j["state"] = s.study.state;
      j["instances"] = s.study.instance_count;
      j["attempts"] = s.study.attempts;
      j["first_received"] = local_time(s.study.first_received_ms);
      j["last_received"] = local_time(s.study.last_received_ms);
      j["result"] = s.result ? result_json(*s.result) : nlohmann::json();
      out["recent"].push_back(j);
    }
    out["failures"] = nlohmann::json::array();
    for (const auto& f : *failures) {
      nlohmann::json j = result_json(f);
      j["study_uid"] = f.study_uid;
      out["failures"].push_back(j);
    }
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }

  print_appliance(appliance);
  std::printf("data: %s\n", config.storage.data_dir.c_str());
  std::printf("studies: received %lld, queued %lld, running %lld, done %lld, failed %lld\n",
              static_cast<long long>((*studies)["received"]), static_cast<long long>((*studies)["queued"]),
              static_cast<long long>((*studies)["running"]), static_cast<long long>((*studies)["done"]),
              static_cast<long long>((*studies)["failed"]));
  std::printf("\nlast %d studies:\n", kRecentStudies);
  if (recent->empty()) std::printf("  (none received yet)\n");
  for (const auto& s : *recent) {
    std::string line = "  " + local_time(s.study.last_received_ms) + "  " + s.study.study_uid + "  " + s.study.state;
    line += "  " + std::to_string(s.study.instance_count) + " instance(s)";
    if (s.result && s.result->status == "done") {
      char buf[96];
      std::snprintf(buf, sizeof(buf), "  lesion %.1f ml (%d)  processing %.1f s", s.result->lesion_volume_ml,
                    s.result->lesion_count, processing_ms(s.result->timings_json) / 1000.0);
      line += buf;
      if (s.result->energy_j) {
        std::snprintf(buf, sizeof(buf), "  %.0f J", *s.result->energy_j);
        line += buf;
      }
    }
    std::printf("%s\n", line.c_str());
  }
  std::printf("\nrecent failures:\n");
  if (failures->empty()) std::printf("  (none)\n");
  for (const auto& f : *failures) {
    std::printf("  %s  %s  %s\n", local_time(f.finished_at_ms).c_str(), f.study_uid.c_str(), f.reason.c_str());
  }
  return 0;
}

}  // namespace firmware
