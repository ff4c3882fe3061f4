#include "hal/jetson_board.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "base/log.h"

namespace hal {
namespace fs = std::filesystem;
namespace {

std::string errno_text(int err) { return std::strerror(err); }

/// Reads a small sysfs attribute. kNotFound when absent, kUnavailable on any other I/O error.
base::Result<std::string> read_attribute(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    std::string msg = path.string() + ": " + errno_text(err);
    if (err == ENOENT || err == ENOTDIR) return base::not_found(msg);
    if (err == EACCES || err == EPERM) return base::permission_denied(msg);
    return base::unavailable(msg);
  }
  std::string text;
  char buf[256];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      return base::unavailable(path.string() + ": read failed: " + errno_text(err));
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > 4096) break;  // sysfs attributes are one page at most
  }
  ::close(fd);
  return text;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  return s;
}

/// One decimal integer in [lo, hi]; kDataLoss when the content is anything else.
base::Result<int64_t> read_int(const fs::path& path, int64_t lo, int64_t hi) {
  SB_ASSIGN_OR_RETURN(std::string text, read_attribute(path));
  std::string_view s = trim(text);
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) {
    return base::data_loss(path.string() + ": expected an integer, got '" + std::string(s) + "'");
  }
  if (v < lo || v > hi) {
    return base::data_loss(path.string() + ": value " + std::to_string(v) + " outside [" +
                           std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return v;
}

constexpr int64_t kInt32Min = std::numeric_limits<int32_t>::min();
constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

/// Entries of `dir` whose name starts with `prefix` and continues with a decimal number,
/// sorted by that number. Missing or unreadable directories give an empty list.
std::vector<std::pair<int, fs::path>> numbered_entries(const fs::path& dir,
                                                       std::string_view prefix) {
  std::vector<std::pair<int, fs::path>> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    int n = 0;
    const char* first = name.data() + prefix.size();
    const char* last = name.data() + name.size();
    auto [p, err] = std::from_chars(first, last, n);
    if (err != std::errc() || p != last) continue;
    out.emplace_back(n, it->path());
  }
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  return out;
}

