// Error values used across every module: Status (a code and a message) and Result<T>
// (a value or a Status). Library errors (OFCondition, SQLite codes, oneDNN exceptions) are
// converted into these at the adapter that calls the library. Modelled on absl::Status.
#pragma once

#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace base {

/// Canonical error codes (the subset of absl's that this project uses).
enum class Code {
  kOk = 0,
  kCancelled,
  kInvalidArgument,     // the caller's input is wrong (bad file, bad flag, bad DICOM)
  kNotFound,            // a named file, series, row or key does not exist
  kAlreadyExists,
  kFailedPrecondition,  // the system is not in a state to do this (e.g. engine not loaded)
  kOutOfRange,
  kUnimplemented,       // valid input that this build does not support (e.g. an ONNX operator)
  kInternal,            // a bug or a library failure we cannot attribute to the input
  kUnavailable,         // transient: retry later (peer down, database busy)
  kDataLoss,            // corrupt or truncated stored data
  kResourceExhausted,   // disk full, too large, too many
  kDeadlineExceeded,
  kPermissionDenied,
};

/// Stable lower-case name of a code ("invalid_argument"), used in logs and report.json.
std::string_view code_name(Code code);

/// A cheap error value. Default-constructed means OK.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  /// "invalid_argument: <message>" or "ok".
  std::string to_string() const;
  /// Returns a copy whose message is "<context>: <message>"; OK stays OK.
  Status with_context(std::string_view context) const;

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

inline Status ok_status() { return Status(); }
inline Status invalid_argument(std::string m) { return {Code::kInvalidArgument, std::move(m)}; }
inline Status not_found(std::string m) { return {Code::kNotFound, std::move(m)}; }
inline Status failed_precondition(std::string m) { return {Code::kFailedPrecondition, std::move(m)}; }
inline Status unimplemented(std::string m) { return {Code::kUnimplemented, std::move(m)}; }
inline Status internal_error(std::string m) { return {Code::kInternal, std::move(m)}; }
inline Status unavailable(std::string m) { return {Code::kUnavailable, std::move(m)}; }
inline Status data_loss(std::string m) { return {Code::kDataLoss, std::move(m)}; }
inline Status resource_exhausted(std::string m) { return {Code::kResourceExhausted, std::move(m)}; }
inline Status out_of_range(std::string m) { return {Code::kOutOfRange, std::move(m)}; }
inline Status already_exists(std::string m) { return {Code::kAlreadyExists, std::move(m)}; }
inline Status permission_denied(std::string m) { return {Code::kPermissionDenied, std::move(m)}; }

/// A value of type T or an error Status (C++20 on g++ 12 has no std::expected).
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT: implicit by design
    if (std::get<Status>(v_).ok()) {
      v_ = Status(Code::kInternal, "Result constructed from an OK status without a value");
    }
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  /// The error; OK when a value is held.
  Status status() const { return ok() ? Status() : std::get<Status>(v_); }

  /// The value. Calling this on an error aborts: check ok() first.
  T& value() & { check(); return std::get<T>(v_); }
  const T& value() const& { check(); return std::get<T>(v_); }
  T&& value() && { check(); return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  void check() const {
    if (!ok()) std::abort();
  }
  std::variant<T, Status> v_;
};

}  // namespace base

#define SB_CONCAT_INNER(a, b) a##b
#define SB_CONCAT(a, b) SB_CONCAT_INNER(a, b)

/// Returns the Status of `expr` from the enclosing function when it is not OK.
#define SB_RETURN_IF_ERROR(expr)                     \
  do {                                               \
    ::base::Status sb_status_ = (expr);              \
    if (!sb_status_.ok()) return sb_status_;         \
  } while (0)

/// `SB_ASSIGN_OR_RETURN(auto x, f());` binds the value of a Result or returns its error.
#define SB_ASSIGN_OR_RETURN(lhs, expr) \
  SB_ASSIGN_OR_RETURN_IMPL(SB_CONCAT(sb_result_, __LINE__), lhs, expr)
#define SB_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return tmp.status();            \
  lhs = std::move(tmp).value()
