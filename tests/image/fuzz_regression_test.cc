// Replays every input kept in fuzz/corpus/dicom_volume (seeds and inputs that once crashed the
// libFuzzer target, see scripts/fuzz.sh) through the same entry point as the fuzzer: the
// dataset-to-volume path must answer each with a value, never a crash (run under ASan by the
// fuzz build, plainly here).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz/dicom_volume_entry.h"

namespace image {
namespace {

namespace fs = std::filesystem;

std::vector<uint8_t> read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

TEST(FuzzRegression, EveryKeptDicomInputIsAnsweredWithoutACrash) {
  const fs::path corpus = fs::path(STROKEBOX_SOURCE_DIR) / "fuzz" / "corpus" / "dicom_volume";
  ASSERT_TRUE(fs::is_directory(corpus)) << corpus;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(corpus))
    if (e.is_regular_file()) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  ASSERT_GE(files.size(), 5u) << "the seed corpus is missing";
  int volumes = 0;
  for (const fs::path& file : files) {
    const std::vector<uint8_t> bytes = read_bytes(file);
    std::string outcome;
    EXPECT_EQ(fuzzentry::run_dicom_volume(bytes.data(), bytes.size(), &outcome), 0);
    EXPECT_FALSE(outcome.empty()) << file;
    std::printf("%-48s %s\n", file.filename().c_str(), outcome.c_str());
    volumes += outcome.rfind("volume: ok", 0) == 0;
  }
  // The seeds include well-formed MR files in every supported transfer syntax: the path must
  // still produce volumes from them, or the replay would prove nothing.
  EXPECT_GE(volumes, 5);
}

TEST(FuzzRegression, EmptyAndTinyInputsAreRefused) {
  std::string outcome;
  fuzzentry::run_dicom_volume(nullptr, 0, &outcome);
  EXPECT_EQ(outcome.rfind("header:", 0), 0u) << outcome;
  const uint8_t dicm[132 + 4] = {};
  fuzzentry::run_dicom_volume(dicm, sizeof dicm, &outcome);
  EXPECT_EQ(outcome.rfind("header:", 0), 0u) << outcome;
}

}  // namespace
}  // namespace image
