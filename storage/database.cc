#include "storage/database.h"

#include <sqlite3.h>

#include <chrono>
#include <filesystem>
#include <thread>

namespace storage {
namespace {

using base::Code;
using base::Status;

// SQLite result code -> canonical code. Extended codes are reduced to their primary code
// except for the constraint kinds that mean "row exists".
Code code_for(int rc) {
  switch (rc) {
    case SQLITE_CONSTRAINT_PRIMARYKEY:
    case SQLITE_CONSTRAINT_UNIQUE:
      return Code::kAlreadyExists;
    default:
      break;
  }
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return Code::kUnavailable;
    case SQLITE_FULL:
    case SQLITE_NOMEM:
      return Code::kResourceExhausted;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return Code::kDataLoss;
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH:
      return Code::kPermissionDenied;
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE:
    case SQLITE_TOOBIG:
      return Code::kInvalidArgument;
    case SQLITE_CANTOPEN:
      return Code::kNotFound;
    default:
      return Code::kInternal;
  }
}

bool is_busy(int rc) { return (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED; }

// Back-off between retries once SQLite's own busy handler gave up: 20, 40, 80 ms ...
void busy_backoff(int attempt) {
  std::this_thread::sleep_for(std::chrono::milliseconds(20 << std::min(attempt, 6)));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Statement

Statement::Statement(sqlite3_stmt* stmt, sqlite3* db, bool* in_use, int busy_retries)
    : stmt_(stmt), db_(db), in_use_(in_use), busy_retries_(busy_retries) {}

Statement::Statement(Statement&& other) noexcept
    : stmt_(other.stmt_),
      db_(other.db_),
      in_use_(other.in_use_),
      busy_retries_(other.busy_retries_),
      bind_error_(other.bind_error_) {
  other.stmt_ = nullptr;
  other.in_use_ = nullptr;
}

Statement::~Statement() {
  if (!stmt_) return;
  if (in_use_) {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
    *in_use_ = false;
  } else {
    sqlite3_finalize(stmt_);
  }
}

void Statement::note_bind(int rc) {
  if (rc != SQLITE_OK && bind_error_ == 0) bind_error_ = rc;
}

Statement& Statement::bind(int index, int64_t value) {
  note_bind(sqlite3_bind_int64(stmt_, index, value));
  return *this;
}

Statement& Statement::bind(int index, double value) {
  note_bind(sqlite3_bind_double(stmt_, index, value));
  return *this;
}

Statement& Statement::bind(int index, std::string_view text) {
  note_bind(sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT));
  return *this;
}

Statement& Statement::bind_null(int index) {
  note_bind(sqlite3_bind_null(stmt_, index));
  return *this;
}

base::Result<bool> Statement::step() {
  if (bind_error_ != 0) {
    return Status(code_for(bind_error_), std::string("binding a parameter of \"") + sqlite3_sql(stmt_) +
                                             "\": " + sqlite3_errstr(bind_error_));
  }
  for (int attempt = 0;; ++attempt) {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    // An explicit transaction cannot be retried statement by statement (its earlier reads
    // may be stale), so only autocommit statements are retried here; BEGIN IMMEDIATE takes
    // the write lock first, which makes busy errors inside a transaction rare.
    if (is_busy(rc) && attempt < busy_retries_ && sqlite3_get_autocommit(db_)) {
      sqlite3_reset(stmt_);
      busy_backoff(attempt);
      continue;
    }
    const int extended = sqlite3_extended_errcode(db_);
    Status status(code_for(extended), std::string(sqlite3_errmsg(db_)) + " (in \"" + sqlite3_sql(stmt_) + "\")");
    sqlite3_reset(stmt_);
    return status;
  }
}

Status Statement::run() {
  while (true) {
    auto row = step();
    if (!row.ok()) return row.status();
    if (!*row) return Status();
  }
}

int64_t Statement::column_int64(int column) const { return sqlite3_column_int64(stmt_, column); }
double Statement::column_double(int column) const { return sqlite3_column_double(stmt_, column); }
bool Statement::column_is_null(int column) const { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }
std::optional<int64_t> Statement::column_optional_int64(int column) const {
  if (column_is_null(column)) return std::nullopt;
  return column_int64(column);
}
std::optional<double> Statement::column_optional_double(int column) const {
  if (column_is_null(column)) return std::nullopt;
  return column_double(column);
}
std::string Statement::column_text(int column) const {
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, column));
  if (!text) return {};
  return std::string(text, static_cast<size_t>(sqlite3_column_bytes(stmt_, column)));
}

// ---------------------------------------------------------------------------------------------
// Database

Database::Database(sqlite3* db, std::string path, Options options)
    : db_(db), path_(std::move(path)), options_(std::move(options)) {}

Database::~Database() {
  for (auto& [sql, cached] : cache_) sqlite3_finalize(cached.stmt);
  // sqlite3_close_v2 defers the close until borrowed statements are gone (none should be).
  sqlite3_close_v2(db_);
}

Status Database::error(int rc, std::string_view what) const {
  const char* message = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
  return Status(code_for(rc), std::string(what) + ": " + message);
}

