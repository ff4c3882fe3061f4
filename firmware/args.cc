#include "firmware/args.h"

namespace firmware {

base::Result<Args> Args::parse(int argc, char** argv, int first, const std::set<std::string>& value_keys,
                               const std::set<std::string>& flag_keys) {
  Args a;
  for (int i = first; i < argc; ++i) {
    std::string s = argv[i];
    if (s.rfind("--", 0) != 0 || s.size() == 2) {
      a.positional_.push_back(s);
      continue;
    }
    std::string key = s.substr(2);
    std::optional<std::string> inline_value;
    if (auto eq = key.find('='); eq != std::string::npos) {
      inline_value = key.substr(eq + 1);
      key = key.substr(0, eq);
    }
    if (flag_keys.count(key)) {
      if (inline_value) return base::invalid_argument("option --" + key + " takes no value");
      a.flags_.insert(key);
    } else if (value_keys.count(key)) {
      if (inline_value) {
        a.values_[key].push_back(*inline_value);
      } else {
        if (i + 1 >= argc) return base::invalid_argument("option --" + key + " needs a value");
        a.values_[key].push_back(argv[++i]);
      }
    } else {
      return base::invalid_argument("unknown option --" + key + " (see --help)");
    }
  }
  return a;
}

std::optional<std::string> Args::get(const std::string& key) const {
  auto it = values_.find(key);
  if (it == values_.end() || it->second.empty()) return std::nullopt;
  return it->second.back();
}

std::string Args::get_or(const std::string& key, const std::string& fallback) const {
  auto v = get(key);
  return v ? *v : fallback;
}

std::vector<std::string> Args::get_all(const std::string& key) const {
  auto it = values_.find(key);
  if (it == values_.end()) return {};
  return it->second;
}

}  // namespace firmware
