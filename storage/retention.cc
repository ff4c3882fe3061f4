#include "storage/retention.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>

#include "base/log.h"
#include "storage/database.h"
#include "storage/index.h"
#include "storage/spool.h"

namespace storage {
namespace {

namespace fs = std::filesystem;

// The removal journal lives in the index file, beside the tables it cleans up. One row per
// study whose removal has started; `last_received_ms` is the study's value when it was marked,
// so instances that arrive afterwards are recognised and kept.
constexpr std::string_view kSchema = R"sql(
CREATE TABLE IF NOT EXISTS retention_removals (
  study_uid         TEXT PRIMARY KEY,
  last_received_ms  INTEGER NOT NULL,
  marked_ms         INTEGER NOT NULL
);
)sql";

struct Mark {
  std::string study_uid;
  int64_t last_received_ms = 0;
};

base::Status path_error(int err, const std::string& what) {
  return base::internal_error(what + ": " + std::strerror(err));
}

// fsyncs a directory so that the removal of its entries survives a power cut.
base::Status fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return base::Status();
    return path_error(errno, "opening directory " + dir);
  }
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return path_error(err, "fsync of directory " + dir);
  return base::Status();
}

base::Status remove_tree(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) return base::internal_error("removing " + path + ": " + ec.message());
  return base::Status();
}

base::Result<std::vector<Mark>> pending_marks(Database& db) {
  SB_ASSIGN_OR_RETURN(Statement st, db.prepare("SELECT study_uid, last_received_ms FROM retention_removals "
                                               "ORDER BY marked_ms, study_uid"));
  std::vector<Mark> out;
  while (true) {
    SB_ASSIGN_OR_RETURN(bool row, st.step());
    if (!row) break;
    out.push_back(Mark{st.column_text(0), st.column_int64(1)});
  }
  return out;
}

// Finished studies not yet marked, oldest first.
base::Result<std::vector<Mark>> finished_studies(Database& db) {
  SB_ASSIGN_OR_RETURN(Statement st,
                      db.prepare("SELECT study_uid, last_received_ms FROM studies WHERE state IN ('done', 'failed') "
                                 "AND study_uid NOT IN (SELECT study_uid FROM retention_removals) "
                                 "ORDER BY last_received_ms, study_uid"));
  std::vector<Mark> out;
  while (true) {
    SB_ASSIGN_OR_RETURN(bool row, st.step());
    if (!row) break;
    out.push_back(Mark{st.column_text(0), st.column_int64(1)});
  }
  return out;
}

// Step 1: the journal row, committed only while the study is still finished (checked under the
// write lock, so a study that just went back to `received` is never marked).
base::Result<bool> mark(Database& db, const Mark& m) {
  SB_ASSIGN_OR_RETURN(Database::Transaction tx, db.begin());
  SB_ASSIGN_OR_RETURN(Statement st,
                      db.prepare("INSERT OR IGNORE INTO retention_removals (study_uid, last_received_ms, marked_ms) "
                                 "SELECT study_uid, last_received_ms, ?2 FROM studies WHERE study_uid = ?1 "
                                 "AND state IN ('done', 'failed')"));
  st.bind(1, m.study_uid).bind(2, now_ms());
  SB_RETURN_IF_ERROR(st.run());
  if (db.changes() == 0) return false;
  SB_RETURN_IF_ERROR(tx.commit());
  return true;
}

// True when the study is unchanged since it was marked (no instance arrived afterwards).
base::Result<bool> unchanged_since_mark(Database& db, const Mark& m) {
  SB_ASSIGN_OR_RETURN(Statement st, db.prepare("SELECT last_received_ms, state FROM studies WHERE study_uid = ?1"));
  st.bind(1, m.study_uid);
  SB_ASSIGN_OR_RETURN(bool row, st.step());
  if (!row) return true;  // rows already gone: only the journal row is left
  return st.column_int64(0) <= m.last_received_ms;
}

base::Result<std::vector<std::string>> paths_received_up_to(Database& db, const Mark& m) {
  SB_ASSIGN_OR_RETURN(Statement st, db.prepare("SELECT path FROM instances WHERE study_uid = ?1 AND "
                                               "received_at_ms <= ?2"));
  st.bind(1, m.study_uid).bind(2, m.last_received_ms);
  std::vector<std::string> out;
  while (true) {
    SB_ASSIGN_OR_RETURN(bool row, st.step());
    if (!row) break;
    out.push_back(st.column_text(0));
  }
  return out;
}

