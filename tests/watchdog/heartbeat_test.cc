// Heartbeats and their registry, on a manual clock.
#include "watchdog/heartbeat.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace watchdog {
namespace {
using std::chrono::milliseconds;

TEST(Heartbeat, NewHeartbeatIsFreshUntilItsDeadlinePasses) {
  ManualClock clock;
  Heartbeat h("dicom", milliseconds(1000), clock);
  EXPECT_FALSE(h.stale(clock.now()));
  clock.advance(milliseconds(1000));
  EXPECT_EQ(h.age(clock.now()), milliseconds(1000));
  EXPECT_FALSE(h.stale(clock.now()));  // at the deadline: still fresh
  clock.advance(milliseconds(1));
  EXPECT_TRUE(h.stale(clock.now()));
}

TEST(Heartbeat, BeatResetsTheAge) {
  ManualClock clock;
  Heartbeat h("jobs", milliseconds(500), clock);
  clock.advance(milliseconds(700));
  ASSERT_TRUE(h.stale(clock.now()));
  h.beat();
  EXPECT_EQ(h.age(clock.now()), milliseconds(0));
  EXPECT_FALSE(h.stale(clock.now()));
  EXPECT_EQ(h.beats(), 1u);
  EXPECT_EQ(h.last_beat(), clock.now());
}

TEST(Heartbeat, AgeIsNeverNegative) {
  ManualClock clock;
  clock.advance(milliseconds(100));
  Heartbeat h("x", milliseconds(10), clock);
  EXPECT_EQ(h.age(TimePoint{}), milliseconds(0));
}

TEST(Heartbeat, BeatsFromManyThreadsAreAllCounted) {
  ManualClock clock;
  Heartbeat h("shared", milliseconds(10), clock);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10'000; ++i) h.beat();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(h.beats(), 40'000u);
}

TEST(Heartbeat, SteadyClockDoesNotGoBackwards) {
  TimePoint a = steady_clock().now();
  TimePoint b = steady_clock().now();
  EXPECT_LE(a, b);
}

TEST(Registry, AddReturnsAHeartbeatItWatches) {
  ManualClock clock;
  Registry reg(clock);
  auto h = reg.add("dicom", milliseconds(1000));
  ASSERT_TRUE(h.ok()) << h.status().to_string();
  EXPECT_EQ((*h)->name(), "dicom");
  EXPECT_EQ(reg.size(), 1u);
  clock.advance(milliseconds(1500));
  auto snap = reg.snapshot();
  ASSERT_EQ(snap.size(), 1u);
  EXPECT_EQ(snap[0].name, "dicom");
  EXPECT_EQ(snap[0].deadline, milliseconds(1000));
  EXPECT_EQ(snap[0].age, milliseconds(1500));
  EXPECT_TRUE(snap[0].stale);
  (*h)->beat();
  snap = reg.snapshot();
  EXPECT_FALSE(snap[0].stale);
  EXPECT_EQ(snap[0].beats, 1u);
}

TEST(Registry, RejectsDuplicateNames) {
  Registry reg;
  ASSERT_TRUE(reg.add("jobs", milliseconds(10)).ok());
  EXPECT_EQ(reg.add("jobs", milliseconds(20)).status().code(), base::Code::kAlreadyExists);
  EXPECT_EQ(reg.size(), 1u);
}

TEST(Registry, RejectsEmptyNameAndNonPositiveDeadline) {
  Registry reg;
  EXPECT_EQ(reg.add("", milliseconds(10)).status().code(), base::Code::kInvalidArgument);
  EXPECT_EQ(reg.add("x", milliseconds(0)).status().code(), base::Code::kInvalidArgument);
  EXPECT_EQ(reg.add("x", milliseconds(-5)).status().code(), base::Code::kInvalidArgument);
  EXPECT_EQ(reg.size(), 0u);
}

TEST(Registry, RemoveUnregisters) {
  Registry reg;
  ASSERT_TRUE(reg.add("a", milliseconds(10)).ok());
  ASSERT_TRUE(reg.add("b", milliseconds(10)).ok());
  EXPECT_TRUE(reg.remove("a").ok());
  EXPECT_EQ(reg.remove("a").code(), base::Code::kNotFound);
  auto snap = reg.snapshot();
  ASSERT_EQ(snap.size(), 1u);
  EXPECT_EQ(snap[0].name, "b");
  EXPECT_TRUE(reg.add("a", milliseconds(10)).ok());  // the name is free again
}

TEST(Registry, SnapshotKeepsRegistrationOrderAndOwnDeadlines) {
  ManualClock clock;
  Registry reg(clock);
  ASSERT_TRUE(reg.add("slow", milliseconds(60'000)).ok());
  ASSERT_TRUE(reg.add("fast", milliseconds(100)).ok());
  clock.advance(milliseconds(200));
  auto snap = reg.snapshot();
  ASSERT_EQ(snap.size(), 2u);
  EXPECT_EQ(snap[0].name, "slow");
  EXPECT_FALSE(snap[0].stale);
  EXPECT_EQ(snap[1].name, "fast");
  EXPECT_TRUE(snap[1].stale);
}

TEST(Registry, HeartbeatOutlivesRegistry) {
  std::shared_ptr<Heartbeat> h;
  {
    Registry reg;
    h = *reg.add("worker", milliseconds(10));
  }
  h->beat();  // must not crash: the thread may still hold it at shutdown
  EXPECT_EQ(h->beats(), 1u);
}

}  // namespace
}  // namespace watchdog
