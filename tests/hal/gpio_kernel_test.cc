// hal/gpio.cc's libgpiod path against a real kernel GPIO chip: the kernel's gpio-mockup driver,
// whose debugfs files show the electrical level of each line and simulate input levels (edges).
// Skipped unless STROKEBOX_GPIO_MOCKUP_CHIP / _DEBUGFS name such a chip: scripts/gpio_kernel_check.sh
// boots a qemu VM that loads gpio-mockup and runs these (docs/operations.md).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "hal/gpio.h"

namespace hal {
namespace {
namespace fs = std::filesystem;
using std::chrono::milliseconds;

// Line offsets on the 8-line mockup chip, one per test, so a level or pull that one test left
// behind never meets another test (gpio-mockup keeps the simulated pull of a released line).
constexpr unsigned kLedActiveHigh = 0;
constexpr unsigned kLedActiveLow = 1;
constexpr unsigned kButtonActiveLow = 2;
constexpr unsigned kButtonActiveHigh = 3;
constexpr unsigned kBusyLine = 4;
constexpr unsigned kChipFormsLine = 5;
constexpr unsigned kNamedLine = 6;
constexpr unsigned kEdgesLine = 7;
constexpr unsigned kMockupLines = 8;

// Longer than kButtonDebounce (30 ms), so successive simulated edges are separate events.
// Sleeping only spaces the edges; no assertion depends on how long anything took.
constexpr milliseconds kSettle{60};

class GpioKernel : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* chip = getenv("STROKEBOX_GPIO_MOCKUP_CHIP");
    const char* debugfs = getenv("STROKEBOX_GPIO_MOCKUP_DEBUGFS");
    if (chip == nullptr || *chip == '\0' || debugfs == nullptr || *debugfs == '\0') {
      GTEST_SKIP() << "no gpio-mockup chip: set STROKEBOX_GPIO_MOCKUP_CHIP (e.g. gpiochip0) and "
                      "STROKEBOX_GPIO_MOCKUP_DEBUGFS (/sys/kernel/debug/gpio-mockup/gpiochip0); "
                      "scripts/gpio_kernel_check.sh runs these in a VM";
    }
    chip_ = chip;
    debugfs_ = debugfs;
    ASSERT_TRUE(fs::is_directory(debugfs_)) << debugfs_ << " is not a directory";
    for (unsigned offset = 0; offset < kMockupLines; ++offset) {
      ASSERT_TRUE(fs::exists(debugfs_ / std::to_string(offset)))
          << "the mockup chip needs " << kMockupLines << " lines (gpio_mockup_ranges=-1,8)";
    }
  }

  GpioLineSpec line(unsigned offset) const { return GpioLineSpec{chip_, std::to_string(offset)}; }

  // The electrical level of `offset` as gpio-mockup reports it (reading the debugfs file).
  int level(unsigned offset) const {
    fs::path file = debugfs_ / std::to_string(offset);
    std::ifstream in(file);
    int value = -1;
    in >> value;
    EXPECT_TRUE(in && (value == 0 || value == 1)) << "cannot read a level from " << file;
    return value;
  }

  // Sets the simulated input level of `offset` (gpio-mockup: writing 0/1 sets the pull, and an
  // input line requested for edges sees the edge), then lets the kernel deliver the event.
  void pull(unsigned offset, int value) const {
    fs::path file = debugfs_ / std::to_string(offset);
    int fd = ::open(file.c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0) << "open " << file << ": " << std::strerror(errno);
    const char* text = value ? "1" : "0";
    ssize_t n = ::write(fd, text, 1);
    int err = errno;
    ::close(fd);
    ASSERT_EQ(n, 1) << "write " << file << ": " << std::strerror(err);
    std::this_thread::sleep_for(kSettle);
  }

  // Writes the simulated input level without waiting: contact bounce.
  void pull_now(unsigned offset, int value) const {
    fs::path file = debugfs_ / std::to_string(offset);
    int fd = ::open(file.c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0) << "open " << file << ": " << std::strerror(errno);
    ssize_t n = ::write(fd, value ? "1" : "0", 1);
    int err = errno;
    ::close(fd);
    ASSERT_EQ(n, 1) << "write " << file << ": " << std::strerror(err);
  }

