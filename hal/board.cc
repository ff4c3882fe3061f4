#include "hal/board.h"

#include <atomic>
#include <utility>

namespace hal {
namespace {

class NullThermal final : public ThermalZones {
 public:
  explicit NullThermal(std::string reason) : reason_(std::move(reason)) {}
  std::vector<std::string> zones() const override { return {}; }
  base::Result<int32_t> temperature_mC(std::string_view zone) const override {
    return base::not_found("thermal zone '" + std::string(zone) + "': " + reason_);
  }

 private:
  std::string reason_;
};

class NullPower final : public PowerMonitor {
 public:
  explicit NullPower(std::string reason) : reason_(std::move(reason)) {}
  std::vector<std::string> rails() const override { return {}; }
  base::Result<RailReading> read(std::string_view label) const override {
    return base::not_found("power rail '" + std::string(label) + "': " + reason_);
  }

 private:
  std::string reason_;
};

class NullFan final : public Fan {
 public:
  explicit NullFan(std::string reason) : reason_(std::move(reason)) {}
  base::Result<int> pwm() const override { return base::not_found("fan: " + reason_); }
  base::Status set_pwm(int) override { return base::not_found("fan: " + reason_); }

 private:
  std::string reason_;
};

class NullPowerMode final : public PowerMode {
 public:
  explicit NullPowerMode(std::string reason) : reason_(std::move(reason)) {}
  base::Result<PowerModeInfo> current() const override {
    return base::not_found("power mode: " + reason_);
  }
  base::Status set(int) override { return base::not_found("power mode: " + reason_); }

 private:
  std::string reason_;
};

class NullGpu final : public GpuLoad {
 public:
  explicit NullGpu(std::string reason) : reason_(std::move(reason)) {}
  base::Result<int> load_permille() const override {
    return base::not_found("gpu load: " + reason_);
  }

 private:
  std::string reason_;
};

class NullLed final : public StatusLed {
 public:
  base::Status set_pattern(LedPattern pattern) override {
    pattern_.store(pattern);
    return base::ok_status();
  }
  LedPattern pattern() const override { return pattern_.load(); }
  base::Status set_lit(bool lit) override {
    lit_.store(lit);
    return base::ok_status();
  }
  bool lit() const override { return lit_.load(); }

 private:
  std::atomic<LedPattern> pattern_{LedPattern::kOff};
  std::atomic<bool> lit_{false};
};

class NullButton final : public Button {
 public:
  base::Result<bool> take_press() override { return false; }
};

constexpr const char* kAbsent = "no such device on this board";

}  // namespace

std::string_view led_pattern_name(LedPattern pattern) {
  switch (pattern) {
    case LedPattern::kOff: return "off";
    case LedPattern::kOn: return "on";
    case LedPattern::kBlink1Hz: return "blink_1hz";
    case LedPattern::kBlink4Hz: return "blink_4hz";
    case LedPattern::kDoubleBlink: return "double_blink";
  }
  return "unknown";
}

std::unique_ptr<ThermalZones> make_null_thermal(std::string reason) {
  return std::make_unique<NullThermal>(std::move(reason));
}
std::unique_ptr<PowerMonitor> make_null_power(std::string reason) {
  return std::make_unique<NullPower>(std::move(reason));
}
std::unique_ptr<Fan> make_null_fan(std::string reason) {
  return std::make_unique<NullFan>(std::move(reason));
}
std::unique_ptr<PowerMode> make_null_power_mode(std::string reason) {
  return std::make_unique<NullPowerMode>(std::move(reason));
}
std::unique_ptr<GpuLoad> make_null_gpu(std::string reason) {
  return std::make_unique<NullGpu>(std::move(reason));
}
std::unique_ptr<StatusLed> make_null_led() { return std::make_unique<NullLed>(); }
std::unique_ptr<Button> make_null_button() { return std::make_unique<NullButton>(); }

Board::Board(std::string name, std::unique_ptr<ThermalZones> thermal,
             std::unique_ptr<PowerMonitor> power, std::unique_ptr<Fan> fan,
             std::unique_ptr<PowerMode> power_mode, std::unique_ptr<GpuLoad> gpu,
             std::unique_ptr<StatusLed> led, std::unique_ptr<Button> button)
    : name_(std::move(name)),
      thermal_(thermal ? std::move(thermal) : make_null_thermal(kAbsent)),
      power_(power ? std::move(power) : make_null_power(kAbsent)),
      fan_(fan ? std::move(fan) : make_null_fan(kAbsent)),
      power_mode_(power_mode ? std::move(power_mode) : make_null_power_mode(kAbsent)),
      gpu_(gpu ? std::move(gpu) : make_null_gpu(kAbsent)),
      led_(led ? std::move(led) : make_null_led()),
      button_(button ? std::move(button) : make_null_button()) {}

Board::~Board() = default;

}  // namespace hal
