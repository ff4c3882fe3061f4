#include "firmware/config.h"

#include <arpa/inet.h>

#include <charconv>
#include <cmath>
#include <fstream>
#include <functional>
#include <sstream>
#include <vector>

#include <toml++/toml.h>

#include "firmware/pipeline.h"  // parse_implausible_lesions: one list of the modes

namespace firmware {
namespace {

// One configurable field: its section and key, how to set it from a TOML node, and how to
// set it from command-line text. Keeping both in one table keeps file and flags consistent.
enum class Kind { kString, kInt, kDouble, kBool, kStringList };
struct Field {
  std::string_view section;
  std::string_view key;
  Kind kind;
  std::function<void*(Config&)> target;  // points at the std::string, int, double, bool or vector<string>
};

const std::vector<Field>& fields() {
  static const std::vector<Field> table = {
      {"dicom", "ae_title", Kind::kString, [](Config& c) -> void* { return &c.dicom.ae_title; }},
      {"dicom", "port", Kind::kInt, [](Config& c) -> void* { return &c.dicom.port; }},
      {"dicom", "bind_address", Kind::kString, [](Config& c) -> void* { return &c.dicom.bind_address; }},
      {"dicom", "study_quiet_s", Kind::kDouble, [](Config& c) -> void* { return &c.dicom.study_quiet_s; }},
      {"dicom", "max_associations", Kind::kInt, [](Config& c) -> void* { return &c.dicom.max_associations; }},
      {"dicom", "dimse_timeout_s", Kind::kDouble, [](Config& c) -> void* { return &c.dicom.dimse_timeout_s; }},
      {"dicom", "allowed_calling_aes", Kind::kStringList,
       [](Config& c) -> void* { return &c.dicom.allowed_calling_aes; }},
      {"dicom", "allowed_peers", Kind::kStringList, [](Config& c) -> void* { return &c.dicom.allowed_peers; }},
      {"dicom", "max_pdu_bytes", Kind::kInt, [](Config& c) -> void* { return &c.dicom.max_pdu_bytes; }},
      {"dicom", "max_instance_mb", Kind::kInt, [](Config& c) -> void* { return &c.dicom.max_instance_mb; }},
      {"dicom", "max_instances_per_study", Kind::kInt,
       [](Config& c) -> void* { return &c.dicom.max_instances_per_study; }},
      {"tls", "enabled", Kind::kBool, [](Config& c) -> void* { return &c.tls.enabled; }},
      {"tls", "certificate", Kind::kString, [](Config& c) -> void* { return &c.tls.certificate; }},
      {"tls", "private_key", Kind::kString, [](Config& c) -> void* { return &c.tls.private_key; }},
      {"tls", "trusted_ca", Kind::kString, [](Config& c) -> void* { return &c.tls.trusted_ca; }},
      {"tls", "require_client_certificate", Kind::kBool,
       [](Config& c) -> void* { return &c.tls.require_client_certificate; }},
      {"storage", "data_dir", Kind::kString, [](Config& c) -> void* { return &c.storage.data_dir; }},
      {"storage", "min_free_mb", Kind::kInt, [](Config& c) -> void* { return &c.storage.min_free_mb; }},
      {"storage", "quota_mb", Kind::kInt, [](Config& c) -> void* { return &c.storage.quota_mb; }},
      {"model", "dir", Kind::kString, [](Config& c) -> void* { return &c.model.dir; }},
      {"model", "precision", Kind::kString, [](Config& c) -> void* { return &c.model.precision; }},
      {"jobs", "max_attempts", Kind::kInt, [](Config& c) -> void* { return &c.jobs.max_attempts; }},
      {"jobs", "retry_delay_s", Kind::kDouble, [](Config& c) -> void* { return &c.jobs.retry_delay_s; }},
      {"model", "max_preprocessed_voxels", Kind::kInt, [](Config& c) -> void* { return &c.model.max_preprocessed_voxels; }},
      {"model", "allow_b_outside_range", Kind::kBool,
       [](Config& c) -> void* { return &c.model.allow_b_outside_range; }},
      {"model", "implausible_lesions", Kind::kString,
       [](Config& c) -> void* { return &c.model.implausible_lesions; }},
      {"board", "kind", Kind::kString, [](Config& c) -> void* { return &c.board.kind; }},
      {"board", "power_mode", Kind::kInt, [](Config& c) -> void* { return &c.board.power_mode; }},
      {"board", "set_power_mode", Kind::kBool, [](Config& c) -> void* { return &c.board.set_power_mode; }},
      {"board", "led_gpio", Kind::kString, [](Config& c) -> void* { return &c.board.led_gpio; }},
      {"board", "button_gpio", Kind::kString, [](Config& c) -> void* { return &c.board.button_gpio; }},
      {"board", "led_active_low", Kind::kBool, [](Config& c) -> void* { return &c.board.led_active_low; }},
      {"board", "button_active_low", Kind::kBool, [](Config& c) -> void* { return &c.board.button_active_low; }},
      {"fan", "mode", Kind::kString, [](Config& c) -> void* { return &c.fan.mode; }},
      {"fan", "curve", Kind::kString, [](Config& c) -> void* { return &c.fan.curve; }},
      {"telemetry", "interval_s", Kind::kDouble, [](Config& c) -> void* { return &c.telemetry.interval_s; }},
      {"telemetry", "ring_rows", Kind::kInt, [](Config& c) -> void* { return &c.telemetry.ring_rows; }},
      {"thermal", "hold_above_c", Kind::kDouble, [](Config& c) -> void* { return &c.thermal.hold_above_c; }},
      {"thermal", "hysteresis_c", Kind::kDouble, [](Config& c) -> void* { return &c.thermal.hysteresis_c; }},
      {"watchdog", "loop_deadline_s", Kind::kDouble, [](Config& c) -> void* { return &c.watchdog.loop_deadline_s; }},
      {"watchdog", "job_deadline_s", Kind::kDouble, [](Config& c) -> void* { return &c.watchdog.job_deadline_s; }},
      {"watchdog", "check_interval_s", Kind::kDouble,
       [](Config& c) -> void* { return &c.watchdog.check_interval_s; }},
      {"status", "enabled", Kind::kBool, [](Config& c) -> void* { return &c.status.enabled; }},
      {"status", "bind_address", Kind::kString, [](Config& c) -> void* { return &c.status.bind_address; }},
      {"status", "port", Kind::kInt, [](Config& c) -> void* { return &c.status.port; }},
      {"status", "show_patient_names", Kind::kBool, [](Config& c) -> void* { return &c.status.show_patient_names; }},
      {"outbox", "initial_backoff_s", Kind::kDouble, [](Config& c) -> void* { return &c.outbox.initial_backoff_s; }},
      {"outbox", "max_backoff_s", Kind::kDouble, [](Config& c) -> void* { return &c.outbox.max_backoff_s; }},
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
    case Kind::kBool:
      if (auto v = node.value_exact<bool>()) {
        *static_cast<bool*>(target) = *v;
        return base::Status();
      }
      return base::invalid_argument(at(source, node) + ": " + name + " must be true or false");
    case Kind::kStringList: {
      const toml::array* array = node.as_array();
      if (!array) return base::invalid_argument(at(source, node) + ": " + name + " must be an array of strings");
      std::vector<std::string> out;
      for (const toml::node& item : *array) {
        auto v = item.value_exact<std::string>();
        if (!v) return base::invalid_argument(at(source, item) + ": " + name + " must be an array of strings");
        out.push_back(*v);
      }
      *static_cast<std::vector<std::string>*>(target) = std::move(out);
      return base::Status();
    }
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

// "a.b.c.d" or "a.b.c.d/n" (n in 0..32).
bool valid_peer(const std::string& text) {
  const auto slash = text.find('/');
  in_addr addr{};
  if (inet_pton(AF_INET, text.substr(0, slash).c_str(), &addr) != 1) return false;
  if (slash == std::string::npos) return true;
  const std::string bits = text.substr(slash + 1);
  int n = -1;
  auto [end, ec] = std::from_chars(bits.data(), bits.data() + bits.size(), n);
  return ec == std::errc() && end == bits.data() + bits.size() && n >= 0 && n <= 32;
}

std::vector<std::string> split_list(std::string_view text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string_view::npos) comma = text.size();
    std::string item(text.substr(start, comma - start));
    const auto b = item.find_first_not_of(' ');
    const auto e = item.find_last_not_of(' ');
    if (b != std::string::npos) out.push_back(item.substr(b, e - b + 1));
    start = comma + 1;
  }
  return out;
}

base::Status validate_destination(const DestinationConfig& d, size_t index) {
  const std::string where = "destinations[" + std::to_string(index) + "] ('" + d.name + "')";
  if (d.name.empty()) return base::invalid_argument("destinations[" + std::to_string(index) + "] needs a name");
  if (!valid_ae_title(d.ae_title)) return base::invalid_argument(where + ": ae_title '" + d.ae_title + "' is not a valid AE title");
  if (d.host.empty()) return base::invalid_argument(where + ": host must not be empty");
  if (d.port < 1 || d.port > 65535) return base::invalid_argument(where + ": port must be in 1..65535");
  if (d.objects.empty()) return base::invalid_argument(where + ": objects must name at least one of seg, overlay, sr");
  for (const std::string& o : d.objects) {
    if (o != "seg" && o != "overlay" && o != "sr") {
      return base::invalid_argument(where + ": object '" + o + "' is not one of seg, overlay, sr");
    }
  }
  return base::Status();
}

base::Result<DestinationConfig> parse_destination(const toml::node& node, size_t index, std::string_view source) {
  const toml::table* table = node.as_table();
  if (!table) return base::invalid_argument(at(source, node) + ": each [[destinations]] entry must be a table");
  DestinationConfig d;
  for (const auto& [key, value] : *table) {
    const std::string_view k = key.str();
    const std::string name = "destinations[" + std::to_string(index) + "]." + std::string(k);
    if (k == "name" || k == "ae_title" || k == "host") {
      auto v = value.value_exact<std::string>();
      if (!v) return base::invalid_argument(at(source, value) + ": " + name + " must be a string");
      (k == "name" ? d.name : k == "ae_title" ? d.ae_title : d.host) = *v;
    } else if (k == "port") {
      auto v = value.value_exact<int64_t>();
      if (!v || *v < 1 || *v > 65535) return base::invalid_argument(at(source, value) + ": " + name + " must be an integer in 1..65535");
      d.port = static_cast<int>(*v);
    } else if (k == "objects") {
      const toml::array* array = value.as_array();
      if (!array) return base::invalid_argument(at(source, value) + ": " + name + " must be an array of strings");
      d.objects.clear();
      for (const toml::node& item : *array) {
        auto v = item.value_exact<std::string>();
        if (!v) return base::invalid_argument(at(source, item) + ": " + name + " must be an array of strings");
        d.objects.push_back(*v);
      }
    } else {
      return base::invalid_argument(at(source, value) + ": unknown key '" + std::string(k) +
                                    "' in [[destinations]] (known: name, ae_title, host, port, objects)");
    }
  }
  return d;
}

}  // namespace

base::Result<std::vector<std::pair<double, int>>> parse_fan_curve(std::string_view text) {
  std::vector<std::pair<double, int>> points;
  for (const std::string& item : split_list(text)) {
    const auto colon = item.find(':');
    double t = 0;
    int pwm = -1;
    bool ok = colon != std::string::npos;
    if (ok) {
      auto [e1, c1] = std::from_chars(item.data(), item.data() + colon, t);
      auto [e2, c2] = std::from_chars(item.data() + colon + 1, item.data() + item.size(), pwm);
      ok = c1 == std::errc() && e1 == item.data() + colon && c2 == std::errc() && e2 == item.data() + item.size() &&
           std::isfinite(t) && pwm >= 0 && pwm <= 255;
    }
    if (!ok) return base::invalid_argument("fan.curve point '" + item + "' is not C:pwm (pwm 0..255)");
    if (!points.empty() && t <= points.back().first) {
      return base::invalid_argument("fan.curve temperatures must be strictly ascending (at '" + item + "')");
    }
    points.emplace_back(t, pwm);
  }
  if (points.empty()) return base::invalid_argument("fan.curve needs at least one C:pwm point");
  return points;
}

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
  for (const std::string& ae : c.dicom.allowed_calling_aes) {
    if (!valid_ae_title(ae)) return base::invalid_argument("dicom.allowed_calling_aes: '" + ae + "' is not a valid AE title");
  }
  for (const std::string& peer : c.dicom.allowed_peers) {
    if (!valid_peer(peer)) {
      return base::invalid_argument("dicom.allowed_peers: '" + peer + "' is not an IPv4 address or CIDR block (10.0.0.0/8)");
    }
  }
  if (c.dicom.max_pdu_bytes < 4096 || c.dicom.max_pdu_bytes > 131072) {
    // DCMTK's receive PDU range (ASC_MINIMUMPDUSIZE..ASC_MAXIMUMPDUSIZE).
    return base::invalid_argument("dicom.max_pdu_bytes must be in 4096..131072");
  }
  if (c.dicom.max_instance_mb < 1 || c.dicom.max_instance_mb > 4096) {
    return base::invalid_argument("dicom.max_instance_mb must be in 1..4096");
  }
  if (c.dicom.max_instances_per_study < 1) return base::invalid_argument("dicom.max_instances_per_study must be at least 1");
  if (c.tls.enabled && (c.tls.certificate.empty() || c.tls.private_key.empty())) {
    return base::invalid_argument("tls.enabled needs tls.certificate and tls.private_key (PEM files)");
  }
  if (c.tls.enabled && c.tls.require_client_certificate && c.tls.trusted_ca.empty()) {
    return base::invalid_argument("tls.require_client_certificate needs tls.trusted_ca (PEM file of accepted CAs)");
  }
  if (c.storage.data_dir.empty()) return base::invalid_argument("storage.data_dir must not be empty");
  if (c.storage.min_free_mb < 0) return base::invalid_argument("storage.min_free_mb must not be negative");
  if (c.storage.quota_mb < 0) return base::invalid_argument("storage.quota_mb must not be negative (0 = no quota)");
  if (c.model.dir.empty()) return base::invalid_argument("model.dir must not be empty");
  const std::string& p = c.model.precision;
  if (p != "fp32" && p != "bf16" && p != "fp16" && p != "auto") {
    return base::invalid_argument("model.precision '" + p + "' is not one of fp32, bf16, fp16, auto");
  }
  if (!c.model.implausible_lesions.empty() && !parse_implausible_lesions(c.model.implausible_lesions)) {
    return base::invalid_argument("model.implausible_lesions '" + c.model.implausible_lesions + "' is not " +
                                  implausible_lesions_choices() + " (or empty: the model's)");
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
  if (c.model.max_preprocessed_voxels < 0)
    return base::invalid_argument("model.max_preprocessed_voxels must be 0 (allocate per study) or a voxel count");
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
  if (c.fan.mode != "platform" && c.fan.mode != "curve") {
    return base::invalid_argument("fan.mode '" + c.fan.mode + "' is not one of platform, curve");
  }
  SB_RETURN_IF_ERROR(parse_fan_curve(c.fan.curve).status());
  if (c.status.enabled) {
    if (inet_pton(AF_INET, c.status.bind_address.c_str(), &addr) != 1) {
      return base::invalid_argument("status.bind_address '" + c.status.bind_address + "' is not an IPv4 address");
    }
    if (c.status.port < 1 || c.status.port > 65535) return base::invalid_argument("status.port must be in 1..65535");
  }
  if (!positive(c.outbox.initial_backoff_s) || !positive(c.outbox.max_backoff_s) ||
      c.outbox.max_backoff_s < c.outbox.initial_backoff_s) {
    return base::invalid_argument("outbox.initial_backoff_s and max_backoff_s must be positive, max >= initial");
  }
  for (size_t i = 0; i < c.destinations.size(); ++i) {
    SB_RETURN_IF_ERROR(validate_destination(c.destinations[i], i));
    for (size_t j = 0; j < i; ++j) {
      if (c.destinations[j].name == c.destinations[i].name) {
        return base::invalid_argument("destinations: the name '" + c.destinations[i].name + "' is used twice");
      }
    }
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
    if (section == "destinations") {
      const toml::array* entries = section_node.as_array();
      if (!entries) return base::invalid_argument(at(source, section_node) + ": destinations must be written as [[destinations]] tables");
      for (size_t i = 0; i < entries->size(); ++i) {
        SB_ASSIGN_OR_RETURN(DestinationConfig d, parse_destination(*entries->get(i), i, source));
        config.destinations.push_back(std::move(d));
      }
      continue;
    }
    if (!known_section(section)) {
      return base::invalid_argument(at(source, section_node) + ": unknown section [" + std::string(section) +
                                    "] (known: dicom, tls, storage, model, jobs, board, fan, telemetry, thermal, "
                                    "watchdog, status, outbox, [[destinations]])");
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
    case Kind::kBool:
      if (value != "true" && value != "false") {
        return base::invalid_argument(name + " must be true or false, not '" + std::string(value) + "'");
      }
      *static_cast<bool*>(target) = value == "true";
      break;
    case Kind::kStringList:  // comma-separated on the command line
      *static_cast<std::vector<std::string>*>(target) = split_list(value);
      break;
  }
  return validate_config(config);
}

}  // namespace firmware
