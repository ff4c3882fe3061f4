// Thin RAII wrapper over one SQLite connection: WAL journal, busy timeout plus retry on
// SQLITE_BUSY, cached prepared statements, BEGIN IMMEDIATE transactions and numbered schema
// migrations kept in `PRAGMA user_version`. Every SQLite error becomes a base::Status that
// carries SQLite's own message. A Database is not thread-safe: guard it with a mutex or give
// each thread its own connection (WAL lets readers run beside one writer).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "base/status.h"

struct sqlite3;
struct sqlite3_stmt;

namespace storage {

/// One prepared statement borrowed from a Database's cache. Binds are 1-based (SQLite's
/// convention), columns 0-based. On destruction the statement is reset and its bindings
/// cleared, ready for the next borrower. Not copyable; valid while its Database lives.
class Statement {
 public:
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&&) = delete;
  Statement(const Statement&) = delete;
  ~Statement();

  Statement& bind(int index, int64_t value);
  Statement& bind(int index, int value) { return bind(index, static_cast<int64_t>(value)); }
  Statement& bind(int index, double value);
  Statement& bind(int index, std::string_view text);
  Statement& bind(int index, const char* text) { return bind(index, std::string_view(text)); }
  Statement& bind_null(int index);

  /// Advances to the next row: true when a row is available, false when done.
  /// Retries SQLITE_BUSY/SQLITE_LOCKED (beyond the busy timeout) a few times, then kUnavailable.
  base::Result<bool> step();
  /// Steps until done (for INSERT/UPDATE/DELETE); the first bind error is reported here too.
  base::Status run();

  int64_t column_int64(int column) const;
  double column_double(int column) const;
  std::string column_text(int column) const;
  bool column_is_null(int column) const;
  /// The column's value, or nullopt for SQL NULL (a missing reading stays missing, not 0).
  std::optional<int64_t> column_optional_int64(int column) const;
  std::optional<double> column_optional_double(int column) const;

 private:
  friend class Database;
  // `in_use` points at the cache slot's flag (cleared on destruction); nullptr means the
  // statement is owned by this object and finalized on destruction.
  Statement(sqlite3_stmt* stmt, sqlite3* db, bool* in_use, int busy_retries);
  void note_bind(int rc);
  sqlite3_stmt* stmt_;
  sqlite3* db_;
  bool* in_use_;
  int busy_retries_;
  int bind_error_ = 0;  // first SQLite error returned by a bind_* call, reported by step()
};

/// A numbered schema step: applied once, in order, when `PRAGMA user_version` < version.
struct Migration {
  int version;           // 1, 2, 3, ... without gaps
  std::string_view sql;  // one or more statements
};

class Database {
 public:
  struct Options {
    bool read_only = false;      // open with SQLITE_OPEN_READONLY (no creation, no migration)
    int busy_timeout_ms = 5000;  // sqlite3_busy_timeout: how long one call waits for a lock
    int busy_retries = 3;        // extra attempts after the busy timeout expired
    /// PRAGMA synchronous: "FULL" (every commit fsyncs the WAL: survives a power cut) or
    /// "NORMAL" (WAL fsync only at checkpoints: a power cut may lose the last commits).
    std::string synchronous = "FULL";
  };

  /// Opens (creates unless read-only) the database file and sets WAL mode, the busy timeout,
  /// foreign keys and `synchronous`. Errors: kNotFound (read-only and missing),
  /// kUnavailable (locked), kInternal (anything else, with SQLite's message).
  static base::Result<std::unique_ptr<Database>> open(const std::string& path, const Options& options);
  static base::Result<std::unique_ptr<Database>> open(const std::string& path) {
    return open(path, Options());
  }
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  const std::string& path() const { return path_; }

  /// Runs one or more SQL statements without results (schema, pragmas).
  base::Status exec(std::string_view sql);

  /// Borrows the cached prepared statement for `sql` (prepared on first use). When that
  /// statement is already borrowed (nested use), a private one is prepared instead.
  /// Errors: kInvalidArgument (SQL does not compile, with SQLite's message).
  base::Result<Statement> prepare(std::string_view sql);

  /// Current `PRAGMA user_version`.
  base::Result<int> user_version();

  /// Applies the migrations whose version is above user_version, each in its own
  /// transaction together with the new user_version. Errors: kInvalidArgument (versions not
  /// 1..N in order), kFailedPrecondition (the file was written by a newer schema than this
  /// program knows), or the failing statement's error (the database stays at the last
  /// complete version).
  base::Status migrate(std::span<const Migration> migrations);

  int64_t last_insert_rowid() const;
  int changes() const;

  /// RAII write transaction started with BEGIN IMMEDIATE (takes the write lock up front, so a
  /// busy database is reported at begin() rather than as a deadlock half-way). Rolled back on
  /// destruction unless commit() succeeded.
  class Transaction {
   public:
    Transaction(Transaction&& other) noexcept : db_(other.db_) { other.db_ = nullptr; }
    Transaction& operator=(Transaction&&) = delete;
    ~Transaction();
    /// Commits; after an error the transaction is rolled back by the destructor.
    base::Status commit();

   private:
    friend class Database;
    explicit Transaction(Database* db) : db_(db) {}
    Database* db_;
  };
  /// Starts a write transaction. Errors: kUnavailable when the write lock stays busy.
  base::Result<Transaction> begin();

  /// Status for SQLite result code `rc` on this connection: "<what>: <sqlite message>".
  base::Status error(int rc, std::string_view what) const;

 private:
  Database(sqlite3* db, std::string path, Options options);
  sqlite3* db_;
  std::string path_;
  Options options_;
  struct Cached {
    sqlite3_stmt* stmt = nullptr;
    bool in_use = false;
  };
  std::map<std::string, Cached, std::less<>> cache_;
};

}  // namespace storage
