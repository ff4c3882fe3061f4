// Tests for storage::Database: WAL, cached statements, transactions, migrations, errors.
#include "storage/database.h"

#include <gtest/gtest.h>

#include <array>
#include <filesystem>
#include <string>
#include <unistd.h>

namespace storage {
namespace {

namespace fs = std::filesystem;

class DatabaseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("sb_db_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    path_ = (dir_ / "test.db").string();
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
  std::string path_;
};

constexpr std::array<Migration, 2> kTwoSteps = {{
    {1, "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL);"},
    {2, "ALTER TABLE t ADD COLUMN size INTEGER NOT NULL DEFAULT 0;"},
}};

int64_t count_rows(Database& db) {
  auto st = db.prepare("SELECT COUNT(*) FROM t");
  EXPECT_TRUE(st.ok());
  auto row = st->step();
  EXPECT_TRUE(row.ok() && *row);
  return st->column_int64(0);
}

TEST_F(DatabaseTest, OpensInWalModeWithFullSync) {
  auto db = Database::open(path_);
  ASSERT_TRUE(db.ok()) << db.status().to_string();
  auto mode = (*db)->prepare("PRAGMA journal_mode");
  ASSERT_TRUE(mode.ok());
  ASSERT_TRUE(*mode->step());
  EXPECT_EQ(mode->column_text(0), "wal");
  auto sync = (*db)->prepare("PRAGMA synchronous");
  ASSERT_TRUE(sync.ok());
  ASSERT_TRUE(*sync->step());
  EXPECT_EQ(sync->column_int64(0), 2);  // FULL
}

TEST_F(DatabaseTest, MigrationsRunOnceInOrderAndSetUserVersion) {
  {
    auto db = Database::open(path_);
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)->migrate(std::span(kTwoSteps).first(1)).ok());
    EXPECT_EQ(*(*db)->user_version(), 1);
  }
  auto db = Database::open(path_);
  ASSERT_TRUE(db.ok());
  base::Status st = (*db)->migrate(kTwoSteps);
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(*(*db)->user_version(), 2);
  // Running again is a no-op (ALTER TABLE would fail if applied twice).
  EXPECT_TRUE((*db)->migrate(kTwoSteps).ok());
  auto ins = (*db)->prepare("INSERT INTO t (name, size) VALUES (?1, ?2)");
  ASSERT_TRUE(ins.ok());
  EXPECT_TRUE(ins->bind(1, "a").bind(2, 7).run().ok());
}

TEST_F(DatabaseTest, FailedMigrationLeavesPreviousVersion) {
  constexpr std::array<Migration, 2> broken = {{
      {1, "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT);"},
      {2, "CREATE TABLE u (x); THIS IS NOT SQL;"},
  }};
  auto db = Database::open(path_);
  ASSERT_TRUE(db.ok());
  base::Status st = (*db)->migrate(broken);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("schema migration 2"), std::string::npos) << st.message();
  EXPECT_EQ(*(*db)->user_version(), 1);
  // Table u from the failed step was rolled back.
  EXPECT_FALSE((*db)->exec("SELECT * FROM u").ok());
}

TEST_F(DatabaseTest, RefusesDatabaseFromNewerSchema) {
  auto db = Database::open(path_);
  ASSERT_TRUE(db.ok());
  ASSERT_TRUE((*db)->exec("PRAGMA user_version=5").ok());
  base::Status st = (*db)->migrate(kTwoSteps);
  EXPECT_EQ(st.code(), base::Code::kFailedPrecondition);
}

TEST_F(DatabaseTest, RejectsMigrationsWithGaps) {
  constexpr std::array<Migration, 1> gap = {{{2, "SELECT 1;"}}};
  auto db = Database::open(path_);
  ASSERT_TRUE(db.ok());
  EXPECT_EQ((*db)->migrate(gap).code(), base::Code::kInvalidArgument);
}

