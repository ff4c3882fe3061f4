// NodeLoad: a short version of bench/load_bench.sh against the real daemon. Four senders at
// once (the configured association limit) send studies of 60..120 small synthetic slices for a
// few seconds; no association may be refused, no instance fail, and every acknowledged
// instance must be in the daemon's index afterwards.
#include <gtest/gtest.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <string>

#include <dcmtk/oflog/oflog.h>

#include "bench/load_bench_sender.h"
#include "tests/integration/process.h"

namespace {

namespace fs = std::filesystem;

TEST(NodeLoad, FourSendersAtTheLimitAreNeverRefusedAndNothingIsLost) {
  OFLog::configure(OFLogger::ERROR_LOG_LEVEL);
  std::signal(SIGPIPE, SIG_IGN);
  ::setenv("TCP_NODELAY", "1", 0);  // senders without Nagle's algorithm, as bench/load_bench
  const fs::path work = fs::temp_directory_path() / ("sb_node_load_" + std::to_string(::getpid()));
  fs::remove_all(work);
  fs::create_directories(work);
  const int port = itest::free_port();
  const std::string bin = STROKEBOX_BINARY;
  const std::string log = (work / "daemon.log").string();
  itest::Child daemon({bin, "run", "--port", std::to_string(port), "--bind", "127.0.0.1", "--ae-title", "STROKEBOX",
                       "--data-dir", (work / "data").string(), "--model",
                       std::string(STROKEBOX_SOURCE_DIR) + "/models/demo", "--quiet-s", "2", "--board", "sim"},
                      log);
  bool up = false;
  for (int i = 0; i < 600 && !up; ++i) {
    up = itest::run_command("echoscu -aec STROKEBOX 127.0.0.1 " + std::to_string(port) + " 2>/dev/null").exit_code ==
         0;
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(up) << itest::read_file(log);

  loadbench::LoadOptions o;
  o.port = port;
  o.senders = 4;  // the daemon's default dicom.max_associations
  o.duration_s = 6;
  o.min_instances = 60;
  o.max_instances = 120;
  auto report = loadbench::run_load(o);
  ASSERT_TRUE(report.ok()) << report.status().to_string();
  ASSERT_TRUE(loadbench::check_index((work / "data" / "strokebox.db").string(), *report).ok());
  loadbench::print_report(*report);

  EXPECT_EQ(report->associations_refused, 0) << itest::read_file(log);
  EXPECT_EQ(report->instances_failed, 0) << itest::read_file(log);
  EXPECT_GE(report->studies_completed, 4);
  EXPECT_EQ(report->instances_missing, 0);
  EXPECT_TRUE(daemon.running()) << itest::read_file(log);
  daemon.stop();
  fs::remove_all(work);
}

}  // namespace
