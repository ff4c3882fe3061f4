// The appliance configuration (`strokebox run --config FILE`), a TOML file with sections
// [dicom], [storage], [model], [jobs], [board], [telemetry], [thermal] and [watchdog]. Every field has a default, so an empty file is a
// valid configuration; unknown sections or keys are errors that name the key and its line,
// so a typo never passes silently. Command-line flags override single fields.
#pragma once

#include <string>
#include <string_view>

#include "base/status.h"

namespace firmware {

struct DicomConfig {
  std::string ae_title = "STROKEBOX";     // our AE title (1-16 characters, no backslash)
  int port = 11112;                       // TCP port of the DICOM node (1-65535)
  std::string bind_address = "0.0.0.0";   // IPv4 address to listen on; 0.0.0.0 = all
  double study_quiet_s = 10.0;            // a study is complete after this long without instances
  int max_associations = 4;               // concurrent associations; more are refused (transient)
  double dimse_timeout_s = 30.0;          // an idle association is aborted after this long
};

struct StorageConfig {
  std::string data_dir = "/var/lib/strokebox";  // strokebox.db, spool/, results/
};

struct ModelConfig {
  std::string dir = "/usr/share/strokebox/models/default";  // model package (docs/model_package.md)
  std::string precision = "fp32";                           // fp32 | bf16 | fp16 | auto
};

struct JobsConfig {
  int max_attempts = 3;        // a study that fails (or crashes the box) this often is failed
  double retry_delay_s = 10.0; // wait before retrying a failed attempt
};

struct BoardConfig {
  std::string kind = "auto";  // auto (Jetson sysfs present -> jetson, else sim) | jetson | sim
  /// Expected nvpmodel mode id, checked at start (a mismatch is logged, never changed):
  /// 8 = MODE_20W_6CORE on the Xavier NX. -1 disables the check.
  int power_mode = 8;
};

struct TelemetryConfig {
  double interval_s = 1.0;  // sampling period of the telemetry sampler
  int ring_rows = 86400;    // samples kept (a ring: the oldest is overwritten); 1 day at 1 Hz
};

struct ThermalConfig {
  double hold_above_c = 85.0;  // new jobs wait while the hottest zone is above this
  double hysteresis_c = 5.0;   // ... and resume once it is below hold_above_c - hysteresis_c
};

struct WatchdogConfig {
  /// Deadline of the loops that wake up on their own (scheduler, idle worker, sampler).
  double loop_deadline_s = 30.0;
  /// Deadline of the worker while it processes a study: the pipeline reports no progress
  /// inside inference (a whole study is one step), so this must exceed the slowest study
  /// (about 30 s to a few minutes on the Xavier NX CPU) with margin.
  double job_deadline_s = 900.0;
  /// Supervisor check period outside systemd; under systemd it is WatchdogSec/2.
  double check_interval_s = 1.0;
};

struct Config {
  DicomConfig dicom;
  StorageConfig storage;
  ModelConfig model;
  JobsConfig jobs;
  BoardConfig board;
  TelemetryConfig telemetry;
  ThermalConfig thermal;
  WatchdogConfig watchdog;

  /// `<data_dir>/strokebox.db`, `<data_dir>/spool`, `<data_dir>/results`.
  std::string database_path() const { return storage.data_dir + "/strokebox.db"; }
  std::string spool_dir() const { return storage.data_dir + "/spool"; }
  std::string results_dir() const { return storage.data_dir + "/results"; }
  /// `<data_dir>/telemetry.db`: samples ring and the daemon's state row (loss-tolerant).
  std::string telemetry_path() const { return storage.data_dir + "/telemetry.db"; }
};

/// Parses TOML text; `source` names it in messages (a file name). Fields not given keep their
/// defaults. Errors (kInvalidArgument): TOML syntax ("<source>:<line>:<col>: ..."), unknown
/// section or key, wrong type, or a value out of range, each naming the key and line.
base::Result<Config> parse_config(std::string_view toml_text, std::string_view source = "config");

/// Reads and parses a file. Errors: kNotFound (no such file), then as parse_config.
base::Result<Config> load_config(const std::string& path);

/// Sets one field from text, as a command-line override: `key` is "section.name"
/// ("dicom.port"), `value` is parsed as the field's type and validated like the file.
/// Errors: kInvalidArgument naming the key.
base::Status set_config_value(Config& config, std::string_view key, std::string_view value);

/// Checks the whole configuration (ranges, AE title rules). parse_config and
/// set_config_value already call it; exposed for configurations built in code.
base::Status validate_config(const Config& config);

}  // namespace firmware
