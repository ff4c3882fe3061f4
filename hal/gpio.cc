#include "hal/gpio.h"

#include <bitset>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <exception>
#include <gpiod.hpp>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "base/log.h"

namespace hal {
namespace {

constexpr unsigned kMaxOffset = 65535;
constexpr std::string_view kSpecFormat =
    "expected CHIP:LINE (CHIP a gpiochip name, /dev path, number or label such as "
    "'gpiochip0' or 'tegra194-gpio'; LINE a decimal offset or a line name) or a line name "
    "alone (as `gpioinfo` lists them)";

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

/// Why `part` (a chip or a line) is not acceptable, or empty when it is.
std::string part_problem(std::string_view part, std::string_view what) {
  if (part.empty()) return "empty " + std::string(what);
  for (char c : part) {
    if (is_blank(c) || static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return std::string(what) + " contains a blank or control character";
    }
  }
  if (part.front() == '-' || part.front() == '+') {
    return std::string(what) + " '" + std::string(part) + "' starts with a sign (offsets are 0 or more)";
  }
  return {};
}

base::Status bad_spec(std::string_view spec, std::string_view problem) {
  return base::invalid_argument("GPIO line spec '" + std::string(spec) + "': " + std::string(problem) +
                                "; " + std::string(kSpecFormat));
}

std::string strerror_text(int err) { return std::strerror(err); }

/// Maps an errno from libgpiod to a Status. `what` says which step failed and names the spec.
base::Status errno_status(int err, const std::string& what) {
  std::string msg = what + ": " + strerror_text(err);
  switch (err) {
    case ENOENT:
    case ENODEV:
    case ENXIO:
    case ENOTTY:
      return base::not_found(msg);
    case EACCES:
    case EPERM:
      return base::permission_denied(
          msg + "; the service user needs read/write access to /dev/gpiochip* (membership of the "
                "group that owns them, e.g. 'gpio', or a udev rule; see docs/operations.md)");
    case EBUSY:
      return base::unavailable(msg + " (the line is requested by another consumer)");
    default:
      return base::unavailable(msg);
  }
}

/// Converts whatever libgpiod threw (std::system_error, std::out_of_range, std::logic_error,
/// std::bad_alloc ...) into a Status. Call only from a catch block.
base::Status current_exception_status(const std::string& what) {
  try {
    throw;
  } catch (const std::system_error& e) {
    return errno_status(e.code().value(), what);
  } catch (const std::out_of_range& e) {
    return base::not_found(what + ": " + e.what());
  } catch (const std::invalid_argument& e) {
    return base::invalid_argument(what + ": " + e.what());
  } catch (const std::exception& e) {
    return base::internal_error(what + ": " + e.what());
  } catch (...) {
    return base::internal_error(what + ": unknown exception from libgpiod");
  }
}

/// How libgpiod should interpret the chip text (explicit, so errno stays meaningful: the
/// default OPEN_LOOKUP tries four ways and reports the last failure).
int open_mode(const std::string& chip) {
  if (!chip.empty() && chip.front() == '/') return gpiod::chip::OPEN_BY_PATH;
  if (all_digits(chip)) return gpiod::chip::OPEN_BY_NUMBER;
  if (chip.rfind("gpiochip", 0) == 0 && all_digits(std::string_view(chip).substr(8))) {
    return gpiod::chip::OPEN_BY_NAME;
  }
  return gpiod::chip::OPEN_BY_LABEL;
}

/// Finds the line of `spec` (not yet requested). kNotFound when the chip or the line is absent.
base::Result<gpiod::line> find_line(const GpioLineSpec& spec) {
  const std::string where = "GPIO line " + spec.to_string();
  if (spec.chip.empty()) {
    gpiod::line line;
    try {
      line = gpiod::find_line(spec.line);
    } catch (...) {
      return current_exception_status(where + ": searching every GPIO chip for line '" + spec.line + "'");
    }
    if (!line) {
      return base::not_found(where + ": no GPIO line named '" + spec.line +
                             "' on any GPIO chip; list chips and line names with `gpioinfo`");
    }
    return line;
  }
  gpiod::chip chip;
  try {
    chip.open(spec.chip, open_mode(spec.chip));
  } catch (const std::system_error& e) {
    int err = e.code().value();
    if (err == ENOTTY || err == ENODEV) {
      return base::not_found(where + ": '" + spec.chip + "' is not a GPIO chip (" + strerror_text(err) +
                             "); list the chips with `gpiodetect`");
    }
    if (err == ENOENT || err == ENXIO) {
      return base::not_found(where + ": no GPIO chip '" + spec.chip + "' (" + strerror_text(err) +
                             "); list the chips with `gpiodetect`");
    }
    return errno_status(err, where + ": cannot open GPIO chip '" + spec.chip + "'");
  } catch (...) {
    return current_exception_status(where + ": cannot open GPIO chip '" + spec.chip + "'");
  }
  try {
    std::string chip_desc = chip.name() + " [" + chip.label() + "]";
    if (std::optional<unsigned> offset = spec.offset()) {
      unsigned n = chip.num_lines();
      if (*offset >= n) {
        return base::not_found(where + ": no GPIO line " + std::to_string(*offset) + " on chip " +
                               chip_desc + ", which has " + std::to_string(n) + " lines (0.." +
                               std::to_string(n == 0 ? 0 : n - 1) + ")");
      }
      return chip.get_line(*offset);
    }
    gpiod::line line = chip.find_line(spec.line);
    if (!line) {
      return base::not_found(where + ": no GPIO line '" + spec.line + "' on chip " + chip_desc +
                             "; list its lines with `gpioinfo " + chip.name() + "`");
    }
    return line;
  } catch (...) {
    return current_exception_status(where + ": looking up line '" + spec.line + "' on chip '" + spec.chip + "'");
  }
}

/// Requests `line` with `config`; on EBUSY the message names the current consumer when the
/// kernel tells it.
/// `*errno_out` (when given) receives the errno of a failed request, 0 otherwise.
base::Status request_line(gpiod::line& line, const gpiod::line_request& config, const std::string& where,
                          int* errno_out = nullptr) {
  if (errno_out) *errno_out = 0;
  try {
    line.request(config, 0);
    return base::ok_status();
  } catch (const std::system_error& e) {
    int err = e.code().value();
    if (errno_out) *errno_out = err;
    if (err == EBUSY) {
      std::string consumer;
      try {
        line.update();
        consumer = line.consumer();
      } catch (...) {
      }
      return base::unavailable(where + ": line is busy, requested by " +
                               (consumer.empty() ? std::string("another consumer (or the kernel)")
                                                 : "'" + consumer + "'") +
                               "; free it (`gpioinfo` shows the user) or choose another line");
    }
    return errno_status(err, where + ": request failed");
  } catch (...) {
    return current_exception_status(where + ": request failed");
  }
}

std::string describe_line(const GpioLineSpec& spec, const gpiod::line& line, bool active_low) {
  std::string out = spec.to_string();
  try {
    out += " (" + line.get_chip().name() + " line " + std::to_string(line.offset());
    std::string name = line.name();
    if (!name.empty() && name != spec.line) out += " '" + name + "'";
    out += ")";
  } catch (...) {
  }
  if (active_low) out += " active low";
  return out;
}

class GpiodOutput final : public GpioOutput {
 public:
  GpiodOutput(gpiod::line line, std::string description)
      : line_(std::move(line)), description_(std::move(description)) {}
  ~GpiodOutput() override {
    try {
      line_.release();
    } catch (...) {
    }
  }

