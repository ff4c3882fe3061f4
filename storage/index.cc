#include "storage/index.h"

#include <array>
#include <chrono>

namespace storage {
namespace {

// Schema. Durability: the whole file is opened in WAL mode with synchronous=FULL (the
// default of Database::Options), i.e. every COMMIT fsyncs the WAL before returning.
//   instances  FULL  an instance is acknowledged to the scanner only after this commit; a
//                    power cut must not lose a row the sender was told is stored.
//   studies    FULL  written in the same transactions as instances and jobs.
//   jobs       FULL  a queued or running job must survive a power cut ("never dropped").
//   results    FULL  shares the connection; NORMAL would suffice (a lost result row only
//                    re-runs the job, which is re-queued as interrupted) but SQLite's
//                    synchronous setting is per connection, not per table.
// High-rate, loss-tolerant data (telemetry) belongs in a separate file opened with NORMAL.
constexpr std::string_view kSchemaV1 = R"sql(
CREATE TABLE studies (
  study_uid          TEXT PRIMARY KEY,
  patient_id         TEXT NOT NULL DEFAULT '',
  first_received_ms  INTEGER NOT NULL,
  last_received_ms   INTEGER NOT NULL,
  state              TEXT NOT NULL DEFAULT 'received'
                     CHECK (state IN ('received', 'queued', 'running', 'done', 'failed')),
  attempts           INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX studies_by_state ON studies(state, last_received_ms);
CREATE INDEX studies_by_time ON studies(last_received_ms);

CREATE TABLE instances (
  sop_instance_uid   TEXT PRIMARY KEY,
  sop_class_uid      TEXT NOT NULL,
  study_uid          TEXT NOT NULL REFERENCES studies(study_uid),
  series_uid         TEXT NOT NULL,
  path               TEXT NOT NULL,
  size_bytes         INTEGER NOT NULL,
  received_at_ms     INTEGER NOT NULL,
  calling_ae         TEXT NOT NULL DEFAULT ''
);
CREATE INDEX instances_by_study ON instances(study_uid, series_uid);

CREATE TABLE jobs (
  id                 INTEGER PRIMARY KEY AUTOINCREMENT,
  study_uid          TEXT NOT NULL REFERENCES studies(study_uid),
  state              TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
  attempts           INTEGER NOT NULL DEFAULT 0,
  not_before_ms      INTEGER NOT NULL DEFAULT 0,
  created_ms         INTEGER NOT NULL,
  started_ms         INTEGER NOT NULL DEFAULT 0,
  finished_ms        INTEGER NOT NULL DEFAULT 0,
  last_error         TEXT NOT NULL DEFAULT ''
);
CREATE INDEX jobs_by_state ON jobs(state, id);
CREATE INDEX jobs_by_study ON jobs(study_uid);

CREATE TABLE results (
  study_uid          TEXT PRIMARY KEY REFERENCES studies(study_uid),
  job_id             INTEGER NOT NULL,
  status             TEXT NOT NULL CHECK (status IN ('done', 'failed')),
  reason             TEXT NOT NULL DEFAULT '',
  lesion_volume_ml   REAL NOT NULL DEFAULT 0,
  lesion_count       INTEGER NOT NULL DEFAULT 0,
  model_id           TEXT NOT NULL DEFAULT '',
  backend            TEXT NOT NULL DEFAULT '',
  precision          TEXT NOT NULL DEFAULT '',
  timings_json       TEXT NOT NULL DEFAULT '{}',
  report_path        TEXT NOT NULL DEFAULT '',
  finished_at_ms     INTEGER NOT NULL
);
CREATE INDEX results_by_time ON results(finished_at_ms);
)sql";

// Version 2: per-study power and temperature during processing (issue 5), from the telemetry
// sampler. NULL when the board has no VDD_IN monitor or no thermal zone: missing, never 0.
constexpr std::string_view kSchemaV2 = R"sql(
ALTER TABLE results ADD COLUMN energy_j REAL;
ALTER TABLE results ADD COLUMN mean_power_mw REAL;
ALTER TABLE results ADD COLUMN peak_power_mw REAL;
ALTER TABLE results ADD COLUMN peak_temp_c REAL;
)sql";

constexpr std::array<Migration, 2> kMigrations = {{{1, kSchemaV1}, {2, kSchemaV2}}};

constexpr std::array<const char*, 5> kStudyStates = {"received", "queued", "running", "done", "failed"};
constexpr std::array<const char*, 4> kJobStates = {"queued", "running", "done", "failed"};

constexpr std::string_view kSelectStudy =
    "SELECT s.study_uid, s.patient_id, s.first_received_ms, s.last_received_ms, "
    "(SELECT COUNT(*) FROM instances i WHERE i.study_uid = s.study_uid), s.state, s.attempts FROM studies s ";

StudyRow read_study(const Statement& st) {
  StudyRow row;
  row.study_uid = st.column_text(0);
  row.patient_id = st.column_text(1);
  row.first_received_ms = st.column_int64(2);
  row.last_received_ms = st.column_int64(3);
  row.instance_count = st.column_int64(4);
  row.state = st.column_text(5);
  row.attempts = static_cast<int>(st.column_int64(6));
  return row;
}

constexpr std::string_view kSelectResult =
    "SELECT study_uid, job_id, status, reason, lesion_volume_ml, lesion_count, model_id, backend, precision, "
    "timings_json, report_path, finished_at_ms, energy_j, mean_power_mw, peak_power_mw, peak_temp_c FROM results ";

std::optional<double> column_optional_double(const Statement& st, int column) {
  if (st.column_is_null(column)) return std::nullopt;
  return st.column_double(column);
}

void bind_optional(Statement& st, int index, const std::optional<double>& value) {
  if (value) {
    st.bind(index, *value);
  } else {
    st.bind_null(index);
  }
}

ResultRow read_result(const Statement& st, int first = 0) {
  ResultRow r;
  r.study_uid = st.column_text(first + 0);
  r.job_id = st.column_int64(first + 1);
  r.status = st.column_text(first + 2);
  r.reason = st.column_text(first + 3);
  r.lesion_volume_ml = st.column_double(first + 4);
  r.lesion_count = static_cast<int>(st.column_int64(first + 5));
  r.model_id = st.column_text(first + 6);
  r.backend = st.column_text(first + 7);
  r.precision = st.column_text(first + 8);
  r.timings_json = st.column_text(first + 9);
  r.report_path = st.column_text(first + 10);
  r.finished_at_ms = st.column_int64(first + 11);
  r.energy_j = column_optional_double(st, first + 12);
  r.mean_power_mw = column_optional_double(st, first + 13);
  r.peak_power_mw = column_optional_double(st, first + 14);
  r.peak_temp_c = column_optional_double(st, first + 15);
  return r;
}

base::Status write_result(Database& db, const ResultRow& r) {
  SB_ASSIGN_OR_RETURN(Statement st,
                      db.prepare("INSERT OR REPLACE INTO results (study_uid, job_id, status, reason, lesion_volume_ml, "
                                 "lesion_count, model_id, backend, precision, timings_json, report_path, finished_at_ms, "
                                 "energy_j, mean_power_mw, peak_power_mw, peak_temp_c) "
                                 "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"));
  st.bind(1, r.study_uid).bind(2, r.job_id).bind(3, r.status).bind(4, r.reason).bind(5, r.lesion_volume_ml);
  st.bind(6, r.lesion_count).bind(7, r.model_id).bind(8, r.backend).bind(9, r.precision);
  st.bind(10, r.timings_json).bind(11, r.report_path).bind(12, r.finished_at_ms);
  bind_optional(st, 13, r.energy_j);
  bind_optional(st, 14, r.mean_power_mw);
  bind_optional(st, 15, r.peak_power_mw);
  bind_optional(st, 16, r.peak_temp_c);
  return st.run();
}

}  // namespace

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

