// GPIO line specs, the status LED and the debounced button over fake lines, the Jetson board's
// front-panel wiring with injected openers, and the real libgpiod openers on a machine without
// the GPIO chips they name.
#include "hal/gpio.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "hal/board.h"
#include "hal/jetson_board.h"

namespace hal {
namespace {
namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;

// ---------------------------------------------------------------------------------------------
// parse_gpio_line_spec

TEST(GpioLineSpec, ParsesChipNameAndOffset) {
  auto spec = parse_gpio_line_spec("gpiochip0:105");
  ASSERT_TRUE(spec.ok()) << spec.status().to_string();
  EXPECT_EQ(spec->chip, "gpiochip0");
  EXPECT_EQ(spec->line, "105");
  ASSERT_TRUE(spec->offset().has_value());
  EXPECT_EQ(*spec->offset(), 105u);
  EXPECT_EQ(spec->to_string(), "gpiochip0:105");
}

TEST(GpioLineSpec, ParsesChipPathLabelAndNumber) {
  auto path = parse_gpio_line_spec("/dev/gpiochip1:3");
  ASSERT_TRUE(path.ok());
  EXPECT_EQ(path->chip, "/dev/gpiochip1");
  auto label = parse_gpio_line_spec("tegra194-gpio-aon:16");
  ASSERT_TRUE(label.ok());
  EXPECT_EQ(label->chip, "tegra194-gpio-aon");
  EXPECT_EQ(*label->offset(), 16u);
  auto number = parse_gpio_line_spec("0:0");
  ASSERT_TRUE(number.ok());
  EXPECT_EQ(number->chip, "0");
  EXPECT_EQ(*number->offset(), 0u);
}

TEST(GpioLineSpec, ParsesLineNameOnAChip) {
  auto spec = parse_gpio_line_spec("tegra194-gpio:PQ.05");
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(spec->chip, "tegra194-gpio");
  EXPECT_EQ(spec->line, "PQ.05");
  EXPECT_FALSE(spec->offset().has_value());
}

TEST(GpioLineSpec, LineNameAloneIsSearchedOnEveryChip) {
  auto spec = parse_gpio_line_spec("  PQ.05\n");
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(spec->chip, "");
  EXPECT_EQ(spec->line, "PQ.05");
  EXPECT_EQ(spec->to_string(), "PQ.05");
}

TEST(GpioLineSpec, RejectsMalformedSpecsNamingTheTextAndTheFormat) {
  for (const char* bad : {"", "   ", "a:", ":3", "chip:-1", "chip:+1", "-1", "12", "a:b:c",
                          "gpio chip0:1", "chip:1 2", "chip:99999999999", "chip:70000"}) {
    auto spec = parse_gpio_line_spec(bad);
    ASSERT_FALSE(spec.ok()) << "'" << bad << "' was accepted";
    EXPECT_EQ(spec.status().code(), base::Code::kInvalidArgument) << bad;
    EXPECT_NE(spec.status().message().find("'" + std::string(bad) + "'"), std::string::npos)
        << spec.status().message();
    EXPECT_NE(spec.status().message().find("CHIP:LINE"), std::string::npos) << spec.status().message();
  }
}

// ---------------------------------------------------------------------------------------------
// Fakes

struct FakeOutputState {
  std::vector<bool> writes;
  bool fail = false;
};

class FakeOutput final : public GpioOutput {
 public:
  explicit FakeOutput(std::shared_ptr<FakeOutputState> state) : state_(std::move(state)) {}
  base::Status set_value(bool active) override {
    if (state_->fail) return base::unavailable("fake line: write failed: Input/output error");
    state_->writes.push_back(active);
    return base::ok_status();
  }
  std::string describe() const override { return "fake-output"; }

