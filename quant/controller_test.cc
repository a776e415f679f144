#include "quant/controller.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "quant/bit_plan.h"

namespace qkvshare::quant {
namespace {

std::vector<float> RandomScores(int64_t n, uint32_t seed, bool with_ties = false) {
  std::mt19937 rng(seed);
  std::exponential_distribution<float> dist(1.0f);
  std::vector<float> s(n);
  for (auto& v : s) v = with_ties ? static_cast<float>(rng() % 5) : dist(rng);
  return s;
}

AllocationRequest Request(const std::vector<float>& scores, double budget) {
  AllocationRequest r;
  r.num_tokens = static_cast<int64_t>(scores.size());
  r.avg_bits = budget;
  r.importance = scores;
  return r;
}

double Mean(const BitPlan& p) {
  double sum = 0;
  for (size_t i = 0; i < p.k_bits.size(); ++i) sum += p.k_bits[i] + p.v_bits[i];
  return sum / (2.0 * p.k_bits.size());
}

TEST(ControllerTest, MeetsTheBudget) {
  for (int64_t n : {13, 100, 128, 1000, 4096}) {
    const std::vector<float> scores = RandomScores(n, static_cast<uint32_t>(n));
    for (double budget : {2.0, 2.5, 3.0, 3.3, 4.0, 5.75, 7.99, 8.0}) {
      for (AllocationPolicy policy : {AllocationPolicy::kUniform, AllocationPolicy::kAdaptive}) {
        AllocationRequest r = Request(scores, budget);
        r.policy = policy;
        absl::StatusOr<BitPlan> plan = AllocateBits(r);
        ASSERT_TRUE(plan.ok()) << plan.status();
        ASSERT_EQ(plan->num_tokens(), n);
        ASSERT_EQ(plan->v_bits.size(), static_cast<size_t>(n));
        EXPECT_DOUBLE_EQ(plan->avg_bits, Mean(*plan));
        EXPECT_LE(std::fabs(plan->avg_bits - budget), 1.0 / (4.0 * n) + 1e-12)
            << "n " << n << " budget " << budget;
        EXPECT_LE(std::fabs(plan->avg_bits - budget), 0.02);
        for (int64_t i = 0; i < n; ++i) {
          ASSERT_TRUE(plan->k_bits[i] >= 2 && plan->k_bits[i] <= 8);
          ASSERT_TRUE(plan->v_bits[i] >= 2 && plan->v_bits[i] <= 8);
        }
      }
    }
  }
}

TEST(ControllerTest, Budget16IsAllRaw) {
  const std::vector<float> scores = RandomScores(50, 1);
  for (AllocationPolicy policy : {AllocationPolicy::kUniform, AllocationPolicy::kAdaptive}) {
    AllocationRequest r = Request(scores, 16);
    r.policy = policy;
    absl::StatusOr<BitPlan> plan = AllocateBits(r);
    ASSERT_TRUE(plan.ok());
    EXPECT_EQ(plan->k_bits, std::vector<uint8_t>(50, 16));
    EXPECT_EQ(plan->v_bits, std::vector<uint8_t>(50, 16));
    EXPECT_EQ(plan->avg_bits, 16.0);
  }
}

TEST(ControllerTest, LargerScoreNeverGetsFewerBits) {
  for (bool ties : {false, true}) {
    const std::vector<float> scores = RandomScores(400, 5, ties);
    for (double budget : {2.4, 3.0, 4.5}) {
      for (int hop : {0, 1, 2}) {
        AllocationRequest r = Request(scores, budget);
        r.hop = hop;
        r.num_hops = 3;
        absl::StatusOr<BitPlan> plan = AllocateBits(r);
        ASSERT_TRUE(plan.ok());
        for (size_t i = 0; i < scores.size(); ++i) {
          for (size_t j = 0; j < scores.size(); ++j) {
            if (scores[i] > scores[j]) {
              ASSERT_GE(plan->k_bits[i], plan->k_bits[j]) << i << " vs " << j;
              ASSERT_GE(plan->v_bits[i], plan->v_bits[j]) << i << " vs " << j;
            }
          }
        }
      }
    }
  }
}

TEST(ControllerTest, KeysGetAtLeastValueBitsWhenKeyWeightIsLarger) {
  const std::vector<float> scores = RandomScores(300, 9, /*with_ties=*/true);
  for (double w_k : {1.0, 2.0, 5.0}) {
    for (double budget : {2.5, 3.0, 3.7, 6.0}) {
      AllocationRequest r = Request(scores, budget);
      r.key_weight = w_k;
      absl::StatusOr<BitPlan> plan = AllocateBits(r);
      ASSERT_TRUE(plan.ok());
      for (size_t i = 0; i < scores.size(); ++i) {
        ASSERT_GE(plan->k_bits[i], plan->v_bits[i]) << "w_K " << w_k << " token " << i;
      }
    }
  }
  // And the other way round when values weigh more.
  AllocationRequest r = Request(scores, 3.0);
  r.key_weight = 0.5;
  absl::StatusOr<BitPlan> plan = AllocateBits(r);
  ASSERT_TRUE(plan.ok());
  for (size_t i = 0; i < scores.size(); ++i) ASSERT_GE(plan->v_bits[i], plan->k_bits[i]);
}

TEST(ControllerTest, EqualScoresGiveEqualWidthsUpToTheRemainder) {
  const std::vector<float> scores(100, 0.7f);
  // 3.3 bits: 260 one-bit steps above 2. With w_K = 3 w_V the gains are
  // K 2->3 3/16, V 2->3 1/16, K 3->4 3/64: K 2->3 (100), V 2->3 (100), then
  // K 3->4 for 60 tokens.
  absl::StatusOr<BitPlan> plan = AllocateBits(Request(scores, 3.3));
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(std::count(plan->k_bits.begin(), plan->k_bits.end(), 4), 60);
  EXPECT_EQ(std::count(plan->k_bits.begin(), plan->k_bits.end(), 3), 40);
  EXPECT_EQ(std::count(plan->v_bits.begin(), plan->v_bits.end(), 3), 100);
  // The 60 extra bits are spread, not packed at the start.
  const auto first_half = std::count(plan->k_bits.begin(), plan->k_bits.begin() + 50, 4);
  EXPECT_GE(first_half, 24);
  EXPECT_LE(first_half, 36);

  // Uniform 3.3: 60 extra steps = 30 tokens at 4/4, every 10 tokens hold 3.
  AllocationRequest u = Request(scores, 3.3);
  u.policy = AllocationPolicy::kUniform;
  plan = AllocateBits(u);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->k_bits, plan->v_bits);
  for (int block = 0; block < 10; ++block) {
    EXPECT_EQ(
        std::count(plan->k_bits.begin() + 10 * block, plan->k_bits.begin() + 10 * block + 10, 4),
        3);
  }
  // An odd number of extra steps: the leftover bit goes to a key.
  u.num_tokens = 5;
  u.importance = {};
  u.avg_bits = 3.1;  // 1 step over 3 bits
  plan = AllocateBits(u);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->k_bits, (std::vector<uint8_t>{4, 3, 3, 3, 3}));
  EXPECT_EQ(plan->v_bits, std::vector<uint8_t>(5, 3));
}

