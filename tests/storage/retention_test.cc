// Tests for storage::enforce_quota: oldest finished studies go first, unfinished and vetoed
// studies stay, a removal interrupted at any stage is finished by the next call.
#include "storage/retention.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "storage/index.h"
#include "storage/spool.h"

namespace storage {
namespace {

namespace fs = std::filesystem;

constexpr int kInstanceBytes = 64 << 10;

class RetentionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("sb_retention_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "spool");
    fs::create_directories(dir_ / "results");
    auto index = Index::open(db_path());
    ASSERT_TRUE(index.ok()) << index.status().to_string();
    index_ = std::move(*index);
  }
  void TearDown() override {
    index_.reset();
    fs::remove_all(dir_);
  }

  std::string db_path() const { return (dir_ / "strokebox.db").string(); }
  std::string spool() const { return (dir_ / "spool").string(); }
  std::string results() const { return (dir_ / "results").string(); }

  RetentionOptions options(uint64_t quota) const {
    RetentionOptions o;
    o.database_path = db_path();
    o.spool_dir = spool();
    o.results_dir = results();
    o.quota_bytes = quota;
    return o;
  }

  /// Adds `n` instances of `uid` received at `t_ms` (files of kInstanceBytes in the spool).
  void receive(const std::string& uid, int n, int64_t t_ms, int first = 0) {
    Spool sp(spool());
    for (int i = first; i < first + n; ++i) {
      const std::string sop = uid + ".9." + std::to_string(i);
      auto path = sp.store(uid, uid + ".1", sop, [](const std::string& temp) {
        std::ofstream(temp, std::ios::binary) << std::string(kInstanceBytes, 'x');
        return base::Status();
      });
      ASSERT_TRUE(path.ok()) << path.status().to_string();
      InstanceRecord r;
      r.sop_instance_uid = sop;
      r.sop_class_uid = "1.2.840.10008.5.1.4.1.1.4";
      r.study_uid = uid;
      r.series_uid = uid + ".1";
      r.path = *path;
      r.size_bytes = kInstanceBytes;
      r.received_at_ms = t_ms;
      ASSERT_TRUE(index_->add_instance(r).ok());
    }
  }

  /// Receives, queues, runs and finishes a study with `status` ("done"/"failed") and a result file.
  void finished_study(const std::string& uid, int64_t t_ms, const std::string& status = "done") {
    receive(uid, 3, t_ms);
    ASSERT_TRUE(*index_->enqueue_study(uid, t_ms));
    auto job = index_->claim_next_job(t_ms + 1);
    ASSERT_TRUE(job.ok() && job->has_value());
    ASSERT_EQ((*job)->study_uid, uid);
    fs::create_directories(dir_ / "results" / uid);
    std::ofstream(dir_ / "results" / uid / "report.json") << std::string(kInstanceBytes, 'r');
    ResultRow row;
    row.status = status;
    row.finished_at_ms = t_ms + 2;
    ASSERT_TRUE(index_->complete_job(**job, row).ok());
  }

  uint64_t used() const { return *disk_usage_bytes(spool()) + *disk_usage_bytes(results()); }
  uint64_t study_bytes(const std::string& uid) const {
    return *disk_usage_bytes(spool() + "/" + uid) + *disk_usage_bytes(results() + "/" + uid);
  }
  bool gone(const std::string& uid) {
    return !fs::exists(dir_ / "spool" / uid) && !fs::exists(dir_ / "results" / uid) && !index_->study(uid)->has_value() &&
           index_->instances_of_study(uid)->empty() && !index_->result(uid)->has_value();
  }
  bool intact(const std::string& uid, size_t instances) {
    return fs::exists(dir_ / "spool" / uid) && index_->study(uid)->has_value() &&
           index_->instances_of_study(uid)->size() == instances;
  }

  fs::path dir_;
  std::unique_ptr<Index> index_;
};

TEST_F(RetentionTest, RemovesOldestFinishedStudiesUntilWithinQuota) {
  finished_study("1.1", 1000);
  finished_study("1.2", 2000, "failed");
  finished_study("1.3", 3000);
  finished_study("1.4", 4000);
  // Room for two studies: the two oldest (one done, one failed) go.
  const uint64_t quota = study_bytes("1.3") + study_bytes("1.4");
  auto r = enforce_quota(options(quota));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->removed, (std::vector<std::string>{"1.1", "1.2"}));
  EXPECT_TRUE(r->within_quota);
  EXPECT_LE(r->bytes_after, quota);
  EXPECT_LT(r->bytes_after, r->bytes_before);
  EXPECT_TRUE(gone("1.1"));
  EXPECT_TRUE(gone("1.2"));
  EXPECT_TRUE(intact("1.3", 3));
  EXPECT_TRUE(intact("1.4", 3));
  EXPECT_EQ(index_->job_counts()->at("done") + index_->job_counts()->at("failed"), 2);
}

TEST_F(RetentionTest, WithinQuotaOrNoQuotaRemovesNothing) {
  finished_study("1.1", 1000);
  auto r = enforce_quota(options(used() + 1));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->removed.empty());
  r = enforce_quota(options(0));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->removed.empty());
  EXPECT_TRUE(r->within_quota);
  EXPECT_TRUE(intact("1.1", 3));
}

