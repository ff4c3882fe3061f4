// StatusServer on an ephemeral loopback port against a seeded data directory, fetched with
// httplib's client: the page, the JSON, the result picture, read-only methods, privacy.
#include "firmware/status_server.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "tests/firmware/status_seed.h"

// Last: httplib.h brings <resolv.h>'s `_res` macro, which breaks Eigen included after it.
#include <httplib.h>

namespace firmware {
namespace {
namespace fs = std::filesystem;

uint32_t be32(const std::string& s, size_t at) {
  return (uint32_t{static_cast<uint8_t>(s[at])} << 24) | (uint32_t{static_cast<uint8_t>(s[at + 1])} << 16) |
         (uint32_t{static_cast<uint8_t>(s[at + 2])} << 8) | uint32_t{static_cast<uint8_t>(s[at + 3])};
}

class StatusServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "status_server_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    config_.storage.data_dir = (dir_ / "data").string();
    sim_->set_temperature_mC("CPU-therm", 52'700);
    base::Status st = status_seed::seed(config_, *sim_);
    ASSERT_TRUE(st.ok()) << st.to_string();
  }
  void TearDown() override {
    server_.reset();
    fs::remove_all(dir_);
  }
  void start(bool show_patient_names = false) {
    StatusServerOptions o;
    o.config = config_;
    o.show_patient_names = show_patient_names;
    auto s = StatusServer::start(o);
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    server_ = std::move(s).value();
    ASSERT_GT(server_->port(), 0);
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
  }