std::vector<fs::path> sorted_subdirectories(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code ec2;
    if (it->is_directory(ec2)) out.push_back(it->path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// ---------------------------------------------------------------------------------------------

class JetsonThermal final : public ThermalZones {
 public:
  struct Zone {
    std::string type;
    fs::path temp;
  };
  explicit JetsonThermal(std::vector<Zone> zones) : zones_(std::move(zones)) {}

  std::vector<std::string> zones() const override {
    std::vector<std::string> names;
    for (const Zone& z : zones_) names.push_back(z.type);
    return names;
  }

  base::Result<int32_t> temperature_mC(std::string_view zone) const override {
    for (const Zone& z : zones_) {
      if (z.type != zone) continue;
      SB_ASSIGN_OR_RETURN(int64_t v, read_int(z.temp, kInt32Min, kInt32Max));
      return static_cast<int32_t>(v);
    }
    return base::not_found("no thermal zone of type '" + std::string(zone) + "'");
  }

 private:
  std::vector<Zone> zones_;
};

std::unique_ptr<ThermalZones> discover_thermal(const fs::path& root) {
  std::vector<JetsonThermal::Zone> zones;
  for (const auto& [index, dir] : numbered_entries(root / jetson_paths::kThermal, "thermal_zone")) {
    auto type = read_attribute(dir / "type");
    if (!type.ok()) {
      SB_LOG(kWarning) << "skipping thermal zone: " << type.status().to_string();
      continue;
    }
    std::string name(trim(*type));
    bool duplicate = std::any_of(zones.begin(), zones.end(),
                                 [&](const auto& z) { return z.type == name; });
    if (name.empty() || duplicate) {
      SB_LOG(kWarning) << "skipping " << dir.string() << ": empty or duplicate type '" << name
                       << "'";
      continue;
    }
    zones.push_back({std::move(name), dir / "temp"});
  }
  return std::make_unique<JetsonThermal>(std::move(zones));
}

// ---------------------------------------------------------------------------------------------

class JetsonPower final : public PowerMonitor {
 public:
  struct Rail {
    std::string label;
    fs::path voltage;  // in<N>_input, mV
    fs::path current;  // curr<N>_input, mA
  };
  explicit JetsonPower(std::vector<Rail> rails) : rails_(std::move(rails)) {}

  std::vector<std::string> rails() const override {
    std::vector<std::string> labels;
    for (const Rail& r : rails_) labels.push_back(r.label);
    return labels;
  }

  base::Result<RailReading> read(std::string_view label) const override {
    for (const Rail& r : rails_) {
      if (r.label != label) continue;
      RailReading out;
      SB_ASSIGN_OR_RETURN(int64_t mv, read_int(r.voltage, kInt32Min, kInt32Max));
      SB_ASSIGN_OR_RETURN(int64_t ma, read_int(r.current, kInt32Min, kInt32Max));
      out.voltage_mV = static_cast<int32_t>(mv);
      out.current_mA = static_cast<int32_t>(ma);
      return out;
    }
    return base::not_found("no power rail labelled '" + std::string(label) + "'");
  }

 private:
  std::vector<Rail> rails_;
};

/// Every INA3221 channel that has a label, a bus voltage and a current (the kernel's ina3221
/// driver: in1..3_label, in1..3_input in mV, curr1..3_input in mA). First label wins.
std::vector<JetsonPower::Rail> discover_rails(const fs::path& root) {
  std::vector<JetsonPower::Rail> rails;
  for (const fs::path& device : sorted_subdirectories(root / jetson_paths::kIna3221)) {
    for (const auto& [m, hwmon] : numbered_entries(device / "hwmon", "hwmon")) {
      // Channels are found through their label files: in<N>_label.
      std::vector<std::pair<int, fs::path>> labels;
      std::error_code ec;
      for (fs::directory_iterator it(hwmon, ec), end; !ec && it != end; it.increment(ec)) {
        std::string name = it->path().filename().string();
        constexpr std::string_view kSuffix = "_label";
        if (name.size() <= 2 + kSuffix.size() || name.compare(0, 2, "in") != 0 ||
            name.compare(name.size() - kSuffix.size(), kSuffix.size(), kSuffix) != 0) {
          continue;
        }
        int channel = 0;
        const char* first = name.data() + 2;
        const char* last = name.data() + name.size() - kSuffix.size();
        auto [p, err] = std::from_chars(first, last, channel);
        if (err != std::errc() || p != last) continue;
        labels.emplace_back(channel, it->path());
      }
      std::sort(labels.begin(), labels.end(),
                [](const auto& a, const auto& b) { return a.first < b.first; });
      for (const auto& [channel, label_path] : labels) {
        auto label = read_attribute(label_path);
        if (!label.ok()) continue;
        std::string name(trim(*label));
        fs::path voltage = hwmon / ("in" + std::to_string(channel) + "_input");
        fs::path current = hwmon / ("curr" + std::to_string(channel) + "_input");
        std::error_code e1, e2;
        if (name.empty() || !fs::exists(voltage, e1) || !fs::exists(current, e2)) continue;
        bool duplicate = std::any_of(rails.begin(), rails.end(),
                                     [&](const auto& r) { return r.label == name; });
        if (duplicate) continue;
        rails.push_back({std::move(name), voltage, current});
      }
    }
  }
  return rails;
}

// ---------------------------------------------------------------------------------------------

class JetsonFan final : public Fan {
 public:
  explicit JetsonFan(fs::path pwm) : pwm_(std::move(pwm)) {}

  base::Result<int> pwm() const override {
    SB_ASSIGN_OR_RETURN(int64_t v, read_int(pwm_, 0, kFanPwmMax));
    return static_cast<int>(v);
  }

  base::Status set_pwm(int pwm) override {
    if (pwm < 0 || pwm > kFanPwmMax) {
      return base::invalid_argument("fan pwm " + std::to_string(pwm) + " outside [0, " +
                                    std::to_string(kFanPwmMax) + "]");
    }
    int fd = ::open(pwm_.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
      int err = errno;
      std::string msg = pwm_.string() + ": " + errno_text(err);
      if (err == EACCES || err == EPERM) return base::permission_denied(msg);
      if (err == ENOENT) return base::not_found(msg);
      return base::unavailable(msg);
    }
    std::string text = std::to_string(pwm) + "\n";
    ssize_t n;
    do {
      n = ::write(fd, text.data(), text.size());
    } while (n < 0 && errno == EINTR);
    int err = errno;
    ::close(fd);
    if (n != static_cast<ssize_t>(text.size())) {
      return base::unavailable(pwm_.string() + ": write failed: " +
                               (n < 0 ? errno_text(err) : std::string("short write")));
    }
    return base::ok_status();
  }

 private:
  fs::path pwm_;
};

std::unique_ptr<Fan> discover_fan(const fs::path& root) {
  fs::path dir = root / jetson_paths::kPwmFanHwmon;
  for (const auto& [m, hwmon] : numbered_entries(dir, "hwmon")) {
    auto name = read_attribute(hwmon / "name");
    if (name.ok() && trim(*name) == jetson_paths::kFanHwmonName) {
      return std::make_unique<JetsonFan>(hwmon / "pwm1");
    }
  }
  return make_null_fan("no hwmon named '" + std::string(jetson_paths::kFanHwmonName) +
                       "' under " + dir.string());
}

// ---------------------------------------------------------------------------------------------

class JetsonGpu final : public GpuLoad {
 public:
  explicit JetsonGpu(fs::path load) : load_(std::move(load)) {}
  base::Result<int> load_permille() const override {
    SB_ASSIGN_OR_RETURN(int64_t v, read_int(load_, 0, kGpuLoadMaxPermille));
    return static_cast<int>(v);
  }

 private:
  fs::path load_;
};

class JetsonPowerMode final : public PowerMode {
 public:
  JetsonPowerMode(fs::path status, CommandRunner run) : status_(std::move(status)), run_(std::move(run)) {}

  base::Status set(int id) override {
    if (xavier_nx_mode_name(id) == "unknown") {
      return base::invalid_argument("power mode " + std::to_string(id) +
                                    " is not an Xavier NX nvpmodel mode (0..8)");
    }
    const std::vector<std::string> argv = {"nvpmodel", "-m", std::to_string(id)};
    SB_ASSIGN_OR_RETURN(CommandOutput out, run_(argv));
    std::string output(trim(out.output));
    if (out.exit_code != 0) {
      std::string msg = "`nvpmodel -m " + std::to_string(id) + "` exited with " +
                        std::to_string(out.exit_code) + (output.empty() ? "" : ": " + output);
      if (output.find("ermission") != std::string::npos || output.find("root") != std::string::npos) {
        return base::permission_denied(msg + " (it must run as root)");
      }
      return base::unavailable(msg);
    }
    SB_ASSIGN_OR_RETURN(PowerModeInfo now, current());
    if (now.id != id) {
      return base::failed_precondition("`nvpmodel -m " + std::to_string(id) + "` ran but the board reports mode " +
                                       std::to_string(now.id) + " (" + now.name +
                                       "): this change probably needs a reboot" +
                                       (output.empty() ? "" : "; nvpmodel said: " + output));
    }
    SB_LOG(kInfo) << "power mode set to " << id << " (" << now.name << ")";
    return base::ok_status();
  }

  base::Result<PowerModeInfo> current() const override {
    SB_ASSIGN_OR_RETURN(std::string text, read_attribute(status_));
    // One "key:value" per line; the power mode is "pmode:<id>" ("pmode:0008").
    std::string_view rest = text;
    while (!rest.empty()) {
      size_t eol = rest.find('\n');
      std::string_view line = trim(rest.substr(0, eol));
      rest = eol == std::string_view::npos ? std::string_view() : rest.substr(eol + 1);
      constexpr std::string_view kKey = "pmode:";
      if (line.substr(0, kKey.size()) != kKey) continue;
      std::string_view digits = trim(line.substr(kKey.size()));
      int id = -1;
      auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), id);
      if (digits.empty() || ec != std::errc() || p != digits.data() + digits.size() || id < 0) {
        return base::data_loss(status_.string() + ": bad power mode '" + std::string(line) + "'");
      }
      return PowerModeInfo{id, std::string(xavier_nx_mode_name(id))};
    }
    return base::data_loss(status_.string() + ": no 'pmode:' line");
  }

 private:
  fs::path status_;
  CommandRunner run_;
};

}  // namespace

