// `strokebox status`: the technician's read-only view of the appliance database: studies per
// state, the last studies with their result, recent failures with reasons. Safe to run while
// the daemon is running (SQLite WAL readers never block the writer).
#include <cstdio>
#include <ctime>
#include <string>

#include <nlohmann/json.hpp>

#include "firmware/args.h"
#include "firmware/commands.h"
#include "firmware/config.h"
#include "storage/index.h"

namespace firmware {
namespace {

constexpr const char* kStatusUsage = R"(Usage: strokebox status [--config FILE | --data-dir DIR] [--json]

Read-only view of the appliance: studies per state, the last 10 studies (time, status, lesion
volume, processing time), recent failures with their reasons.
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
  return j;
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

  if (args->has("json")) {
    nlohmann::json out;
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

  std::printf("strokebox status: %s\n", config.storage.data_dir.c_str());
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
