#include "hal/sim_board.h"

#include "hal/jetson_board.h"

#include <map>
#include <mutex>
#include <utility>
#include <vector>

namespace hal {

struct SimBoard::State {
  mutable std::mutex mu;
  std::vector<std::pair<std::string, int32_t>> zones;        // type -> m°C, in order
  std::vector<std::pair<std::string, RailReading>> rails;    // label -> reading, in order
  int fan_pwm = 0;
  PowerModeInfo power_mode{8, "MODE_20W_6CORE"};
  int gpu_load_permille = 0;
  LedPattern led = LedPattern::kOff;
  bool led_lit = false;
  int button_presses = 0;  // latched presses not yet taken
  std::map<std::string, SimFault, std::less<>> faults;

  // Callers hold `mu`.
  SimFault fault(std::string_view sensor) const {
    auto it = faults.find(sensor);
    return it == faults.end() ? SimFault::kNone : it->second;
  }
  /// OK when the sensor works; otherwise the error a read of it returns.
  base::Status check(std::string_view sensor, std::string_view what) const {
    switch (fault(sensor)) {
      case SimFault::kNone: return base::ok_status();
      case SimFault::kMissing:
        return base::not_found(std::string(what) + " '" + std::string(sensor) +
                               "': absent (simulated)");
      case SimFault::kError:
        return base::unavailable(std::string(what) + " '" + std::string(sensor) +
                                 "': read error (simulated)");
    }
    return base::internal_error("unknown simulated fault");
  }
};

namespace {
using State = SimBoard::State;

template <typename V>
V* find(std::vector<std::pair<std::string, V>>& v, std::string_view key) {
  for (auto& [k, value] : v) {
    if (k == key) return &value;
  }
  return nullptr;
}
template <typename V>
const V* find(const std::vector<std::pair<std::string, V>>& v, std::string_view key) {
  for (const auto& [k, value] : v) {
    if (k == key) return &value;
  }
  return nullptr;
}

class SimThermal final : public ThermalZones {
 public:
  explicit SimThermal(std::shared_ptr<State> s) : s_(std::move(s)) {}
  std::vector<std::string> zones() const override {
    std::lock_guard lock(s_->mu);
    std::vector<std::string> out;
    for (const auto& [name, v] : s_->zones) {
      if (s_->fault(name) != SimFault::kMissing) out.push_back(name);
    }
    return out;
  }
  base::Result<int32_t> temperature_mC(std::string_view zone) const override {
    std::lock_guard lock(s_->mu);
    const int32_t* v = find(s_->zones, zone);
    if (v == nullptr) return base::not_found("no thermal zone of type '" + std::string(zone) + "'");
    SB_RETURN_IF_ERROR(s_->check(zone, "thermal zone"));
    return *v;
  }

 private:
  std::shared_ptr<State> s_;
};

class SimPower final : public PowerMonitor {
 public:
  explicit SimPower(std::shared_ptr<State> s) : s_(std::move(s)) {}
  std::vector<std::string> rails() const override {
    std::lock_guard lock(s_->mu);
    std::vector<std::string> out;
    for (const auto& [name, v] : s_->rails) {
      if (s_->fault(name) != SimFault::kMissing) out.push_back(name);
    }
    return out;
  }
  base::Result<RailReading> read(std::string_view label) const override {
    std::lock_guard lock(s_->mu);
    const RailReading* r = find(s_->rails, label);
    if (r == nullptr) return base::not_found("no power rail labelled '" + std::string(label) + "'");
    SB_RETURN_IF_ERROR(s_->check(label, "power rail"));
    return *r;
  }

 private:
  std::shared_ptr<State> s_;
};

class SimFan final : public Fan {
 public:
  explicit SimFan(std::shared_ptr<State> s) : s_(std::move(s)) {}
  base::Result<int> pwm() const override {
    std::lock_guard lock(s_->mu);
    SB_RETURN_IF_ERROR(s_->check(kSimFan, "device"));
    return s_->fan_pwm;
  }
  base::Status set_pwm(int pwm) override {
    if (pwm < 0 || pwm > kFanPwmMax) {
      return base::invalid_argument("fan pwm " + std::to_string(pwm) + " outside [0, " +
                                    std::to_string(kFanPwmMax) + "]");
    }
    std::lock_guard lock(s_->mu);
    SB_RETURN_IF_ERROR(s_->check(kSimFan, "device"));
    s_->fan_pwm = pwm;
    return base::ok_status();
  }

 private:
  std::shared_ptr<State> s_;
};

class SimPowerMode final : public PowerMode {
 public:
  explicit SimPowerMode(std::shared_ptr<State> s) : s_(std::move(s)) {}
  base::Result<PowerModeInfo> current() const override {
    std::lock_guard lock(s_->mu);
    SB_RETURN_IF_ERROR(s_->check(kSimPowerMode, "device"));
    return s_->power_mode;
  }
  base::Status set(int id) override {
    std::string_view name = xavier_nx_mode_name(id);
    if (name == "unknown") {
      return base::invalid_argument("power mode " + std::to_string(id) +
                                    " is not an Xavier NX nvpmodel mode (0..8)");
    }
    std::lock_guard lock(s_->mu);
    SB_RETURN_IF_ERROR(s_->check(kSimPowerMode, "device"));
    s_->power_mode = PowerModeInfo{id, std::string(name)};
    return base::ok_status();
  }

