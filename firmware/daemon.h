// The appliance daemon behind `strokebox run`: the DICOM node receives into the spool and
// index; a scheduler thread queues a study once it is complete (no instance for
// study_quiet_s AND every association that brought it has ended); one worker thread claims
// jobs, runs the injected StudyProcessor and stores the result row, with outputs under
// `<data_dir>/results/<study_uid>/`. Everything durable lives in SQLite, so a crash or power
// cut loses no job: jobs left running are re-queued at the next start.
// Running unattended: a telemetry sampler reads the board (hal::Board) into a bounded ring and
// holds new jobs while the board is too hot; every long-lived thread beats a
// watchdog::Heartbeat and a watchdog::Supervisor pings systemd (WATCHDOG=1) only while all are
// fresh. READY=1 once the node listens; STATUS= lines say what the daemon does. A panel thread
// drives the status LED (idle steady, processing blinking, degraded double blink, fault fast)
// and, when configured, the fan curve; the read-only HTTP status page runs beside it.
// Sending back: when [[destinations]] are configured, a finished study's SEG, overlay and SR
// are queued in the durable outbox (firmware/outbox.h, same SQLite file) and a sender thread
// delivers them by C-STORE, retrying across restarts.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "base/status.h"
#include "firmware/config.h"
#include "firmware/dicom_node.h"
#include "firmware/outbox.h"
#include "firmware/pipeline.h"
#include "firmware/status_server.h"
#include "firmware/telemetry.h"
#include "hal/board.h"
#include "hal/fan_curve.h"
#include "hal/led_pattern.h"
#include "storage/index.h"
#include "storage/spool.h"
#include "watchdog/heartbeat.h"
#include "watchdog/sd_notify.h"
#include "watchdog/supervisor.h"

namespace firmware {

/// Processes one complete study: `study_dir` holds its DICOM files (any layout below it),
/// outputs go into `out_dir` (exists and is empty). A study that cannot be segmented is a
/// report with status "failed" and a reason (final, not retried); an exception counts as a
/// failed attempt and is retried up to jobs.max_attempts. The processor calls `progress` at
/// every stage and network run (Pipeline::process_study does): each call beats the worker's
/// heartbeat, so watchdog.job_deadline_s bounds the time between two calls, not the study.
using StudyProcessor = std::function<StudyReport(const std::string& study_dir, const std::string& out_dir,
                                                 const inference::ProgressFn& progress)>;

/// Writes the final report (the processor's, with the daemon's "receive" timing in front) into
/// `out_dir`, normally as report.json. An error counts as a failed attempt.
using ReportWriter = std::function<base::Status(const StudyReport& report, const std::string& out_dir)>;

struct DaemonOptions {
  Config config;
  StudyProcessor processor;             // required
  ReportWriter write_report;            // optional: nothing written when empty
  int check_interval_ms = 0;            // study-completion check period; 0 = quiet/4 in [50, 1000] ms
  int idle_poll_ms = 500;               // the worker looks for due retries at least this often
  /// The node refuses instances below this free space; unset = storage.min_free_mb.
  /// Retention runs at start (finishing interrupted removals) and, with storage.quota_mb > 0,
  /// after every job.
  std::optional<uint64_t> min_free_bytes;
  /// The board to sample; must outlive the daemon. nullptr: a simulated board owned by the
  /// daemon (telemetry still records CPU, memory and disk).
  hal::Board* board = nullptr;
  /// Where READY/STATUS/WATCHDOG go; must outlive the daemon. nullptr: sd_notify(3) (a no-op
  /// outside systemd).
  watchdog::Notifier* notifier = nullptr;
  std::string version = "dev";  // shown by `strokebox status`
  /// Engine facts for `strokebox status` (backend, precision, arena bytes...), a JSON object.
  std::string engine_json = "{}";
  /// Devices the board could not open ("status LED disabled: ..."); shown by status.
  std::vector<std::string> board_warnings;
};

class Daemon {
 public:
  /// Validates the options, creates the data directories, opens (migrates) the index, re-queues
  /// jobs interrupted by a crash and removes half-written spool files. Does not listen yet.
  /// Errors: kInvalidArgument (config, missing processor), the storage layer's errors.
  static base::Result<std::unique_ptr<Daemon>> create(DaemonOptions options);
  ~Daemon();  // stop()
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  /// Starts the DICOM node (listening when this returns OK), the scheduler and the worker.
  /// Errors: the node's (kUnavailable when the port is taken).
  base::Status start();
  /// Stops accepting associations, lets open ones and the current job finish, joins every
  /// thread. Thread-safe, idempotent; not async-signal-safe (call it after sigwait).
  void stop();

