// `strokebox status`: the technician's read-only view of the appliance: version, daemon uptime,
// board and power mode, temperatures, fan, power, disk, engine, threads, status LED (from
// telemetry.db), then studies per state, the last studies with their result, result delivery
// per destination, recent failures with reasons. The facts are gathered by collect_status()
// (firmware/status_report.h), the same as the HTTP status page shows.
// Safe to run while the daemon is running (SQLite WAL readers never block the writer).
#include <cstdio>
#include <string>

#include "firmware/args.h"
#include "firmware/commands.h"
#include "firmware/config.h"
#include "firmware/status_report.h"

namespace firmware {
namespace {

constexpr const char* kStatusUsage = R"(Usage: strokebox status [--config FILE | --data-dir DIR] [--json]

Read-only view of the appliance: version, daemon uptime, board and power mode, temperatures,
fan, power now, memory and disk free, engine, thread health, status LED, studies per state,
the last 10 studies (time, status, lesion volume, processing time, energy), result delivery
per destination, recent failures with reasons. Patient IDs are shown only when the
configuration sets status.show_patient_names.
  --config FILE   take storage.data_dir (and destinations) from the daemon's configuration
  --data-dir DIR  the data directory (default: the configuration's default)
  --json          one JSON object instead of text
)";

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

  auto report = collect_status(config);
  if (!report.ok()) {
    std::fprintf(stderr, "strokebox status: %s\n", report.status().to_string().c_str());
    return 1;
  }
  if (args->has("json")) {
    std::printf("%s\n", to_json(*report).dump(2).c_str());
  } else {
    std::fputs(to_text(*report).c_str(), stdout);
  }
  return 0;
}

}  // namespace firmware
