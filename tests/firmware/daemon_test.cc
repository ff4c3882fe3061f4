// Tests for firmware::Daemon with a fake processor: a study sent over DICOM is queued after
// the quiet time, processed once and its result stored; crashes and failures are retried a
// bounded number of times.
#include "firmware/daemon.h"
#include "firmware/commands.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/oflog/oflog.h>

#include "hal/sim_board.h"

// Last: httplib.h brings <resolv.h>'s `_res` macro, which breaks headers included after it.
#include <httplib.h>

namespace firmware {
namespace {

namespace fs = std::filesystem;

const bool kQuietDcmtk = [] {
  OFLog::configure(OFLogger::WARN_LOG_LEVEL);
  return true;
}();

constexpr const char* kStudy = "1.2.826.0.1.3680043.10.998.7";
constexpr const char* kSeries = "1.2.826.0.1.3680043.10.998.7.1";

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// Writes `n` small MR slices of one series into `dir`; returns their paths.
std::vector<std::string> write_study(const fs::path& dir, int n) {
  fs::create_directories(dir);
  std::vector<std::string> files;
  for (int i = 1; i <= n; ++i) {
    DcmFileFormat file;
    DcmDataset* ds = file.getDataset();
    const std::string sop = std::string(kSeries) + "." + std::to_string(i);
    ds->putAndInsertString(DCM_SOPClassUID, UID_MRImageStorage);
    ds->putAndInsertString(DCM_SOPInstanceUID, sop.c_str());
    ds->putAndInsertString(DCM_StudyInstanceUID, kStudy);
    ds->putAndInsertString(DCM_SeriesInstanceUID, kSeries);
    ds->putAndInsertString(DCM_PatientID, "DAEMON-P");
    ds->putAndInsertString(DCM_Modality, "MR");
    ds->putAndInsertString(DCM_InstanceNumber, std::to_string(i).c_str());
    ds->putAndInsertUint16(DCM_SamplesPerPixel, 1);
    ds->putAndInsertString(DCM_PhotometricInterpretation, "MONOCHROME2");
    ds->putAndInsertUint16(DCM_Rows, 4);
    ds->putAndInsertUint16(DCM_Columns, 4);
    ds->putAndInsertUint16(DCM_BitsAllocated, 16);
    ds->putAndInsertUint16(DCM_BitsStored, 16);
    ds->putAndInsertUint16(DCM_HighBit, 15);
    ds->putAndInsertUint16(DCM_PixelRepresentation, 0);
    std::vector<Uint16> pixels(16, static_cast<Uint16>(i));
    ds->putAndInsertUint16Array(DCM_PixelData, pixels.data(), 16);
    const std::string path = (dir / ("slice" + std::to_string(i) + ".dcm")).string();
    EXPECT_TRUE(file.saveFile(path.c_str(), EXS_LittleEndianExplicit).good());
    files.push_back(path);
  }
  return files;
}

class DaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("sb_daemon_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    config_.dicom.port = free_port();
    config_.dicom.bind_address = "127.0.0.1";
    config_.dicom.study_quiet_s = 1.0;
    config_.dicom.dimse_timeout_s = 5;
    config_.storage.data_dir = (dir_ / "data").string();
    config_.jobs.retry_delay_s = 0;
    config_.status.enabled = false;  // StatusPageIsServedReadOnly turns it on
    files_ = write_study(dir_ / "outgoing", 3);
  }
  void TearDown() override {
    daemon_.reset();
    fs::remove_all(dir_);
  }

  DaemonOptions options(StudyProcessor processor) {
    DaemonOptions o;
    o.config = config_;
    o.processor = std::move(processor);
    o.check_interval_ms = 50;
    o.idle_poll_ms = 50;
    o.min_free_bytes = 0;
    o.board = &board_;
    o.write_report = [](const StudyReport& report, const std::string& out_dir) {
      nlohmann::json j;
      j["status"] = report.status;
      j["timings"] = nlohmann::json::array();
      for (const auto& [stage, ms] : report.timings_ms) j["timings"].push_back(stage);
      std::ofstream(out_dir + "/report.json") << j.dump();
      return base::Status();
    };
    return o;
  }