 private:
  std::shared_ptr<FakeOutputState> state_;
};

struct FakeInputState {
  std::vector<GpioEdge> queued;
  bool fail = false;
  int reads = 0;
};

class FakeInput final : public GpioInput {
 public:
  explicit FakeInput(std::shared_ptr<FakeInputState> state) : state_(std::move(state)) {}
  base::Result<std::vector<GpioEdge>> read_edges() override {
    ++state_->reads;
    if (state_->fail) return base::unavailable("fake line: reading edge events failed: No such device");
    std::vector<GpioEdge> out = std::move(state_->queued);
    state_->queued.clear();
    return out;
  }
  std::string describe() const override { return "fake-input"; }

 private:
  std::shared_ptr<FakeInputState> state_;
};

GpioEdge edge(int ms, bool to_active) { return GpioEdge{milliseconds(ms), to_active}; }

// ---------------------------------------------------------------------------------------------
// GpioStatusLed

TEST(GpioStatusLed, SetLitDrivesTheOutputLine) {
  auto state = std::make_shared<FakeOutputState>();
  GpioStatusLed led(std::make_unique<FakeOutput>(state));
  EXPECT_FALSE(led.lit());
  ASSERT_TRUE(led.set_lit(true).ok());
  EXPECT_TRUE(led.lit());
  ASSERT_TRUE(led.set_lit(false).ok());
  EXPECT_FALSE(led.lit());
  EXPECT_EQ(state->writes, (std::vector<bool>{true, false}));
}

TEST(GpioStatusLed, SetPatternOnlyRecordsAndWritesNothing) {
  auto state = std::make_shared<FakeOutputState>();
  GpioStatusLed led(std::make_unique<FakeOutput>(state));
  EXPECT_EQ(led.pattern(), LedPattern::kOff);
  ASSERT_TRUE(led.set_pattern(LedPattern::kBlink4Hz).ok());
  EXPECT_EQ(led.pattern(), LedPattern::kBlink4Hz);
  EXPECT_TRUE(state->writes.empty());
}

TEST(GpioStatusLed, OutputFailureIsUnavailableAndKeepsTheLevel) {
  auto state = std::make_shared<FakeOutputState>();
  GpioStatusLed led(std::make_unique<FakeOutput>(state));
  ASSERT_TRUE(led.set_lit(true).ok());
  state->fail = true;
  base::Status st = led.set_lit(false);
  EXPECT_EQ(st.code(), base::Code::kUnavailable);
  EXPECT_NE(st.message().find("write failed"), std::string::npos) << st.message();
  EXPECT_TRUE(led.lit());
}

TEST(GpioStatusLed, SwitchesTheLightOffWhenDestroyed) {
  auto state = std::make_shared<FakeOutputState>();
  {
    GpioStatusLed led(std::make_unique<FakeOutput>(state));
    ASSERT_TRUE(led.set_lit(true).ok());
  }
  EXPECT_EQ(state->writes, (std::vector<bool>{true, false}));
}

// ---------------------------------------------------------------------------------------------
// GpioButton

TEST(GpioButton, NoEdgesIsNoPress) {
  auto state = std::make_shared<FakeInputState>();
  GpioButton button(std::make_unique<FakeInput>(state));
  auto press = button.take_press();
  ASSERT_TRUE(press.ok());
  EXPECT_FALSE(*press);
}

TEST(GpioButton, OnePressIsTakenOnce) {
  auto state = std::make_shared<FakeInputState>();
  GpioButton button(std::make_unique<FakeInput>(state));
  state->queued = {edge(1000, true), edge(1200, false)};
  EXPECT_TRUE(*button.take_press());
  EXPECT_FALSE(*button.take_press());
}

TEST(GpioButton, PressAndReleaseBounceCountOnce) {
  auto state = std::make_shared<FakeInputState>();
  GpioButton button(std::make_unique<FakeInput>(state));
  // Contact chatter on the press (1000..1006 ms) and on the release (1300..1305 ms): the
  // release's bounce has edges to active too, 300 ms after the press.
  state->queued = {edge(1000, true),  edge(1002, false), edge(1003, true), edge(1006, false),
                   edge(1006, true),  edge(1300, false), edge(1302, true), edge(1305, false)};
  EXPECT_TRUE(*button.take_press());
  EXPECT_FALSE(*button.take_press());
}

TEST(GpioButton, BounceSplitAcrossPollsStillCountsOnce) {
  auto state = std::make_shared<FakeInputState>();
  GpioButton button(std::make_unique<FakeInput>(state));
  state->queued = {edge(1000, true), edge(1004, false)};
  EXPECT_TRUE(*button.take_press());
  state->queued = {edge(1010, true), edge(1500, false)};
  EXPECT_FALSE(*button.take_press());
}

TEST(GpioButton, TwoPressesBetweenPollsAreTakenOneAtATime) {
  auto state = std::make_shared<FakeInputState>();
  GpioButton button(std::make_unique<FakeInput>(state));
  state->queued = {edge(1000, true), edge(1100, false), edge(1250, true), edge(1350, false)};
  EXPECT_TRUE(*button.take_press());
  EXPECT_TRUE(*button.take_press());
  EXPECT_FALSE(*button.take_press());
}

TEST(GpioButton, ReleaseAloneIsNoPress) {
  auto state = std::make_shared<FakeInputState>();
  GpioButton button(std::make_unique<FakeInput>(state));
  state->queued = {edge(1000, false)};
  EXPECT_FALSE(*button.take_press());
}

TEST(GpioButton, EdgesExactlyADebounceApartAreTwoPresses) {
  auto state = std::make_shared<FakeInputState>();
  GpioButton button(std::make_unique<FakeInput>(state), milliseconds(30));
  state->queued = {edge(1000, true), edge(1030, true)};  // a lost release between them
  EXPECT_TRUE(*button.take_press());
  EXPECT_TRUE(*button.take_press());
  state->queued = {edge(1059, true)};
  EXPECT_FALSE(*button.take_press());
}

TEST(GpioButton, InputFailureIsUnavailableAndKeepsLatchedPresses) {
  auto state = std::make_shared<FakeInputState>();
  GpioButton button(std::make_unique<FakeInput>(state));
  state->queued = {edge(1000, true), edge(1100, false), edge(1250, true)};
  EXPECT_TRUE(*button.take_press());
  state->fail = true;
  auto failed = button.take_press();
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), base::Code::kUnavailable);
  EXPECT_NE(failed.status().message().find("edge events"), std::string::npos);
  state->fail = false;
  EXPECT_TRUE(*button.take_press());
  EXPECT_FALSE(*button.take_press());
}

