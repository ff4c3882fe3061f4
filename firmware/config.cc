#include "firmware/config.h"

#include <arpa/inet.h>

#include <charconv>
#include <cmath>
#include <fstream>
#include <functional>
#include <sstream>
#include <vector>

#include <toml++/toml.h>

namespace firmware {
namespace {

// One configurable field: its section and key, how to set it from a TOML node, and how to
// set it from command-line text. Keeping both in one table keeps file and flags consistent.
enum class Kind { kString, kInt, kDouble };
struct Field {
  std::string_view section;
  std::string_view key;
  Kind kind;
  std::function<void*(Config&)> target;  // points at the std::string, int or double
};

const std::vector<Field>& fields() {
  static const std::vector<Field> table = {
      {"dicom", "ae_title", Kind::kString, [](Config& c) -> void* { return &c.dicom.ae_title; }},
      {"dicom", "port", Kind::kInt, [](Config& c) -> void* { return &c.dicom.port; }},
      {"dicom", "bind_address", Kind::kString, [](Config& c) -> void* { return &c.dicom.bind_address; }},
      {"dicom", "study_quiet_s", Kind::kDouble, [](Config& c) -> void* { return &c.dicom.study_quiet_s; }},
      {"dicom", "max_associations", Kind::kInt, [](Config& c) -> void* { return &c.dicom.max_associations; }},
      {"dicom", "dimse_timeout_s", Kind::kDouble, [](Config& c) -> void* { return &c.dicom.dimse_timeout_s; }},
      {"storage", "data_dir", Kind::kString, [](Config& c) -> void* { return &c.storage.data_dir; }},
      {"model", "dir", Kind::kString, [](Config& c) -> void* { return &c.model.dir; }},
      {"model", "precision", Kind::kString, [](Config& c) -> void* { return &c.model.precision; }},
      {"jobs", "max_attempts", Kind::kInt, [](Config& c) -> void* { return &c.jobs.max_attempts; }},
      {"jobs", "retry_delay_s", Kind::kDouble, [](Config& c) -> void* { return &c.jobs.retry_delay_s; }},
      {"board", "kind", Kind::kString, [](Config& c) -> void* { return &c.board.kind; }},
      {"board", "power_mode", Kind::kInt, [](Config& c) -> void* { return &c.board.power_mode; }},
      {"telemetry", "interval_s", Kind::kDouble, [](Config& c) -> void* { return &c.telemetry.interval_s; }},
      {"telemetry", "ring_rows", Kind::kInt, [](Config& c) -> void* { return &c.telemetry.ring_rows; }},
      {"thermal", "hold_above_c", Kind::kDouble, [](Config& c) -> void* { return &c.thermal.hold_above_c; }},
      {"thermal", "hysteresis_c", Kind::kDouble, [](Config& c) -> void* { return &c.thermal.hysteresis_c; }},
      {"watchdog", "loop_deadline_s", Kind::kDouble, [](Config& c) -> void* { return &c.watchdog.loop_deadline_s; }},
      {"watchdog", "job_deadline_s", Kind::kDouble, [](Config& c) -> void* { return &c.watchdog.job_deadline_s; }},
      {"watchdog", "check_interval_s", Kind::kDouble,
       [](Config& c) -> void* { return &c.watchdog.check_interval_s; }},
  };
  return table;
}

const Field* find_field(std::string_view section, std::string_view key) {
  for (const Field& f : fields()) {
    if (f.section == section && f.key == key) return &f;
  }
  return nullptr;
}

bool known_section(std::string_view section) {
  for (const Field& f : fields()) {
    if (f.section == section) return true;
  }
  return false;
}

std::string known_keys_of(std::string_view section) {
  std::string out;
  for (const Field& f : fields()) {
    if (f.section != section) continue;
    if (!out.empty()) out += ", ";
    out += f.key;
  }
  return out;
}

std::string at(std::string_view source, const toml::node& node) {
  const auto& begin = node.source().begin;
  return std::string(source) + ":" + std::to_string(begin.line);
}

base::Status set_from_node(Config& config, const Field& field, const toml::node& node, std::string_view source) {
  const std::string name = std::string(field.section) + "." + std::string(field.key);
  void* target = field.target(config);
  switch (field.kind) {
    case Kind::kString:
      if (auto v = node.value_exact<std::string>()) {
        *static_cast<std::string*>(target) = *v;
        return base::Status();
      }
      return base::invalid_argument(at(source, node) + ": " + name + " must be a string");
    case Kind::kInt:
      if (auto v = node.value_exact<int64_t>()) {
        if (*v < INT32_MIN || *v > INT32_MAX) {
          return base::invalid_argument(at(source, node) + ": " + name + " is out of range");
        }
        *static_cast<int*>(target) = static_cast<int>(*v);
        return base::Status();
      }
      return base::invalid_argument(at(source, node) + ": " + name + " must be an integer");
    case Kind::kDouble:
      if (auto v = node.value_exact<double>()) {
        *static_cast<double*>(target) = *v;
        return base::Status();
      }
      if (auto v = node.value_exact<int64_t>()) {
        *static_cast<double*>(target) = static_cast<double>(*v);
        return base::Status();
      }
      return base::invalid_argument(at(source, node) + ": " + name + " must be a number");
  }
  return base::internal_error("unhandled field kind");
}

bool valid_ae_title(const std::string& ae) {
  // PS3.5 6.2 (AE VR): up to 16 characters, no backslash or control characters; leading and
  // trailing spaces are not significant, so an all-space title is empty.
  if (ae.empty() || ae.size() > 16) return false;
  if (ae.find_first_not_of(' ') == std::string::npos) return false;
  if (ae.front() == ' ' || ae.back() == ' ') return false;
  for (char c : ae) {
    if (c == '\\' || static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) return false;
  }
  return true;
}

}  // namespace

base::Status validate_config(const Config& c) {
  if (!valid_ae_title(c.dicom.ae_title)) {
    return base::invalid_argument("dicom.ae_title '" + c.dicom.ae_title +
                                  "' is not a valid AE title (1-16 printable characters, no backslash, "
                                  "no leading or trailing space)");
  }
  if (c.dicom.port < 1 || c.dicom.port > 65535) {
    return base::invalid_argument("dicom.port " + std::to_string(c.dicom.port) + " is not in 1..65535");
  }
  in_addr addr{};
  if (inet_pton(AF_INET, c.dicom.bind_address.c_str(), &addr) != 1) {
    return base::invalid_argument("dicom.bind_address '" + c.dicom.bind_address +
                                  "' is not an IPv4 address (use 0.0.0.0 for all interfaces)");
  }
  if (!(c.dicom.study_quiet_s > 0) || !std::isfinite(c.dicom.study_quiet_s)) {
    return base::invalid_argument("dicom.study_quiet_s must be a positive number of seconds");
  }
  if (c.dicom.max_associations < 1 || c.dicom.max_associations > 64) {
    return base::invalid_argument("dicom.max_associations must be in 1..64");
  }
  if (!(c.dicom.dimse_timeout_s >= 1) || !std::isfinite(c.dicom.dimse_timeout_s)) {
    return base::invalid_argument("dicom.dimse_timeout_s must be at least 1 second");
  }
  if (c.storage.data_dir.empty()) return base::invalid_argument("storage.data_dir must not be empty");
  if (c.model.dir.empty()) return base::invalid_argument("model.dir must not be empty");
  const std::string& p = c.model.precision;
  if (p != "fp32" && p != "bf16" && p != "fp16" && p != "auto") {
    return base::invalid_argument("model.precision '" + p + "' is not one of fp32, bf16, fp16, auto");
  }
  if (c.jobs.max_attempts < 1 || c.jobs.max_attempts > 100) {
    return base::invalid_argument("jobs.max_attempts must be in 1..100");
  }
  if (!(c.jobs.retry_delay_s >= 0) || !std::isfinite(c.jobs.retry_delay_s)) {
    return base::invalid_argument("jobs.retry_delay_s must be a non-negative number of seconds");
  }
  if (c.board.kind != "auto" && c.board.kind != "jetson" && c.board.kind != "sim") {
    return base::invalid_argument("board.kind '" + c.board.kind + "' is not one of auto, jetson, sim");
  }
  if (c.board.power_mode < -1) return base::invalid_argument("board.power_mode must be a mode id, or -1 to skip the check");
  auto positive = [](double v) { return v > 0 && std::isfinite(v); };
  if (!positive(c.telemetry.interval_s) || c.telemetry.interval_s > 3600) {
    return base::invalid_argument("telemetry.interval_s must be in (0, 3600] seconds");
  }
  if (c.telemetry.ring_rows < 10) return base::invalid_argument("telemetry.ring_rows must be at least 10");
  if (!std::isfinite(c.thermal.hold_above_c)) return base::invalid_argument("thermal.hold_above_c must be a number");
  if (!positive(c.thermal.hysteresis_c)) return base::invalid_argument("thermal.hysteresis_c must be positive");
  if (!positive(c.watchdog.loop_deadline_s) || !positive(c.watchdog.job_deadline_s) ||
      !positive(c.watchdog.check_interval_s)) {
    return base::invalid_argument("watchdog.loop_deadline_s, job_deadline_s and check_interval_s must be positive");
  }
  if (c.watchdog.check_interval_s >= c.watchdog.loop_deadline_s) {
    return base::invalid_argument("watchdog.check_interval_s must be shorter than watchdog.loop_deadline_s");
  }
  return base::Status();
}

base::Result<Config> parse_config(std::string_view toml_text, std::string_view source) {
  toml::table root;
  try {
    root = toml::parse(toml_text, source);
  } catch (const toml::parse_error& e) {
    const auto& begin = e.source().begin;
    return base::invalid_argument(std::string(source) + ":" + std::to_string(begin.line) + ":" +
                                  std::to_string(begin.column) + ": " + std::string(e.description()));
  }
  Config config;
  for (const auto& [section_key, section_node] : root) {
    const std::string_view section = section_key.str();
    if (!known_section(section)) {
      return base::invalid_argument(at(source, section_node) + ": unknown section [" + std::string(section) +
                                    "] (known: dicom, storage, model, jobs, board, telemetry, thermal, watchdog)");
    }
    const toml::table* table = section_node.as_table();
    if (!table) return base::invalid_argument(at(source, section_node) + ": " + std::string(section) + " must be a table");
    for (const auto& [key, node] : *table) {
      const Field* field = find_field(section, key.str());
      if (!field) {
        return base::invalid_argument(at(source, node) + ": unknown key '" + std::string(key.str()) + "' in [" +
                                      std::string(section) + "] (known: " + known_keys_of(section) + ")");
      }
      SB_RETURN_IF_ERROR(set_from_node(config, *field, node, source));
    }
  }
  SB_RETURN_IF_ERROR(validate_config(config).with_context(std::string(source)));
  return config;
}

base::Result<Config> load_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return base::not_found("cannot read config file " + path);
  std::stringstream text;
  text << in.rdbuf();
  return parse_config(text.str(), path);
}

base::Status set_config_value(Config& config, std::string_view key, std::string_view value) {
  const auto dot = key.find('.');
  const Field* field = dot == std::string_view::npos ? nullptr : find_field(key.substr(0, dot), key.substr(dot + 1));
  if (!field) return base::invalid_argument("unknown configuration key '" + std::string(key) + "'");
  const std::string name(key);
  void* target = field->target(config);
  switch (field->kind) {
    case Kind::kString:
      *static_cast<std::string*>(target) = std::string(value);
      break;
    case Kind::kInt: {
      int v = 0;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
      if (ec != std::errc() || end != value.data() + value.size()) {
        return base::invalid_argument(name + " must be an integer, not '" + std::string(value) + "'");
      }
      *static_cast<int*>(target) = v;
      break;
    }
    case Kind::kDouble: {
      double v = 0;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
      if (ec != std::errc() || end != value.data() + value.size()) {
        return base::invalid_argument(name + " must be a number, not '" + std::string(value) + "'");
      }
      *static_cast<double*>(target) = v;
      break;
    }
  }
  return validate_config(config);
}

}  // namespace firmware