// Steps 2 and 3 for one marked study. Idempotent: a crash anywhere leaves the journal row, and
// the next call runs this again.
base::Status finish_removal(Database& db, const Mark& m, const RetentionOptions& o, int crash_after_stage) {
  SB_ASSIGN_OR_RETURN(bool whole_study, unchanged_since_mark(db, m));
  // Never build a path from a UID that could climb out of the spool: such a study (impossible
  // through the DICOM node, which refuses it) loses its rows only.
  if (is_safe_uid(m.study_uid)) {
    // Step 2: files. Results are always derived data: a study that goes around again gets
    // them rewritten by its next job.
    SB_RETURN_IF_ERROR(remove_tree(o.results_dir + "/" + m.study_uid));
    if (whole_study) {
      SB_RETURN_IF_ERROR(remove_tree(o.spool_dir + "/" + m.study_uid));
    } else {
      SB_ASSIGN_OR_RETURN(std::vector<std::string> paths, paths_received_up_to(db, m));
      const std::string prefix = o.spool_dir + "/" + m.study_uid + "/";
      for (const std::string& p : paths) {
        if (p.compare(0, prefix.size(), prefix) != 0) continue;  // not under this study's spool folder
        if (::unlink(p.c_str()) != 0 && errno != ENOENT) return path_error(errno, "removing " + p);
      }
    }
    SB_RETURN_IF_ERROR(fsync_dir(o.results_dir));
    SB_RETURN_IF_ERROR(fsync_dir(o.spool_dir));
  }
  if (crash_after_stage == 2) return base::unavailable("retention stopped after deleting files (test crash point)");

  // Step 3: rows and the journal row, in one transaction. Re-checked under the write lock.
  SB_ASSIGN_OR_RETURN(Database::Transaction tx, db.begin());
  SB_ASSIGN_OR_RETURN(whole_study, unchanged_since_mark(db, m));
  if (whole_study) {
    for (const char* sql : {"DELETE FROM instances WHERE study_uid = ?1", "DELETE FROM jobs WHERE study_uid = ?1",
                            "DELETE FROM results WHERE study_uid = ?1", "DELETE FROM studies WHERE study_uid = ?1"}) {
      SB_ASSIGN_OR_RETURN(Statement st, db.prepare(sql));
      st.bind(1, m.study_uid);
      SB_RETURN_IF_ERROR(st.run());
    }
  } else {
    SB_ASSIGN_OR_RETURN(Statement st,
                        db.prepare("DELETE FROM instances WHERE study_uid = ?1 AND received_at_ms <= ?2"));
    st.bind(1, m.study_uid).bind(2, m.last_received_ms);
    SB_RETURN_IF_ERROR(st.run());
    SB_LOG(kInfo) << "retention: study " << m.study_uid
                  << " received new instances while being removed; kept them, removed the older ones";
  }
  {
    SB_ASSIGN_OR_RETURN(Statement st, db.prepare("DELETE FROM retention_removals WHERE study_uid = ?1"));
    st.bind(1, m.study_uid);
    SB_RETURN_IF_ERROR(st.run());
  }
  return tx.commit();
}

base::Result<uint64_t> usage(const RetentionOptions& o) {
  SB_ASSIGN_OR_RETURN(uint64_t spool, disk_usage_bytes(o.spool_dir));
  SB_ASSIGN_OR_RETURN(uint64_t results, disk_usage_bytes(o.results_dir));
  return spool + results;
}

base::Result<uint64_t> study_usage(const RetentionOptions& o, const std::string& uid) {
  if (!is_safe_uid(uid)) return uint64_t{0};
  SB_ASSIGN_OR_RETURN(uint64_t spool, disk_usage_bytes(o.spool_dir + "/" + uid));
  SB_ASSIGN_OR_RETURN(uint64_t results, disk_usage_bytes(o.results_dir + "/" + uid));
  return spool + results;
}

}  // namespace