 private:
  std::shared_ptr<State> s_;
};

class SimGpu final : public GpuLoad {
 public:
  explicit SimGpu(std::shared_ptr<State> s) : s_(std::move(s)) {}
  base::Result<int> load_permille() const override {
    std::lock_guard lock(s_->mu);
    SB_RETURN_IF_ERROR(s_->check(kSimGpuLoad, "device"));
    return s_->gpu_load_permille;
  }

 private:
  std::shared_ptr<State> s_;
};

class SimLed final : public StatusLed {
 public:
  explicit SimLed(std::shared_ptr<State> s) : s_(std::move(s)) {}
  base::Status set_pattern(LedPattern pattern) override {
    std::lock_guard lock(s_->mu);
    SB_RETURN_IF_ERROR(s_->check(kSimLed, "device"));
    s_->led = pattern;
    return base::ok_status();
  }
  LedPattern pattern() const override {
    std::lock_guard lock(s_->mu);
    return s_->led;
  }
  base::Status set_lit(bool lit) override {
    std::lock_guard lock(s_->mu);
    SB_RETURN_IF_ERROR(s_->check(kSimLed, "device"));
    s_->led_lit = lit;
    return base::ok_status();
  }
  bool lit() const override {
    std::lock_guard lock(s_->mu);
    return s_->led_lit;
  }

 private:
  std::shared_ptr<State> s_;
};

class SimButton final : public Button {
 public:
  explicit SimButton(std::shared_ptr<State> s) : s_(std::move(s)) {}
  base::Result<bool> take_press() override {
    std::lock_guard lock(s_->mu);
    SB_RETURN_IF_ERROR(s_->check(kSimButton, "device"));
    if (s_->button_presses == 0) return false;
    --s_->button_presses;
    return true;
  }

 private:
  std::shared_ptr<State> s_;
};

std::shared_ptr<State> initial_state() {
  auto s = std::make_shared<State>();
  for (const char* zone :
       {"CPU-therm", "GPU-therm", "AUX-therm", "AO-therm", "PMIC-Die", "thermal-fan-est"}) {
    s->zones.emplace_back(zone, 40'000);
  }
  s->rails.emplace_back(std::string(kRailModuleTotal), RailReading{5'000, 1'200});
  s->rails.emplace_back(std::string(kRailCpuGpuCv), RailReading{5'000, 400});
  s->rails.emplace_back(std::string(kRailSoc), RailReading{5'000, 300});
  return s;
}

}  // namespace

SimBoard::SimBoard() : SimBoard(initial_state()) {}

SimBoard::SimBoard(std::shared_ptr<State> s)
    : Board("sim", std::make_unique<SimThermal>(s), std::make_unique<SimPower>(s),
            std::make_unique<SimFan>(s), std::make_unique<SimPowerMode>(s),
            std::make_unique<SimGpu>(s), std::make_unique<SimLed>(s), std::make_unique<SimButton>(s)),
      state_(std::move(s)) {}

SimBoard::~SimBoard() = default;

void SimBoard::set_temperature_mC(std::string_view zone, int32_t temperature_mC) {
  std::lock_guard lock(state_->mu);
  if (int32_t* v = find(state_->zones, zone)) {
    *v = temperature_mC;
  } else {
    state_->zones.emplace_back(std::string(zone), temperature_mC);
  }
}

void SimBoard::set_rail(std::string_view label, int32_t voltage_mV, int32_t current_mA) {
  std::lock_guard lock(state_->mu);
  if (RailReading* r = find(state_->rails, label)) {
    *r = RailReading{voltage_mV, current_mA};
  } else {
    state_->rails.emplace_back(std::string(label), RailReading{voltage_mV, current_mA});
  }
}

void SimBoard::set_gpu_load_permille(int load_permille) {
  std::lock_guard lock(state_->mu);
  state_->gpu_load_permille = load_permille;
}

void SimBoard::set_power_mode(int id, std::string name) {
  std::lock_guard lock(state_->mu);
  state_->power_mode = PowerModeInfo{id, std::move(name)};
}

void SimBoard::inject_fault(std::string_view sensor, SimFault fault) {
  std::lock_guard lock(state_->mu);
  if (fault == SimFault::kNone) {
    auto it = state_->faults.find(sensor);
    if (it != state_->faults.end()) state_->faults.erase(it);
  } else {
    state_->faults.insert_or_assign(std::string(sensor), fault);
  }
}

void SimBoard::clear_faults() {
  std::lock_guard lock(state_->mu);
  state_->faults.clear();
}

int SimBoard::fan_pwm() const {
  std::lock_guard lock(state_->mu);
  return state_->fan_pwm;
}

LedPattern SimBoard::led_pattern() const {
  std::lock_guard lock(state_->mu);
  return state_->led;
}

bool SimBoard::led_lit() const {
  std::lock_guard lock(state_->mu);
  return state_->led_lit;
}

void SimBoard::press_button() {
  std::lock_guard lock(state_->mu);
  ++state_->button_presses;
}

std::unique_ptr<SimBoard> make_sim_board() { return std::make_unique<SimBoard>(); }

}  // namespace hal
