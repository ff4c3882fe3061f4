// libFuzzer target: raw bytes as TOML through firmware::parse_config (parsing and validation of
// the appliance configuration). Build and run with scripts/fuzz.sh config MINUTES.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "firmware/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto config = firmware::parse_config(text, "fuzz");
  if (config.ok()) (void)firmware::validate_config(*config);
  return 0;
}
