#include "eval/metrics.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace qkvshare::eval {
namespace {

TEST(MetricsTest, KlOfIdenticalLogitsIsZero) {
  const std::vector<float> a = {1.5f, -2.0f, 0.25f, 7.0f};
  EXPECT_EQ(KlDivergence(a, a), 0.0);
}

TEST(MetricsTest, KlMatchesClosedForm) {
  // P = softmax(0, ln 3) = (1/4, 3/4), Q = (1/2, 1/2).
  const std::vector<float> p = {0.0f, static_cast<float>(std::log(3.0))};
  const std::vector<float> q = {5.0f, 5.0f};  // shift-invariant
  const double want = 0.25 * std::log(0.5) + 0.75 * std::log(1.5);
  EXPECT_NEAR(KlDivergence(p, q), want, 1e-7);
  // Not symmetric: KL(Q || P) = 1/2 ln 2 + 1/2 ln(2/3).
  EXPECT_NEAR(KlDivergence(q, p), 0.5 * std::log(2.0) + 0.5 * std::log(2.0 / 3.0), 1e-7);
}

TEST(MetricsTest, KlIsStableForLargeLogits) {
  const std::vector<float> p = {1000.0f, 999.0f};
  const std::vector<float> q = {-1000.0f, -1001.0f};  // same distribution
  EXPECT_NEAR(KlDivergence(p, q), 0.0, 1e-12);
}

TEST(MetricsTest, ArgMaxTakesTheFirstMaximum) {
  EXPECT_EQ(ArgMax(std::vector<float>{1, 3, 3, 2}), 1);
  EXPECT_EQ(ArgMax(std::vector<float>{-1}), 0);
}

TEST(MetricsTest, CommonPrefixLength) {
  const std::vector<int32_t> a = {5, 6, 7, 8};
  EXPECT_EQ(CommonPrefixLength(a, std::vector<int32_t>{5, 6, 9, 8}), 2);
  EXPECT_EQ(CommonPrefixLength(a, a), 4);
  EXPECT_EQ(CommonPrefixLength(a, std::vector<int32_t>{5, 6}), 2);
  EXPECT_EQ(CommonPrefixLength(a, std::vector<int32_t>{1}), 0);
}

}  // namespace
}  // namespace qkvshare::eval
