// Tests of the static memory planners (greedy and linear) and of verify_no_overlap().
#include "inference/memory_planner.h"

#include <gtest/gtest.h>

#include <random>

namespace inference {
namespace {

TEST(GreedyPlanner, ReusesMemoryOfDisjointLifetimes) {
  const std::vector<BufferRequest> r = {{1000, 0, 1, "a"}, {1000, 2, 3, "b"}};
  const MemoryPlan p = plan_greedy(r, 64);
  EXPECT_EQ(p.offsets[0], 0u);
  EXPECT_EQ(p.offsets[1], 0u);
  EXPECT_EQ(p.arena_bytes, 1024u);
  EXPECT_TRUE(verify_no_overlap(r, p).ok());
}

TEST(GreedyPlanner, SeparatesBuffersAliveAtTheSameStep) {
  // Lifetimes are inclusive: [0,1] and [1,2] share step 1.
  const std::vector<BufferRequest> r = {{1000, 0, 1, "a"}, {1000, 1, 2, "b"}};
  const MemoryPlan p = plan_greedy(r, 64);
  EXPECT_NE(p.offsets[0], p.offsets[1]);
  EXPECT_EQ(p.arena_bytes, 2048u);
  EXPECT_TRUE(verify_no_overlap(r, p).ok());
}

TEST(GreedyPlanner, PlacesLargestFirstAndFillsGaps) {
  // big lives throughout; two small ones with disjoint lifetimes share the space after it;
  // a medium one overlapping only the first small one goes after that one.
  const std::vector<BufferRequest> r = {
      {64, 0, 1, "small0"}, {4096, 0, 9, "big"}, {64, 5, 6, "small1"}, {128, 1, 2, "medium"}};
  const MemoryPlan p = plan_greedy(r, 64);
  EXPECT_EQ(p.offsets[1], 0u);      // big first, at 0
  EXPECT_EQ(p.offsets[3], 4096u);   // medium next (larger than the smalls)
  EXPECT_EQ(p.offsets[0], 4096u + 128u);  // small0 overlaps medium in time: after it
  EXPECT_EQ(p.offsets[2], 4096u);   // small1 overlaps only big: first gap after big
  EXPECT_EQ(p.arena_bytes, 4096u + 192u);
  EXPECT_TRUE(verify_no_overlap(r, p).ok());
}

TEST(GreedyPlanner, AlignsEveryOffset) {
  const std::vector<BufferRequest> r = {{3, 0, 5, "a"}, {5, 0, 5, "b"}, {7, 0, 5, "c"}};
  const MemoryPlan p = plan_greedy(r, 128);
  for (size_t o : p.offsets) EXPECT_EQ(o % 128, 0u);
  EXPECT_EQ(p.arena_bytes, 3 * 128u);
  EXPECT_TRUE(verify_no_overlap(r, p).ok());
}

TEST(GreedyPlanner, NeverOverlapsAndNeverExceedsTheLinearPlanOnRandomProblems) {
  std::mt19937 rng(7);
  for (int problem = 0; problem < 300; ++problem) {
    const int n = 1 + static_cast<int>(rng() % 40);
    const int steps = 1 + static_cast<int>(rng() % 30);
    std::vector<BufferRequest> r;
    for (int i = 0; i < n; ++i) {
      const int a = static_cast<int>(rng() % steps), b = static_cast<int>(rng() % steps);
      r.push_back({static_cast<size_t>(rng() % 100000), std::min(a, b), std::max(a, b), "b" + std::to_string(i)});
    }
    const size_t alignment = size_t{1} << (rng() % 8);
    const MemoryPlan greedy = plan_greedy(r, alignment);
    const MemoryPlan linear = plan_linear(r, alignment);
    ASSERT_TRUE(verify_no_overlap(r, greedy).ok()) << "problem " << problem << "\n" << format_plan(r, greedy);
    ASSERT_TRUE(verify_no_overlap(r, linear).ok()) << "problem " << problem;
    EXPECT_LE(greedy.arena_bytes, linear.arena_bytes) << "problem " << problem;
    // No plan can be smaller than the largest single buffer.
    size_t largest = 0;
    for (const auto& b : r) largest = std::max(largest, b.size_bytes);
    EXPECT_GE(greedy.arena_bytes, largest);
  }
}

TEST(LinearPlanner, NeverReusesMemory) {
  const std::vector<BufferRequest> r = {{100, 0, 0, "a"}, {100, 1, 1, "b"}, {10, 2, 2, "c"}};
  const MemoryPlan p = plan_linear(r, 64);
  EXPECT_EQ(p.offsets, (std::vector<size_t>{0, 128, 256}));
  EXPECT_EQ(p.arena_bytes, naive_bytes(r, 64));
}

TEST(VerifyNoOverlap, ReportsOverlappingLiveBuffersByName) {
  const std::vector<BufferRequest> r = {{100, 0, 3, "skip"}, {100, 2, 4, "upsampled"}};
  MemoryPlan bad;
  bad.offsets = {0, 64};
  bad.arena_bytes = 256;
  bad.alignment = 64;
  const base::Status s = verify_no_overlap(r, bad);
  EXPECT_EQ(s.code(), base::Code::kInternal);
  EXPECT_NE(s.message().find("'skip'"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("'upsampled'"), std::string::npos) << s.message();
}

TEST(VerifyNoOverlap, RejectsBuffersPastTheArenaAndMisalignedOffsets) {
  const std::vector<BufferRequest> r = {{100, 0, 0, "a"}};
  MemoryPlan p;
  p.offsets = {0};
  p.arena_bytes = 50;
  p.alignment = 64;
  EXPECT_EQ(verify_no_overlap(r, p).code(), base::Code::kInternal);
  p.offsets = {32};
  p.arena_bytes = 200;
  EXPECT_EQ(verify_no_overlap(r, p).code(), base::Code::kInternal);
}

TEST(FormatPlan, ListsEveryBufferAndTheArenaSize) {
  const std::vector<BufferRequest> r = {{2048, 0, 1, "conv0_out"}, {1024, 2, 3, "conv1_out"}};
  const std::string text = format_plan(r, plan_greedy(r, 64));
  EXPECT_NE(text.find("conv0_out"), std::string::npos);
  EXPECT_NE(text.find("conv1_out"), std::string::npos);
  EXPECT_NE(text.find("arena"), std::string::npos);
  EXPECT_NE(text.find("linear plan"), std::string::npos);
}

}  // namespace
}  // namespace inference
