// `strokebox run`: the appliance daemon. Loads the configuration (file, then flags), loads the
// model once, starts the DICOM node, scheduler and worker, prints one ready line to stderr and
// runs until SIGTERM or SIGINT, then shuts down cleanly (open associations and the current
// job finish; queued jobs stay in the database for the next start).
#include <sys/stat.h>

#include <csignal>
#include <cstdio>
#include <string>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/oflog/oflog.h>
#include <nlohmann/json.hpp>

#include "base/log.h"
#include "firmware/args.h"
#include "firmware/commands.h"
#include "firmware/config.h"
#include "firmware/daemon.h"
#include "firmware/pipeline.h"
#include "hal/jetson_board.h"
#include "hal/sim_board.h"
#include "storage/spool.h"
#include "watchdog/sd_notify.h"
#include "watchdog/supervisor.h"

namespace firmware {
namespace {

constexpr const char* kRunUsage = R"(Usage: strokebox run [--config FILE] [options]

The appliance daemon: DICOM node (C-ECHO, C-STORE of MR / Enhanced MR images), durable job
queue, one worker running the segmentation pipeline, results under <data-dir>/results/,
and a durable outbox sending SEG, overlay and SR to the configured destinations by C-STORE.
Flags override the configuration file; --config may be left out when flags suffice.

Options:
  --config FILE     TOML configuration ([dicom], [tls], [storage], [model], [jobs], [board],
                    [fan], [telemetry], [thermal], [watchdog], [status], [outbox] and
                    [[destinations]] for sending results back; see docs/operations.md)
  --port N          DICOM port (dicom.port, default 11112)
  --ae-title AE     our AE title (dicom.ae_title, default STROKEBOX)
  --bind ADDR       IPv4 address to listen on (dicom.bind_address, default 0.0.0.0)
  --quiet-s S       a study is complete after S seconds without instances (default 10)
  --data-dir DIR    database, spool and results (storage.data_dir)
  --model DIR       model package (model.dir)
  --precision P     fp32 | bf16 | fp16 | auto (model.precision)
  --board B         jetson | sim | auto (board.kind, default auto: jetson when its sysfs exists)

Stops cleanly on SIGTERM or SIGINT.
)";

}  // namespace