  // The chip's label ("gpio-mockup-A") from gpiolib's debugfs summary, nullopt when absent.
  std::optional<std::string> chip_label() const {
    std::ifstream in(debugfs_.parent_path().parent_path() / "gpio");
    std::string text;
    while (std::getline(in, text)) {
      if (text.rfind(chip_ + ":", 0) != 0) continue;
      // "gpiochip0: GPIOs 512-519, parent: platform/gpio-mockup.0, gpio-mockup-A:"
      if (!text.empty() && text.back() == ':') text.pop_back();
      const std::string can_sleep = ", can sleep";
      size_t tail = text.size() - std::min(text.size(), can_sleep.size());
      if (text.compare(tail, std::string::npos, can_sleep) == 0) text.resize(tail);
      size_t comma = text.rfind(", ");
      if (comma == std::string::npos) return std::nullopt;
      return text.substr(comma + 2);
    }
    return std::nullopt;
  }

  std::string chip_;
  fs::path debugfs_;
};

std::unique_ptr<GpioOutput> must_open_output(const GpioLineSpec& spec, bool active_low,
                                             const std::string& consumer) {
  auto out = open_gpio_output(spec, active_low, consumer);
  EXPECT_TRUE(out.ok()) << spec.to_string() << ": " << out.status().to_string();
  return out.ok() ? std::move(*out) : nullptr;
}

std::unique_ptr<GpioInput> must_open_input(const GpioLineSpec& spec, bool active_low,
                                           const std::string& consumer) {
  auto in = open_gpio_input(spec, active_low, consumer);
  EXPECT_TRUE(in.ok()) << spec.to_string() << ": " << in.status().to_string();
  return in.ok() ? std::move(*in) : nullptr;
}

bool take(GpioButton& button) {
  auto press = button.take_press();
  EXPECT_TRUE(press.ok()) << press.status().to_string();
  return press.ok() && *press;
}

TEST_F(GpioKernel, ActiveHighLedDrivesTheLineHighWhenLit) {
  pull(kLedActiveHigh, 1);  // a free line follows its pull: the request must drive it low
  auto out = must_open_output(line(kLedActiveHigh), false, "strokebox-test");
  ASSERT_NE(out, nullptr);
  EXPECT_EQ(level(kLedActiveHigh), 0) << "the LED must start dark";
  {
    GpioStatusLed led(std::move(out));
    ASSERT_TRUE(led.set_lit(true).ok());
    EXPECT_EQ(level(kLedActiveHigh), 1);
    ASSERT_TRUE(led.set_lit(false).ok());
    EXPECT_EQ(level(kLedActiveHigh), 0);
    ASSERT_TRUE(led.set_lit(true).ok());
    EXPECT_TRUE(led.lit());
  }
  // Destroying the LED releases the line. (It also writes "dark" first, but gpio-mockup returns
  // a released line to its simulated pull, so that last write cannot be seen here.)
  auto again = must_open_output(line(kLedActiveHigh), false, "strokebox-test");
  EXPECT_NE(again, nullptr) << "the line must be free after the LED is destroyed";
}

TEST_F(GpioKernel, ActiveLowLedDrivesTheLineLowWhenLit) {
  pull(kLedActiveLow, 0);  // a free line follows its pull: the request must drive it high
  auto out = must_open_output(line(kLedActiveLow), true, "strokebox-test");
  ASSERT_NE(out, nullptr);
  EXPECT_EQ(level(kLedActiveLow), 1) << "a dark active-low LED is driven high";
  EXPECT_NE(out->describe().find("active low"), std::string::npos) << out->describe();
  {
    GpioStatusLed led(std::move(out));
    ASSERT_TRUE(led.set_lit(true).ok());
    EXPECT_EQ(level(kLedActiveLow), 0);
    ASSERT_TRUE(led.set_lit(false).ok());
    EXPECT_EQ(level(kLedActiveLow), 1);
  }
}

