#include "daemon/stats.h"

#include "gtest/gtest.h"

namespace qkvshare::daemon {
namespace {

TEST(StatsTest, CountersAndSummaries) {
  Stats s;
  s.Add(Stats::kTasksSubmitted);
  s.Add(Stats::kCardBytesBuilt, 1000);
  EXPECT_EQ(s.Get(Stats::kTasksSubmitted), 1);
  EXPECT_EQ(s.Get(Stats::kCardBytesBuilt), 1000);
  for (int i = 1; i <= 100; ++i) s.Observe(Stats::kHopTtftMs, i);
  s.Observe(Stats::kHopTtftMs, std::nan(""));  // ignored
  Stats::Summary x = s.Summarize(Stats::kHopTtftMs);
  EXPECT_EQ(x.count, 100);
  EXPECT_DOUBLE_EQ(x.mean, 50.5);
  EXPECT_DOUBLE_EQ(x.p50, 50);
  EXPECT_DOUBLE_EQ(x.p90, 90);
  EXPECT_DOUBLE_EQ(x.p99, 99);
  EXPECT_DOUBLE_EQ(x.max, 100);
  // Buckets: le=1 -> 1 sample, le=10 -> 10, le=100 -> 100, +Inf -> 100.
  ASSERT_EQ(x.cumulative.size(), x.bounds.size() + 1);
  EXPECT_EQ(x.cumulative[0], 1);
  EXPECT_EQ(x.cumulative[3], 10);
  EXPECT_EQ(x.cumulative[6], 100);
  EXPECT_EQ(x.cumulative.back(), 100);
}

TEST(StatsTest, EmptySummaryIsZero) {
  Stats s;
  Stats::Summary x = s.Summarize(Stats::kInjectMs);
  EXPECT_EQ(x.count, 0);
  EXPECT_EQ(x.p99, 0);
  EXPECT_EQ(x.cumulative.back(), 0);
  EXPECT_EQ(Stats::Name(Stats::kInjectMs), "card_inject_ms");
}

}  // namespace
}  // namespace qkvshare::daemon
