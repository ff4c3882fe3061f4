// collect_status() and its renderings against a seeded data directory: the same facts in the
// JSON and the terminal text, patient IDs hidden unless configured, outbox state, LED state.
#include "firmware/status_report.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>

#include "tests/firmware/status_seed.h"

namespace firmware {
namespace {
namespace fs = std::filesystem;

class StatusReportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "status_report_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    config_.storage.data_dir = (dir_ / "data").string();
    sim_->set_temperature_mC("GPU-therm", 57'300);
    base::Status st = status_seed::seed(config_, *sim_);
    ASSERT_TRUE(st.ok()) << st.to_string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path dir_;
  Config config_;
  std::unique_ptr<hal::SimBoard> sim_ = hal::make_sim_board();
};

TEST_F(StatusReportTest, GathersStudiesTelemetryAndDaemon) {
  auto r = collect_status(config_);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_TRUE(r->daemon_running);
  ASSERT_EQ(r->recent.size(), 3u);
  EXPECT_EQ(r->recent[0].study.study_uid, status_seed::kDoneStudy);  // newest first
  EXPECT_EQ(r->studies["done"], 2);
  EXPECT_EQ(r->studies["failed"], 1);
  ASSERT_EQ(r->failures.size(), 1u);
  EXPECT_EQ(r->failures[0].reason, status_seed::kFailReason);
  ASSERT_TRUE(r->latest.has_value());
  EXPECT_DOUBLE_EQ(r->latest->max_temp_c.value(), 57.3);
  EXPECT_TRUE(r->history.empty());  // only when asked for
  EXPECT_TRUE(r->disk_free_bytes.has_value());
}

TEST_F(StatusReportTest, HistoryCoversTheAskedMinutesOldestFirstWithGapsKept) {
  StatusOptions o;
  o.history_minutes = 60;
  auto r = collect_status(config_, o);
  ASSERT_TRUE(r.ok());
  // 300 seeded points over 50 minutes plus the live sample.
  ASSERT_EQ(r->history.size(), status_seed::kHistoryMinutes * 6 + 1u);
  for (size_t i = 1; i < r->history.size(); ++i) EXPECT_LE(r->history[i - 1].t_ms, r->history[i].t_ms);
  EXPECT_FALSE(r->history[7].vdd_in_mW.has_value());  // missing stays missing
  o.history_minutes = 10;
  auto shorter = collect_status(config_, o);
  ASSERT_TRUE(shorter.ok());
  EXPECT_LT(shorter->history.size(), 70u);
  EXPECT_GT(shorter->history.size(), 55u);
}

TEST_F(StatusReportTest, OutboxDestinationShowsPendingItemAndLastError) {
  auto r = collect_status(config_);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->outbox_present);
  ASSERT_EQ(r->destinations.size(), 1u);
  EXPECT_EQ(r->destinations[0].name, "pacs-main");
  EXPECT_EQ(r->destinations[0].pending, 1);
  EXPECT_FALSE(r->destinations[0].last_error.empty());
}

TEST_F(StatusReportTest, ConfiguredDestinationWithoutOutboxTablesIsListedEmpty) {
  Config c;
  c.storage.data_dir = (dir_ / "fresh").string();
  fs::create_directories(c.storage.data_dir);
  ASSERT_TRUE(storage::Index::open(c.database_path()).ok());
  DestinationConfig d;
  d.name = "console";
  d.ae_title = "CONSOLE";
  d.host = "10.0.0.2";
  c.destinations.push_back(d);
  auto r = collect_status(c);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_FALSE(r->outbox_present);
  ASSERT_EQ(r->destinations.size(), 1u);
  EXPECT_EQ(r->destinations[0].pending, 0);
  EXPECT_FALSE(r->daemon.has_value());
  EXPECT_NE(to_text(*r).find("daemon: no state recorded"), std::string::npos);
}

TEST_F(StatusReportTest, PatientIdsAreHiddenUnlessConfigured) {
  auto r = collect_status(config_);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(to_json(*r).dump().find(status_seed::kPatientId), std::string::npos);
  EXPECT_EQ(to_text(*r).find(status_seed::kPatientId), std::string::npos);
  EXPECT_EQ(to_json(*r)["recent"][0]["patient_id"], "hidden");
  config_.status.show_patient_names = true;
  auto shown = collect_status(config_);
  ASSERT_TRUE(shown.ok());
  EXPECT_EQ(to_json(*shown)["recent"][0]["patient_id"], status_seed::kPatientId);
  EXPECT_NE(to_text(*shown).find(status_seed::kPatientId), std::string::npos);
}

TEST_F(StatusReportTest, TextAndJsonShowTheSameFigures) {
  auto r = collect_status(config_);
  ASSERT_TRUE(r.ok());
  const nlohmann::json j = to_json(*r);
  const std::string text = to_text(*r);
  EXPECT_EQ(j["telemetry"]["max_temp_c"], 57.3);
  EXPECT_NE(text.find("GPU-therm 57.3"), std::string::npos) << text;
  EXPECT_EQ(j["telemetry"]["vdd_in_mw"], 6000);
  EXPECT_NE(text.find("VDD_IN 6.00 W"), std::string::npos) << text;
  EXPECT_EQ(j["recent"][0]["result"]["lesion_volume_ml"], status_seed::kLesionMl);
  EXPECT_NE(text.find("lesion 12.3 ml (2)"), std::string::npos) << text;
  EXPECT_NE(text.find("processing 31.2 s"), std::string::npos) << text;
  EXPECT_EQ(j["board"]["power_mode_id"], 8);
  EXPECT_NE(text.find("power mode 8 (MODE_20W_6CORE)"), std::string::npos) << text;
  EXPECT_EQ(j["engine"]["arena_bytes"], 268435456);
  EXPECT_NE(text.find("pacs-main: 1 pending"), std::string::npos) << text;
  EXPECT_NE(text.find(status_seed::kFailReason), std::string::npos) << text;
  EXPECT_EQ(j["led"]["state"], "idle");
  EXPECT_NE(text.find("status LED: idle (on)"), std::string::npos) << text;
  EXPECT_NE(text.find("up 0d 03:02:"), std::string::npos) << text;
}

// What the daemon publishes in its state: the study being processed with its stage, and the
// front-panel devices the board could not open.
TEST_F(StatusReportTest, ShowsTheCurrentStageAndBoardWarnings) {
  auto r = collect_status(config_);
  ASSERT_TRUE(r.ok() && r->daemon.has_value());
  r->daemon->state_json =
      R"({"threads": [{"name": "worker", "stale": false}], "current_study": "1.2.3", "current_stage": "inference 12/54",)"
      R"( "board_warnings": ["status LED disabled: not_found: no GPIO chip 'gpiochip9'"]})";
  const nlohmann::json j = to_json(*r);
  const std::string text = to_text(*r);
  EXPECT_EQ(j["daemon"]["current_stage"], "inference 12/54");
  ASSERT_EQ(j["board"]["warnings"].size(), 1u) << j["board"].dump();
  EXPECT_NE(text.find("processing 1.2.3 (inference 12/54)"), std::string::npos) << text;
  EXPECT_NE(text.find("board: status LED disabled: not_found: no GPIO chip 'gpiochip9'"), std::string::npos) << text;
}

TEST_F(StatusReportTest, LowDiskMakesTheLedDegraded) {
  config_.storage.min_free_mb = 1 << 30;  // 1 PiB: more than any test disk has
  auto r = collect_status(config_);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->led.state, "degraded");
  EXPECT_EQ(r->led.pattern, "double_blink");
  EXPECT_NE(r->led.detail.find("disk"), std::string::npos);
  EXPECT_TRUE(to_json(*r)["disk"]["low"].get<bool>());
}

TEST_F(StatusReportTest, MissingDatabaseIsNotFound) {
  Config c;
  c.storage.data_dir = (dir_ / "nothing").string();
  EXPECT_EQ(collect_status(c).status().code(), base::Code::kNotFound);
  EXPECT_FALSE(fs::exists(dir_ / "nothing"));
}

TEST(ProcessingMs, SumsStagesButReceive) {
  EXPECT_DOUBLE_EQ(processing_ms(R"({"receive": 1000, "load": 500, "inference": 30000})"), 30500.0);
  EXPECT_DOUBLE_EQ(processing_ms("not json"), 0.0);
}

}  // namespace
}  // namespace firmware