// ---------------------------------------------------------------------------------------------
// make_jetson_board with the front panel

class JetsonFrontPanelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "hal_gpio_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    write("sys/devices/gpu.0/load", "0\n");
    write("sys/bus/i2c/drivers/ina3221/bind", "");
    write("var/lib/nvpmodel/status", "pmode:0008\n");
    out_ = std::make_shared<FakeOutputState>();
    in_ = std::make_shared<FakeInputState>();
    options_.led_gpio = "tegra194-gpio:105";
    options_.button_gpio = "PQ.06";
    options_.led_active_low = true;
    options_.button_active_low = true;
    options_.open_led = [this](const GpioLineSpec& spec, bool active_low, std::string consumer)
        -> base::Result<std::unique_ptr<GpioOutput>> {
      led_opened_ = spec.to_string();
      led_active_low_ = active_low;
      consumer_ = consumer;
      if (!led_error_.ok()) return led_error_;
      return std::unique_ptr<GpioOutput>(std::make_unique<FakeOutput>(out_));
    };
    options_.open_button = [this](const GpioLineSpec& spec, bool active_low, std::string)
        -> base::Result<std::unique_ptr<GpioInput>> {
      button_opened_ = spec.to_string();
      button_active_low_ = active_low;
      if (!button_error_.ok()) return button_error_;
      return std::unique_ptr<GpioInput>(std::make_unique<FakeInput>(in_));
    };
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  void write(const std::string& rel, const std::string& content) {
    fs::path p = root_ / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << content;
  }

  fs::path root_;
  JetsonOptions options_;
  std::shared_ptr<FakeOutputState> out_;
  std::shared_ptr<FakeInputState> in_;
  base::Status led_error_, button_error_;
  std::string led_opened_, button_opened_, consumer_;
  bool led_active_low_ = false, button_active_low_ = false;
};

