// Checks firmware/strokebox.service: the settings the appliance relies on are present, and
// `systemd-analyze verify` accepts the unit (skipped where the tool is not installed).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace firmware {
namespace {

namespace fs = std::filesystem;

std::string unit_text() {
  std::ifstream in(std::string(STROKEBOX_SOURCE_DIR) + "/firmware/strokebox.service");
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(ServiceUnit, DeclaresNotifyWatchdogRestartLimitsAndHardening) {
  const std::string unit = unit_text();
  ASSERT_FALSE(unit.empty());
  for (const char* line : {"Type=notify", "WatchdogSec=", "Restart=on-failure", "StartLimitIntervalSec=",
                           "StartLimitBurst=", "DynamicUser=yes", "StateDirectory=strokebox", "ProtectSystem=strict",
                           "PrivateTmp=yes", "NoNewPrivileges=yes"}) {
    EXPECT_NE(unit.find(std::string("\n") + line), std::string::npos) << line;
  }
  // The data directory is the StateDirectory, the only writable path.
  EXPECT_NE(unit.find("--data-dir /var/lib/strokebox"), std::string::npos);
}

TEST(ServiceUnit, SystemdAnalyzeVerifyAcceptsIt) {
  if (std::system("command -v systemd-analyze >/dev/null 2>&1") != 0) GTEST_SKIP() << "systemd-analyze not installed";
  if (!fs::exists(STROKEBOX_BINARY)) GTEST_SKIP() << "build the strokebox binary first";
  // verify checks that ExecStart exists: point it at the binary under test.
  const fs::path dir = fs::temp_directory_path() / ("sb_unit_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::string unit = unit_text();
  const std::string exec = "/usr/bin/strokebox";
  for (size_t at = unit.find(exec); at != std::string::npos; at = unit.find(exec, at + 1)) {
    unit.replace(at, exec.size(), STROKEBOX_BINARY);
  }
  std::ofstream(dir / "strokebox.service") << unit;
  const std::string log = (dir / "verify.log").string();
  const int rc = std::system(("systemd-analyze verify " + (dir / "strokebox.service").string() + " >" + log + " 2>&1").c_str());
  std::stringstream out;
  out << std::ifstream(log).rdbuf();
  fs::remove_all(dir);
  EXPECT_EQ(rc, 0) << out.str();
  EXPECT_EQ(out.str().find("strokebox.service:"), std::string::npos) << out.str();  // no warning about our lines
}

}  // namespace
}  // namespace firmware
