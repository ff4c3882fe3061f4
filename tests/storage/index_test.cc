// Tests for storage::Index: instances, study life cycle, the durable job queue, results.
#include "storage/index.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <thread>

namespace storage {
namespace {

namespace fs = std::filesystem;

class IndexTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("sb_index_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    path_ = (dir_ / "strokebox.db").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<Index> open(int max_attempts = 3, int64_t retry_delay_ms = 0) {
    Index::Options o;
    o.max_attempts = max_attempts;
    o.retry_delay_ms = retry_delay_ms;
    auto index = Index::open(path_, o);
    EXPECT_TRUE(index.ok()) << index.status().to_string();
    return index.ok() ? std::move(index).value() : nullptr;
  }

  static InstanceRecord instance(const std::string& study, const std::string& sop, int64_t t_ms) {
    InstanceRecord r;
    r.sop_instance_uid = sop;
    r.sop_class_uid = "1.2.840.10008.5.1.4.1.1.4";
    r.study_uid = study;
    r.series_uid = study + ".1";
    r.patient_id = "P1";
    r.path = "/spool/" + sop + ".dcm";
    r.size_bytes = 1000;
    r.received_at_ms = t_ms;
    r.calling_ae = "SCANNER";
    return r;
  }

  std::string state_of(Index& index, const std::string& study) {
    auto s = index.study(study);
    EXPECT_TRUE(s.ok());
    return s.ok() && s->has_value() ? (*s)->state : "<none>";
  }

  fs::path dir_;
  std::string path_;
};

TEST_F(IndexTest, InstancesCreateStudyWithTimesAndCount) {
  auto index = open();
  ASSERT_TRUE(index->add_instance(instance("1.1", "1.1.1.1", 1000)).ok());
  ASSERT_TRUE(index->add_instance(instance("1.1", "1.1.1.2", 3000)).ok());
  ASSERT_TRUE(index->add_instance(instance("1.1", "1.1.1.1", 2000)).ok());  // re-sent: replaced
  auto s = index->study("1.1");
  ASSERT_TRUE(s.ok() && s->has_value());
  EXPECT_EQ((*s)->instance_count, 2);
  EXPECT_EQ((*s)->first_received_ms, 1000);
  EXPECT_EQ((*s)->last_received_ms, 3000);
  EXPECT_EQ((*s)->state, "received");
  EXPECT_EQ((*s)->patient_id, "P1");
  auto instances = index->instances_of_study("1.1");
  ASSERT_TRUE(instances.ok());
  ASSERT_EQ(instances->size(), 2u);
  EXPECT_EQ((*instances)[0].calling_ae, "SCANNER");
}

TEST_F(IndexTest, OnlyQuietStudiesAreOffered) {
  auto index = open();
  ASSERT_TRUE(index->add_instance(instance("1.1", "1.1.1.1", 1000)).ok());
  ASSERT_TRUE(index->add_instance(instance("1.2", "1.2.1.1", 5000)).ok());
  auto quiet = index->quiet_studies(2000);
  ASSERT_TRUE(quiet.ok());
  EXPECT_EQ(*quiet, std::vector<std::string>{"1.1"});
}

TEST_F(IndexTest, EnqueueClaimCompleteStoresResult) {
  auto index = open();
  ASSERT_TRUE(index->add_instance(instance("1.1", "1.1.1.1", 1000)).ok());
  ASSERT_TRUE(*index->enqueue_study("1.1", 2000));
  EXPECT_FALSE(*index->enqueue_study("1.1", 2000));  // already queued: one job only
  EXPECT_FALSE(*index->enqueue_study("9.9", 2000));  // unknown study
  EXPECT_EQ(state_of(*index, "1.1"), "queued");

  auto job = index->claim_next_job(3000);
  ASSERT_TRUE(job.ok() && job->has_value());
  EXPECT_EQ((*job)->study_uid, "1.1");
  EXPECT_EQ((*job)->attempts, 1);
  EXPECT_EQ(state_of(*index, "1.1"), "running");
  auto none = index->claim_next_job(3000);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());

  ResultRow r;
  r.status = "done";
  r.lesion_volume_ml = 12.5;
  r.lesion_count = 2;
  r.model_id = "m";
  r.timings_json = R"({"receive":1.0})";
  r.finished_at_ms = 4000;
  ASSERT_TRUE(index->complete_job(**job, r).ok());
  EXPECT_EQ(state_of(*index, "1.1"), "done");
  auto stored = index->result("1.1");
  ASSERT_TRUE(stored.ok() && stored->has_value());
  EXPECT_EQ((*stored)->status, "done");
  EXPECT_DOUBLE_EQ((*stored)->lesion_volume_ml, 12.5);
  EXPECT_EQ((*stored)->lesion_count, 2);
  EXPECT_EQ((*stored)->job_id, (*job)->id);
  EXPECT_EQ((*stored)->timings_json, R"({"receive":1.0})");
  // Completing twice is refused.
  EXPECT_EQ(index->complete_job(**job, r).code(), base::Code::kFailedPrecondition);
  auto counts = index->job_counts();
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ((*counts)["done"], 1);
  EXPECT_EQ((*counts)["queued"], 0);
}