TEST_F(JetsonFrontPanelTest, OpensTheConfiguredLedAndButton) {
  auto board = make_jetson_board(root_, options_);
  ASSERT_TRUE(board.ok()) << board.status().to_string();
  EXPECT_EQ(led_opened_, "tegra194-gpio:105");
  EXPECT_TRUE(led_active_low_);
  EXPECT_EQ(consumer_, "strokebox");
  EXPECT_EQ(button_opened_, "PQ.06");
  EXPECT_TRUE(button_active_low_);
  ASSERT_TRUE((*board)->led().set_lit(true).ok());
  EXPECT_EQ(out_->writes, (std::vector<bool>{true}));
  in_->queued = {edge(5000, true), edge(5100, false)};
  auto press = (*board)->button().take_press();
  ASSERT_TRUE(press.ok());
  EXPECT_TRUE(*press);
}

TEST_F(JetsonFrontPanelTest, DetectBoardPassesTheOptionsToTheJetsonBoard) {
  auto board = detect_board(root_, options_);
  ASSERT_TRUE(board.ok()) << board.status().to_string();
  EXPECT_EQ((*board)->name(), "jetson-xavier-nx");
  EXPECT_EQ(led_opened_, "tegra194-gpio:105");
  EXPECT_EQ(button_opened_, "PQ.06");
}

TEST_F(JetsonFrontPanelTest, EmptySpecsOpenNothing) {
  options_.led_gpio.clear();
  options_.button_gpio.clear();
  auto board = make_jetson_board(root_, options_);
  ASSERT_TRUE(board.ok());
  EXPECT_EQ(led_opened_, "");
  EXPECT_EQ(button_opened_, "");
  EXPECT_TRUE((*board)->led().set_lit(true).ok());
  EXPECT_FALSE(*(*board)->button().take_press());
}

TEST_F(JetsonFrontPanelTest, BadSpecRefusesTheBoardNamingTheKey) {
  options_.button_gpio = "chip:-1";
  auto board = make_jetson_board(root_, options_);
  ASSERT_FALSE(board.ok());
  EXPECT_EQ(board.status().code(), base::Code::kInvalidArgument);
  EXPECT_NE(board.status().message().find("button_gpio"), std::string::npos) << board.status().message();
  EXPECT_NE(board.status().message().find("chip:-1"), std::string::npos);
  options_.button_gpio = "PQ.06";
  options_.led_gpio = "a:";
  board = make_jetson_board(root_, options_);
  ASSERT_FALSE(board.ok());
  EXPECT_EQ(board.status().code(), base::Code::kInvalidArgument);
  EXPECT_NE(board.status().message().find("led_gpio"), std::string::npos) << board.status().message();
}

TEST_F(JetsonFrontPanelTest, LineThatCannotBeOpenedLeavesANullDeviceAndAWarning) {
  led_error_ = base::unavailable("GPIO line tegra194-gpio:105: line is busy, requested by 'sysfs'");
  button_error_ = base::permission_denied("GPIO line PQ.06: Permission denied");
  std::vector<std::string> warnings;
  options_.device_warnings = &warnings;
  auto board = make_jetson_board(root_, options_);
  ASSERT_TRUE(board.ok()) << board.status().to_string();
  EXPECT_TRUE((*board)->led().set_lit(true).ok());  // the null LED accepts and lights nothing
  EXPECT_TRUE(out_->writes.empty());
  auto press = (*board)->button().take_press();
  ASSERT_TRUE(press.ok());
  EXPECT_FALSE(*press);
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_NE(warnings[0].find("status LED disabled"), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find("requested by 'sysfs'"), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[1].find("button disabled"), std::string::npos) << warnings[1];
  EXPECT_NE(warnings[1].find("permission_denied"), std::string::npos) << warnings[1];
}