base::Result<std::unique_ptr<Database>> Database::open(const std::string& path, const Options& options) {
  if (options.synchronous != "FULL" && options.synchronous != "NORMAL" && options.synchronous != "EXTRA") {
    return base::invalid_argument("synchronous must be FULL, NORMAL or EXTRA, not '" + options.synchronous + "'");
  }
  if (options.read_only && !std::filesystem::exists(path)) {
    return base::not_found("database " + path + " does not exist (has the daemon ever run with this data dir?)");
  }
  sqlite3* raw = nullptr;
  const int flags = (options.read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
                    SQLITE_OPEN_NOMUTEX;
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  if (rc != SQLITE_OK) {
    Status status(code_for(rc), "cannot open database " + path + ": " +
                                    (raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc)));
    sqlite3_close_v2(raw);
    return status;
  }
  sqlite3_extended_result_codes(raw, 1);
  sqlite3_busy_timeout(raw, options.busy_timeout_ms);
  std::unique_ptr<Database> db(new Database(raw, path, options));
  std::string pragmas = "PRAGMA foreign_keys=ON;";
  if (!options.read_only) {
    // journal_mode returns a row; run it through prepare so the result can be checked.
    auto wal = db->prepare("PRAGMA journal_mode=WAL");
    if (!wal.ok()) return wal.status().with_context("opening " + path);
    auto row = wal->step();
    if (!row.ok()) return row.status().with_context("enabling WAL on " + path);
    const std::string mode = *row ? wal->column_text(0) : "";
    if (mode != "wal") return base::internal_error("database " + path + " refused WAL mode (got '" + mode + "')");
    pragmas += "PRAGMA synchronous=" + options.synchronous + ";";
  }
  SB_RETURN_IF_ERROR(db->exec(pragmas).with_context("opening " + path));
  return db;
}

Status Database::exec(std::string_view sql) {
  const std::string text(sql);
  for (int attempt = 0;; ++attempt) {
    char* message = nullptr;
    int rc = sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &message);
    if (rc == SQLITE_OK) return Status();
    std::string what = message ? message : sqlite3_errstr(rc);
    sqlite3_free(message);
    if (is_busy(rc) && attempt < options_.busy_retries && sqlite3_get_autocommit(db_)) {
      busy_backoff(attempt);
      continue;
    }
    const std::string head = text.size() > 60 ? text.substr(0, 60) + "..." : text;
    return Status(code_for(sqlite3_extended_errcode(db_)), what + " (in \"" + head + "\")");
  }
}

base::Result<Statement> Database::prepare(std::string_view sql) {
  auto it = cache_.find(sql);
  if (it != cache_.end() && !it->second.in_use) {
    it->second.in_use = true;
    return Statement(it->second.stmt, db_, &it->second.in_use, options_.busy_retries);
  }
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                              it == cache_.end() ? SQLITE_PREPARE_PERSISTENT : 0, &stmt, nullptr);
  if (rc != SQLITE_OK) {
    return Status(base::Code::kInvalidArgument,
                  std::string("cannot prepare \"") + std::string(sql) + "\": " + sqlite3_errmsg(db_));
  }
  if (it != cache_.end()) return Statement(stmt, db_, nullptr, options_.busy_retries);  // nested use
  auto [slot, inserted] = cache_.emplace(std::string(sql), Cached{stmt, true});
  return Statement(stmt, db_, &slot->second.in_use, options_.busy_retries);
}

base::Result<int> Database::user_version() {
  SB_ASSIGN_OR_RETURN(Statement stmt, prepare("PRAGMA user_version"));
  SB_ASSIGN_OR_RETURN(bool row, stmt.step());
  if (!row) return base::internal_error("PRAGMA user_version returned no row");
  return static_cast<int>(stmt.column_int64(0));
}

Status Database::migrate(std::span<const Migration> migrations) {
  for (size_t i = 0; i < migrations.size(); ++i) {
    if (migrations[i].version != static_cast<int>(i) + 1) {
      return base::invalid_argument("migration #" + std::to_string(i) + " has version " +
                                    std::to_string(migrations[i].version) + ", expected " + std::to_string(i + 1));
    }
  }
  SB_ASSIGN_OR_RETURN(int current, user_version());
  const int latest = static_cast<int>(migrations.size());
  if (current > latest) {
    return base::failed_precondition("database " + path_ + " has schema version " + std::to_string(current) +
                                     " but this program knows only up to " + std::to_string(latest) +
                                     " (was it written by a newer strokebox?)");
  }
  for (const Migration& m : migrations) {
    if (m.version <= current) continue;
    SB_ASSIGN_OR_RETURN(Transaction tx, begin());
    SB_RETURN_IF_ERROR(exec(m.sql).with_context("schema migration " + std::to_string(m.version)));
    // user_version lives in the database header and is written by this same transaction.
    SB_RETURN_IF_ERROR(exec("PRAGMA user_version=" + std::to_string(m.version)));
    SB_RETURN_IF_ERROR(tx.commit().with_context("schema migration " + std::to_string(m.version)));
  }
  return Status();
}

int64_t Database::last_insert_rowid() const { return sqlite3_last_insert_rowid(db_); }
int Database::changes() const { return sqlite3_changes(db_); }

base::Result<Database::Transaction> Database::begin() {
  if (!sqlite3_get_autocommit(db_)) {
    return base::failed_precondition("a transaction is already open on " + path_ + " (nested begin())");
  }
  SB_RETURN_IF_ERROR(exec("BEGIN IMMEDIATE").with_context("starting a transaction"));
  return Transaction(this);
}

Database::Transaction::~Transaction() {
  if (db_ && !sqlite3_get_autocommit(db_->db_)) {
    (void)db_->exec("ROLLBACK");
  }
}

Status Database::Transaction::commit() {
  if (!db_) return base::failed_precondition("commit() on a finished transaction");
  Status status = db_->exec("COMMIT");
  if (status.ok()) db_ = nullptr;
  return status;
}

}  // namespace storage