std::string_view xavier_nx_mode_name(int id) {
  static constexpr std::string_view kNames[] = {
      "MODE_15W_2CORE", "MODE_15W_4CORE",   "MODE_15W_6CORE",
      "MODE_10W_2CORE", "MODE_10W_4CORE",   "MODE_10W_DESKTOP",
      "MODE_20W_2CORE", "MODE_20W_4CORE",   "MODE_20W_6CORE",
  };
  if (id < 0 || id >= static_cast<int>(std::size(kNames))) return "unknown";
  return kNames[id];
}

base::Result<CommandOutput> run_command(const std::vector<std::string>& argv) {
  if (argv.empty()) return base::invalid_argument("run_command: empty argv");
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return base::unavailable("pipe: " + errno_text(errno));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  int rc = ::posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    std::string msg = "cannot run " + argv[0] + ": " + errno_text(rc);
    return rc == ENOENT ? base::not_found(msg) : base::unavailable(msg);
  }
  CommandOutput out;
  char buf[512];
  for (;;) {
    ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.output.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return base::unavailable("waitpid " + argv[0] + ": " + errno_text(errno));
  }
  out.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

base::Result<std::unique_ptr<Board>> make_jetson_board(const fs::path& root, JetsonOptions options) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) {
    return base::not_found("board root " + root.string() + " is not a directory");
  }
  std::unique_ptr<PowerMonitor> power;
  std::vector<JetsonPower::Rail> rails = discover_rails(root);
  if (rails.empty()) {
    power = make_null_power("no labelled INA3221 channel under " +
                            (root / jetson_paths::kIna3221).string());
  } else {
    power = std::make_unique<JetsonPower>(std::move(rails));
  }
  // The front panel: a spec that does not parse is a configuration error (refuse to start); a
  // line that cannot be opened leaves the box working without it.
  std::optional<GpioLineSpec> led_spec, button_spec;
  if (!options.led_gpio.empty()) {
    auto spec = parse_gpio_line_spec(options.led_gpio);
    if (!spec.ok()) return spec.status().with_context("[board] led_gpio");
    led_spec = std::move(spec).value();
  }
  if (!options.button_gpio.empty()) {
    auto spec = parse_gpio_line_spec(options.button_gpio);
    if (!spec.ok()) return spec.status().with_context("[board] button_gpio");
    button_spec = std::move(spec).value();
  }
  auto warn = [&](std::string text) {
    SB_LOG(kWarning) << text;
    if (options.device_warnings) options.device_warnings->push_back(std::move(text));
  };
  std::unique_ptr<StatusLed> led;
  if (led_spec) {
    GpioOutputOpener open = options.open_led ? options.open_led : GpioOutputOpener(open_gpio_output);
    auto out = open(*led_spec, options.led_active_low, std::string(kGpioConsumer));
    if (out.ok()) {
      SB_LOG(kInfo) << "status LED on GPIO " << (*out)->describe();
      led = std::make_unique<GpioStatusLed>(std::move(out).value());
    } else {
      warn("status LED disabled: " + out.status().to_string());
    }
  }
  std::unique_ptr<Button> button;
  if (button_spec) {
    GpioInputOpener open = options.open_button ? options.open_button : GpioInputOpener(open_gpio_input);
    auto in = open(*button_spec, options.button_active_low, std::string(kGpioConsumer));
    if (in.ok()) {
      SB_LOG(kInfo) << "front-panel button on GPIO " << (*in)->describe();
      button = std::make_unique<GpioButton>(std::move(in).value());
    } else {
      warn("front-panel button disabled: " + in.status().to_string());
    }
  }
  return std::make_unique<Board>(
      "jetson-xavier-nx", discover_thermal(root), std::move(power), discover_fan(root),
      std::make_unique<JetsonPowerMode>(root / jetson_paths::kNvpmodelStatus,
                                        options.run_command ? std::move(options.run_command) : CommandRunner(run_command)),
      std::make_unique<JetsonGpu>(root / jetson_paths::kGpuLoad),
      led ? std::move(led) : make_null_led(), std::move(button));  // Board: null button
}

}  // namespace hal