TEST_F(DatabaseTest, TransactionRollsBackUnlessCommitted) {
  auto db = Database::open(path_);
  ASSERT_TRUE(db.ok());
  ASSERT_TRUE((*db)->migrate(kTwoSteps).ok());
  {
    auto tx = (*db)->begin();
    ASSERT_TRUE(tx.ok());
    ASSERT_TRUE((*db)->exec("INSERT INTO t (name) VALUES ('gone')").ok());
  }
  EXPECT_EQ(count_rows(**db), 0);
  {
    auto tx = (*db)->begin();
    ASSERT_TRUE(tx.ok());
    ASSERT_TRUE((*db)->exec("INSERT INTO t (name) VALUES ('kept')").ok());
    ASSERT_TRUE(tx->commit().ok());
  }
  EXPECT_EQ(count_rows(**db), 1);
}

TEST_F(DatabaseTest, CachedStatementIsReusableAndNestedUseGetsItsOwn) {
  auto db = Database::open(path_);
  ASSERT_TRUE(db.ok());
  ASSERT_TRUE((*db)->migrate(kTwoSteps).ok());
  for (int i = 0; i < 3; ++i) {
    auto st = (*db)->prepare("INSERT INTO t (name) VALUES (?1)");
    ASSERT_TRUE(st.ok());
    ASSERT_TRUE(st->bind(1, "n" + std::to_string(i)).run().ok());
  }
  auto outer = (*db)->prepare("SELECT name FROM t ORDER BY id");
  ASSERT_TRUE(outer.ok());
  ASSERT_TRUE(*outer->step());
  auto inner = (*db)->prepare("SELECT name FROM t ORDER BY id");  // same SQL while borrowed
  ASSERT_TRUE(inner.ok());
  ASSERT_TRUE(*inner->step());
  ASSERT_TRUE(*inner->step());
  EXPECT_EQ(inner->column_text(0), "n1");
  EXPECT_EQ(outer->column_text(0), "n0");  // the outer cursor was not disturbed
}

TEST_F(DatabaseTest, ConstraintViolationCarriesSqliteMessage) {
  auto db = Database::open(path_);
  ASSERT_TRUE(db.ok());
  ASSERT_TRUE((*db)->migrate(kTwoSteps).ok());
  auto st = (*db)->prepare("INSERT INTO t (id, name) VALUES (?1, ?2)");
  ASSERT_TRUE(st.ok());
  ASSERT_TRUE(st->bind(1, 1).bind(2, "a").run().ok());
  auto again = (*db)->prepare("INSERT INTO t (id, name) VALUES (?1, ?2)");
  base::Status dup = again->bind(1, 1).bind(2, "b").run();
  EXPECT_EQ(dup.code(), base::Code::kAlreadyExists);
  EXPECT_NE(dup.message().find("UNIQUE constraint failed"), std::string::npos) << dup.message();
  auto bad = (*db)->prepare("SELEKT 1");
  EXPECT_EQ(bad.status().code(), base::Code::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("syntax error"), std::string::npos);
}

TEST_F(DatabaseTest, SecondWriterIsReportedBusyNotBlockedForever) {
  Database::Options fast;
  fast.busy_timeout_ms = 50;
  fast.busy_retries = 1;
  auto a = Database::open(path_, fast);
  auto b = Database::open(path_, fast);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE((*a)->migrate(kTwoSteps).ok());
  auto tx = (*a)->begin();
  ASSERT_TRUE(tx.ok());
  auto other = (*b)->begin();
  EXPECT_EQ(other.status().code(), base::Code::kUnavailable) << other.status().to_string();
  // Readers are not blocked by the writer (WAL).
  EXPECT_EQ(count_rows(**b), 0);
}

TEST_F(DatabaseTest, ReadOnlyOpenOfMissingFileIsNotFound) {
  Database::Options ro;
  ro.read_only = true;
  auto db = Database::open((dir_ / "missing.db").string(), ro);
  EXPECT_EQ(db.status().code(), base::Code::kNotFound);
}

}  // namespace
}  // namespace storage