  base::Status set_value(bool active) override {
    try {
      line_.set_value(active ? 1 : 0);
      return base::ok_status();
    } catch (const std::system_error& e) {
      return base::unavailable("GPIO output " + description_ + ": write failed: " + strerror_text(e.code().value()));
    } catch (const std::exception& e) {
      return base::unavailable("GPIO output " + description_ + ": write failed: " + e.what());
    }
  }
  std::string describe() const override { return description_; }

 private:
  gpiod::line line_;
  std::string description_;
};

class GpiodInput final : public GpioInput {
 public:
  GpiodInput(gpiod::line line, std::string description)
      : line_(std::move(line)), description_(std::move(description)) {}
  ~GpiodInput() override {
    try {
      line_.release();
    } catch (...) {
    }
  }

  base::Result<std::vector<GpioEdge>> read_edges() override {
    std::vector<GpioEdge> edges;
    try {
      // The kernel queue is bounded, so this ends; the cap guards against a line that
      // chatters faster than we read.
      for (int round = 0; round < 64 && line_.event_wait(std::chrono::nanoseconds(0)); ++round) {
        for (const gpiod::line_event& event : line_.event_read_multiple()) {
          edges.push_back({event.timestamp, event.event_type == gpiod::line_event::RISING_EDGE});
        }
      }
    } catch (const std::system_error& e) {
      return base::unavailable("GPIO input " + description_ + ": reading edge events failed: " +
                               strerror_text(e.code().value()));
    } catch (const std::exception& e) {
      return base::unavailable("GPIO input " + description_ + ": reading edge events failed: " + e.what());
    }
    return edges;
  }
  std::string describe() const override { return description_; }

