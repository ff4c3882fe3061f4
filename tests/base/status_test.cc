#include "base/status.h"

#include <gtest/gtest.h>

#include <memory>

namespace {

base::Result<int> parse_positive(int v) {
  if (v <= 0) return base::invalid_argument("must be positive, got " + std::to_string(v));
  return v;
}

base::Result<int> doubled(int v) {
  SB_ASSIGN_OR_RETURN(int x, parse_positive(v));
  return 2 * x;
}

base::Status check_both(int a, int b) {
  SB_RETURN_IF_ERROR(parse_positive(a).status());
  SB_RETURN_IF_ERROR(parse_positive(b).status().with_context("second"));
  return base::ok_status();
}

TEST(Status, DefaultIsOkAndPrintsOk) {
  base::Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.to_string(), "ok");
}

TEST(Status, CarriesCodeAndMessage) {
  auto s = base::not_found("no model.json in /x");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), base::Code::kNotFound);
  EXPECT_EQ(s.to_string(), "not_found: no model.json in /x");
}

TEST(Status, WithContextPrefixesErrorsOnly) {
  EXPECT_EQ(base::invalid_argument("bad").with_context("DWI").message(), "DWI: bad");
  EXPECT_TRUE(base::ok_status().with_context("DWI").ok());
}

TEST(Result, AssignOrReturnPropagatesTheError) {
  EXPECT_EQ(*doubled(21), 42);
  auto r = doubled(-1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), base::Code::kInvalidArgument);
}

TEST(Result, ReturnIfErrorStopsAtTheFirstFailure) {
  EXPECT_TRUE(check_both(1, 2).ok());
  EXPECT_EQ(check_both(1, -2).message(), "second: must be positive, got -2");
}

TEST(Result, OkStatusWithoutValueBecomesInternalError) {
  base::Result<int> r{base::ok_status()};
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), base::Code::kInternal);
}

TEST(Result, HoldsMoveOnlyValues) {
  base::Result<std::unique_ptr<int>> r = std::make_unique<int>(7);
  ASSERT_TRUE(r.ok());
  std::unique_ptr<int> p = std::move(r).value();
  EXPECT_EQ(*p, 7);
}

TEST(StatusDeathTest, ValueOfAnErrorAborts) {
  base::Result<int> r = base::internal_error("x");
  EXPECT_DEATH((void)r.value(), "");
}

}  // namespace