base::Result<std::unique_ptr<Index>> Index::open(const std::string& db_path, const Options& options) {
  if (options.max_attempts < 1) return base::invalid_argument("max_attempts must be at least 1");
  SB_ASSIGN_OR_RETURN(std::unique_ptr<Database> db, Database::open(db_path, options.database));
  SB_RETURN_IF_ERROR(db->migrate(kMigrations));
  return std::unique_ptr<Index>(new Index(std::move(db), options));
}

base::Result<std::unique_ptr<Index>> Index::open_read_only(const std::string& db_path) {
  Options options;
  options.database.read_only = true;
  SB_ASSIGN_OR_RETURN(std::unique_ptr<Database> db, Database::open(db_path, options.database));
  SB_ASSIGN_OR_RETURN(int version, db->user_version());
  if (version != static_cast<int>(kMigrations.size())) {
    return base::failed_precondition("database " + db_path + " has schema version " + std::to_string(version) +
                                     ", this program reads version " + std::to_string(kMigrations.size()) +
                                     (version == 0 ? " (empty database: has the daemon ever started?)" : ""));
  }
  return std::unique_ptr<Index>(new Index(std::move(db), options));
}

base::Status Index::add_instance(const InstanceRecord& in) {
  std::lock_guard lock(mu_);
  SB_ASSIGN_OR_RETURN(Database::Transaction tx, db_->begin());
  {
    SB_ASSIGN_OR_RETURN(
        Statement st,
        db_->prepare("INSERT INTO studies (study_uid, patient_id, first_received_ms, last_received_ms, state) "
                     "VALUES (?1, ?2, ?3, ?3, 'received') ON CONFLICT(study_uid) DO UPDATE SET "
                     "first_received_ms = min(first_received_ms, excluded.first_received_ms), "
                     "last_received_ms = max(last_received_ms, excluded.last_received_ms), "
                     "patient_id = CASE WHEN patient_id = '' THEN excluded.patient_id ELSE patient_id END, "
                     "state = CASE WHEN state = 'running' THEN 'running' ELSE 'received' END"));
    st.bind(1, in.study_uid).bind(2, in.patient_id).bind(3, in.received_at_ms);
    SB_RETURN_IF_ERROR(st.run());
  }
  {
    // A queued job would process an incomplete study: drop it, the study is queued again
    // after the next quiet period.
    SB_ASSIGN_OR_RETURN(Statement st, db_->prepare("DELETE FROM jobs WHERE study_uid = ?1 AND state = 'queued'"));
    st.bind(1, in.study_uid);
    SB_RETURN_IF_ERROR(st.run());
  }
  {
    SB_ASSIGN_OR_RETURN(Statement st,
                        db_->prepare("INSERT OR REPLACE INTO instances (sop_instance_uid, sop_class_uid, study_uid, "
                                     "series_uid, path, size_bytes, received_at_ms, calling_ae) "
                                     "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"));
    st.bind(1, in.sop_instance_uid).bind(2, in.sop_class_uid).bind(3, in.study_uid).bind(4, in.series_uid);
    st.bind(5, in.path).bind(6, in.size_bytes).bind(7, in.received_at_ms).bind(8, in.calling_ae);
    SB_RETURN_IF_ERROR(st.run());
  }
  return tx.commit();
}

