#include "bench/bench_util.h"

#include <vector>

#include "gtest/gtest.h"

namespace qkvshare::bench {
namespace {

// Benchmarks report the median of their rounds, not the best (issue: the
// runtime bench's --help said median and it reported the best).
TEST(BenchUtilTest, MedianIsTheMiddleNotTheBest) {
  EXPECT_DOUBLE_EQ(Median({5.0, 1.0, 3.0}), 3.0);
  EXPECT_DOUBLE_EQ(Median({9.0, 1.0, 2.0, 4.0}), 3.0);  // mean of the middle pair
  EXPECT_DOUBLE_EQ(Median({7.5}), 7.5);
  EXPECT_DOUBLE_EQ(Median({}), 0.0);
}

TEST(BenchUtilTest, ThreadSecondsAdvancesWithWork) {
  const double t0 = ThreadSeconds();
  volatile double x = 0;
  for (int i = 0; i < 2000000; ++i) x = x + 1e-9 * i;
  EXPECT_GT(ThreadSeconds(), t0);
}

TEST(BenchUtilTest, ResidentBytesGrowsWithTouchedMemory) {
  const int64_t before = ResidentBytes();
  ASSERT_GT(before, 0);
  constexpr size_t kBytes = size_t{64} << 20;
  std::vector<char> block(kBytes, 1);  // written: resident
  const int64_t after = ResidentBytes();
  EXPECT_GE(after - before, static_cast<int64_t>(kBytes * 9 / 10));
  EXPECT_LE(after - before, static_cast<int64_t>(kBytes * 3 / 2));
  EXPECT_EQ(block[kBytes - 1], 1);
}

}  // namespace
}  // namespace qkvshare::bench
