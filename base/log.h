// Minimal leveled logging to stderr (journald captures it under systemd).
// Usage: SB_LOG(kInfo) << "stored " << n << " instances";
#pragma once

#include <sstream>
#include <string_view>

namespace base {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

/// Messages below this level are dropped. Default kInfo; thread-safe to read.
void set_log_level(LogLevel level);
LogLevel log_level();

/// One log line; written atomically (one write(2)) when destroyed.
class LogLine {
 public:
  LogLine(LogLevel level, std::string_view file, int line);
  ~LogLine();
  template <typename T>
  LogLine& operator<<(const T& v) {
    stream_ << v;
    return *this;
  }

 private:
  LogLevel level_;
  std::ostringstream stream_;
};

/// Makes a whole log statement one void expression, so that SB_LOG is safe as the body of an
/// unbraced if with an else (`&` binds looser than `<<`).
struct LogVoidify {
  void operator&(const LogLine&) {}
};

}  // namespace base

// One expression, not an if/else: `if (x) SB_LOG(kInfo) << "a"; else ...` keeps its else.
#define SB_LOG(level)                                           \
  (::base::LogLevel::level < ::base::log_level())               \
      ? (void)0                                                 \
      : ::base::LogVoidify() & ::base::LogLine(::base::LogLevel::level, __FILE__, __LINE__)