base::Result<std::vector<std::string>> Index::quiet_studies(int64_t cutoff_ms) {
  std::lock_guard lock(mu_);
  SB_ASSIGN_OR_RETURN(Statement st, db_->prepare("SELECT study_uid FROM studies WHERE state = 'received' AND "
                                                 "last_received_ms <= ?1 ORDER BY last_received_ms"));
  st.bind(1, cutoff_ms);
  std::vector<std::string> out;
  while (true) {
    SB_ASSIGN_OR_RETURN(bool row, st.step());
    if (!row) break;
    out.push_back(st.column_text(0));
  }
  return out;
}

base::Result<bool> Index::enqueue_study(const std::string& study_uid, int64_t now) {
  std::lock_guard lock(mu_);
  SB_ASSIGN_OR_RETURN(Database::Transaction tx, db_->begin());
  {
    SB_ASSIGN_OR_RETURN(Statement st, db_->prepare("UPDATE studies SET state = 'queued', attempts = 0 "
                                                   "WHERE study_uid = ?1 AND state = 'received'"));
    st.bind(1, study_uid);
    SB_RETURN_IF_ERROR(st.run());
    if (db_->changes() == 0) return false;
  }
  {
    SB_ASSIGN_OR_RETURN(Statement st, db_->prepare("INSERT INTO jobs (study_uid, state, created_ms, not_before_ms) "
                                                   "VALUES (?1, 'queued', ?2, 0)"));
    st.bind(1, study_uid).bind(2, now);
    SB_RETURN_IF_ERROR(st.run());
  }
  SB_RETURN_IF_ERROR(tx.commit());
  return true;
}