int cmd_run(int argc, char** argv) {
  auto args = Args::parse(argc, argv, 2,
                          {"config", "port", "ae-title", "bind", "quiet-s", "data-dir", "model", "precision", "board"},
                          {"help"});
  if (!args.ok()) {
    std::fprintf(stderr, "strokebox run: %s\n\n%s", args.status().message().c_str(), kRunUsage);
    return 2;
  }
  if (args->has("help")) {
    std::fputs(kRunUsage, stdout);
    return 0;
  }
  if (!args->positional().empty()) {
    std::fprintf(stderr, "strokebox run: unexpected argument '%s'\n\n%s", args->positional()[0].c_str(), kRunUsage);
    return 2;
  }

  Config config;
  if (auto path = args->get("config")) {
    auto loaded = load_config(*path);
    if (!loaded.ok()) {
      std::fprintf(stderr, "strokebox run: %s\n", loaded.status().message().c_str());
      return loaded.status().code() == base::Code::kNotFound ? 1 : 2;
    }
    config = std::move(loaded).value();
  }
  const std::pair<const char*, const char*> overrides[] = {
      {"port", "dicom.port"},          {"ae-title", "dicom.ae_title"},   {"bind", "dicom.bind_address"},
      {"quiet-s", "dicom.study_quiet_s"}, {"data-dir", "storage.data_dir"}, {"model", "model.dir"},
      {"precision", "model.precision"}, {"board", "board.kind"},
  };
  for (const auto& [flag, key] : overrides) {
    if (auto value = args->get(flag)) {
      base::Status st = set_config_value(config, key, *value);
      if (!st.ok()) {
        std::fprintf(stderr, "strokebox run: --%s: %s\n", flag, st.message().c_str());
        return 2;
      }
    }
  }

  // Patient data: every file and directory the daemon creates is for the service user only
  // (the systemd unit sets UMask=0077 too; this covers a start by hand).
  ::umask(077);
  // DCMTK logs every association at INFO; our own log says what matters.
  OFLog::configure(OFLogger::WARN_LOG_LEVEL);
  // Before any thread exists, so every thread inherits the mask and sigwait sees the signal.
  block_termination_signals();

  std::unique_ptr<hal::Board> board;
  std::vector<std::string> board_warnings;  // devices that could not be opened, for status
  {
    base::Result<std::unique_ptr<hal::Board>> made = base::internal_error("unset");
    // The front panel (status LED, button) through libgpiod; a line that cannot be opened is
    // logged and left out, a spec that does not parse refuses the start.
    hal::JetsonOptions jetson;
    jetson.led_gpio = config.board.led_gpio;
    jetson.button_gpio = config.board.button_gpio;
    jetson.led_active_low = config.board.led_active_low;
    jetson.button_active_low = config.board.button_active_low;
    jetson.device_warnings = &board_warnings;
    if (config.board.kind == "jetson") {
      made = hal::make_jetson_board("/", std::move(jetson));
    } else if (config.board.kind == "sim") {
      made = std::unique_ptr<hal::Board>(hal::make_sim_board());
    } else {
      made = hal::detect_board("/", std::move(jetson));
    }
    if (!made.ok()) {
      std::fprintf(stderr, "strokebox run: board %s: %s\n", config.board.kind.c_str(), made.status().to_string().c_str());
      return 1;
    }
    board = std::move(made).value();
  }
  SB_LOG(kInfo) << "board: " << board->name();

  // Loading the model and building its engine may outlast systemd's start timeout.
  watchdog::SdNotifier notifier;
  (void)watchdog::notify_status(notifier, "loading the model from " + config.model.dir);
  (void)watchdog::notify_extend_timeout(notifier, std::chrono::minutes(5));

  PipelineOptions pipeline_options;
  pipeline_options.model_dir = config.model.dir;
  pipeline_options.precision = config.model.precision;
  pipeline_options.max_preprocessed_voxels = config.model.max_preprocessed_voxels;
  // A packaged model (/usr/share/strokebox/models/default) is read-only to the service: its
  // engine file goes to <data_dir>/engines/ (the unit's StateDirectory).
  pipeline_options.engine_cache_dir = config.storage.data_dir;
  pipeline_options.allow_b_outside_range = config.model.allow_b_outside_range;
  if (!config.model.implausible_lesions.empty()) {
    pipeline_options.implausible_lesions = parse_implausible_lesions(config.model.implausible_lesions);
  }
  auto pipeline = Pipeline::create(pipeline_options);
  if (!pipeline.ok()) {
    std::fprintf(stderr, "strokebox run: cannot load the model from %s: %s\n", config.model.dir.c_str(),
                 pipeline.status().to_string().c_str());
    return 1;
  }
  std::shared_ptr<Pipeline> shared_pipeline(std::move(pipeline).value());

  DaemonOptions options;
  options.config = config;
  options.board = board.get();
  options.board_warnings = board_warnings;
  options.notifier = &notifier;
  options.version = STROKEBOX_VERSION;
  options.engine_json = nlohmann::json{{"model_dir", config.model.dir},
                                       {"precision", config.model.precision},
                                       {"sliding_window_mib", shared_pipeline->reserved_bytes() / 1048576.0}}
                            .dump();
  options.processor = [shared_pipeline](const std::string& study_dir, const std::string& out_dir,
                                        const inference::ProgressFn& progress) {
    return shared_pipeline->process_study(study_dir, out_dir, progress);
  };
  // The pipeline wrote report.json already; rewrite it with the daemon's receive timing.
  options.write_report = [](const StudyReport& report, const std::string& out_dir) {
    return storage::write_file_atomic(out_dir + "/report.json", report.to_json().dump(2) + "\n");
  };
  auto daemon = Daemon::create(std::move(options));
  if (!daemon.ok()) {
    std::fprintf(stderr, "strokebox run: %s\n", daemon.status().to_string().c_str());
    return 1;
  }
  base::Status started = (*daemon)->start();
  if (!started.ok()) {
    std::fprintf(stderr, "strokebox run: %s\n", started.to_string().c_str());
    return 1;
  }
  std::fprintf(stderr, "strokebox: listening on %s:%d as %s, data in %s\n", config.dicom.bind_address.c_str(),
               config.dicom.port, config.dicom.ae_title.c_str(), config.storage.data_dir.c_str());
  std::fflush(stderr);

  const int sig = wait_for_termination_signal();
  SB_LOG(kInfo) << "received " << (sig == SIGTERM ? "SIGTERM" : "SIGINT") << ", stopping";
  (*daemon)->stop();
  return 0;
}

}  // namespace firmware
