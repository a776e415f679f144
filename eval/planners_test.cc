// Tests of the chain-level budget schedule (ChainHopBits, eval/planners.h).
#include "eval/planners.h"

#include <cstdint>
#include <numeric>
#include <vector>

#include "eval/handoff_chain.h"
#include "gtest/gtest.h"

namespace qkvshare::eval {
namespace {

std::vector<int64_t> HopTokens(int64_t total, int hops) {
  const std::vector<int64_t> ends = SplitIntoHops(total, hops);
  std::vector<int64_t> n(ends.size());
  for (size_t h = 0; h < ends.size(); ++h) n[h] = ends[h] - (h > 0 ? ends[h - 1] : 0);
  return n;
}

int64_t Sum(const std::vector<int64_t>& v) { return std::accumulate(v.begin(), v.end(), 0LL); }

TEST(ChainHopBitsTest, FlatGivesEveryHopTheBudget) {
  const std::vector<int64_t> n = HopTokens(128, 10);
  absl::StatusOr<std::vector<int64_t>> bits = ChainHopBits(n, 3.0, ChainSchedule::kFlat, 1.0);
  ASSERT_TRUE(bits.ok()) << bits.status();
  for (size_t h = 0; h < n.size(); ++h) EXPECT_EQ((*bits)[h], 6 * n[h]);
}

TEST(ChainHopBitsTest, RampKeepsTheChainAverageAndRises) {
  for (double budget : {2.5, 3.0, 4.0, 7.9}) {
    for (double s : {0.5, 1.0, 2.0, 6.0}) {
      for (int hops : {1, 2, 4, 10}) {
        const std::vector<int64_t> n = HopTokens(128, hops);
        absl::StatusOr<std::vector<int64_t>> bits =
            ChainHopBits(n, budget, ChainSchedule::kRamp, s);
        ASSERT_TRUE(bits.ok()) << bits.status();
        EXPECT_EQ(Sum(*bits), static_cast<int64_t>(2 * budget * 128 + 1e-6))
            << budget << " " << s << " " << hops;
        for (size_t h = 0; h < n.size(); ++h) {
          const double per_element = (*bits)[h] / (2.0 * n[h]);
          EXPECT_GE(per_element, 2.0);
          EXPECT_LE(per_element, 8.0);
          // Non-decreasing up to one bit of rounding per hop.
          if (h > 0) {
            EXPECT_GE((*bits)[h] + 1, (*bits)[h - 1] * n[h] / n[h - 1]);
          }
        }
      }
    }
  }
}

TEST(ChainHopBitsTest, RampShapeWithoutClamping) {
  // 4 hops of 32 tokens, budget 4, s = 1.5: 3.25, 3.75, 4.25, 4.75 bits.
  absl::StatusOr<std::vector<int64_t>> bits =
      ChainHopBits({32, 32, 32, 32}, 4.0, ChainSchedule::kRamp, 1.5);
  ASSERT_TRUE(bits.ok()) << bits.status();
  EXPECT_EQ(*bits, (std::vector<int64_t>{208, 240, 272, 304}));
}

TEST(ChainHopBitsTest, ClampingIsRecentred) {
  // Budget 2.5, s = 2: the first hops would go below 2 bits; they stay at 2
  // and the rest is lowered so that the chain still averages 2.5.
  absl::StatusOr<std::vector<int64_t>> bits =
      ChainHopBits({32, 32, 32, 32}, 2.5, ChainSchedule::kRamp, 2.0);
  ASSERT_TRUE(bits.ok()) << bits.status();
  EXPECT_EQ(Sum(*bits), 640);
  EXPECT_EQ((*bits)[0], 128);
  EXPECT_GT((*bits)[3], (*bits)[2]);
}

TEST(ChainHopBitsTest, BankGivesTheSavedBitsToTheLastHop) {
  absl::StatusOr<std::vector<int64_t>> bits =
      ChainHopBits({32, 32, 32, 32}, 4.0, ChainSchedule::kBank, 0.5);
  ASSERT_TRUE(bits.ok()) << bits.status();
  EXPECT_EQ(*bits, (std::vector<int64_t>{224, 224, 224, 352}));
}

TEST(ChainHopBitsTest, RampPinFirstKeepsHopZeroAtTheBudget) {
  for (double budget : {2.5, 3.0, 4.0, 7.9}) {
    for (int hops : {1, 2, 4, 10}) {
      const std::vector<int64_t> n = HopTokens(128, hops);
      absl::StatusOr<std::vector<int64_t>> bits =
          ChainHopBits(n, budget, ChainSchedule::kRampPinFirst, 0.75);
      ASSERT_TRUE(bits.ok()) << bits.status();
      EXPECT_LE(Sum(*bits), static_cast<int64_t>(2 * budget * 128 + 1e-6));
      EXPECT_GE(Sum(*bits) + 1, static_cast<int64_t>(2 * budget * 128 + 1e-6));
      EXPECT_EQ((*bits)[0], static_cast<int64_t>(2 * budget * n[0]));
      for (size_t h = 0; h < n.size(); ++h) {
        EXPECT_GE((*bits)[h], 4 * n[h]);
        EXPECT_LE((*bits)[h], 16 * n[h]);
      }
    }
  }
  // 4 hops of 32 tokens, budget 4, s = 1: hop 0 at 4, hops 1..3 at 3.5, 4, 4.5.
  absl::StatusOr<std::vector<int64_t>> bits =
      ChainHopBits({32, 32, 32, 32}, 4.0, ChainSchedule::kRampPinFirst, 1.0);
  ASSERT_TRUE(bits.ok()) << bits.status();
  EXPECT_EQ(*bits, (std::vector<int64_t>{256, 224, 256, 288}));
}

TEST(ChainHopBitsTest, Errors) {
  EXPECT_FALSE(ChainHopBits({32}, 1.5, ChainSchedule::kRamp, 1).ok());
  EXPECT_FALSE(ChainHopBits({32}, 16, ChainSchedule::kRamp, 1).ok());
  EXPECT_FALSE(ChainHopBits({32}, 4, ChainSchedule::kRamp, -1).ok());
  EXPECT_FALSE(ChainHopBits({}, 4, ChainSchedule::kRamp, 1).ok());
  EXPECT_FALSE(ChainHopBits({32, 0}, 4, ChainSchedule::kRamp, 1).ok());
  EXPECT_FALSE(ParseChainSchedule("linear").ok());
  EXPECT_EQ(*ParseChainSchedule("bank"), ChainSchedule::kBank);
}

}  // namespace
}  // namespace qkvshare::eval