TEST(ControllerTest, Deterministic) {
  const std::vector<float> scores = RandomScores(1000, 3, /*with_ties=*/true);
  absl::StatusOr<BitPlan> a = AllocateBits(Request(scores, 3.14));
  absl::StatusOr<BitPlan> b = AllocateBits(Request(scores, 3.14));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->k_bits, b->k_bits);
  EXPECT_EQ(a->v_bits, b->v_bits);
}

// Sum over sides of w * score * 4^-bits: what the greedy minimizes.
double ExpectedError(const BitPlan& p, const std::vector<float>& s, double w_k, double w_v) {
  double e = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    e += w_k * s[i] * std::pow(4.0, -p.k_bits[i]) + w_v * s[i] * std::pow(4.0, -p.v_bits[i]);
  }
  return e;
}

TEST(ControllerTest, GreedyIsOptimalForTheGainModel) {
  const std::vector<float> importance = {0.05f, 1.0f, 0.3f};
  // The greedy works on the transformed scores (the default shrink).
  const std::vector<double> shrunk = ShrinkTowardUniform(importance, 0, 1);
  const std::vector<float> scores(shrunk.begin(), shrunk.end());
  for (double budget : {2.5, 3.0, 4.0, 5.5}) {
    absl::StatusOr<BitPlan> plan = AllocateBits(Request(importance, budget));
    ASSERT_TRUE(plan.ok());
    // Brute force over every plan with the same total bits.
    const int total = static_cast<int>(std::lround(budget * 6));
    double best = std::numeric_limits<double>::infinity();
    BitPlan p;
    p.k_bits.resize(3);
    p.v_bits.resize(3);
    for (int code = 0; code < 7 * 7 * 7 * 7 * 7 * 7; ++code) {
      int c = code, sum = 0;
      for (int i = 0; i < 3; ++i) {
        p.k_bits[i] = static_cast<uint8_t>(2 + c % 7);
        c /= 7;
        p.v_bits[i] = static_cast<uint8_t>(2 + c % 7);
        c /= 7;
        sum += p.k_bits[i] + p.v_bits[i];
      }
      if (sum == total) best = std::min(best, ExpectedError(p, scores, 3, 1));
    }
    EXPECT_NEAR(ExpectedError(*plan, scores, 3, 1), best, 1e-15) << budget;
  }
}

