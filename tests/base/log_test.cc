// SB_LOG (base/log.h): levels below log_level() are dropped without evaluating the message, and
// the macro is one expression, so an unbraced if/else around it keeps its else.
#include "base/log.h"

#include <gtest/gtest.h>

#include <string>

namespace base {
namespace {

int evaluations = 0;
int counted() { return ++evaluations; }

TEST(Log, MessageAtOrAboveTheLevelIsWrittenOnceWithLevelAndText) {
  set_log_level(LogLevel::kInfo);
  testing::internal::CaptureStderr();
  SB_LOG(kWarning) << "disk low: " << 42 << " MiB";
  const std::string out = testing::internal::GetCapturedStderr();
  EXPECT_NE(out.find("disk low: 42 MiB"), std::string::npos) << out;
  EXPECT_NE(out.find(" W "), std::string::npos) << out;
  EXPECT_EQ(out.find('\n'), out.size() - 1) << "one line: " << out;
}

TEST(Log, DroppedLevelDoesNotEvaluateTheMessage) {
  set_log_level(LogLevel::kInfo);
  evaluations = 0;
  testing::internal::CaptureStderr();
  SB_LOG(kDebug) << "value " << counted();
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  EXPECT_EQ(evaluations, 0);
  SB_LOG(kInfo) << "value " << counted();
  EXPECT_EQ(evaluations, 1);
}

TEST(Log, UnbracedIfElseAroundTheMacroKeepsItsElse) {
  set_log_level(LogLevel::kInfo);
  bool else_taken = false;
  const bool condition = false;
  testing::internal::CaptureStderr();
  if (condition)
    SB_LOG(kInfo) << "not printed";
  else
    else_taken = true;
  // With a dropped level the else must not be swallowed either.
  bool second_else = false;
  if (condition)
    SB_LOG(kDebug) << "not printed";
  else
    second_else = true;
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  EXPECT_TRUE(else_taken);
  EXPECT_TRUE(second_else);
}

}  // namespace
}  // namespace base