TEST_F(GpioKernel, ActiveLowButtonPressBetweenPollsIsTakenOnce) {
  auto in = must_open_input(line(kButtonActiveLow), true, "strokebox-test");
  ASSERT_NE(in, nullptr);
  // The internal pull-up requested with the line reaches the driver: idle is high.
  EXPECT_EQ(level(kButtonActiveLow), 1);
  GpioButton button(std::move(in));
  EXPECT_FALSE(take(button));
  pull(kButtonActiveLow, 0);  // pressed (pulled low)...
  pull(kButtonActiveLow, 1);  // ...and released, all before the next poll
  EXPECT_TRUE(take(button)) << "a press between two polls must not be lost";
  EXPECT_FALSE(take(button)) << "one press is taken once";
  pull(kButtonActiveLow, 0);  // held down across polls
  EXPECT_TRUE(take(button));
  EXPECT_FALSE(take(button)) << "a held button is one press";
  pull(kButtonActiveLow, 1);
  EXPECT_FALSE(take(button)) << "the release is no press";
}

TEST_F(GpioKernel, ActiveHighButtonTwoPressesBetweenPollsAreTakenTwice) {
  auto in = must_open_input(line(kButtonActiveHigh), false, "strokebox-test");
  ASSERT_NE(in, nullptr);
  EXPECT_EQ(level(kButtonActiveHigh), 0) << "the internal pull-down must make idle low";
  GpioButton button(std::move(in));
  EXPECT_FALSE(take(button));
  for (int i = 0; i < 2; ++i) {
    pull(kButtonActiveHigh, 1);
    pull(kButtonActiveHigh, 0);
  }
  EXPECT_TRUE(take(button));
  EXPECT_TRUE(take(button));
  EXPECT_FALSE(take(button));
}

TEST_F(GpioKernel, BouncingContactsCountOncePerPress) {
  auto in = must_open_input(line(kButtonActiveLow), true, "strokebox-test");
  ASSERT_NE(in, nullptr);
  GpioButton button(std::move(in));
  EXPECT_FALSE(take(button));
  for (int press = 0; press < 2; ++press) {
    for (int v : {0, 1, 0, 1, 0}) pull_now(kButtonActiveLow, v);  // press, bouncing
    std::this_thread::sleep_for(kSettle);
    for (int v : {1, 0, 1, 0, 1}) pull_now(kButtonActiveLow, v);  // release, bouncing
    std::this_thread::sleep_for(kSettle);
  }
  EXPECT_TRUE(take(button));
  EXPECT_TRUE(take(button));
  EXPECT_FALSE(take(button)) << "the bounces of two presses must count as two presses";
}

TEST_F(GpioKernel, PressesBeyondTheKernelQueueAreLostNeverInvented) {
  // The v1 uAPI queues 16 edges per line; when full the kernel drops the NEWEST edges. Ten
  // presses (20 edges) between polls give the 8 presses that fit, nothing more.
  auto in = must_open_input(line(kButtonActiveHigh), false, "strokebox-test");
  ASSERT_NE(in, nullptr);
  GpioButton button(std::move(in));
  for (int i = 0; i < 10; ++i) {
    pull(kButtonActiveHigh, 1);
    pull(kButtonActiveHigh, 0);
  }
  int presses = 0;
  for (int i = 0; i < 12; ++i) presses += take(button) ? 1 : 0;
  EXPECT_GE(presses, 8);
  EXPECT_LE(presses, 10);
  pull(kButtonActiveHigh, 1);
  pull(kButtonActiveHigh, 0);
  EXPECT_TRUE(take(button)) << "a press after the overflow must be seen";
  EXPECT_FALSE(take(button));
}