  storage::Index& index() { return *index_; }
  Telemetry& telemetry() { return *telemetry_; }
  /// The outbox of results to send (never null; without destinations it holds nothing).
  Outbox& outbox() { return *outbox_; }
  watchdog::Registry& heartbeats() { return registry_; }
  /// The supervisor's check period: WatchdogSec/2 under systemd, else watchdog.check_interval_s.
  std::chrono::milliseconds supervisor_interval() const { return supervisor_interval_; }
  const Config& config() const { return options_.config; }
  /// Jobs finished (result stored or attempt failed) since start; for tests and logs.
  int jobs_finished() const { return jobs_finished_.load(); }
  /// The live state as one JSON object: threads (name, age_ms, deadline_ms, stale), thermal
  /// hold, LED, current_study and current_stage ("inference 12/54"), engine. What the status
  /// page and the state file show.
  std::string state_json();

 private:
  explicit Daemon(DaemonOptions options);
  void scheduler_loop(std::shared_ptr<watchdog::Heartbeat> heartbeat);
  /// The front panel: status LED pattern from the box condition, the button, and the fan
  /// curve when [fan] mode = "curve". Wakes at the LED's next edge (at most every 250 ms).
  void panel_loop(std::shared_ptr<watchdog::Heartbeat> heartbeat);
  hal::BoxCondition box_condition();
  void worker_loop(std::shared_ptr<watchdog::Heartbeat> heartbeat);
  void set_status(const std::string& text);
  void run_job(const storage::Job& job, watchdog::Heartbeat& heartbeat);
  void fail_attempt(const storage::Job& job, const std::string& reason);
  /// Queues the result files of a finished job for the destinations (idempotent).
  void queue_results(const std::string& study_uid, int64_t job_id);
  /// Queues finished results a crash left unqueued (between the result row and the outbox).
  void queue_missing_results();
  /// Applies storage.quota_mb (storage/retention.h): oldest finished, fully sent studies go.
  void enforce_retention();

  DaemonOptions options_;
  std::unique_ptr<storage::Index> index_;
  std::unique_ptr<storage::Spool> spool_;
  std::unique_ptr<SpoolStoreHandler> handler_;
  std::unique_ptr<DicomNode> node_;
  std::unique_ptr<Outbox> outbox_;
  std::shared_ptr<watchdog::Heartbeat> sender_heartbeat_;  // set by start() when sending
  std::shared_ptr<watchdog::Heartbeat> node_heartbeat_;    // the DICOM node's accept loop
  std::unique_ptr<hal::Board> owned_board_;
  hal::Board* board_ = nullptr;
  std::unique_ptr<Telemetry> telemetry_;
  std::unique_ptr<watchdog::Notifier> owned_notifier_;
  watchdog::Notifier* notifier_ = nullptr;
  watchdog::Registry registry_;
  std::unique_ptr<watchdog::Supervisor> supervisor_;
  std::chrono::milliseconds supervisor_interval_{1000};
  int64_t started_ms_ = 0;
  std::mutex current_mu_;
  std::string current_study_;  // the study being processed, "" when idle (current_mu_)
  std::string current_stage_;  // its last progress, "inference 12/54" (current_mu_)
  std::thread scheduler_, worker_, panel_;
  std::unique_ptr<hal::LedDriver> led_;
  std::unique_ptr<hal::FanController> fan_;  // null: the platform's fan service drives the fan
  std::unique_ptr<StatusServer> status_server_;
  std::mutex mu_;
  std::condition_variable wake_;  // new job queued, or stop
  bool stopping_ = false;
  bool started_ = false;
  std::mutex lifecycle_mu_;
  std::atomic<int> jobs_finished_{0};
};

/// Blocks SIGTERM and SIGINT in the calling thread; threads started afterwards inherit the
/// mask, so the signals stay pending for wait_for_termination_signal(). Call it first in main
/// paths that start threads.
void block_termination_signals();
/// Waits for SIGTERM or SIGINT (blocked beforehand) and returns its number.
int wait_for_termination_signal();

}  // namespace firmware