  fs::path dir_;
  Config config_;
  std::unique_ptr<hal::SimBoard> sim_ = hal::make_sim_board();
  std::unique_ptr<StatusServer> server_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(StatusServerTest, PageShowsTheFiguresAndCharts) {
  start();
  auto res = client_->Get("/");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/html; charset=utf-8");
  const std::string& page = res->body;
  EXPECT_NE(page.find("CPU-therm 52.7"), std::string::npos);
  EXPECT_NE(page.find("VDD_IN 6.00 W"), std::string::npos);
  EXPECT_NE(page.find(status_seed::kDoneStudy), std::string::npos);
  EXPECT_NE(page.find(">12.3<"), std::string::npos);  // lesion volume
  EXPECT_NE(page.find(status_seed::kFailReason), std::string::npos);
  EXPECT_NE(page.find("pacs-main"), std::string::npos);
  EXPECT_NE(page.find("MODE_20W_6CORE"), std::string::npos);
  EXPECT_NE(page.find("id=\"box-state\">idle<"), std::string::npos);
  EXPECT_NE(page.find("arena 256 MiB"), std::string::npos);
  // Two inline SVG charts with data, nothing loaded from elsewhere, no script.
  EXPECT_NE(page.find("<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\""), std::string::npos);
  EXPECT_NE(page.find("Hottest temperature"), std::string::npos);
  EXPECT_NE(page.find("Module power (VDD_IN)"), std::string::npos);
  EXPECT_NE(page.find("<polyline"), std::string::npos);
  EXPECT_EQ(page.find("<script"), std::string::npos);
  EXPECT_EQ(page.find("src=\"http"), std::string::npos);
  EXPECT_NE(page.find("src=\"/last_result.png\""), std::string::npos);
  EXPECT_NE(res->get_header_value("Content-Security-Policy").find("default-src 'none'"), std::string::npos);
}

TEST_F(StatusServerTest, PatientIdsAreHiddenUnlessConfigured) {
  start();
  EXPECT_EQ(client_->Get("/")->body.find(status_seed::kPatientId), std::string::npos);
  EXPECT_EQ(client_->Get("/status.json")->body.find(status_seed::kPatientId), std::string::npos);
  server_.reset();
  start(/*show_patient_names=*/true);
  EXPECT_NE(client_->Get("/")->body.find(status_seed::kPatientId), std::string::npos);
  EXPECT_NE(client_->Get("/status.json")->body.find(status_seed::kPatientId), std::string::npos);
}

TEST_F(StatusServerTest, JsonIsTheStatusCommandsDocumentWithHistory) {
  start();
  auto res = client_->Get("/status.json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  auto j = nlohmann::json::parse(res->body);
  EXPECT_EQ(j["recent"][0]["study_uid"], status_seed::kDoneStudy);
  EXPECT_EQ(j["studies"]["failed"], 1);
  EXPECT_EQ(j["destinations"][0]["pending"], 1);
  EXPECT_EQ(j["led"]["pattern"], "on");
  EXPECT_GT(j["history"]["rows"].size(), 100u);
}

TEST_F(StatusServerTest, LastResultIsThePngOfTheSliceWithTheMostLesion) {
  start();
  auto res = client_->Get("/last_result.png");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "image/png");
  const std::string& png = res->body;
  ASSERT_GT(png.size(), 33u);
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_EQ(png.substr(12, 4), "IHDR");
  EXPECT_EQ(be32(png, 16), static_cast<uint32_t>(status_seed::kBestWidth));   // 0002.dcm, not 0001
  EXPECT_EQ(be32(png, 20), static_cast<uint32_t>(status_seed::kBestHeight));
  // Served again from the cache, identical.
  EXPECT_EQ(client_->Get("/last_result.png")->body, png);
}

TEST_F(StatusServerTest, NoFinishedStudyMeansNoPicture) {
  fs::remove_all(fs::path(config_.results_dir()) / status_seed::kDoneStudy / "overlay");
  start();
  EXPECT_EQ(client_->Get("/last_result.png")->status, 404);
  auto page = client_->Get("/");
  EXPECT_EQ(page->status, 200);
  EXPECT_EQ(page->body.find("/last_result.png"), std::string::npos);
}

TEST_F(StatusServerTest, OnlyGetAndHeadAreAllowed) {
  start();
  auto head = client_->Head("/");
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  EXPECT_TRUE(head->body.empty());
  auto refused = [](const httplib::Result& res, const char* what) {
    ASSERT_TRUE(res) << what;
    EXPECT_EQ(res->status, 405) << what;
    EXPECT_EQ(res->get_header_value("Allow"), "GET, HEAD") << what;
  };
  refused(client_->Post("/", "x", "text/plain"), "POST");
  refused(client_->Put("/status.json", "x", "text/plain"), "PUT");
  refused(client_->Delete("/"), "DELETE");
  refused(client_->Patch("/", "x", "text/plain"), "PATCH");
  refused(client_->Options("/"), "OPTIONS");
  EXPECT_EQ(client_->Get("/nothing-here")->status, 404);
}

TEST_F(StatusServerTest, MissingDatabaseIsServiceUnavailableNotACrash) {
  config_.storage.data_dir = (dir_ / "empty").string();
  start();
  auto page = client_->Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 503);
  EXPECT_NE(page->body.find("status unavailable"), std::string::npos);
  EXPECT_EQ(client_->Get("/status.json")->status, 503);
}

TEST_F(StatusServerTest, PortInUseIsUnavailable) {
  start();
  StatusServerOptions o;
  o.config = config_;
  o.port = server_->port();
  auto second = StatusServer::start(o);
  EXPECT_EQ(second.status().code(), base::Code::kUnavailable) << second.status().to_string();
}

TEST_F(StatusServerTest, StopIsIdempotentAndClosesThePort) {
  start();
  const int port = server_->port();
  server_->stop();
  server_->stop();
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(1, 0);
  EXPECT_FALSE(c.Get("/"));
}

TEST(StatusServerOptionsFromConfig, TakesTheStatusSection) {
  Config c;
  c.status.bind_address = "0.0.0.0";
  c.status.port = 8181;
  c.status.show_patient_names = true;
  StatusServerOptions o = status_server_options(c);
  EXPECT_EQ(o.bind_address, "0.0.0.0");
  EXPECT_EQ(o.port, 8181);
  EXPECT_TRUE(o.show_patient_names);
  StatusServerOptions bad;
  bad.port = 70000;
  EXPECT_EQ(StatusServer::start(bad).status().code(), base::Code::kInvalidArgument);
}

TEST(RenderSvgChart, GapsSplitTheLineAndEmptyDataSaysSo) {
  const std::string empty = render_svg_chart({}, {}, 0, 3'600'000, "T", "C", "#000");
  EXPECT_NE(empty.find("no data in this period"), std::string::npos);
  const std::string two = render_svg_chart({0, 1000, 2000, 3000}, {40.0, 41.0, std::nullopt, 42.0}, 0, 3000, "T",
                                           "C", "#000");
  size_t lines = 0;
  for (size_t at = two.find("<polyline"); at != std::string::npos; at = two.find("<polyline", at + 1)) ++lines;
  EXPECT_EQ(lines, 2u);
  EXPECT_NE(two.find("now 42.0 C"), std::string::npos);
}

}  // namespace
}  // namespace firmware