base::Result<std::optional<Job>> Index::claim_next_job(int64_t now) {
  std::lock_guard lock(mu_);
  SB_ASSIGN_OR_RETURN(Database::Transaction tx, db_->begin());
  Job job;
  {
    SB_ASSIGN_OR_RETURN(Statement st, db_->prepare("SELECT id, study_uid, attempts FROM jobs WHERE state = 'queued' "
                                                   "AND not_before_ms <= ?1 ORDER BY id LIMIT 1"));
    st.bind(1, now);
    SB_ASSIGN_OR_RETURN(bool row, st.step());
    if (!row) return std::optional<Job>();
    job.id = st.column_int64(0);
    job.study_uid = st.column_text(1);
    job.attempts = static_cast<int>(st.column_int64(2)) + 1;
    job.started_ms = now;
  }
  {
    SB_ASSIGN_OR_RETURN(Statement st, db_->prepare("UPDATE jobs SET state = 'running', attempts = ?2, started_ms = ?3 "
                                                   "WHERE id = ?1"));
    st.bind(1, job.id).bind(2, job.attempts).bind(3, now);
    SB_RETURN_IF_ERROR(st.run());
  }
  {
    SB_ASSIGN_OR_RETURN(Statement st,
                        db_->prepare("UPDATE studies SET state = 'running', attempts = ?2 WHERE study_uid = ?1"));
    st.bind(1, job.study_uid).bind(2, job.attempts);
    SB_RETURN_IF_ERROR(st.run());
  }
  SB_RETURN_IF_ERROR(tx.commit());
  return std::optional<Job>(job);
}

base::Status Index::complete_job(const Job& job, ResultRow result) {
  if (result.status != "done" && result.status != "failed") {
    return base::invalid_argument("result status must be 'done' or 'failed', not '" + result.status + "'");
  }
  std::lock_guard lock(mu_);
  result.study_uid = job.study_uid;
  result.job_id = job.id;
  SB_ASSIGN_OR_RETURN(Database::Transaction tx, db_->begin());
  {
    SB_ASSIGN_OR_RETURN(Statement st, db_->prepare("UPDATE jobs SET state = ?2, finished_ms = ?3, last_error = ?4 "
                                                   "WHERE id = ?1 AND state = 'running'"));
    st.bind(1, job.id).bind(2, result.status).bind(3, result.finished_at_ms).bind(4, result.reason);
    SB_RETURN_IF_ERROR(st.run());
    if (db_->changes() == 0) {
      return base::failed_precondition("job " + std::to_string(job.id) + " for study " + job.study_uid +
                                       " is not running (already finished or re-queued)");
    }
  }
  SB_RETURN_IF_ERROR(write_result(*db_, result));
  {
    // Instances that arrived after the job started were not processed: go around again.
    SB_ASSIGN_OR_RETURN(Statement st,
                        db_->prepare("UPDATE studies SET state = CASE WHEN last_received_ms > ?3 THEN 'received' "
                                     "ELSE ?2 END WHERE study_uid = ?1"));
    st.bind(1, job.study_uid).bind(2, result.status).bind(3, job.started_ms);
    SB_RETURN_IF_ERROR(st.run());
  }
  return tx.commit();
}

base::Status Index::fail_job_locked(const Job& job, const std::string& reason, int64_t now) {
  {
    SB_ASSIGN_OR_RETURN(Statement st, db_->prepare("UPDATE jobs SET state = 'failed', finished_ms = ?2, "
                                                   "last_error = ?3 WHERE id = ?1"));
    st.bind(1, job.id).bind(2, now).bind(3, reason);
    SB_RETURN_IF_ERROR(st.run());
  }
  ResultRow r;
  r.study_uid = job.study_uid;
  r.job_id = job.id;
  r.status = "failed";
  r.reason = reason;
  r.finished_at_ms = now;
  SB_RETURN_IF_ERROR(write_result(*db_, r));
  SB_ASSIGN_OR_RETURN(Statement st,
                      db_->prepare("UPDATE studies SET state = CASE WHEN last_received_ms > ?2 THEN 'received' "
                                   "ELSE 'failed' END WHERE study_uid = ?1"));
  st.bind(1, job.study_uid).bind(2, job.started_ms);
  return st.run();
}