  void start(StudyProcessor processor) {
    auto d = Daemon::create(options(std::move(processor)));
    ASSERT_TRUE(d.ok()) << d.status().to_string();
    daemon_ = std::move(d).value();
    base::Status st = daemon_->start();
    ASSERT_TRUE(st.ok()) << st.to_string();
  }

  void send_study() {
    std::string cmd = "storescu -q -aet SCANNER -aec " + config_.dicom.ae_title + " 127.0.0.1 " +
                      std::to_string(config_.dicom.port);
    for (const auto& f : files_) cmd += " " + f;
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }

  std::optional<storage::StudyRow> study() {
    auto s = daemon_->index().study(kStudy);
    EXPECT_TRUE(s.ok());
    return s.ok() ? *s : std::nullopt;
  }

  // Waits (no timing assertion) until pred() holds; gives up after a generous bound.
  template <typename Pred>
  static bool eventually(Pred pred) {
    for (int i = 0; i < 3000; ++i) {
      if (pred()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return pred();
  }

  fs::path dir_;
  Config config_;
  std::vector<std::string> files_;
  hal::SimBoard board_;
  std::unique_ptr<Daemon> daemon_;
};

// A fake systemd: a datagram socket named by NOTIFY_SOCKET that collects sd_notify messages.
class NotifySocket {
 public:
  explicit NotifySocket(const fs::path& path) : path_(path.string()) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path_.c_str());
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << path_;
    timeval tv{0, 10'000};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ::setenv("NOTIFY_SOCKET", path_.c_str(), 1);
  }
  ~NotifySocket() {
    ::unsetenv("NOTIFY_SOCKET");
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  // Reads what arrived (waits up to 10 ms); returns the messages received so far.
  const std::vector<std::string>& poll() {
    char buf[4096];
    for (;;) {
      ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) break;
      messages_.emplace_back(buf, static_cast<size_t>(n));
    }
    return messages_;
  }
  int count(const std::string& needle) {
    int c = 0;
    for (const auto& m : poll()) c += m.find(needle) != std::string::npos;
    return c;
  }

 private:
  std::string path_;
  int fd_ = -1;
  std::vector<std::string> messages_;
};

StudyReport done_report(double volume_ml) {
  StudyReport r;
  r.status = "done";
  r.lesion_volume_ml = volume_ml;
  r.lesion_count = 1;
  r.model_id = "fake";
  r.backend = "none";
  r.precision = "fp32";
  r.timings_ms = {{"load", 1.0}, {"inference", 2.0}};
  return r;
}

TEST_F(DaemonTest, StudyIsQueuedAfterQuietTimeProcessedOnceAndResultStored) {
  std::atomic<int> calls{0};
  std::string seen_study_dir, seen_out_dir;
  size_t files_seen = 0;
  start([&](const std::string& study_dir, const std::string& out_dir, const inference::ProgressFn&) {
    ++calls;
    seen_study_dir = study_dir;
    seen_out_dir = out_dir;
    for (auto& e : fs::recursive_directory_iterator(study_dir)) files_seen += e.is_regular_file();
    std::ofstream(out_dir + "/lesion_mask.nii.gz") << "fake";
    return done_report(4.5);
  });
  send_study();
  ASSERT_TRUE(eventually([&] {
    auto s = study();
    return s && s->state == "done";
  })) << "state: " << (study() ? study()->state : "none");
  auto result = daemon_->index().result(kStudy);
  ASSERT_TRUE(result.ok() && result->has_value());
  EXPECT_EQ((*result)->status, "done");
  EXPECT_DOUBLE_EQ((*result)->lesion_volume_ml, 4.5);
  EXPECT_EQ((*result)->model_id, "fake");
  // The daemon's receive timing comes first, then the pipeline's stages.
  auto timings = nlohmann::ordered_json::parse((*result)->timings_json);
  ASSERT_EQ(timings.size(), 3u);
  EXPECT_EQ(timings.begin().key(), "receive");
  EXPECT_GE(timings["receive"].get<double>(), 0.0);
  EXPECT_EQ((*result)->report_path, seen_out_dir + "/report.json");
  auto report = nlohmann::json::parse(std::ifstream(seen_out_dir + "/report.json"));
  EXPECT_EQ(report["timings"][0], "receive");
  EXPECT_EQ(seen_out_dir, config_.results_dir() + "/" + kStudy);
  EXPECT_EQ(seen_study_dir, config_.spool_dir() + "/" + kStudy);
  EXPECT_EQ(files_seen, files_.size());
  EXPECT_TRUE(fs::exists(seen_out_dir + "/lesion_mask.nii.gz"));
  // Processed exactly once, even though the scheduler keeps checking.
  daemon_->stop();
  EXPECT_EQ(calls.load(), 1);
  auto jobs = daemon_->index().job_counts();
  ASSERT_TRUE(jobs.ok());
  EXPECT_EQ((*jobs)["done"], 1);
}

TEST_F(DaemonTest, PipelineFailureIsStoredWithReasonAndNotRetried) {
  std::atomic<int> calls{0};
  start([&](const std::string&, const std::string&, const inference::ProgressFn&) {
    ++calls;
    StudyReport r;
    r.status = "failed";
    r.reason = "no DWI series found";
    return r;
  });
  send_study();
  ASSERT_TRUE(eventually([&] {
    auto s = study();
    return s && s->state == "failed";
  }));
  daemon_->stop();
  EXPECT_EQ(calls.load(), 1);
  auto result = daemon_->index().result(kStudy);
  ASSERT_TRUE(result.ok() && result->has_value());
  EXPECT_EQ((*result)->reason, "no DWI series found");
}

TEST_F(DaemonTest, ThrowingProcessorIsRetriedThenFailedWithReason) {
  std::atomic<int> calls{0};
  start([&](const std::string&, const std::string&, const inference::ProgressFn&) -> StudyReport {
    ++calls;
    throw std::runtime_error("engine ran out of memory");
  });
  send_study();
  ASSERT_TRUE(eventually([&] {
    auto s = study();
    return s && s->state == "failed";
  }));
  daemon_->stop();
  EXPECT_EQ(calls.load(), 3);
  auto result = daemon_->index().result(kStudy);
  ASSERT_TRUE(result.ok() && result->has_value());
  EXPECT_EQ((*result)->status, "failed");
  EXPECT_NE((*result)->reason.find("gave up after 3 attempts"), std::string::npos) << (*result)->reason;
  EXPECT_NE((*result)->reason.find("engine ran out of memory"), std::string::npos) << (*result)->reason;
}

TEST_F(DaemonTest, JobLeftRunningByACrashIsRequeuedAtStart) {
  // Simulate the crash: a previous run stored the study, queued and claimed the job, died.
  {
    storage::Index::Options o;
    fs::create_directories(config_.storage.data_dir);
    auto index = storage::Index::open(config_.database_path(), o);
    ASSERT_TRUE(index.ok());
    storage::Spool spool(config_.spool_dir());
    for (size_t i = 0; i < files_.size(); ++i) {
      const std::string sop = std::string(kSeries) + "." + std::to_string(i + 1);
      auto path = spool.store(kStudy, kSeries, sop, [&](const std::string& temp) {
        fs::copy_file(files_[i], temp);
        return base::Status();
      });
      ASSERT_TRUE(path.ok());
      storage::InstanceRecord r{sop, UID_MRImageStorage, kStudy, kSeries, "P", *path, 100, 1000, "SCANNER"};
      ASSERT_TRUE((*index)->add_instance(r).ok());
    }
    ASSERT_TRUE(*(*index)->enqueue_study(kStudy, 2000));
    auto job = (*index)->claim_next_job(3000);
    ASSERT_TRUE(job.ok() && job->has_value());
  }
  std::atomic<int> calls{0};
  start([&](const std::string&, const std::string&, const inference::ProgressFn&) {
    ++calls;
    return done_report(1.0);
  });
  ASSERT_TRUE(eventually([&] {
    auto s = study();
    return s && s->state == "done";
  }));
  daemon_->stop();
  EXPECT_EQ(calls.load(), 1);
  auto s = study();
  ASSERT_TRUE(s);
  EXPECT_EQ(s->attempts, 2);  // the interrupted run counted as an attempt
}

// Runs `strokebox status <flags>` in-process and returns its stdout.
std::string run_status(std::vector<std::string> flags, int* rc) {
  std::vector<std::string> words = {"strokebox", "status"};
  words.insert(words.end(), flags.begin(), flags.end());
  std::vector<char*> argv;
  for (auto& w : words) argv.push_back(w.data());
  ::testing::internal::CaptureStdout();
  *rc = cmd_status(static_cast<int>(argv.size()), argv.data());
  std::fflush(stdout);
  return ::testing::internal::GetCapturedStdout();
}

TEST_F(DaemonTest, StatusCommandShowsCountsRecentStudiesAndFailures) {
  start([&](const std::string&, const std::string&, const inference::ProgressFn&) {
    StudyReport r;
    r.status = "failed";
    r.reason = "ADC series missing";
    return r;
  });
  send_study();
  ASSERT_TRUE(eventually([&] {
    auto s = study();
    return s && s->state == "failed";
  }));
  // Read-only, while the daemon is still running.
  int rc = -1;
  const std::string json_text = run_status({"--data-dir", config_.storage.data_dir, "--json"}, &rc);
  ASSERT_EQ(rc, 0);
  auto j = nlohmann::json::parse(json_text);
  EXPECT_EQ(j["studies"]["failed"], 1);
  EXPECT_EQ(j["studies"]["done"], 0);
  ASSERT_EQ(j["recent"].size(), 1u);
  EXPECT_EQ(j["recent"][0]["study_uid"], kStudy);
  EXPECT_EQ(j["recent"][0]["instances"], 3);
  ASSERT_EQ(j["failures"].size(), 1u);
  EXPECT_EQ(j["failures"][0]["reason"], "ADC series missing");
  // The appliance part, from telemetry.db.
  EXPECT_TRUE(j["daemon"]["running"].get<bool>()) << j.dump(2);
  EXPECT_GE(j["daemon"]["uptime_s"].get<int64_t>(), 0);
  EXPECT_LT(j["daemon"]["uptime_s"].get<int64_t>(), 24 * 3600);  // started by this test
  EXPECT_EQ(j["board"]["name"], "sim");
  EXPECT_EQ(j["board"]["power_mode_id"], 8);
  EXPECT_TRUE(j["board"]["power_mode_ok"].get<bool>());
  EXPECT_EQ(j["telemetry"]["max_temp_c"], 40.0);
  EXPECT_EQ(j["telemetry"]["vdd_in_mw"], 6000);
  EXPECT_TRUE(j["telemetry"]["disk_free_bytes"].is_number());
  EXPECT_EQ(j["daemon"]["threads"].size(), 5u);  // dicom, scheduler, worker, sampler, panel
  const std::string text = run_status({"--data-dir", config_.storage.data_dir}, &rc);
  ASSERT_EQ(rc, 0);
  std::printf("%s", text.c_str());
  EXPECT_NE(text.find("daemon: running"), std::string::npos) << text;
  EXPECT_NE(text.find("power mode 8 (MODE_20W_6CORE)"), std::string::npos) << text;
  EXPECT_NE(text.find("VDD_IN 6.00 W"), std::string::npos) << text;
  EXPECT_NE(text.find("failed 1"), std::string::npos) << text;
  EXPECT_NE(text.find("ADC series missing"), std::string::npos) << text;
}

TEST_F(DaemonTest, StatusCommandOnMissingDataDirFails) {
  int rc = -1;
  run_status({"--data-dir", (dir_ / "nothing").string()}, &rc);
  EXPECT_EQ(rc, 1);
  EXPECT_FALSE(fs::exists(dir_ / "nothing" / "strokebox.db"));  // read-only: nothing created
}

TEST_F(DaemonTest, StartFailsClearlyWhenThePortIsTaken) {
  start([](const std::string&, const std::string&, const inference::ProgressFn&) { return done_report(0); });
  auto second = Daemon::create(options([](const std::string&, const std::string&, const inference::ProgressFn&) { return done_report(0); }));
  ASSERT_TRUE(second.ok()) << second.status().to_string();
  base::Status st = (*second)->start();
  EXPECT_EQ(st.code(), base::Code::kUnavailable) << st.to_string();
}

TEST_F(DaemonTest, NotifySocketReceivesReadyWatchdogPingsAndStatus) {
  NotifySocket systemd(dir_ / "notify.sock");
  config_.watchdog.check_interval_s = 0.05;
  start([](const std::string&, const std::string&, const inference::ProgressFn&) { return done_report(1.0); });
  ASSERT_TRUE(eventually([&] { return systemd.count("READY=1") == 1 && systemd.count("WATCHDOG=1") >= 3; }))
      << "READY=1 x" << systemd.count("READY=1") << ", WATCHDOG=1 x" << systemd.count("WATCHDOG=1");
  EXPECT_GE(systemd.count("STATUS=idle"), 1);
  daemon_->stop();
  EXPECT_EQ(systemd.count("STOPPING=1"), 1);
}

TEST_F(DaemonTest, StuckWorkerStopsThePingsAndStatusNamesIt) {
  NotifySocket systemd(dir_ / "notify.sock");
  config_.watchdog.check_interval_s = 0.05;
  config_.watchdog.loop_deadline_s = 1.0;
  config_.watchdog.job_deadline_s = 1.0;
  std::atomic<bool> release{false};
  std::atomic<int64_t> entered_ms{0};
  start([&](const std::string&, const std::string&, const inference::ProgressFn&) {
    entered_ms = storage::now_ms();
    while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(5));  // an engine that hangs
    return done_report(1.0);
  });
  send_study();
  ASSERT_TRUE(eventually([&] { return systemd.count("STATUS=stuck: worker") >= 1; }));
  const int64_t detected_ms = storage::now_ms();
  // The front panel shows the fault (fast blink) while the worker is stuck.
  EXPECT_TRUE(eventually([&] { return board_.led().pattern() == hal::LedPattern::kBlink4Hz; }))
      << hal::led_pattern_name(board_.led().pattern());
  std::printf("stuck worker detected %lld ms after it stopped beating (deadline 1000 ms, check every 50 ms)\n",
              static_cast<long long>(detected_ms - entered_ms.load()));
  // No ping while the worker stays stuck: wait for many more supervisor checks (the sampler
  // keeps sampling meanwhile) and count again.
  const int pings = systemd.count("WATCHDOG=1");
  const uint64_t samples = daemon_->telemetry().sampler_samples();
  ASSERT_TRUE(eventually([&] { return daemon_->telemetry().sampler_samples() >= samples + 3; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(systemd.count("WATCHDOG=1"), pings);
  EXPECT_GE(systemd.count("STATUS=stuck: worker"), 1);
  // Once the worker makes progress again the pings come back.
  release = true;
  ASSERT_TRUE(eventually([&] { return systemd.count("WATCHDOG=1") > pings; }));
  ASSERT_TRUE(eventually([&] {
    auto s = study();
    return s && s->state == "done";
  }));
}

// A study longer than the worker's deadline is fine while the pipeline reports progress:
// each report beats the heartbeat, so the deadline bounds the silence, not the study.
TEST_F(DaemonTest, LongStudyThatReportsProgressKeepsThePingsAndShowsItsStage) {
  NotifySocket systemd(dir_ / "notify.sock");
  config_.watchdog.check_interval_s = 0.05;
  config_.watchdog.loop_deadline_s = 1.0;
  config_.watchdog.job_deadline_s = 1.0;
  std::atomic<bool> inside{false}, release{false};
  std::atomic<int64_t> runs{0};
  start([&](const std::string&, const std::string&, const inference::ProgressFn& progress) {
    inside = true;
    // An inference of 3 s and more in runs of 50 ms, each reported as the pipeline does.
    for (int64_t i = 1; i <= 60 || !release; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      progress("inference", i, 60);
      runs = i;
    }
    return done_report(1.0);
  });
  send_study();
  // Keep reading the socket while waiting: a full datagram queue would block sd_notify.
  ASSERT_TRUE(eventually([&] { return systemd.count("") >= 0 && inside.load() && runs.load() >= 2; }));
  const int pings = systemd.count("WATCHDOG=1");
  // Well past the 1 s deadline, still inside the study.
  ASSERT_TRUE(eventually([&] { return systemd.count("") >= 0 && runs.load() >= 50; }));
  EXPECT_GT(systemd.count("WATCHDOG=1"), pings + 5) << "pings stopped during a study that reports progress";
  EXPECT_EQ(systemd.count("STATUS=stuck: worker"), 0);
  const auto state = nlohmann::json::parse(daemon_->state_json());
  EXPECT_EQ(state["current_stage"].get<std::string>().rfind("inference ", 0), 0u) << state.dump();
  EXPECT_GE(systemd.count("STATUS=processing study " + std::string(kStudy) + ": inference "), 1);
  release = true;
  ASSERT_TRUE(eventually([&] {
    auto s = study();
    return s && s->state == "done";
  }));
  EXPECT_EQ(systemd.count("STATUS=stuck: worker"), 0);
}

TEST_F(DaemonTest, HotBoardHoldsJobsButKeepsReceivingThenResumes) {
  config_.thermal.hold_above_c = 85.0;
  config_.thermal.hysteresis_c = 5.0;
  config_.telemetry.interval_s = 0.02;
  board_.set_temperature_mC("GPU-therm", 92'000);
  std::atomic<int> calls{0};
  start([&](const std::string&, const std::string&, const inference::ProgressFn&) {
    ++calls;
    return done_report(2.0);
  });
  ASSERT_TRUE(eventually([&] { return daemon_->telemetry().holding_jobs(); }));
  // Degraded (hot): the LED double-blinks.
  EXPECT_TRUE(eventually([&] { return board_.led().pattern() == hal::LedPattern::kDoubleBlink; }))
      << hal::led_pattern_name(board_.led().pattern());
  send_study();  // receiving continues while hot
  ASSERT_TRUE(eventually([&] {
    auto s = study();
    return s && s->state == "queued";
  }));
  // Many samples and worker wake-ups later the job is still waiting.
  const uint64_t samples = daemon_->telemetry().sampler_samples();
  ASSERT_TRUE(eventually([&] { return daemon_->telemetry().sampler_samples() >= samples + 10; }));
  EXPECT_EQ(calls.load(), 0);
  EXPECT_EQ(study()->state, "queued");
  board_.set_temperature_mC("GPU-therm", 82'000);  // inside the hysteresis band: still held
  ASSERT_TRUE(eventually([&] { return daemon_->telemetry().sampler_samples() >= samples + 20; }));
  EXPECT_EQ(calls.load(), 0);
  board_.set_temperature_mC("GPU-therm", 70'000);
  ASSERT_TRUE(eventually([&] {
    auto s = study();
    return s && s->state == "done";
  }));
  EXPECT_EQ(calls.load(), 1);
}

TEST_F(DaemonTest, ResultRowCarriesEnergyPowerAndPeakTemperature) {
  board_.set_rail(hal::kRailModuleTotal, 5000, 2000);  // 10 W
  board_.set_temperature_mC("CPU-therm", 66'000);
  start([&](const std::string&, const std::string&, const inference::ProgressFn&) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return done_report(1.0);
  });
  send_study();
  ASSERT_TRUE(eventually([&] {
    auto s = study();
    return s && s->state == "done";
  }));
  auto r = daemon_->index().result(kStudy);
  ASSERT_TRUE(r.ok() && r->has_value());
  ASSERT_TRUE((*r)->energy_j && (*r)->mean_power_mw && (*r)->peak_power_mw && (*r)->peak_temp_c);
  EXPECT_DOUBLE_EQ(*(*r)->mean_power_mw, 10000.0);
  EXPECT_DOUBLE_EQ(*(*r)->peak_power_mw, 10000.0);
  EXPECT_GE(*(*r)->energy_j, 10.0 * 0.049);  // 10 W for at least 50 ms
  EXPECT_DOUBLE_EQ(*(*r)->peak_temp_c, 66.0);
}

TEST_F(DaemonTest, ResultWithoutPowerMonitorHasNullEnergy) {
  board_.inject_fault(hal::kRailModuleTotal, hal::SimFault::kMissing);
  start([&](const std::string&, const std::string&, const inference::ProgressFn&) { return done_report(1.0); });
  send_study();
  ASSERT_TRUE(eventually([&] {
    auto s = study();
    return s && s->state == "done";
  }));
  auto r = daemon_->index().result(kStudy);
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_FALSE((*r)->energy_j.has_value());
  EXPECT_FALSE((*r)->mean_power_mw.has_value());
  EXPECT_TRUE((*r)->peak_temp_c.has_value());
}

}  // namespace
}  // namespace firmware

namespace firmware {
namespace {

TEST_F(DaemonTest, IdleBoxShowsSteadyLedAndServesTheStatusPageReadOnly) {
  config_.status.enabled = true;
  config_.status.port = free_port();
  start([](const std::string&, const std::string&, const inference::ProgressFn&) { return done_report(1.0); });
  EXPECT_TRUE(eventually([&] { return board_.led().pattern() == hal::LedPattern::kOn; }))
      << hal::led_pattern_name(board_.led().pattern());
  httplib::Client client("127.0.0.1", config_.status.port);
  auto page = client.Get("/status.json");
  ASSERT_TRUE(page) << "status page not answering on port " << config_.status.port;
  EXPECT_EQ(page->status, 200);
  auto j = nlohmann::json::parse(page->body, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << page->body.substr(0, 200);
  EXPECT_TRUE(j["daemon"]["running"].get<bool>());
  auto post = client.Post("/status.json", "{}", "application/json");
  ASSERT_TRUE(post);
  EXPECT_EQ(post->status, 405);
}

TEST_F(DaemonTest, SetsThePowerModeOnlyWhenConfiguredTo) {
  config_.board.power_mode = 2;  // the sim board starts in mode 8
  start([](const std::string&, const std::string&, const inference::ProgressFn&) { return done_report(1.0); });
  auto mode = board_.power_mode().current();
  ASSERT_TRUE(mode.ok());
  EXPECT_EQ(mode->id, 8);  // reported, not changed
  daemon_.reset();
  config_.board.set_power_mode = true;
  start([](const std::string&, const std::string&, const inference::ProgressFn&) { return done_report(1.0); });
  mode = board_.power_mode().current();
  ASSERT_TRUE(mode.ok());
  EXPECT_EQ(mode->id, 2);
}

}  // namespace
}  // namespace firmware
