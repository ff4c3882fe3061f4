// The durable index of the appliance (one SQLite file, `<data_dir>/strokebox.db`): received
// instances, studies and their state, the job queue, and one result row per study. Every
// operation is one transaction; the class is thread-safe (one connection behind a mutex), and
// other processes (`strokebox status`) may read the same file at the same time (WAL).
//
// Study life cycle: received --(quiet, association released)--> queued --claim--> running
//   --> done | failed (the pipeline's verdict), or back to queued after a failed attempt,
//   or failed after max_attempts. New instances for a queued/done/failed study put it back to
//   received (it will be queued again after the quiet time); for a running study the job's
//   result is stored but the study goes back to received.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "storage/database.h"

namespace storage {

/// Milliseconds since the Unix epoch (system clock); the unit of every *_ms time stamp here.
int64_t now_ms();

/// One stored SOP instance (a row of `instances`).
struct InstanceRecord {
  std::string sop_instance_uid;
  std::string sop_class_uid;
  std::string study_uid;
  std::string series_uid;
  std::string patient_id;  // copied to the study on first sight; may be empty
  std::string path;        // the spool file
  int64_t size_bytes = 0;
  int64_t received_at_ms = 0;
  std::string calling_ae;
};

/// A row of `studies` plus its instance count. `state` is one of
/// received | queued | running | done | failed.
struct StudyRow {
  std::string study_uid;
  std::string patient_id;
  int64_t first_received_ms = 0;
  int64_t last_received_ms = 0;
  int64_t instance_count = 0;
  std::string state;
  int attempts = 0;  // attempts of the study's latest job
};

/// A job claimed by a worker.
struct Job {
  int64_t id = 0;
  std::string study_uid;
  int attempts = 0;         // including this one (1 on the first run)
  int64_t started_ms = 0;
};

/// The outcome of one study (a row of `results`; the latest job's outcome wins).
struct ResultRow {
  std::string study_uid;
  int64_t job_id = 0;
  std::string status;  // "done" | "failed"
  std::string reason;  // for "failed": what a person can act on
  double lesion_volume_ml = 0.0;
  int lesion_count = 0;
  std::string model_id, backend, precision;
  std::string timings_json = "{}";  // {"receive": ms, "load": ms, ...} in pipeline order
  std::string report_path;
  int64_t finished_at_ms = 0;
  // Power and temperature while the study was processed (telemetry sampler); nullopt when the
  // board has no VDD_IN monitor / thermal zone or nothing was measured (missing, never 0).
  std::optional<double> energy_j;       // joules drawn on VDD_IN (module input)
  std::optional<double> mean_power_mw;  // mean VDD_IN power, milliwatts
  std::optional<double> peak_power_mw;  // highest VDD_IN sample, milliwatts
  std::optional<double> peak_temp_c;    // hottest thermal zone seen, degrees Celsius
};

/// A study with its result, if any (for the status view).
struct StudySummary {
  StudyRow study;
  std::optional<ResultRow> result;
};

class Index {
 public:
  struct Options {
    int max_attempts = 3;          // a job that failed (or was interrupted) this often is failed
    int64_t retry_delay_ms = 5000; // a failed attempt is retried no earlier than this
    Database::Options database;    // busy timeout, synchronous (FULL by default)
  };

  /// Opens or creates the index, applying schema migrations. Errors: see Database::open and
  /// Database::migrate.
  static base::Result<std::unique_ptr<Index>> open(const std::string& db_path, const Options& options);
  static base::Result<std::unique_ptr<Index>> open(const std::string& db_path) { return open(db_path, Options()); }
  /// Opens an existing index read-only (no migration; the schema must be known).
  /// Errors: kNotFound (no file), kFailedPrecondition (unknown schema version).
  static base::Result<std::unique_ptr<Index>> open_read_only(const std::string& db_path);

  /// Records a received instance (replacing an earlier copy of the same SOP instance) and
  /// creates or updates its study (see the life cycle above).
  base::Status add_instance(const InstanceRecord& instance);

  /// Studies in state `received` whose last instance arrived at or before `cutoff_ms`.
  base::Result<std::vector<std::string>> quiet_studies(int64_t cutoff_ms);

  /// Queues one job for a study in state `received`. Returns false (and changes nothing) when
  /// the study is unknown or in another state.
  base::Result<bool> enqueue_study(const std::string& study_uid, int64_t now_ms);

  /// Atomically claims the oldest queued job that is due (not_before <= now): it becomes
  /// running, its attempt counter goes up, its study becomes running. nullopt: nothing due.
  base::Result<std::optional<Job>> claim_next_job(int64_t now_ms);

  /// Stores the result of a claimed job and finishes it; the study becomes result.status
  /// ("done"/"failed") unless new instances arrived while it ran (then `received`).
  base::Status complete_job(const Job& job, ResultRow result);

  /// Records a failed attempt (the processor threw, outputs could not be written). Returns
  /// true when the job was re-queued (after retry_delay_ms), false when it reached
  /// max_attempts and was marked failed with `reason` (and a failed result row).
  base::Result<bool> fail_attempt(const Job& job, const std::string& reason, int64_t now_ms);

  /// At start-up: jobs left `running` by a crash or power cut count as failed attempts
  /// ("interrupted") and are re-queued, or failed after max_attempts. Returns how many jobs
  /// were re-queued.
  base::Result<int> requeue_interrupted_jobs(int64_t now_ms);

  base::Result<std::optional<StudyRow>> study(const std::string& study_uid);
  base::Result<std::optional<ResultRow>> result(const std::string& study_uid);
  base::Result<std::vector<InstanceRecord>> instances_of_study(const std::string& study_uid);
  /// Number of studies per state (every state present, 0 when none).
  base::Result<std::map<std::string, int64_t>> study_counts();
  /// Number of jobs per state (queued, running, done, failed).
  base::Result<std::map<std::string, int64_t>> job_counts();
  /// The `limit` studies most recently received, newest first.
  base::Result<std::vector<StudySummary>> recent_studies(int limit);
  /// The `limit` latest failed results, newest first.
  base::Result<std::vector<ResultRow>> recent_failures(int limit);

  const Options& options() const { return options_; }

 private:
  Index(std::unique_ptr<Database> db, Options options) : db_(std::move(db)), options_(std::move(options)) {}
  base::Status fail_job_locked(const Job& job, const std::string& reason, int64_t now_ms);
  base::Result<std::optional<ResultRow>> result_locked(const std::string& study_uid);
  std::mutex mu_;
  std::unique_ptr<Database> db_;
  Options options_;
};

}  // namespace storage