base::Result<bool> Index::fail_attempt(const Job& job, const std::string& reason, int64_t now) {
  std::lock_guard lock(mu_);
  SB_ASSIGN_OR_RETURN(Database::Transaction tx, db_->begin());
  bool requeued = job.attempts < options_.max_attempts;
  if (requeued) {
    {
      SB_ASSIGN_OR_RETURN(Statement st, db_->prepare("UPDATE jobs SET state = 'queued', not_before_ms = ?2, "
                                                     "last_error = ?3 WHERE id = ?1 AND state = 'running'"));
      st.bind(1, job.id).bind(2, now + options_.retry_delay_ms).bind(3, reason);
      SB_RETURN_IF_ERROR(st.run());
      if (db_->changes() == 0) {
        return base::failed_precondition("job " + std::to_string(job.id) + " is not running");
      }
    }
    SB_ASSIGN_OR_RETURN(Statement st, db_->prepare("UPDATE studies SET state = 'queued' WHERE study_uid = ?1"));
    st.bind(1, job.study_uid);
    SB_RETURN_IF_ERROR(st.run());
  } else {
    SB_RETURN_IF_ERROR(fail_job_locked(job,
                                       "gave up after " + std::to_string(job.attempts) + " attempts; last error: " + reason,
                                       now));
  }
  SB_RETURN_IF_ERROR(tx.commit());
  return requeued;
}

base::Result<int> Index::requeue_interrupted_jobs(int64_t now) {
  std::lock_guard lock(mu_);
  SB_ASSIGN_OR_RETURN(Database::Transaction tx, db_->begin());
  std::vector<Job> running;
  std::vector<std::string> previous_errors;
  {
    SB_ASSIGN_OR_RETURN(Statement st, db_->prepare("SELECT id, study_uid, attempts, started_ms, last_error FROM jobs "
                                                   "WHERE state = 'running' ORDER BY id"));
    while (true) {
      SB_ASSIGN_OR_RETURN(bool row, st.step());
      if (!row) break;
      running.push_back(Job{st.column_int64(0), st.column_text(1), static_cast<int>(st.column_int64(2)),
                            st.column_int64(3)});
      previous_errors.push_back(st.column_text(4));
    }
  }
  int requeued = 0;
  for (size_t i = 0; i < running.size(); ++i) {
    const Job& job = running[i];
    const std::string reason = "interrupted while processing (crash, restart or power loss)";
    if (job.attempts >= options_.max_attempts) {
      std::string full = "gave up after " + std::to_string(job.attempts) + " attempts; last attempt " + reason;
      if (!previous_errors[i].empty()) full += "; earlier error: " + previous_errors[i];
      SB_RETURN_IF_ERROR(fail_job_locked(job, full, now));
      continue;
    }
    {
      SB_ASSIGN_OR_RETURN(Statement st, db_->prepare("UPDATE jobs SET state = 'queued', not_before_ms = 0, "
                                                     "last_error = ?2 WHERE id = ?1"));
      st.bind(1, job.id).bind(2, reason);
      SB_RETURN_IF_ERROR(st.run());
    }
    SB_ASSIGN_OR_RETURN(Statement st, db_->prepare("UPDATE studies SET state = 'queued' WHERE study_uid = ?1"));
    st.bind(1, job.study_uid);
    SB_RETURN_IF_ERROR(st.run());
    ++requeued;
  }
  SB_RETURN_IF_ERROR(tx.commit());
  return requeued;
}

base::Result<std::optional<StudyRow>> Index::study(const std::string& study_uid) {
  std::lock_guard lock(mu_);
  SB_ASSIGN_OR_RETURN(Statement st, db_->prepare(std::string(kSelectStudy) + "WHERE s.study_uid = ?1"));
  st.bind(1, study_uid);
  SB_ASSIGN_OR_RETURN(bool row, st.step());
  if (!row) return std::optional<StudyRow>();
  return std::optional<StudyRow>(read_study(st));
}

