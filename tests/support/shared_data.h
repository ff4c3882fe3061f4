// Test-only: the reference data kept outside the repository in ../shared (nnU-Net's own
// outputs in golden/, see ../shared/DESIGN.md). A checkout without it skips the tests that
// compare against it, saying why, instead of failing them; CI has it and runs them all.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

namespace test_support {

/// True when ../shared/golden (nnU-Net v2 goldens: model, inputs, predictions) is present.
inline bool have_golden() { return std::filesystem::is_directory(std::string(STROKEBOX_SHARED_DIR) + "/golden"); }

}  // namespace test_support

/// First statement of a test (or of a fixture's SetUp) that reads ../shared/golden.
#define SKIP_WITHOUT_GOLDEN()                                                                       \
  do {                                                                                               \
    if (!test_support::have_golden())                                                                \
      GTEST_SKIP() << STROKEBOX_SHARED_DIR "/golden is absent: nnU-Net goldens not available here"; \
  } while (0)
