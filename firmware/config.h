// The appliance configuration (`strokebox run --config FILE`), a TOML file with sections
// [dicom], [tls], [storage], [model], [jobs], [board], [fan], [telemetry], [thermal], [watchdog],
// [status], [outbox] and any number of [[destinations]]. Every field has a default, so an empty file is a
// valid configuration; unknown sections or keys are errors that name the key and its line,
// so a typo never passes silently. Command-line flags override single fields.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.h"

namespace firmware {

struct DicomConfig {
  std::string ae_title = "STROKEBOX";     // our AE title (1-16 characters, no backslash)
  int port = 11112;                       // TCP port of the DICOM node (1-65535)
  std::string bind_address = "0.0.0.0";   // IPv4 address to listen on; 0.0.0.0 = all
  double study_quiet_s = 10.0;            // a study is complete after this long without instances
  int max_associations = 4;               // concurrent associations; more are refused (transient)
  double dimse_timeout_s = 30.0;          // an idle association is aborted after this long
  /// Calling AE titles allowed to associate; empty = any caller (the called AE title must
  /// always be ours).
  std::vector<std::string> allowed_calling_aes;
  /// Peers allowed to connect: IPv4 addresses or CIDR blocks ("10.1.0.0/16"); empty = any.
  std::vector<std::string> allowed_peers;
  int max_pdu_bytes = 65536;              // maximum PDU we receive (PS3.8 D.3.3.1), 4096..131072
  int max_instance_mb = 256;              // an instance larger than this is refused
  int max_instances_per_study = 5000;     // further instances of a study are refused (0xA700)
};

/// DICOM over TLS (PS3.15 Annex B.1, DCMTK dcmtls). When enabled the node speaks only TLS.
struct TlsConfig {
  bool enabled = false;
  std::string certificate;      // PEM file: the box's certificate
  std::string private_key;      // PEM file: its private key (readable by the service user only)
  std::string trusted_ca;       // PEM file of CA certificates that sign accepted peers
  bool require_client_certificate = true;  // refuse peers without a certificate from trusted_ca
};

struct StorageConfig {
  std::string data_dir = "/var/lib/strokebox";  // strokebox.db, spool/, results/
  /// Below this much free space on the data directory's file system, C-STORE answers
  /// 0xA700 Out of Resources and nothing is written.
  int min_free_mb = 512;
  /// Retention quota of the data directory in MiB: beyond it the oldest finished studies
  /// (spool and results) are removed, never one that is not processed yet. 0 = no quota.
  int quota_mb = 0;
};

struct ModelConfig {
  std::string dir = "/usr/share/strokebox/models/default";  // model package (docs/model_package.md)
  std::string precision = "fp32";                           // fp32 | bf16 | fp16 | auto
  /// Sliding-window buffers are preallocated at start for preprocessed volumes (after
  /// resampling to the model's target spacing and padding to the patch) of up to this many
  /// voxels per channel: (channels + classes + 1) x 4 bytes each, 168 MiB for DWI+ADC and 2
  /// classes at the default 2^23 (256 x 256 x 128). A larger study fails with a reason that
  /// names this key. 0: allocate per study instead.
  int max_preprocessed_voxels = 8388608;
  /// A study whose diffusion b-values all lie outside the range the model accepts (model.json
  /// "diffusion", docs/model_package.md) is refused naming its b and the range; true segments
  /// it anyway at the b closest to the model's, with a warning in report.json.
  bool allow_b_outside_range = false;
  /// Which lesions flagged by the ADC check are left out of the mask, SEG, SR and volume:
  /// "keep", "exclude-below-tissue-adc" or "exclude" (docs/model_package.md, "postprocessing");
  /// empty: what the model package says (model.json "postprocessing").
  std::string implausible_lesions;
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
  /// Set the power mode to `power_mode` at start when it differs (nvpmodel), instead of only
  /// reporting the mismatch.
  bool set_power_mode = false;
  /// Status LED output through libgpiod (hal/gpio.h, parse_gpio_line_spec): "CHIP:LINE" where
  /// CHIP is a gpiochip name, path or label ("gpiochip0", "tegra-gpio") and LINE an offset or
  /// a line name, or just a line name ("PQ.05"). Empty: no LED. Used by the Jetson board only.
  std::string led_gpio;
  /// The front-panel button's input line, same format; empty: no button.
  std::string button_gpio;
  /// The LED lights when its line is low (LED wired to 3.3 V through a resistor).
  bool led_active_low = false;
  /// A press pulls the button's line low (button to ground with a pull-up), the usual wiring.
  bool button_active_low = true;
};

struct FanConfig {
  /// "platform": leave the fan to the platform's fan service (nvfancontrol on JetPack);
  /// "curve": the daemon drives pwm1 from `curve` (for boards without that service).
  std::string mode = "platform";
  /// Temperature to PWM points "C:pwm,C:pwm,..." (C ascending, pwm 0..255), linear between
  /// points, held flat outside them.
  std::string curve = "40:0,55:80,70:160,80:255";
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
  /// Deadline of the worker while it processes a study: the longest time between two progress
  /// reports of the pipeline (each stage, and every network run of the sliding window). It must
  /// cover the slowest single step with margin: one network run of a 128^3 patch (~20 s in fp32
  /// on a 2-core x86 CPU), loading a large study, resampling. report.json records the longest
  /// gap of each study as longest_progress_gap_ms.
  double job_deadline_s = 300.0;
  /// Supervisor check period outside systemd; under systemd it is WatchdogSec/2.
  double check_interval_s = 1.0;
};

/// The technician's read-only HTTP status page.
struct StatusConfig {
  bool enabled = true;
  std::string bind_address = "127.0.0.1";  // loopback by default; IPv4
  int port = 8080;
  bool show_patient_names = false;         // names and IDs are hidden unless this is set
};

/// Retry policy of the outbox sending results (firmware/outbox.h).
struct OutboxConfig {
  double initial_backoff_s = 10;  // wait after the first failure; doubles per failure
  double max_backoff_s = 900;     // cap of the wait
};

/// One [[destinations]] entry: a DICOM node that receives results by C-STORE.
struct DestinationConfig {
  std::string name;       // unique, shown in `strokebox status`
  std::string ae_title;   // called AE title
  std::string host;
  int port = 104;
  std::vector<std::string> objects = {"seg", "overlay", "sr"};  // any of seg, overlay, sr
};

struct Config {
  DicomConfig dicom;
  TlsConfig tls;
  StorageConfig storage;
  ModelConfig model;
  JobsConfig jobs;
  BoardConfig board;
  FanConfig fan;
  TelemetryConfig telemetry;
  ThermalConfig thermal;
  WatchdogConfig watchdog;
  StatusConfig status;
  OutboxConfig outbox;
  std::vector<DestinationConfig> destinations;

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

/// Parses FanConfig::curve into (temperature C, pwm) points, temperatures strictly ascending.
/// Errors: kInvalidArgument naming the bad point.
base::Result<std::vector<std::pair<double, int>>> parse_fan_curve(std::string_view text);

/// Checks the whole configuration (ranges, AE title rules). parse_config and
/// set_config_value already call it; exposed for configurations built in code.
base::Status validate_config(const Config& config);

}  // namespace firmware