// ---------------------------------------------------------------------------------------------
// The real libgpiod openers. This machine (and CI) has no GPIO chip of these names, so these
// run libgpiod's chip lookup and its error path for real.

bool has_gpio_chips() {
  std::error_code ec;
  for (fs::directory_iterator it("/dev", ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().filename().string().rfind("gpiochip", 0) == 0) return true;
  }
  return false;
}

TEST(GpiodOpener, MissingChipIsNotFoundNamingTheChip) {
  GpioLineSpec spec{"gpiochip977", "3"};
  auto out = open_gpio_output(spec, false, "strokebox-test");
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), base::Code::kNotFound) << out.status().to_string();
  EXPECT_NE(out.status().message().find("no GPIO chip 'gpiochip977'"), std::string::npos)
      << out.status().message();
  auto in = open_gpio_input(spec, true, "strokebox-test");
  ASSERT_FALSE(in.ok());
  EXPECT_EQ(in.status().code(), base::Code::kNotFound) << in.status().to_string();
}

TEST(GpiodOpener, MissingChipPathIsNotFound) {
  auto out = open_gpio_output(GpioLineSpec{"/dev/gpiochip977", "0"}, true, "strokebox-test");
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), base::Code::kNotFound) << out.status().to_string();
  EXPECT_NE(out.status().message().find("/dev/gpiochip977"), std::string::npos);
}

TEST(GpiodOpener, DeviceThatIsNotAGpioChipIsNotFound) {
  auto out = open_gpio_output(GpioLineSpec{"/dev/null", "0"}, false, "strokebox-test");
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), base::Code::kNotFound) << out.status().to_string();
  EXPECT_NE(out.status().message().find("'/dev/null'"), std::string::npos) << out.status().message();
}

TEST(GpiodOpener, MissingChipLabelIsNotFound) {
  if (has_gpio_chips()) GTEST_SKIP() << "this machine has GPIO chips; the label search may be denied";
  auto out = open_gpio_output(GpioLineSpec{"strokebox-no-such-label", "0"}, false, "strokebox-test");
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), base::Code::kNotFound) << out.status().to_string();
  EXPECT_NE(out.status().message().find("strokebox-no-such-label"), std::string::npos);
}

TEST(GpiodOpener, UnknownLineNameIsNotFoundNamingTheLine) {
  auto in = open_gpio_input(GpioLineSpec{"", "STROKEBOX_NO_SUCH_LINE"}, true, "strokebox-test");
  ASSERT_FALSE(in.ok());
  if (has_gpio_chips() && in.status().code() == base::Code::kPermissionDenied) {
    GTEST_SKIP() << "GPIO chips here are not readable: " << in.status().message();
  }
  EXPECT_EQ(in.status().code(), base::Code::kNotFound) << in.status().to_string();
  EXPECT_NE(in.status().message().find("'STROKEBOX_NO_SUCH_LINE'"), std::string::npos)
      << in.status().message();
}

TEST_F(JetsonFrontPanelTest, DefaultOpenersOnAMachineWithoutTheChipKeepTheBoardUp) {
  JetsonOptions options;  // the real libgpiod openers
  options.led_gpio = "gpiochip977:105";
  options.button_gpio = "gpiochip977:106";
  std::vector<std::string> warnings;
  options.device_warnings = &warnings;
  auto board = make_jetson_board(root_, options);
  ASSERT_TRUE(board.ok()) << board.status().to_string();
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_NE(warnings[0].find("not_found"), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find("gpiochip977"), std::string::npos) << warnings[0];
  EXPECT_FALSE(*(*board)->button().take_press());
}

}  // namespace
}  // namespace hal
