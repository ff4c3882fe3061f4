// Retention: keeps the data under the spool and results directories within a quota by removing
// the oldest *finished* studies (done or failed, and not vetoed by the caller, e.g. because
// results are still waiting in the outbox), never one that is received, queued or running.
// Removal is crash-safe: a journal row is committed first, then files go, then rows go; a crash
// in between is finished by the next call.
//
// Durability of the tables in `<data_dir>/strokebox.db` (one file, journal_mode=WAL, every
// connection synchronous=FULL, so each COMMIT fsyncs the WAL before returning):
//   studies, instances, jobs, results   storage::Index   WAL + FULL (acknowledged instances and
//                                       queued/running jobs must survive a power cut)
//   outbox, outbox_job,                 firmware::Outbox WAL + FULL (a result not yet sent must
//   outbox_destination                                   not be forgotten)
//   retention_removals                  this file        WAL + FULL (a started removal must be
//                                                        finished, not half-forgotten)
// `<data_dir>/telemetry.db` (samples, daemon_state) is loss-tolerant: WAL + NORMAL. SQLite's
// synchronous setting is per connection, so per-table durability means per-file. See
// docs/durability.md.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "base/status.h"

namespace storage {

/// Veto of the caller: true when the finished study `study_uid` may be removed now (nothing
/// pending in the outbox, no association currently sending instances of it, ...).
using CanRemove = std::function<bool(const std::string& study_uid)>;

struct RetentionOptions {
  std::string database_path;  // the index, `<data_dir>/strokebox.db` (firmware::Config::database_path())
  std::string spool_dir;      // `<data_dir>/spool`: `<spool>/<study_uid>/...`
  std::string results_dir;    // `<data_dir>/results`: `<results>/<study_uid>/...`
  /// Bytes the spool and results directories together may occupy (allocated blocks, like du).
  /// 0 = no quota: the call only finishes removals interrupted by a crash.
  uint64_t quota_bytes = 0;
  CanRemove can_remove;  // empty: every finished study may be removed

  /// Tests only: stop (with kAborted-like kUnavailable) right after this many stages of the
  /// first removal, to simulate a crash: 1 = after the journal row, 2 = after the files.
  int crash_after_stage_for_tests = 0;
};

struct RetentionResult {
  uint64_t bytes_before = 0;           // spool + results before the call
  uint64_t bytes_after = 0;            // spool + results after the call
  int resumed = 0;                     // removals left by an earlier (crashed) call, finished now
  int vetoed = 0;                      // finished studies kept because can_remove said no
  std::vector<std::string> removed;    // study UIDs removed by this call, oldest first
  bool within_quota = true;            // bytes_after <= quota (or no quota)
};

/// Removes the oldest finished studies (state done or failed, ordered by their last received
/// instance, then UID) until spool + results fit `quota_bytes`; first finishes any removal an
/// earlier call left half-done. A study is marked in the table `retention_removals` (created
/// on first use in the index file), then `<spool>/<uid>` and `<results>/<uid>` are deleted (and
/// their parent directories fsynced), then its rows (instances, jobs, results, studies) and the
/// mark are deleted in one transaction. If instances of the study arrived after it was marked,
/// only the older instances (files and rows) are removed and the study stays, to be processed
/// again. `within_quota` is false when only unfinished or vetoed studies are left.
/// Errors: the database's (kUnavailable when locked), kInternal naming a path that cannot be
/// measured or removed.
base::Result<RetentionResult> enforce_quota(const RetentionOptions& options);

/// Convenience form of enforce_quota(RetentionOptions).
base::Result<RetentionResult> enforce_quota(const std::string& database_path, const std::string& spool_dir,
                                            const std::string& results_dir, uint64_t quota_bytes,
                                            const CanRemove& can_remove = {});

/// Bytes available to an unprivileged user on the file system holding `path` (statvfs
/// f_bavail * f_frsize). Errors: kNotFound / kInternal naming the path.
base::Result<uint64_t> disk_free_bytes(const std::string& path);

/// Allocated bytes (st_blocks * 512, like `du`) of the regular files below `path` (0 when it
/// does not exist). Symbolic links are not followed. Errors: kInternal naming the path.
base::Result<uint64_t> disk_usage_bytes(const std::string& path);

}  // namespace storage