double BitsVariance(const BitPlan& p) {
  const double mean = Mean(p);
  double v = 0;
  for (size_t i = 0; i < p.k_bits.size(); ++i) {
    v += (p.k_bits[i] - mean) * (p.k_bits[i] - mean) + (p.v_bits[i] - mean) * (p.v_bits[i] - mean);
  }
  return v / (2.0 * p.k_bits.size());
}

TEST(ControllerTest, HopBlendingMovesEarlyHopsTowardUniform) {
  const std::vector<double> blended = BlendTowardUniformByHop(std::vector<float>{1, 3}, 0, 3);
  ASSERT_EQ(blended.size(), 2u);
  EXPECT_NEAR(blended[0], 0.5 / 3 + 2.0 / 3, 1e-12);  // normalized 0.5, alpha 2/3
  EXPECT_NEAR(blended[1], 1.5 / 3 + 2.0 / 3, 1e-12);
  EXPECT_EQ(BlendTowardUniformByHop(std::vector<float>{1, 3}, 2, 3),
            (std::vector<double>{0.5, 1.5}));
  EXPECT_EQ(BlendTowardUniformByHop(std::vector<float>{1, 3}, 1, 2),
            (std::vector<double>{0.5, 1.5}));
  EXPECT_EQ(BlendTowardUniformByHop(std::vector<float>{0, 0}, 0, 4),
            (std::vector<double>{1.0, 1.0}));

  // Heavy-tailed scores: the last hop is pure importance (= a single hop),
  // earlier hops spread the bits more evenly.
  std::vector<float> scores(512);
  for (size_t i = 0; i < scores.size(); ++i) scores[i] = 1.0f / (1 + (i * 37) % 512);
  AllocationRequest r = Request(scores, 3.0);
  r.hop_transform = &BlendTowardUniformByHop;
  r.num_hops = 4;
  std::vector<double> variance;
  for (int hop = 0; hop < 4; ++hop) {
    r.hop = hop;
    absl::StatusOr<BitPlan> plan = AllocateBits(r);
    ASSERT_TRUE(plan.ok());
    EXPECT_NEAR(plan->avg_bits, 3.0, 1e-9);
    variance.push_back(BitsVariance(*plan));
    if (hop == 3) {
      AllocationRequest one = Request(scores, 3.0);
      one.hop_transform = &BlendTowardUniformByHop;
      absl::StatusOr<BitPlan> single = AllocateBits(one);
      ASSERT_TRUE(single.ok());
      EXPECT_EQ(plan->k_bits, single->k_bits);
      EXPECT_EQ(plan->v_bits, single->v_bits);
    }
  }
  for (int hop = 1; hop < 4; ++hop) EXPECT_GT(variance[hop], variance[hop - 1]) << hop;
}