TEST_F(GpioKernel, EdgesComeOldestFirstWithLogicalDirectionAndRisingTimestamps) {
  auto in = must_open_input(line(kEdgesLine), true, "strokebox-test");
  ASSERT_NE(in, nullptr);
  auto none = in->read_edges();
  ASSERT_TRUE(none.ok()) << none.status().to_string();
  EXPECT_TRUE(none->empty()) << "requesting the line must queue no edge";
  pull(kEdgesLine, 0);  // active low: electrically falling = becoming active
  pull(kEdgesLine, 1);
  pull(kEdgesLine, 0);
  auto edges = in->read_edges();
  ASSERT_TRUE(edges.ok()) << edges.status().to_string();
  ASSERT_EQ(edges->size(), 3u);
  EXPECT_TRUE((*edges)[0].to_active);
  EXPECT_FALSE((*edges)[1].to_active);
  EXPECT_TRUE((*edges)[2].to_active);
  EXPECT_LT((*edges)[0].timestamp, (*edges)[1].timestamp);
  EXPECT_LT((*edges)[1].timestamp, (*edges)[2].timestamp);
  // Kernel timestamps are CLOCK_MONOTONIC (the debounce compares them with each other only, but
  // a different clock would show up here as an absurd gap).
  EXPECT_GE((*edges)[1].timestamp - (*edges)[0].timestamp, kSettle / 2);
  auto drained = in->read_edges();
  ASSERT_TRUE(drained.ok());
  EXPECT_TRUE(drained->empty()) << "read_edges() must drain the queue";
  pull(kEdgesLine, 1);  // leave it idle
}

TEST_F(GpioKernel, LineHeldByAnotherConsumerIsUnavailableNamingIt) {
  auto holder = must_open_output(line(kBusyLine), false, "other-consumer");
  ASSERT_NE(holder, nullptr);
  auto out = open_gpio_output(line(kBusyLine), false, "strokebox-test");
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), base::Code::kUnavailable) << out.status().to_string();
  EXPECT_NE(out.status().message().find("'other-consumer'"), std::string::npos) << out.status().message();
  auto in = open_gpio_input(line(kBusyLine), true, "strokebox-test");
  ASSERT_FALSE(in.ok());
  EXPECT_EQ(in.status().code(), base::Code::kUnavailable) << in.status().to_string();
  EXPECT_NE(in.status().message().find("'other-consumer'"), std::string::npos) << in.status().message();
  holder.reset();
  EXPECT_NE(must_open_output(line(kBusyLine), false, "strokebox-test"), nullptr)
      << "the line must be free once its holder released it";
}

TEST_F(GpioKernel, ChipIsFoundByNamePathNumberAndLabel) {
  std::vector<std::string> chips = {chip_, "/dev/" + chip_, chip_.substr(8)};
  std::optional<std::string> label = chip_label();
  ASSERT_TRUE(label.has_value()) << "no label for " << chip_ << " in gpiolib's debugfs summary";
  chips.push_back(*label);
  for (const std::string& chip : chips) {
    SCOPED_TRACE(chip);
    auto out = must_open_output(GpioLineSpec{chip, std::to_string(kChipFormsLine)}, false, "strokebox-test");
    ASSERT_NE(out, nullptr);
    ASSERT_TRUE(out->set_value(true).ok());
    EXPECT_EQ(level(kChipFormsLine), 1);
    ASSERT_TRUE(out->set_value(false).ok());
    EXPECT_EQ(level(kChipFormsLine), 0);
  }
}

TEST_F(GpioKernel, MissingOffsetAndLabelAreNotFoundWhileChipsExist) {
  auto out = open_gpio_output(line(kMockupLines), false, "strokebox-test");
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), base::Code::kNotFound) << out.status().to_string();
  EXPECT_NE(out.status().message().find("which has 8 lines"), std::string::npos) << out.status().message();
  auto label = open_gpio_output(GpioLineSpec{"strokebox-no-such-label", "0"}, false, "strokebox-test");
  ASSERT_FALSE(label.ok());
  EXPECT_EQ(label.status().code(), base::Code::kNotFound) << label.status().to_string();
  EXPECT_NE(label.status().message().find("strokebox-no-such-label"), std::string::npos);
  auto name = open_gpio_input(GpioLineSpec{chip_, "STROKEBOX_NO_SUCH_LINE"}, true, "strokebox-test");
  ASSERT_FALSE(name.ok());
  EXPECT_EQ(name.status().code(), base::Code::kNotFound) << name.status().to_string();
  EXPECT_NE(name.status().message().find("'STROKEBOX_NO_SUCH_LINE'"), std::string::npos);
}

