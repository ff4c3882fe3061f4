// The technician's status page in a real browser: a seeded data directory (the library builds it
// as the daemon would), StatusServer on a loopback port, headless Chromium loads the page
// (--dump-dom) and takes a screenshot; the figures must be in the rendered DOM. The terminal
// screen of the real `strokebox status` must show the same figures.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "firmware/status_server.h"
#include "tests/firmware/status_seed.h"
#include "tests/integration/process.h"

namespace {
namespace fs = std::filesystem;

constexpr const char* kChromium = "/usr/bin/chromium";

class StatusPage : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kChromium)) GTEST_SKIP() << kChromium << " is not installed";
    std::string tmpl = (fs::temp_directory_path() / "status_page_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    config_.storage.data_dir = (dir_ / "data").string();
    sim_->set_temperature_mC("GPU-therm", 58'400);
    sim_->set_rail("VDD_IN", 5'000, 2'150);  // 10.75 W
    base::Status st = status_seed::seed(config_, *sim_);
    ASSERT_TRUE(st.ok()) << st.to_string();
    firmware::StatusServerOptions o;
    o.config = config_;
    auto server = firmware::StatusServer::start(o);
    ASSERT_TRUE(server.ok()) << server.status().to_string();
    server_ = std::move(server).value();
    url_ = "http://127.0.0.1:" + std::to_string(server_->port()) + "/";
  }
  void TearDown() override {
    server_.reset();
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  // Headless Chromium with its own throw-away profile; nothing but loopback is contacted.
  std::string chromium(const std::string& flags) {
    return std::string(kChromium) + " --headless --no-sandbox --disable-gpu --no-first-run --disable-extensions " +
           "--disable-background-networking --disable-sync --user-data-dir=" + (dir_ / "profile").string() + " " +
           flags + " " + url_ + " 2>" + (dir_ / "chromium.log").string();
  }

  fs::path dir_;
  firmware::Config config_;
  std::unique_ptr<hal::SimBoard> sim_ = hal::make_sim_board();
  std::unique_ptr<firmware::StatusServer> server_;
  std::string url_;
};

TEST_F(StatusPage, ChromiumRendersTheFigures) {
  itest::CommandResult dom = itest::run_command(chromium("--dump-dom"));
  ASSERT_EQ(dom.exit_code, 0) << itest::read_file((dir_ / "chromium.log").string());
  const std::string& d = dom.output;
  EXPECT_NE(d.find("GPU-therm 58.4"), std::string::npos) << d;
  EXPECT_NE(d.find("VDD_IN 10.75 W"), std::string::npos);
  EXPECT_NE(d.find("MODE_20W_6CORE"), std::string::npos);
  EXPECT_NE(d.find(status_seed::kDoneStudy), std::string::npos);
  EXPECT_NE(d.find(">12.3<"), std::string::npos);
  EXPECT_NE(d.find(status_seed::kFailReason), std::string::npos);
  EXPECT_NE(d.find("pacs-main"), std::string::npos);
  EXPECT_NE(d.find("id=\"box-state\">idle<"), std::string::npos);
  EXPECT_NE(d.find("Hottest temperature"), std::string::npos);
  EXPECT_NE(d.find("now 58.4"), std::string::npos);  // the chart's last point is the live sample
  EXPECT_NE(d.find("Module power (VDD_IN)"), std::string::npos);
  EXPECT_NE(d.find("<polyline"), std::string::npos);
  EXPECT_EQ(d.find(status_seed::kPatientId), std::string::npos);
}

TEST_F(StatusPage, ChromiumScreenshotIsAPng) {
  const fs::path shot = dir_ / "status_page.png";
  itest::CommandResult r =
      itest::run_command(chromium("--hide-scrollbars --window-size=1000,1500 --screenshot=" + shot.string()));
  ASSERT_EQ(r.exit_code, 0) << itest::read_file((dir_ / "chromium.log").string());
  ASSERT_TRUE(fs::exists(shot));
  const std::string png = itest::read_file(shot.string());
  ASSERT_GT(png.size(), 10'000u);  // a rendered page, not a blank one
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  if (const char* keep = std::getenv("STROKEBOX_STATUS_SCREENSHOT")) fs::copy_file(shot, keep, fs::copy_options::overwrite_existing);
}

TEST_F(StatusPage, StatusCommandShowsTheSameFigures) {
  itest::CommandResult r = itest::run_command(std::string(STROKEBOX_BINARY) + " status --data-dir " + config_.storage.data_dir);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("GPU-therm 58.4"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("VDD_IN 10.75 W"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("lesion 12.3 ml (2)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("pacs-main: 1 pending"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(status_seed::kFailReason), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find(status_seed::kPatientId), std::string::npos) << r.output;
  if (const char* keep = std::getenv("STROKEBOX_STATUS_SCREEN")) std::ofstream(keep) << r.output;
}

}  // namespace
