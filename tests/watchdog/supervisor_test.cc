// The supervisor, first stepped by hand with a recording notifier and a manual clock, then
// as a thread talking to real sd_notify over a fake NOTIFY_SOCKET.
#include "watchdog/supervisor.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

#include "watchdog/heartbeat.h"
#include "watchdog/sd_notify.h"

namespace watchdog {
namespace {
using std::chrono::microseconds;
using std::chrono::milliseconds;

class RecordingNotifier final : public Notifier {
 public:
  base::Status notify(std::string_view state) override {
    std::lock_guard lock(mu_);
    messages_.emplace_back(state);
    return base::ok_status();
  }
  /// Returns and forgets what was sent so far.
  std::vector<std::string> take() {
    std::lock_guard lock(mu_);
    return std::exchange(messages_, {});
  }

 private:
  std::mutex mu_;
  std::vector<std::string> messages_;
};

using Msgs = std::vector<std::string>;

TEST(Supervisor, PingsWhileEveryHeartbeatIsFresh) {
  ManualClock clock;
  Registry reg(clock);
  RecordingNotifier n;
  auto h = *reg.add("dicom", milliseconds(1000));
  Supervisor sup(reg, n, milliseconds(100));
  EXPECT_TRUE(sup.check_once().empty());
  clock.advance(milliseconds(900));
  EXPECT_TRUE(sup.check_once().empty());
  EXPECT_EQ(n.take(), (Msgs{"WATCHDOG=1", "WATCHDOG=1"}));
}

TEST(Supervisor, PingsWithNoHeartbeats) {
  Registry reg;
  RecordingNotifier n;
  Supervisor sup(reg, n, milliseconds(100));
  (void)sup.check_once();
  EXPECT_EQ(n.take(), (Msgs{"WATCHDOG=1"}));
}

TEST(Supervisor, StaleHeartbeatStopsPingsAndIsNamedInStatus) {
  ManualClock clock;
  Registry reg(clock);
  RecordingNotifier n;
  auto dicom = *reg.add("dicom", milliseconds(1000));
  auto jobs = *reg.add("jobs", milliseconds(1000));
  Supervisor sup(reg, n, milliseconds(100));
  clock.advance(milliseconds(1500));
  dicom->beat();
  auto stale = sup.check_once();
  ASSERT_EQ(stale.size(), 1u);
  EXPECT_EQ(stale[0].name, "jobs");
  EXPECT_EQ(n.take(), (Msgs{"STATUS=stuck: jobs (no progress for 1500 ms)"}));
  // Still stuck: no ping, and the same status is not repeated.
  clock.advance(milliseconds(100));
  dicom->beat();
  EXPECT_EQ(sup.check_once().size(), 1u);
  EXPECT_EQ(n.take(), Msgs{});
}

TEST(Supervisor, EachHeartbeatIsCheckedAgainstItsOwnDeadline) {
  ManualClock clock;
  Registry reg(clock);
  RecordingNotifier n;
  ASSERT_TRUE(reg.add("inference", milliseconds(600'000)).ok());
  ASSERT_TRUE(reg.add("dicom", milliseconds(2'000)).ok());
  Supervisor sup(reg, n, milliseconds(100));
  clock.advance(milliseconds(60'000));
  auto stale = sup.check_once();
  ASSERT_EQ(stale.size(), 1u);
  EXPECT_EQ(stale[0].name, "dicom");
}

TEST(Supervisor, SeveralStuckHeartbeatsAreAllNamed) {
  ManualClock clock;
  Registry reg(clock);
  RecordingNotifier n;
  ASSERT_TRUE(reg.add("a", milliseconds(100)).ok());
  ASSERT_TRUE(reg.add("b", milliseconds(200)).ok());
  Supervisor sup(reg, n, milliseconds(10));
  clock.advance(milliseconds(150));
  (void)sup.check_once();
  clock.advance(milliseconds(100));
  (void)sup.check_once();
  EXPECT_EQ(n.take(), (Msgs{"STATUS=stuck: a (no progress for 150 ms)",
                            "STATUS=stuck: a (no progress for 250 ms), "
                            "b (no progress for 250 ms)"}));
}

TEST(Supervisor, RecoveryResumesPings) {
  ManualClock clock;
  Registry reg(clock);
  RecordingNotifier n;
  auto h = *reg.add("storage", milliseconds(100));
  Supervisor sup(reg, n, milliseconds(10));
  clock.advance(milliseconds(101));
  (void)sup.check_once();
  h->beat();
  EXPECT_TRUE(sup.check_once().empty());
  EXPECT_EQ(n.take(), (Msgs{"STATUS=stuck: storage (no progress for 101 ms)",
                            "STATUS=running", "WATCHDOG=1"}));
}

TEST(Supervisor, RemovedHeartbeatIsNoLongerWatched) {
  ManualClock clock;
  Registry reg(clock);
  RecordingNotifier n;
  ASSERT_TRUE(reg.add("worker", milliseconds(100)).ok());
  Supervisor sup(reg, n, milliseconds(10));
  ASSERT_TRUE(reg.remove("worker").ok());
  clock.advance(milliseconds(1000));
  EXPECT_TRUE(sup.check_once().empty());
  EXPECT_EQ(n.take(), (Msgs{"WATCHDOG=1"}));
}

TEST(Supervisor, StartRejectsNonPositiveIntervalAndSecondStart) {
  Registry reg;
  RecordingNotifier n;
  Supervisor bad(reg, n, milliseconds(0));
  EXPECT_EQ(bad.start().code(), base::Code::kInvalidArgument);
  Supervisor sup(reg, n, milliseconds(1000));
  ASSERT_TRUE(sup.start().ok());
  EXPECT_TRUE(sup.running());
  EXPECT_EQ(sup.start().code(), base::Code::kFailedPrecondition);
  sup.stop();
  sup.stop();
  EXPECT_FALSE(sup.running());
  ASSERT_TRUE(sup.start().ok());  // restartable
  sup.stop();
}

TEST(Supervisor, ThreadChecksAtOnceOnStart) {
  Registry reg;
  RecordingNotifier n;
  Supervisor sup(reg, n, milliseconds(60'000));
  ASSERT_TRUE(sup.start().ok());
  // The first check runs before the first wait; stop() interrupts the 60 s wait.
  Msgs got;
  for (int i = 0; i < 5000 && got.empty(); ++i) {
    got = n.take();
    if (got.empty()) usleep(1000);
  }
  sup.stop();
  EXPECT_EQ(got, (Msgs{"WATCHDOG=1"}));
  EXPECT_EQ(n.take(), Msgs{});
}

TEST(NotifyHelpers, FormatSystemdAssignments) {
  RecordingNotifier n;
  ASSERT_TRUE(notify_ready(n).ok());
  ASSERT_TRUE(notify_stopping(n).ok());
  ASSERT_TRUE(notify_extend_timeout(n, std::chrono::seconds(90)).ok());
  ASSERT_TRUE(notify_status(n, "loading model\nstep 2").ok());
  EXPECT_EQ(n.take(), (Msgs{"READY=1", "STOPPING=1", "EXTEND_TIMEOUT_USEC=90000000",
                            "STATUS=loading model step 2"}));
  EXPECT_EQ(notify_extend_timeout(n, microseconds(0)).code(), base::Code::kInvalidArgument);
}

// --- real sd_notify over a fake NOTIFY_SOCKET ----------------------------------------------

/// An AF_UNIX datagram socket in a temporary directory, exported as NOTIFY_SOCKET (and the
/// variables restored afterwards), standing in for systemd's notification socket.
class FakeNotifySocket : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "wd_notify_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/notify.sock";
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd_, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    ASSERT_LT(path_.size(), sizeof addr.sun_path);
    std::copy(path_.begin(), path_.end(), addr.sun_path);
    ASSERT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    // A safety net, not a timing assertion: a missing message fails instead of hanging.
    timeval tv{5, 0};
    ASSERT_EQ(setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    save("NOTIFY_SOCKET");
    save("WATCHDOG_USEC");
    save("WATCHDOG_PID");
    setenv("NOTIFY_SOCKET", path_.c_str(), 1);
  }
  void TearDown() override {
    if (fd_ >= 0) close(fd_);
    for (auto& [name, value] : saved_) {
      if (value) {
        setenv(name.c_str(), value->c_str(), 1);
      } else {
        unsetenv(name.c_str());
      }
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  void save(const char* name) {
    const char* v = getenv(name);
    saved_.emplace_back(name, v ? std::optional<std::string>(v) : std::nullopt);
  }
  /// The next datagram; "" on timeout (or when none is queued and `wait` is false).
  std::string receive(bool wait = true) {
    char buf[4096];
    ssize_t n = recv(fd_, buf, sizeof buf, wait ? 0 : MSG_DONTWAIT);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  }

  std::string dir_, path_;
  int fd_ = -1;
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

TEST_F(FakeNotifySocket, SdNotifierDeliversTheState) {
  SdNotifier n;
  ASSERT_TRUE(notify_ready(n).ok());
  EXPECT_EQ(receive(), "READY=1");
}

TEST_F(FakeNotifySocket, SdNotifierOutsideSystemdIsANoOp) {
  unsetenv("NOTIFY_SOCKET");
  SdNotifier n;
  EXPECT_TRUE(n.notify("WATCHDOG=1").ok());
  EXPECT_EQ(receive(/*wait=*/false), "");
}

TEST_F(FakeNotifySocket, SupervisorThreadPingsThenReportsAStuckHeartbeat) {
  ManualClock clock;
  Registry reg(clock);
  auto dicom = *reg.add("dicom", milliseconds(1000));
  SdNotifier n;
  ASSERT_TRUE(notify_ready(n).ok());
  EXPECT_EQ(receive(), "READY=1");

  Supervisor sup(reg, n, milliseconds(2));
  ASSERT_TRUE(sup.start().ok());
  EXPECT_EQ(receive(), "WATCHDOG=1");  // fresh: the thread pings

  clock.advance(milliseconds(2500));  // the DICOM thread makes no progress
  std::string msg;
  while ((msg = receive()) == "WATCHDOG=1") {
  }  // skip the pings queued before the jump
  EXPECT_EQ(msg, "STATUS=stuck: dicom (no progress for 2500 ms)");
  sup.stop();
  // After the status, no more pings: systemd's watchdog will now fire.
  std::vector<std::string> after;
  while (!(msg = receive(/*wait=*/false)).empty()) after.push_back(msg);
  EXPECT_EQ(after, std::vector<std::string>{});
}

TEST_F(FakeNotifySocket, WatchdogTimeoutComesFromTheEnvironment) {
  unsetenv("WATCHDOG_USEC");
  unsetenv("WATCHDOG_PID");
  auto off = watchdog_timeout();
  ASSERT_TRUE(off.ok()) << off.status().to_string();
  EXPECT_FALSE(off->has_value());

  setenv("WATCHDOG_USEC", "30000000", 1);
  setenv("WATCHDOG_PID", std::to_string(getpid()).c_str(), 1);
  auto on = watchdog_timeout();
  ASSERT_TRUE(on.ok()) << on.status().to_string();
  ASSERT_TRUE(on->has_value());
  EXPECT_EQ(**on, std::chrono::seconds(30));
  EXPECT_EQ(ping_interval(**on), milliseconds(15'000));

  setenv("WATCHDOG_PID", std::to_string(getpid() + 1).c_str(), 1);  // another process's
  auto other = watchdog_timeout();
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(other->has_value());

  setenv("WATCHDOG_PID", std::to_string(getpid()).c_str(), 1);
  setenv("WATCHDOG_USEC", "soon", 1);
  EXPECT_EQ(watchdog_timeout().status().code(), base::Code::kInvalidArgument);
}

TEST(PingInterval, IsHalfTheTimeoutAndAtLeastOneMillisecond) {
  EXPECT_EQ(ping_interval(std::chrono::seconds(20)), milliseconds(10'000));
  EXPECT_EQ(ping_interval(microseconds(500)), milliseconds(1));
}

}  // namespace
}  // namespace watchdog