TEST_F(GpioKernel, ChipWithoutAccessIsPermissionDeniedForEveryKindOfSpec) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (to make the chip inaccessible and drop privileges)";
  std::optional<std::string> label = chip_label();
  ASSERT_TRUE(label.has_value());
  const std::string dev = "/dev/" + chip_;
  struct stat st {};
  ASSERT_EQ(::stat(dev.c_str(), &st), 0) << dev << ": " << std::strerror(errno);
  ASSERT_EQ(::chmod(dev.c_str(), 0600), 0) << std::strerror(errno);
  // Each spec form, opened by an unprivileged child: one "spec -> status" line per spec.
  const std::vector<GpioLineSpec> specs = {line(kChipFormsLine), GpioLineSpec{dev, "5"},
                                           GpioLineSpec{*label, "5"}, GpioLineSpec{"", *label + "-5"}};
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(fds[0]);
    std::string report;
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) {
      report = "cannot drop privileges\n";
    } else {
      for (const GpioLineSpec& spec : specs) {
        auto out = open_gpio_output(spec, false, "strokebox-test");
        report += spec.to_string() + " -> " +
                  (out.ok() ? std::string("ok") : out.status().to_string()) + "\n";
      }
    }
    ssize_t ignored = ::write(fds[1], report.data(), report.size());
    static_cast<void>(ignored);
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string report;
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) report.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  int wstatus = 0;
  ::waitpid(pid, &wstatus, 0);
  ::chmod(dev.c_str(), st.st_mode & 07777);
  std::vector<std::string> lines;
  for (size_t start = 0, end; (end = report.find('\n', start)) != std::string::npos; start = end + 1) {
    lines.push_back(report.substr(start, end - start));
  }
  ASSERT_EQ(lines.size(), specs.size()) << report;
  const char* named = getenv("STROKEBOX_GPIO_MOCKUP_NAMED_LINES");
  for (size_t i = 0; i < specs.size(); ++i) {
    if (specs[i].chip.empty() && (named == nullptr || std::string(named) != "1")) continue;
    EXPECT_NE(lines[i].find("permission_denied"), std::string::npos) << lines[i];
    EXPECT_NE(lines[i].find("/dev/gpiochip*"), std::string::npos)
        << "the message must say what to fix: " << lines[i];
  }
}

TEST_F(GpioKernel, LineIsFoundByNameAloneAndOnItsChip) {
  // gpio-mockup names lines "<label>-<offset>" when loaded with gpio_mockup_named_lines.
  const char* named = getenv("STROKEBOX_GPIO_MOCKUP_NAMED_LINES");
  if (named == nullptr || std::string(named) != "1") {
    GTEST_SKIP() << "gpio-mockup was not loaded with gpio_mockup_named_lines "
                    "(set STROKEBOX_GPIO_MOCKUP_NAMED_LINES=1 when it was)";
  }
  std::optional<std::string> label = chip_label();
  ASSERT_TRUE(label.has_value()) << "no label for " << chip_ << " in gpiolib's debugfs summary";
  std::string name = *label + "-" + std::to_string(kNamedLine);
  for (const GpioLineSpec& spec : {GpioLineSpec{"", name}, GpioLineSpec{chip_, name}}) {
    SCOPED_TRACE(spec.to_string());
    auto out = must_open_output(spec, false, "strokebox-test");
    ASSERT_NE(out, nullptr);
    GpioStatusLed led(std::move(out));
    ASSERT_TRUE(led.set_lit(true).ok());
    EXPECT_EQ(level(kNamedLine), 1) << "the name must select line " << kNamedLine;
    ASSERT_TRUE(led.set_lit(false).ok());
    EXPECT_EQ(level(kNamedLine), 0);
  }
}

}  // namespace
}  // namespace hal
