// The technician's view of the appliance, gathered once and rendered three ways: terminal text
// (`strokebox status`), JSON (`strokebox status --json`, GET /status.json) and the HTML status
// page (firmware/status_server.h). Everything is read read-only from the data directory
// (strokebox.db, telemetry.db), so it works beside a running daemon and after it stopped.
// Usage: SB_ASSIGN_OR_RETURN(StatusReport r, collect_status(config));  std::puts(to_text(r).c_str());
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/status.h"
#include "firmware/config.h"
#include "firmware/outbox.h"
#include "firmware/telemetry.h"
#include "hal/led_pattern.h"
#include "storage/index.h"

namespace firmware {

struct StatusOptions {
  int recent_studies = 10;   // last studies listed
  int recent_failures = 5;   // failures listed
  /// Telemetry history collected for the charts (minutes back from now); 0 = none.
  int history_minutes = 0;
  /// Patient IDs appear only when true; otherwise "hidden". Default: config.status.show_patient_names.
  std::optional<bool> show_patient_names;
  /// "Now", Unix epoch ms; 0 = the system clock (tests fix it).
  int64_t now_ms = 0;
};

/// One telemetry point of the charts.
struct HistoryPoint {
  int64_t t_ms = 0;
  std::optional<double> max_temp_c;  // hottest zone
  std::optional<int64_t> vdd_in_mW;  // module input power
};

/// What the status LED shows (the daemon's own report when it publishes one in its state row
/// as {"led": {"state", "pattern", "detail"}}, otherwise derived from the facts below with
/// hal::box_state()).
struct LedFacts {
  std::string state;    // hal::box_state_name()
  std::string pattern;  // hal::led_pattern_name()
  std::string detail;   // why ("thermal hold", "disk 300 MiB free", "thread sender stuck")
  bool from_daemon = false;
};

/// All facts of one status view. Missing things are nullopt/empty, never 0.
struct StatusReport {
  std::string version;             // this program's STROKEBOX_VERSION
  std::string data_dir;
  int64_t collected_ms = 0;        // when gathered, Unix epoch ms
  bool show_patient_names = false;

  std::optional<DaemonStateRow> daemon;  // nullopt: the daemon never wrote telemetry.db
  bool daemon_running = false;           // state row fresh and its pid alive
  std::optional<TelemetrySample> latest; // newest telemetry sample
  std::vector<HistoryPoint> history;     // oldest first (StatusOptions::history_minutes)

  std::map<std::string, int64_t> studies;  // state -> count
  std::map<std::string, int64_t> jobs;     // state -> count
  std::vector<storage::StudySummary> recent;
  std::vector<storage::ResultRow> failures;

  bool outbox_present = false;                 // the outbox tables exist
  std::vector<DestinationState> destinations;  // configured ones first, then any in the table

  std::optional<int64_t> disk_free_bytes;  // statvfs of the data directory now
  int64_t min_free_mb = 0;                 // storage.min_free_mb
  LedFacts led;

  /// Non-fatal problems met while gathering (telemetry.db unreadable, ...), shown as such.
  std::vector<std::string> notes;
};

/// Gathers the report from config.storage.data_dir. Errors: kNotFound (no strokebox.db: the
/// daemon never ran with this data directory), kFailedPrecondition (unknown schema), storage
/// errors while reading the index. Problems with telemetry.db or the outbox tables are only notes.
base::Result<StatusReport> collect_status(const Config& config, const StatusOptions& options = {});

/// The JSON document of `strokebox status --json` and GET /status.json: version, data_dir,
/// daemon, board, telemetry, engine, studies, jobs, recent, failures, destinations, disk,
/// led, notes, and history when collected.
nlohmann::json to_json(const StatusReport& report);

/// The terminal screen of `strokebox status` (several lines, ends with a newline).
std::string to_text(const StatusReport& report);

/// Processing time of a result: the sum of its pipeline stages except "receive", ms.
double processing_ms(const std::string& timings_json);

/// "YYYY-mm-dd HH:MM:SS" in local time; "-" for ms <= 0.
std::string local_time_text(int64_t ms);

}  // namespace firmware
