// The durable outbox: results (SEG, overlay, SR files) waiting to be sent by C-STORE to the
// configured destinations. Items live in SQLite (table `outbox`, created by Outbox::open), so
// a restart loses nothing; a sender thread (DCMTK DcmSCU) delivers due items, retrying with
// exponential backoff (next_attempt_at persisted) until the destination answers Success or
// Warning. Refusals are logged with their reason and kept for `strokebox status`.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "base/status.h"
#include "storage/database.h"

namespace firmware {

/// A DICOM node that receives results (a PACS, the scanner console).
struct Destination {
  std::string name;      // unique, used in logs and `strokebox status`
  std::string ae_title;  // called AE title
  std::string host;
  int port = 104;
  /// Which result objects it receives: any of "seg", "overlay", "sr".
  std::set<std::string> objects = {"seg", "overlay", "sr"};
};

/// One result file to send: which object it is and its SOP identity (from its meta header).
struct OutboxFile {
  std::string kind;  // "seg" | "overlay" | "sr"
  std::string path;
  std::string sop_class_uid;
  std::string sop_instance_uid;
};

/// The result objects a finished study left in `out_dir`: seg.dcm, overlay/*.dcm, sr.dcm (those
/// that exist), with SOP class and instance UIDs read from each file's meta header (PS3.10 7.1).
/// Errors: kDataLoss naming a file that is not readable DICOM.
base::Result<std::vector<OutboxFile>> find_result_files(const std::string& out_dir);

struct OutboxOptions {
  std::string calling_ae_title = "STROKEBOX";
  double initial_backoff_s = 10;   // wait after the first failure; doubles per failure
  double max_backoff_s = 900;      // cap of the wait between attempts
  int acse_timeout_s = 10;         // association negotiation
  int dimse_timeout_s = 60;        // per C-STORE response
  double idle_poll_s = 2;          // sender thread wake-up when nothing was enqueued
  int max_items_per_association = 100;
  /// Seconds since the epoch; tests replace it. Default: the system clock.
  std::function<double()> clock;
  /// Called by the sender thread on every pass and after every item (the daemon beats the
  /// sender's watchdog heartbeat here).
  std::function<void()> on_progress;
};

/// Delivery state of one destination, for `strokebox status`.
struct DestinationState {
  std::string name;
  int64_t pending = 0;         // items not yet confirmed
  int64_t delivered = 0;       // items confirmed
  std::string last_error;      // reason of the most recent failure ("" after a success)
  double last_error_at = 0;    // epoch seconds, 0 = never
  double last_success_at = 0;  // epoch seconds, 0 = never
  double next_attempt_at = 0;  // earliest next_attempt_at of its pending items, 0 = none
};

/// Reads one destination's state from the outbox tables of `db` (strokebox.db): counts, next
/// try, last error and success. Shared by Outbox::destination_states() and `strokebox status`
/// (which reads on its own read-only connection). Errors: the database's, e.g. "no such table"
/// when the outbox was never opened on this file.
base::Result<DestinationState> read_destination_state(storage::Database& db, const std::string& name);

class Outbox {
 public:
  /// Opens (creates) the SQLite file `db_path` and the outbox tables (CREATE TABLE IF NOT
  /// EXISTS; no user_version migration, so the file may be shared with other tables).
  /// Errors: kInvalidArgument (destination names empty or repeated, port out of 1..65535,
  /// unknown object kind), the database's errors.
  static base::Result<std::unique_ptr<Outbox>> open(const std::string& db_path, std::vector<Destination> destinations,
                                                    OutboxOptions options = {});
  ~Outbox();  // stop()

  /// Queues the file for every destination whose `objects` contains `kind` ("seg", "overlay",
  /// "sr"); an item already queued for that destination and SOP instance is not queued twice.
  /// Returns how many items were queued. Wakes the sender thread.
  base::Result<int> enqueue(const std::string& kind, const std::string& path, const std::string& sop_class_uid,
                            const std::string& sop_instance_uid);
  /// True when at least one destination is configured.
  bool has_destinations() const { return !destinations_.empty(); }

  /// Queues every file of one finished job (study `study_uid`, job `job_id`) in one
  /// transaction and marks the job as queued, so a crash never queues half a result and
  /// result_enqueued() tells whether a job still needs queueing (after a crash between
  /// storing a result and queueing it). Returns the items queued. Errors: the database's.
  base::Result<int> enqueue_result(const std::string& study_uid, int64_t job_id, const std::vector<OutboxFile>& files);
  /// Whether enqueue_result() ran for this job.
  base::Result<bool> result_enqueued(const std::string& study_uid, int64_t job_id);
  /// Whether any item of the study is still waiting for a destination's confirmation
  /// (retention keeps such a study).
  base::Result<bool> has_pending(const std::string& study_uid);

  /// One pass: sends every item whose next_attempt_at has come (one association per
  /// destination). Returns the number of items confirmed. Failures are recorded, not
  /// returned; only database errors are.
  base::Result<int> send_due();

  /// Starts the sender thread (send_due() whenever woken or every idle_poll_s).
  void start();
  /// Stops the sender thread after its current association; idempotent.
  void stop();

  /// Per configured destination, in configuration order.
  base::Result<std::vector<DestinationState>> destination_states();
  /// Items not yet confirmed, all destinations.
  base::Result<int64_t> pending_count();

 private:
  Outbox(std::unique_ptr<storage::Database> db, std::vector<Destination> destinations, OutboxOptions options);
  double now() const;
  base::Status record_failure(const std::string& destination, int64_t id, int attempts, const std::string& reason);
  base::Status record_success(const std::string& destination, int64_t id);
  base::Status record_dropped(const std::string& destination, int64_t id, const std::string& reason);
  base::Status insert_items_locked(const std::string& study_uid, const OutboxFile& file, int& queued);
  void wake_sender();
  void run();

  std::unique_ptr<storage::Database> db_;
  std::vector<Destination> destinations_;
  OutboxOptions options_;
  std::mutex db_mu_;    // guards db_
  std::mutex send_mu_;  // one send_due() at a time
  std::mutex wake_mu_;
  std::condition_variable wake_;
  bool wake_requested_ = false;
  bool stop_requested_ = false;
  std::thread sender_;
};

}  // namespace firmware