 private:
  gpiod::line line_;
  std::string description_;
};

}  // namespace

std::optional<unsigned> GpioLineSpec::offset() const {
  if (!all_digits(line)) return std::nullopt;
  unsigned v = 0;
  auto [p, ec] = std::from_chars(line.data(), line.data() + line.size(), v);
  if (ec != std::errc() || p != line.data() + line.size()) return std::nullopt;
  return v;
}

std::string GpioLineSpec::to_string() const { return chip.empty() ? line : chip + ":" + line; }

base::Result<GpioLineSpec> parse_gpio_line_spec(std::string_view spec) {
  std::string_view s = spec;
  while (!s.empty() && is_blank(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_blank(s.back())) s.remove_suffix(1);
  if (s.empty()) return bad_spec(spec, "empty");
  GpioLineSpec out;
  size_t colon = s.find(':');
  if (colon == std::string_view::npos) {
    if (std::string p = part_problem(s, "line name"); !p.empty()) return bad_spec(spec, p);
    if (all_digits(s)) {
      return bad_spec(spec, "a bare offset needs its chip (e.g. 'gpiochip0:" + std::string(s) + "')");
    }
    out.line = std::string(s);
    return out;
  }
  std::string_view chip = s.substr(0, colon);
  std::string_view line = s.substr(colon + 1);
  if (line.find(':') != std::string_view::npos) return bad_spec(spec, "more than one ':'");
  if (std::string p = part_problem(chip, "chip"); !p.empty()) return bad_spec(spec, p);
  if (std::string p = part_problem(line, "line"); !p.empty()) return bad_spec(spec, p);
  out.chip = std::string(chip);
  out.line = std::string(line);
  if (all_digits(line)) {
    std::optional<unsigned> offset = out.offset();
    if (!offset || *offset > kMaxOffset) {
      return bad_spec(spec, "line offset " + std::string(line) + " is above " + std::to_string(kMaxOffset));
    }
  }
  return out;
}

base::Result<std::unique_ptr<GpioOutput>> open_gpio_output(const GpioLineSpec& spec, bool active_low,
                                                           std::string consumer) {
  SB_ASSIGN_OR_RETURN(gpiod::line line, find_line(spec));
  gpiod::line_request config;
  config.consumer = std::move(consumer);
  config.request_type = gpiod::line_request::DIRECTION_OUTPUT;
  if (active_low) config.flags |= gpiod::line_request::FLAG_ACTIVE_LOW;
  std::string where = "GPIO line " + spec.to_string() + " (output)";
  SB_RETURN_IF_ERROR(request_line(line, config, where));
  std::string description = describe_line(spec, line, active_low);
  return std::unique_ptr<GpioOutput>(std::make_unique<GpiodOutput>(std::move(line), std::move(description)));
}

base::Result<std::unique_ptr<GpioInput>> open_gpio_input(const GpioLineSpec& spec, bool active_low,
                                                         std::string consumer) {
  SB_ASSIGN_OR_RETURN(gpiod::line line, find_line(spec));
  gpiod::line_request config;
  config.consumer = std::move(consumer);
  config.request_type = gpiod::line_request::EVENT_BOTH_EDGES;
  if (active_low) config.flags |= gpiod::line_request::FLAG_ACTIVE_LOW;
  gpiod::line_request biased = config;
  biased.flags |= active_low ? gpiod::line_request::FLAG_BIAS_PULL_UP : gpiod::line_request::FLAG_BIAS_PULL_DOWN;
  std::string where = "GPIO line " + spec.to_string() + " (input, both edges)";
  int err = 0;
  base::Status requested = request_line(line, biased, where, &err);
  constexpr int kKernelEnotsupp = 524;  // ENOTSUPP, the kernel-internal "not supported"
  if (!requested.ok() && (err == EINVAL || err == EOPNOTSUPP || err == kKernelEnotsupp)) {
    SB_LOG(kWarning) << where << ": the kernel refused the internal pull-"
                     << (active_low ? "up" : "down") << " (" << strerror_text(err)
                     << "); requesting it without bias: the button needs an external pull resistor";
    requested = request_line(line, config, where);
  }
  SB_RETURN_IF_ERROR(requested);
  std::string description = describe_line(spec, line, active_low);
  return std::unique_ptr<GpioInput>(std::make_unique<GpiodInput>(std::move(line), std::move(description)));
}

GpioStatusLed::GpioStatusLed(std::unique_ptr<GpioOutput> output) : output_(std::move(output)) {}

GpioStatusLed::~GpioStatusLed() {
  std::lock_guard<std::mutex> lock(mu_);
  if (lit_) static_cast<void>(output_->set_value(false));
}

base::Status GpioStatusLed::set_pattern(LedPattern pattern) {
  std::lock_guard<std::mutex> lock(mu_);
  pattern_ = pattern;
  return base::ok_status();
}

LedPattern GpioStatusLed::pattern() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pattern_;
}

base::Status GpioStatusLed::set_lit(bool lit) {
  std::lock_guard<std::mutex> lock(mu_);
  base::Status st = output_->set_value(lit);
  if (!st.ok()) {
    return st.code() == base::Code::kUnavailable ? st : base::unavailable(st.message());
  }
  lit_ = lit;
  return base::ok_status();
}

bool GpioStatusLed::lit() const {
  std::lock_guard<std::mutex> lock(mu_);
  return lit_;
}

GpioButton::GpioButton(std::unique_ptr<GpioInput> input, std::chrono::nanoseconds debounce)
    : input_(std::move(input)), debounce_(debounce) {}

base::Result<bool> GpioButton::take_press() {
  std::lock_guard<std::mutex> lock(mu_);
  base::Result<std::vector<GpioEdge>> edges = input_->read_edges();
  if (!edges.ok()) {
    base::Status st = edges.status();
    return st.code() == base::Code::kUnavailable ? st : base::unavailable(st.message());
  }
  for (const GpioEdge& edge : *edges) {
    bool quiet_before = !last_edge_ || edge.timestamp - *last_edge_ >= debounce_;
    if (edge.to_active && quiet_before) ++pending_;
    last_edge_ = edge.timestamp;
  }
  if (pending_ == 0) return false;
  --pending_;
  return true;
}

}  // namespace hal
