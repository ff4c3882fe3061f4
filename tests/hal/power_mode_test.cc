// Setting the nvpmodel power mode: the Jetson backend runs `nvpmodel -m N` through an
// injected command runner against a fake tree; the sim board and the null device.
#include <gtest/gtest.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "hal/board.h"
#include "hal/jetson_board.h"
#include "hal/sim_board.h"

namespace hal {
namespace {
namespace fs = std::filesystem;

// False under qemu-user (scripts/cross_check.sh): it runs posix_spawn's CLONE_VFORK child as a
// plain fork, so a program that does not exist comes back as a child exiting with 127, not ENOENT.
bool spawn_reports_missing_programs() {
  char name[] = "strokebox-no-such-tool-probe";
  char* argv[] = {name, nullptr};
  pid_t pid = -1;
  const int rc = ::posix_spawnp(&pid, name, nullptr, nullptr, argv, environ);
  if (rc == 0) ::waitpid(pid, nullptr, 0);
  return rc == ENOENT;
}

class JetsonPowerModeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "hal_pmode_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    fs::create_directories(root_ / "var/lib/nvpmodel");
    write_status(3);
  }
  void TearDown() override { fs::remove_all(root_); }
  void write_status(int id) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "pmode:%04d\n", id);
    std::ofstream(root_ / jetson_paths::kNvpmodelStatus) << buf;
  }
  std::unique_ptr<Board> board(CommandRunner run) {
    auto b = make_jetson_board(root_, JetsonOptions{std::move(run)});
    EXPECT_TRUE(b.ok()) << b.status().to_string();
    return std::move(b).value();
  }
  fs::path root_;
  std::vector<std::vector<std::string>> calls_;
};

TEST_F(JetsonPowerModeTest, RunsNvpmodelAndChecksTheNewMode) {
  auto b = board([this](const std::vector<std::string>& argv) -> base::Result<CommandOutput> {
    calls_.push_back(argv);
    write_status(std::stoi(argv.back()));  // what nvpmodel does
    return CommandOutput{0, "NVPM: mode set\n"};
  });
  ASSERT_TRUE(b->power_mode().set(8).ok());
  ASSERT_EQ(calls_.size(), 1u);
  EXPECT_EQ(calls_[0], (std::vector<std::string>{"nvpmodel", "-m", "8"}));
  EXPECT_EQ(b->power_mode().current()->name, "MODE_20W_6CORE");
}

TEST_F(JetsonPowerModeTest, ModeThatNeedsARebootIsFailedPrecondition) {
  auto b = board([](const std::vector<std::string>&) -> base::Result<CommandOutput> {
    return CommandOutput{0, "NVPM WARN: Reboot required for changing to this power mode: 8\n"};
  });
  base::Status st = b->power_mode().set(8);
  EXPECT_EQ(st.code(), base::Code::kFailedPrecondition);
  EXPECT_NE(st.message().find("reboot"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("Reboot required"), std::string::npos) << st.message();
}

TEST_F(JetsonPowerModeTest, NvpmodelFailureCarriesItsOutput) {
  auto b = board([](const std::vector<std::string>&) -> base::Result<CommandOutput> {
    return CommandOutput{1, "NVPM ERROR: failed to write: Permission denied\n"};
  });
  base::Status st = b->power_mode().set(8);
  EXPECT_EQ(st.code(), base::Code::kPermissionDenied);
  EXPECT_NE(st.message().find("Permission denied"), std::string::npos) << st.message();
  b = board([](const std::vector<std::string>&) -> base::Result<CommandOutput> { return CommandOutput{2, "bad"}; });
  EXPECT_EQ(b->power_mode().set(8).code(), base::Code::kUnavailable);
}

TEST_F(JetsonPowerModeTest, UnknownModeIsRejectedWithoutRunningAnything) {
  auto b = board([this](const std::vector<std::string>& argv) -> base::Result<CommandOutput> {
    calls_.push_back(argv);
    return CommandOutput{0, ""};
  });
  EXPECT_EQ(b->power_mode().set(9).code(), base::Code::kInvalidArgument);
  EXPECT_EQ(b->power_mode().set(-1).code(), base::Code::kInvalidArgument);
  EXPECT_TRUE(calls_.empty());
}

TEST_F(JetsonPowerModeTest, MissingNvpmodelIsNotFound) {
  if (!spawn_reports_missing_programs()) GTEST_SKIP() << "posix_spawn cannot report a missing program here (qemu-user)";
  auto b = board([](const std::vector<std::string>& argv) {
    return run_command({"strokebox-no-such-tool-" + argv[0]});
  });
  EXPECT_EQ(b->power_mode().set(8).code(), base::Code::kNotFound);
}

TEST(RunCommand, CapturesOutputAndExitCode) {
  auto r = run_command({"/bin/sh", "-c", "echo out; echo err >&2; exit 3"});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_EQ(r->output, "out\nerr\n");
}

TEST(RunCommand, StdinIsEmptySoPromptsDoNotHang) {
  auto r = run_command({"/bin/sh", "-c", "read answer; echo \"got[$answer]\""});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->output, "got[]\n");
}

TEST(SimPowerMode, SetChangesTheReportedMode) {
  auto sim = make_sim_board();
  sim->set_power_mode(3, "MODE_10W_2CORE");
  ASSERT_TRUE(sim->power_mode().set(8).ok());
  EXPECT_EQ(sim->power_mode().current()->id, 8);
  EXPECT_EQ(sim->power_mode().current()->name, "MODE_20W_6CORE");
  EXPECT_EQ(sim->power_mode().set(12).code(), base::Code::kInvalidArgument);
  sim->inject_fault(kSimPowerMode, SimFault::kError);
  EXPECT_EQ(sim->power_mode().set(7).code(), base::Code::kUnavailable);
}

TEST(NullPowerMode, SetIsNotFound) {
  EXPECT_EQ(make_null_power_mode("no nvpmodel")->set(8).code(), base::Code::kNotFound);
}

}  // namespace
}  // namespace hal