TEST_F(IndexTest, JobsAreClaimedOnceAcrossThreads) {
  auto index = open();
  for (int i = 0; i < 20; ++i) {
    const std::string study = "1." + std::to_string(i + 1);
    ASSERT_TRUE(index->add_instance(instance(study, study + ".9", 1000)).ok());
    ASSERT_TRUE(*index->enqueue_study(study, 1000));
  }
  std::vector<std::vector<int64_t>> claimed(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      while (true) {
        auto job = index->claim_next_job(2000);
        ASSERT_TRUE(job.ok());
        if (!job->has_value()) return;
        claimed[t].push_back((*job)->id);
      }
    });
  }
  for (auto& th : threads) th.join();
  std::set<int64_t> all;
  size_t total = 0;
  for (auto& c : claimed) {
    total += c.size();
    all.insert(c.begin(), c.end());
  }
  EXPECT_EQ(total, 20u);
  EXPECT_EQ(all.size(), 20u);
}

TEST_F(IndexTest, FailedAttemptsRetryThenFailWithReason) {
  auto index = open(/*max_attempts=*/3, /*retry_delay_ms=*/1000);
  ASSERT_TRUE(index->add_instance(instance("1.1", "1.1.1.1", 0)).ok());
  ASSERT_TRUE(*index->enqueue_study("1.1", 0));
  int64_t t = 10'000;
  for (int attempt = 1; attempt <= 3; ++attempt) {
    auto job = index->claim_next_job(t);
    ASSERT_TRUE(job.ok() && job->has_value()) << "attempt " << attempt;
    EXPECT_EQ((*job)->attempts, attempt);
    auto requeued = index->fail_attempt(**job, "engine exploded", t);
    ASSERT_TRUE(requeued.ok());
    EXPECT_EQ(*requeued, attempt < 3);
    if (attempt < 3) {
      // Not due before the retry delay.
      EXPECT_FALSE(index->claim_next_job(t + 999)->has_value());
      t += 1000;
    }
  }
  EXPECT_EQ(state_of(*index, "1.1"), "failed");
  EXPECT_FALSE(index->claim_next_job(t + 100'000)->has_value());
  auto failures = index->recent_failures(10);
  ASSERT_TRUE(failures.ok());
  ASSERT_EQ(failures->size(), 1u);
  EXPECT_NE((*failures)[0].reason.find("gave up after 3 attempts"), std::string::npos) << (*failures)[0].reason;
  EXPECT_NE((*failures)[0].reason.find("engine exploded"), std::string::npos);
}

TEST_F(IndexTest, RunningJobsAreRequeuedAfterCrashAndSurviveReopen) {
  {
    auto index = open();
    ASSERT_TRUE(index->add_instance(instance("1.1", "1.1.1.1", 0)).ok());
    ASSERT_TRUE(*index->enqueue_study("1.1", 0));
    auto job = index->claim_next_job(1);
    ASSERT_TRUE(job.ok() && job->has_value());
    // "Crash": the process goes away with the job running.
  }
  auto index = open();
  EXPECT_EQ(state_of(*index, "1.1"), "running");
  auto requeued = index->requeue_interrupted_jobs(100);
  ASSERT_TRUE(requeued.ok());
  EXPECT_EQ(*requeued, 1);
  EXPECT_EQ(state_of(*index, "1.1"), "queued");
  auto job = index->claim_next_job(200);
  ASSERT_TRUE(job.ok() && job->has_value());
  EXPECT_EQ((*job)->attempts, 2);
}

TEST_F(IndexTest, RepeatedlyInterruptedJobIsFailedNotLooped) {
  for (int run = 1; run <= 3; ++run) {
    auto index = open(/*max_attempts=*/3);
    if (run == 1) {
      ASSERT_TRUE(index->add_instance(instance("1.1", "1.1.1.1", 0)).ok());
      ASSERT_TRUE(*index->enqueue_study("1.1", 0));
    } else {
      ASSERT_EQ(*index->requeue_interrupted_jobs(run * 10), 1);
    }
    auto job = index->claim_next_job(run * 10 + 1);
    ASSERT_TRUE(job.ok() && job->has_value());
  }
  auto index = open(3);
  EXPECT_EQ(*index->requeue_interrupted_jobs(100), 0);
  EXPECT_EQ(state_of(*index, "1.1"), "failed");
  auto result = index->result("1.1");
  ASSERT_TRUE(result.ok() && result->has_value());
  EXPECT_EQ((*result)->status, "failed");
  EXPECT_NE((*result)->reason.find("interrupted"), std::string::npos) << (*result)->reason;
}

TEST_F(IndexTest, NewInstanceCancelsQueuedJobAndReopensFinishedStudy) {
  auto index = open();
  ASSERT_TRUE(index->add_instance(instance("1.1", "1.1.1.1", 0)).ok());
  ASSERT_TRUE(*index->enqueue_study("1.1", 10));
  ASSERT_TRUE(index->add_instance(instance("1.1", "1.1.1.2", 20)).ok());
  EXPECT_EQ(state_of(*index, "1.1"), "received");
  EXPECT_FALSE(index->claim_next_job(30)->has_value());
  ASSERT_TRUE(*index->enqueue_study("1.1", 40));
  auto job = index->claim_next_job(50);
  ASSERT_TRUE(job->has_value());
  // An instance arrives while the job runs: the result is kept but the study goes around again.
  ASSERT_TRUE(index->add_instance(instance("1.1", "1.1.1.3", 60)).ok());
  ResultRow r;
  r.status = "done";
  r.finished_at_ms = 70;
  ASSERT_TRUE(index->complete_job(**job, r).ok());
  EXPECT_EQ(state_of(*index, "1.1"), "received");
  EXPECT_EQ(*index->quiet_studies(100), std::vector<std::string>{"1.1"});
}

TEST_F(IndexTest, StatusQueriesWorkReadOnlyBesideWriter) {
  auto index = open();
  ASSERT_TRUE(index->add_instance(instance("1.1", "1.1.1.1", 1000)).ok());
  ASSERT_TRUE(index->add_instance(instance("1.2", "1.2.1.1", 2000)).ok());
  auto reader = Index::open_read_only(path_);
  ASSERT_TRUE(reader.ok()) << reader.status().to_string();
  auto counts = (*reader)->study_counts();
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ((*counts)["received"], 2);
  EXPECT_EQ((*counts)["done"], 0);
  auto recent = (*reader)->recent_studies(10);
  ASSERT_TRUE(recent.ok());
  ASSERT_EQ(recent->size(), 2u);
  EXPECT_EQ((*recent)[0].study.study_uid, "1.2");  // newest first
  EXPECT_FALSE((*recent)[0].result.has_value());
  // The reader cannot write.
  EXPECT_FALSE((*reader)->add_instance(instance("1.3", "1.3.1", 1)).ok());
}

TEST_F(IndexTest, ResultPowerFiguresRoundTripAndMissingStaysNull) {
  auto index = open();
  ASSERT_TRUE(index);
  for (const char* study : {"1.2.3", "1.2.4"}) {
    ASSERT_TRUE(index->add_instance(instance(study, std::string(study) + ".1", 1000)).ok());
    ASSERT_TRUE(*index->enqueue_study(study, 2000));
    auto job = index->claim_next_job(3000);
    ASSERT_TRUE(job.ok() && job->has_value());
    ResultRow r;
    r.status = "done";
    r.finished_at_ms = 4000;
    if (std::string(study) == "1.2.3") {
      r.energy_j = 123.5;
      r.mean_power_mw = 8000.0;
      r.peak_power_mw = 9500.0;
      r.peak_temp_c = 61.25;
    }
    ASSERT_TRUE(index->complete_job(**job, r).ok());
  }
  auto measured = index->result("1.2.3");
  ASSERT_TRUE(measured.ok() && measured->has_value());
  EXPECT_EQ((*measured)->energy_j, 123.5);
  EXPECT_EQ((*measured)->mean_power_mw, 8000.0);
  EXPECT_EQ((*measured)->peak_power_mw, 9500.0);
  EXPECT_EQ((*measured)->peak_temp_c, 61.25);
  auto unmeasured = index->result("1.2.4");
  ASSERT_TRUE(unmeasured.ok() && unmeasured->has_value());
  EXPECT_FALSE((*unmeasured)->energy_j.has_value());
  EXPECT_FALSE((*unmeasured)->peak_temp_c.has_value());
}

TEST_F(IndexTest, ReadOnlyOpenOfMissingDatabaseIsNotFound) {
  auto reader = Index::open_read_only((dir_ / "none.db").string());
  EXPECT_EQ(reader.status().code(), base::Code::kNotFound);
}

}  // namespace
}  // namespace storage
