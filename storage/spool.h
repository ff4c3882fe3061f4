// The spool: received DICOM instances as files, laid out as
// `<root>/<study_uid>/<series_uid>/<sop_instance_uid>.dcm`, written atomically (temp file in
// the same directory, fsync, rename, fsync the directory), so a file that exists is complete
// even after a power cut. UIDs are validated before they become path components.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "base/status.h"

namespace storage {

/// True when `uid` is safe as a path component and a well-formed DICOM UID (PS3.5 9.1):
/// 1..64 characters, digits and dots only, no empty component (so never "." or "..").
bool is_safe_uid(std::string_view uid);

/// Writes a file atomically: `writer` fills a temp file (its path is passed in) in the same
/// directory as `path`; the temp file is fsynced, renamed over `path`, and the directory is
/// fsynced. Missing parent directories are created (and their parents fsynced). On any error
/// the temp file is removed and `path` is untouched. Errors: the writer's, or
/// kResourceExhausted (disk full), kPermissionDenied, kInternal (other I/O) naming the path.
base::Status write_file_atomic(const std::string& path,
                               const std::function<base::Status(const std::string& temp_path)>& writer);

/// Same, with the bytes given.
base::Status write_file_atomic(const std::string& path, std::span<const uint8_t> bytes);
inline base::Status write_file_atomic(const std::string& path, std::string_view text) {
  return write_file_atomic(path, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

/// Creates `dir` and any missing parents, fsyncing each parent whose entries changed.
base::Status create_directories_durable(const std::string& dir);

/// fsyncs every regular file below `dir` and every directory (results written by other
/// code, made durable before the database records them). Errors name the failing path.
base::Status sync_tree(const std::string& dir);

/// Bytes available to an unprivileged user on the file system holding `path`.
base::Result<uint64_t> free_bytes(const std::string& path);

/// Temp files left by write_file_atomic start with this prefix (and are never *.dcm).
inline constexpr std::string_view kTempPrefix = ".tmp-";

class Spool {
 public:
  /// `root` is the spool directory (`<data_dir>/spool`); created on first write.
  explicit Spool(std::string root) : root_(std::move(root)) {}
  const std::string& root() const { return root_; }

  /// `<root>/<study_uid>`. Errors: kInvalidArgument for an unsafe UID.
  base::Result<std::string> study_dir(std::string_view study_uid) const;
  /// `<root>/<study>/<series>/<sop>.dcm`. Errors: kInvalidArgument naming the unsafe UID.
  base::Result<std::string> instance_path(std::string_view study_uid, std::string_view series_uid,
                                          std::string_view sop_instance_uid) const;

  /// Stores one instance atomically (see write_file_atomic); an existing file of the same
  /// SOP instance is replaced. Returns the final path.
  base::Result<std::string> store(std::string_view study_uid, std::string_view series_uid,
                                  std::string_view sop_instance_uid,
                                  const std::function<base::Status(const std::string& temp_path)>& writer) const;

  /// Removes temp files left by an interrupted write (call at start-up, before receiving).
  /// Returns how many were removed.
  base::Result<int> remove_stale_temp_files() const;

 private:
  std::string root_;
};

}  // namespace storage