TEST_F(RetentionTest, NeverRemovesAStudyThatIsNotProcessed) {
  finished_study("2.9", 5000);  // the newest study, but the only finished one
  receive("2.1", 3, 100);  // received (oldest of all)
  receive("2.2", 3, 200);  // queued
  ASSERT_TRUE(*index_->enqueue_study("2.2", 200));
  receive("2.3", 3, 300);  // running
  ASSERT_TRUE(*index_->enqueue_study("2.3", 300));
  auto job = index_->claim_next_job(400);  // claims 2.2 (oldest queued job)
  ASSERT_TRUE(job.ok() && job->has_value());
  auto r = enforce_quota(options(1));  // an impossible quota
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->removed, (std::vector<std::string>{"2.9"}));
  EXPECT_FALSE(r->within_quota);
  EXPECT_TRUE(intact("2.1", 3));
  EXPECT_TRUE(intact("2.2", 3));
  EXPECT_TRUE(intact("2.3", 3));
  EXPECT_EQ(index_->study("2.2")->value().state, "running");
}

TEST_F(RetentionTest, VetoedStudiesAreKeptAndCounted) {
  finished_study("3.1", 1000);
  finished_study("3.2", 2000);
  finished_study("3.3", 3000);
  auto o = options(study_bytes("3.3") + 1);
  o.can_remove = [](const std::string& uid) { return uid != "3.1"; };  // e.g. still in the outbox
  auto r = enforce_quota(o);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->vetoed, 1);
  EXPECT_EQ(r->removed, (std::vector<std::string>{"3.2", "3.3"}));
  EXPECT_TRUE(intact("3.1", 3));
  EXPECT_TRUE(gone("3.2"));
  EXPECT_TRUE(gone("3.3"));
}

TEST_F(RetentionTest, CrashAfterMarkingIsFinishedByTheNextCall) {
  finished_study("4.1", 1000);
  finished_study("4.2", 2000);
  auto o = options(study_bytes("4.2"));
  o.crash_after_stage_for_tests = 1;
  EXPECT_FALSE(enforce_quota(o).ok());
  EXPECT_TRUE(intact("4.1", 3));  // marked only: nothing deleted yet
  // The next call (even without a quota) finishes the marked removal and nothing else.
  auto r = enforce_quota(options(0));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->resumed, 1);
  EXPECT_TRUE(gone("4.1"));
  EXPECT_TRUE(intact("4.2", 3));
}

TEST_F(RetentionTest, CrashAfterDeletingFilesIsFinishedByTheNextCall) {
  finished_study("5.1", 1000);
  finished_study("5.2", 2000);
  auto o = options(study_bytes("5.2"));
  o.crash_after_stage_for_tests = 2;
  EXPECT_FALSE(enforce_quota(o).ok());
  EXPECT_FALSE(fs::exists(dir_ / "spool" / "5.1"));
  EXPECT_TRUE(index_->study("5.1")->has_value());  // rows still there
  auto r = enforce_quota(options(0));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->resumed, 1);
  EXPECT_TRUE(gone("5.1"));
  EXPECT_TRUE(intact("5.2", 3));
}

TEST_F(RetentionTest, InstancesArrivingAfterTheMarkAreKept) {
  finished_study("6.1", 1000);
  finished_study("6.2", 2000);
  auto o = options(study_bytes("6.2"));
  o.crash_after_stage_for_tests = 1;
  EXPECT_FALSE(enforce_quota(o).ok());
  // The scanner resends part of the marked study (new SOP instances) before the removal ends.
  receive("6.1", 2, 9000, /*first=*/10);
  EXPECT_EQ(index_->study("6.1")->value().state, "received");
  auto r = enforce_quota(options(0));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->resumed, 1);
  // The old instances are gone, the new ones stay, with their files, to be processed.
  auto left = index_->instances_of_study("6.1");
  ASSERT_TRUE(left.ok());
  ASSERT_EQ(left->size(), 2u);
  for (const auto& in : *left) EXPECT_TRUE(fs::exists(in.path)) << in.path;
  EXPECT_EQ(index_->study("6.1")->value().state, "received");
  EXPECT_FALSE(fs::exists(dir_ / "spool" / "6.1" / "6.1.1" / "6.1.9.0.dcm"));
}

TEST_F(RetentionTest, StudyRequeuedBeforeMarkingIsNotTouched) {
  finished_study("7.1", 1000);
  receive("7.1", 1, 5000, /*first=*/20);  // new instance: back to received before retention runs
  auto r = enforce_quota(options(1));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->removed.empty());
  EXPECT_TRUE(intact("7.1", 4));
}

TEST(DiskSpace, UsageCountsAllocatedBlocksAndFreeSpaceIsPositive) {
  const fs::path dir = fs::temp_directory_path() / ("sb_du_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "a" / "b");
  std::ofstream(dir / "a" / "b" / "f") << std::string(100000, 'x');
  std::ofstream(dir / "g") << std::string(10, 'x');
  auto used = disk_usage_bytes(dir.string());
  ASSERT_TRUE(used.ok());
  EXPECT_GE(*used, 100000u);
  EXPECT_EQ(*disk_usage_bytes((dir / "missing").string()), 0u);
  auto free = disk_free_bytes(dir.string());
  ASSERT_TRUE(free.ok());
  EXPECT_GT(*free, 0u);
  EXPECT_FALSE(disk_free_bytes((dir / "missing").string()).ok());
  fs::remove_all(dir);
}

}  // namespace
}  // namespace storage