base::Result<uint64_t> disk_free_bytes(const std::string& path) { return free_bytes(path); }

base::Result<uint64_t> disk_usage_bytes(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return uint64_t{0};
    return path_error(errno, "stat " + path);
  }
  if (!S_ISDIR(st.st_mode)) return S_ISREG(st.st_mode) ? static_cast<uint64_t>(st.st_blocks) * 512 : 0;
  uint64_t total = 0;
  std::error_code ec;
  fs::recursive_directory_iterator it(path, fs::directory_options::skip_permission_denied, ec), end;
  if (ec) return base::internal_error("listing " + path + ": " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) break;
    struct stat entry {};
    if (::lstat(it->path().c_str(), &entry) != 0) continue;  // removed meanwhile
    if (S_ISREG(entry.st_mode)) total += static_cast<uint64_t>(entry.st_blocks) * 512;
  }
  // A file or folder removed while listing is not an error: the total is an estimate anyway.
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return base::internal_error("listing " + path + ": " + ec.message());
  }
  return total;
}

base::Result<RetentionResult> enforce_quota(const RetentionOptions& o) {
  if (o.database_path.empty() || o.spool_dir.empty() || o.results_dir.empty()) {
    return base::invalid_argument("retention needs the database path, the spool and the results directory");
  }
  Database::Options db_options;
  db_options.synchronous = "FULL";
  SB_ASSIGN_OR_RETURN(std::unique_ptr<Database> db, Database::open(o.database_path, db_options));
  SB_RETURN_IF_ERROR(db->exec(kSchema));

  RetentionResult result;
  int stages_left = o.crash_after_stage_for_tests;

  // Removals an earlier call started (crash, power cut) are finished first.
  SB_ASSIGN_OR_RETURN(std::vector<Mark> pending, pending_marks(*db));
  for (const Mark& m : pending) {
    SB_RETURN_IF_ERROR(finish_removal(*db, m, o, 0).with_context("finishing the removal of study " + m.study_uid));
    ++result.resumed;
  }

  SB_ASSIGN_OR_RETURN(result.bytes_before, usage(o));
  uint64_t used = result.bytes_before;
  if (o.quota_bytes > 0 && used > o.quota_bytes) {
    SB_ASSIGN_OR_RETURN(std::vector<Mark> candidates, finished_studies(*db));
    for (const Mark& m : candidates) {
      if (used <= o.quota_bytes) break;
      if (o.can_remove && !o.can_remove(m.study_uid)) {
        ++result.vetoed;
        continue;
      }
      SB_ASSIGN_OR_RETURN(uint64_t size, study_usage(o, m.study_uid));
      SB_ASSIGN_OR_RETURN(bool marked, mark(*db, m));
      if (!marked) continue;  // went back to `received` meanwhile
      if (stages_left == 1) return base::unavailable("retention stopped after marking (test crash point)");
      SB_RETURN_IF_ERROR(finish_removal(*db, m, o, stages_left).with_context("removing study " + m.study_uid));
      stages_left = 0;
      result.removed.push_back(m.study_uid);
      used = used > size ? used - size : 0;
      SB_LOG(kInfo) << "retention: removed study " << m.study_uid << " (" << (size >> 10) << " KiB)";
    }
  }
  SB_ASSIGN_OR_RETURN(result.bytes_after, usage(o));
  result.within_quota = o.quota_bytes == 0 || result.bytes_after <= o.quota_bytes;
  if (!result.within_quota) {
    SB_LOG(kWarning) << "retention: " << (result.bytes_after >> 20) << " MiB in spool and results, quota "
                     << (o.quota_bytes >> 20) << " MiB; the rest is unprocessed or still to be sent ("
                     << result.vetoed << " finished study(ies) kept by the caller)";
  }
  return result;
}

base::Result<RetentionResult> enforce_quota(const std::string& database_path, const std::string& spool_dir,
                                            const std::string& results_dir, uint64_t quota_bytes,
                                            const CanRemove& can_remove) {
  RetentionOptions o;
  o.database_path = database_path;
  o.spool_dir = spool_dir;
  o.results_dir = results_dir;
  o.quota_bytes = quota_bytes;
  o.can_remove = can_remove;
  return enforce_quota(o);
}

}  // namespace storage