base::Result<std::optional<ResultRow>> Index::result_locked(const std::string& study_uid) {
  SB_ASSIGN_OR_RETURN(Statement st, db_->prepare(std::string(kSelectResult) + "WHERE study_uid = ?1"));
  st.bind(1, study_uid);
  SB_ASSIGN_OR_RETURN(bool row, st.step());
  if (!row) return std::optional<ResultRow>();
  return std::optional<ResultRow>(read_result(st));
}

base::Result<std::optional<ResultRow>> Index::result(const std::string& study_uid) {
  std::lock_guard lock(mu_);
  return result_locked(study_uid);
}

base::Result<std::vector<InstanceRecord>> Index::instances_of_study(const std::string& study_uid) {
  std::lock_guard lock(mu_);
  SB_ASSIGN_OR_RETURN(Statement st,
                      db_->prepare("SELECT i.sop_instance_uid, i.sop_class_uid, i.study_uid, i.series_uid, s.patient_id, "
                                   "i.path, i.size_bytes, i.received_at_ms, i.calling_ae FROM instances i "
                                   "JOIN studies s ON s.study_uid = i.study_uid WHERE i.study_uid = ?1 "
                                   "ORDER BY i.series_uid, i.received_at_ms, i.sop_instance_uid"));
  st.bind(1, study_uid);
  std::vector<InstanceRecord> out;
  while (true) {
    SB_ASSIGN_OR_RETURN(bool row, st.step());
    if (!row) break;
    InstanceRecord r;
    r.sop_instance_uid = st.column_text(0);
    r.sop_class_uid = st.column_text(1);
    r.study_uid = st.column_text(2);
    r.series_uid = st.column_text(3);
    r.patient_id = st.column_text(4);
    r.path = st.column_text(5);
    r.size_bytes = st.column_int64(6);
    r.received_at_ms = st.column_int64(7);
    r.calling_ae = st.column_text(8);
    out.push_back(std::move(r));
  }
  return out;
}

base::Result<std::map<std::string, int64_t>> Index::study_counts() {
  std::lock_guard lock(mu_);
  std::map<std::string, int64_t> counts;
  for (const char* s : kStudyStates) counts[s] = 0;
  SB_ASSIGN_OR_RETURN(Statement st, db_->prepare("SELECT state, COUNT(*) FROM studies GROUP BY state"));
  while (true) {
    SB_ASSIGN_OR_RETURN(bool row, st.step());
    if (!row) break;
    counts[st.column_text(0)] = st.column_int64(1);
  }
  return counts;
}

base::Result<std::map<std::string, int64_t>> Index::job_counts() {
  std::lock_guard lock(mu_);
  std::map<std::string, int64_t> counts;
  for (const char* s : kJobStates) counts[s] = 0;
  SB_ASSIGN_OR_RETURN(Statement st, db_->prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state"));
  while (true) {
    SB_ASSIGN_OR_RETURN(bool row, st.step());
    if (!row) break;
    counts[st.column_text(0)] = st.column_int64(1);
  }
  return counts;
}

base::Result<std::vector<StudySummary>> Index::recent_studies(int limit) {
  std::lock_guard lock(mu_);
  std::vector<StudySummary> out;
  {
    SB_ASSIGN_OR_RETURN(Statement st,
                        db_->prepare(std::string(kSelectStudy) + "ORDER BY s.last_received_ms DESC, s.rowid DESC LIMIT ?1"));
    st.bind(1, limit);
    while (true) {
      SB_ASSIGN_OR_RETURN(bool row, st.step());
      if (!row) break;
      out.push_back(StudySummary{read_study(st), std::nullopt});
    }
  }
  for (auto& s : out) {
    SB_ASSIGN_OR_RETURN(s.result, result_locked(s.study.study_uid));
  }
  return out;
}

base::Result<std::vector<ResultRow>> Index::recent_failures(int limit) {
  std::lock_guard lock(mu_);
  SB_ASSIGN_OR_RETURN(Statement st, db_->prepare(std::string(kSelectResult) +
                                                 "WHERE status = 'failed' ORDER BY finished_at_ms DESC LIMIT ?1"));
  st.bind(1, limit);
  std::vector<ResultRow> out;
  while (true) {
    SB_ASSIGN_OR_RETURN(bool row, st.step());
    if (!row) break;
    out.push_back(read_result(st));
  }
  return out;
}

}  // namespace storage
