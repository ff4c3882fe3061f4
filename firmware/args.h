// Command-line parsing shared by the subcommands: `--key value`, repeated keys, `--flag`.
// Unknown options are reported as errors so typos never pass silently.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/status.h"

namespace firmware {

class Args {
 public:
  /// Parses argv[first..argc). `value_keys` take a value ("--out DIR"); `flag_keys` do not
  /// ("--json"). Keys are given without the leading dashes.
  /// Errors: kInvalidArgument naming an unknown option or a missing value.
  static base::Result<Args> parse(int argc, char** argv, int first,
                                  const std::set<std::string>& value_keys,
                                  const std::set<std::string>& flag_keys);

  bool has(const std::string& key) const { return values_.count(key) > 0 || flags_.count(key) > 0; }
  /// Last value given for key, if any.
  std::optional<std::string> get(const std::string& key) const;
  std::string get_or(const std::string& key, const std::string& fallback) const;
  /// All values of a repeated key, in order.
  std::vector<std::string> get_all(const std::string& key) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::vector<std::string>> values_;
  std::set<std::string> flags_;
  std::vector<std::string> positional_;
};

}  // namespace firmware
