#include "storage/spool.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <vector>

namespace storage {
namespace fs = std::filesystem;
namespace {

base::Status errno_status(int err, const std::string& what) {
  std::string message = what + ": " + std::strerror(err);
  switch (err) {
    case ENOSPC:
    case EDQUOT:
      return base::resource_exhausted(message + " (disk full)");
    case EACCES:
    case EPERM:
    case EROFS:
      return base::permission_denied(message);
    case ENOENT:
      return base::not_found(message);
    default:
      return base::internal_error(message);
  }
}

base::Status fsync_path(const std::string& path, bool directory) {
  int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return errno_status(errno, "cannot open " + path + " for fsync");
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return errno_status(err, "fsync " + path);
  return base::Status();
}

std::string parent_of(const std::string& path) {
  fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

}  // namespace

bool is_safe_uid(std::string_view uid) {
  if (uid.empty() || uid.size() > 64) return false;
  bool component_empty = true;
  for (char c : uid) {
    if (c == '.') {
      if (component_empty) return false;  // leading dot or ".."
      component_empty = true;
    } else if (c >= '0' && c <= '9') {
      component_empty = false;
    } else {
      return false;
    }
  }
  return !component_empty;  // no trailing dot
}

base::Status create_directories_durable(const std::string& dir) {
  fs::path target = fs::path(dir).lexically_normal();
  if (target.empty()) return base::Status();
  // Walk up to the first existing ancestor, then create downwards, fsyncing each parent.
  std::vector<fs::path> missing;
  std::error_code ec;
  for (fs::path p = target; !p.empty() && !fs::exists(p, ec); p = p.parent_path()) {
    missing.push_back(p);
    if (p == p.parent_path()) break;
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    if (::mkdir(it->c_str(), 0755) != 0 && errno != EEXIST) {
      return errno_status(errno, "cannot create directory " + it->string());
    }
    SB_RETURN_IF_ERROR(fsync_path(parent_of(it->string()), /*directory=*/true));
  }
  if (!fs::is_directory(target, ec)) return base::invalid_argument(target.string() + " exists but is not a directory");
  return base::Status();
}

base::Status write_file_atomic(const std::string& path,
                               const std::function<base::Status(const std::string& temp_path)>& writer) {
  static std::atomic<uint64_t> counter{0};
  const std::string dir = parent_of(path);
  SB_RETURN_IF_ERROR(create_directories_durable(dir));
  const std::string temp = dir + "/" + std::string(kTempPrefix) + fs::path(path).filename().string() + "." +
                           std::to_string(::getpid()) + "." + std::to_string(counter.fetch_add(1));
  auto fail = [&](base::Status status) {
    ::unlink(temp.c_str());
    return status;
  };
  base::Status written = writer(temp);
  if (!written.ok()) return fail(written.with_context("writing " + path));
  if (!fs::exists(temp)) return fail(base::internal_error("writer produced no file for " + path));
  base::Status synced = fsync_path(temp, /*directory=*/false);
  if (!synced.ok()) return fail(synced);
  if (::rename(temp.c_str(), path.c_str()) != 0) return fail(errno_status(errno, "cannot rename into " + path));
  return fsync_path(dir, /*directory=*/true);
}

base::Status write_file_atomic(const std::string& path, std::span<const uint8_t> bytes) {
  return write_file_atomic(path, [&](const std::string& temp) -> base::Status {
    int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return errno_status(errno, "cannot create " + temp);
    size_t done = 0;
    while (done < bytes.size()) {
      ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        int err = errno;
        ::close(fd);
        return errno_status(err, "cannot write " + temp);
      }
      done += static_cast<size_t>(n);
    }
    if (::close(fd) != 0) return errno_status(errno, "cannot close " + temp);
    return base::Status();
  });
}

base::Status sync_tree(const std::string& dir) {
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, ec), end;
  if (ec) return base::not_found("cannot list " + dir + ": " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) return base::internal_error("cannot list " + dir + ": " + ec.message());
    if (it->is_regular_file(ec)) {
      SB_RETURN_IF_ERROR(fsync_path(it->path().string(), false));
    } else if (it->is_directory(ec)) {
      SB_RETURN_IF_ERROR(fsync_path(it->path().string(), true));
    }
  }
  SB_RETURN_IF_ERROR(fsync_path(dir, true));
  return fsync_path(parent_of(fs::path(dir).lexically_normal().string()), true);
}

base::Result<uint64_t> free_bytes(const std::string& path) {
  struct statvfs st {};
  if (::statvfs(path.c_str(), &st) != 0) return errno_status(errno, "statvfs " + path);
  return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
}

base::Result<std::string> Spool::study_dir(std::string_view study_uid) const {
  if (!is_safe_uid(study_uid)) {
    return base::invalid_argument("Study Instance UID '" + std::string(study_uid) +
                                  "' is not a valid UID (digits and dots, at most 64 characters)");
  }
  return root_ + "/" + std::string(study_uid);
}

base::Result<std::string> Spool::instance_path(std::string_view study_uid, std::string_view series_uid,
                                               std::string_view sop_instance_uid) const {
  SB_ASSIGN_OR_RETURN(std::string study, study_dir(study_uid));
  if (!is_safe_uid(series_uid)) {
    return base::invalid_argument("Series Instance UID '" + std::string(series_uid) +
                                  "' is not a valid UID (digits and dots, at most 64 characters)");
  }
  if (!is_safe_uid(sop_instance_uid)) {
    return base::invalid_argument("SOP Instance UID '" + std::string(sop_instance_uid) +
                                  "' is not a valid UID (digits and dots, at most 64 characters)");
  }
  return study + "/" + std::string(series_uid) + "/" + std::string(sop_instance_uid) + ".dcm";
}

base::Result<std::string> Spool::store(std::string_view study_uid, std::string_view series_uid,
                                       std::string_view sop_instance_uid,
                                       const std::function<base::Status(const std::string& temp_path)>& writer) const {
  SB_ASSIGN_OR_RETURN(std::string path, instance_path(study_uid, series_uid, sop_instance_uid));
  SB_RETURN_IF_ERROR(write_file_atomic(path, writer));
  return path;
}

base::Result<int> Spool::remove_stale_temp_files() const {
  std::error_code ec;
  if (!fs::exists(root_, ec)) return 0;
  int removed = 0;
  std::vector<fs::path> stale;
  fs::recursive_directory_iterator it(root_, ec), end;
  if (ec) return base::internal_error("cannot list " + root_ + ": " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) return base::internal_error("cannot list " + root_ + ": " + ec.message());
    if (it->is_regular_file(ec) && it->path().filename().string().rfind(kTempPrefix, 0) == 0) {
      stale.push_back(it->path());
    }
  }
  for (const auto& p : stale) {
    if (fs::remove(p, ec)) ++removed;
  }
  return removed;
}

}  // namespace storage
