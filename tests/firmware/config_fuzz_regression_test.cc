// Replays every input kept in fuzz/corpus/config (seeds and inputs the libFuzzer target
// fuzz/config_fuzzer.cc found) through firmware::parse_config and validate_config, the same
// calls as the fuzzer: each must give a value (a Config or an error), never a crash.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "firmware/config.h"

namespace firmware {
namespace {

namespace fs = std::filesystem;

TEST(ConfigFuzzRegression, EveryKeptInputGivesAConfigOrAnError) {
  const fs::path corpus = fs::path(STROKEBOX_SOURCE_DIR) / "fuzz" / "corpus" / "config";
  ASSERT_TRUE(fs::is_directory(corpus)) << corpus;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(corpus))
    if (e.is_regular_file()) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  ASSERT_GE(files.size(), 3u);
  int parsed = 0;
  for (const fs::path& file : files) {
    std::ifstream f(file, std::ios::binary);
    std::stringstream text;
    text << f.rdbuf();
    auto config = parse_config(text.str(), file.filename().string());
    if (config.ok()) {
      ++parsed;
      (void)validate_config(*config);
    } else {
      EXPECT_FALSE(config.status().message().empty()) << file;
    }
  }
  EXPECT_GE(parsed, 1) << "no seed parses any more: the replay would prove nothing";
}

}  // namespace
}  // namespace firmware