TEST(ControllerTest, ShrinkTowardUniformIsTheHopIndependentDefault) {
  EXPECT_EQ(AllocationRequest{}.hop_transform, &ShrinkTowardUniform);
  EXPECT_EQ(AllocationRequest{}.key_weight, 3.0);
  EXPECT_EQ(AllocationRequest{}.value_weight, 1.0);
  // Normalized (0.5, 1.5), then half-way to 1.
  EXPECT_EQ(ShrinkTowardUniform(std::vector<float>{1, 3}, 0, 1), (std::vector<double>{0.75, 1.25}));
  for (int hop = 0; hop < 5; ++hop) {
    EXPECT_EQ(ShrinkTowardUniform(std::vector<float>{1, 3}, hop, 5),
              (std::vector<double>{0.75, 1.25}));
  }
  EXPECT_EQ(ShrinkTowardUniform(std::vector<float>{0, 0, 0}, 0, 1),
            (std::vector<double>{1.0, 1.0, 1.0}));
  EXPECT_TRUE(ShrinkTowardUniform({}, 0, 1).empty());
  // Every score is at least the shrink weight: no token is written off.
  const std::vector<float> heavy = {0.0f, 0.0f, 0.0f, 100.0f};
  for (double s : ShrinkTowardUniform(heavy, 0, 1)) EXPECT_GE(s, kImportanceShrink);

  // A hop's plan does not depend on its position in the chain.
  const std::vector<float> scores = RandomScores(200, 11);
  AllocationRequest r = Request(scores, 3.0);
  absl::StatusOr<BitPlan> single = AllocateBits(r);
  ASSERT_TRUE(single.ok());
  r.num_hops = 10;
  for (int hop : {0, 4, 9}) {
    r.hop = hop;
    absl::StatusOr<BitPlan> plan = AllocateBits(r);
    ASSERT_TRUE(plan.ok());
    EXPECT_EQ(plan->k_bits, single->k_bits) << hop;
    EXPECT_EQ(plan->v_bits, single->v_bits) << hop;
  }
}

TEST(ControllerTest, EmptyRequestIsAnEmptyPlan) {
  AllocationRequest r;
  r.num_tokens = 0;
  absl::StatusOr<BitPlan> plan = AllocateBits(r);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->num_tokens(), 0);
  EXPECT_EQ(plan->avg_bits, 0.0);
}

TEST(ControllerTest, RejectsBadRequests) {
  const std::vector<float> scores = RandomScores(10, 2);
  auto code = [](const AllocationRequest& r) { return AllocateBits(r).status().code(); };
  constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;
  AllocationRequest r = Request(scores, 3.0);
  r.num_tokens = 11;
  EXPECT_EQ(code(r), kInvalid);
  for (double budget : {1.99, 8.01, 12.0, 16.5, std::nan("")}) {
    EXPECT_EQ(code(Request(scores, budget)), kInvalid) << budget;
  }
  std::vector<float> bad = scores;
  bad[7] = -1.0f;
  absl::Status s = AllocateBits(Request(bad, 3.0)).status();
  EXPECT_EQ(s.code(), kInvalid);
  EXPECT_NE(std::string(s.message()).find("token 7"), std::string::npos) << s;
  bad[7] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(code(Request(bad, 3.0)), kInvalid);
  r = Request(scores, 3.0);
  r.hop = 2;
  r.num_hops = 2;
  EXPECT_EQ(code(r), kInvalid);
  r = Request(scores, 3.0);
  r.value_weight = 0;
  EXPECT_EQ(code(r), kInvalid);
  r = Request(scores, 3.0);
  r.hop_transform = nullptr;
  EXPECT_EQ(code(r), kInvalid);
  r = Request({}, 3.0);
  r.num_tokens = 10;  // adaptive needs scores; uniform does not
  EXPECT_EQ(code(r), kInvalid);
  r.policy = AllocationPolicy::kUniform;
  EXPECT_TRUE(AllocateBits(r).ok());
}

}  // namespace
}  // namespace qkvshare::quant
