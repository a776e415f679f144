#include "agents/sampler.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace qkvshare::agents {
namespace {

std::vector<float> LogProbs(const std::vector<double>& p) {
  std::vector<float> out;
  for (double v : p) out.push_back(static_cast<float>(std::log(v)));
  return out;
}

std::vector<int> Histogram(Sampler& s, const std::vector<float>& logits, int draws) {
  std::vector<int> h(logits.size());
  for (int i = 0; i < draws; ++i) ++h[s.Sample(logits)];
  return h;
}

TEST(SamplerTest, ArgMaxTakesFirstOnTies) {
  EXPECT_EQ(ArgMax(std::vector<float>{1, 3, 3, 2}), 1);
  EXPECT_EQ(ArgMax(std::vector<float>{-1}), 0);
  auto greedy = Sampler::Create({});
  ASSERT_TRUE(greedy.ok());
  EXPECT_EQ(greedy->Sample(std::vector<float>{0, 5, 5}), 1);
}

TEST(SamplerTest, SameSeedSameTokens) {
  std::vector<float> logits = LogProbs({0.1, 0.2, 0.3, 0.25, 0.15});
  auto run = [&](uint64_t seed) {
    Sampler s = *Sampler::Create({.temperature = 1.0f, .top_p = 0.9f, .seed = seed});
    std::vector<int32_t> ids;
    for (int i = 0; i < 64; ++i) ids.push_back(s.Sample(logits));
    return ids;
  };
  EXPECT_EQ(run(42), run(42));
  EXPECT_NE(run(42), run(43));
}

TEST(SamplerTest, TopKOneIsGreedy) {
  std::vector<float> logits(1000);
  for (int i = 0; i < 1000; ++i) logits[i] = static_cast<float>((i * 7919) % 613) * 0.01f;
  logits[700] = logits[300] = 50.0f;  // a tie: greedy takes 300
  Sampler s = *Sampler::Create({.temperature = 2.0f, .top_k = 1, .seed = 3});
  for (int i = 0; i < 20; ++i) EXPECT_EQ(s.Sample(logits), 300);
}

TEST(SamplerTest, FrequenciesFollowTemperature) {
  std::vector<float> logits = LogProbs({0.5, 0.3, 0.2});
  Sampler s = *Sampler::Create({.temperature = 1.0f, .seed = 1});
  std::vector<int> h = Histogram(s, logits, 20000);
  EXPECT_NEAR(h[0] / 20000.0, 0.5, 0.02);
  EXPECT_NEAR(h[1] / 20000.0, 0.3, 0.02);
  EXPECT_NEAR(h[2] / 20000.0, 0.2, 0.02);
  // Temperature 0.5 squares the probabilities: 25:9:4 of 38.
  Sampler cold = *Sampler::Create({.temperature = 0.5f, .seed = 1});
  h = Histogram(cold, logits, 20000);
  EXPECT_NEAR(h[0] / 20000.0, 25.0 / 38, 0.02);
  EXPECT_NEAR(h[2] / 20000.0, 4.0 / 38, 0.02);
}

TEST(SamplerTest, TopKAndTopPFilter) {
  std::vector<float> logits = LogProbs({0.5, 0.3, 0.2});
  Sampler k2 = *Sampler::Create({.temperature = 1.0f, .top_k = 2, .seed = 5});
  std::vector<int> h = Histogram(k2, logits, 5000);
  EXPECT_EQ(h[2], 0);
  EXPECT_NEAR(h[0] / 5000.0, 0.625, 0.03);  // 0.5 / 0.8
  Sampler p6 = *Sampler::Create({.temperature = 1.0f, .top_p = 0.6f, .seed = 5});
  h = Histogram(p6, logits, 5000);
  EXPECT_EQ(h[2], 0);  // 0.5 < 0.6 <= 0.5 + 0.3
  EXPECT_GT(h[1], 0);
  Sampler p4 = *Sampler::Create({.temperature = 1.0f, .top_p = 0.4f, .seed = 5});
  h = Histogram(p4, logits, 500);
  EXPECT_EQ(h[0], 500);
}

TEST(SamplerTest, TopPOverLargeFlatVocabulary) {
  // 2000 equal logits: the first pass (256 best) cannot reach 0.5, so the
  // full sort runs; exactly the 1000 lowest ids survive.
  std::vector<float> logits(2000, 1.0f);
  Sampler s = *Sampler::Create({.temperature = 1.0f, .top_p = 0.5f, .seed = 9});
  std::vector<int> h = Histogram(s, logits, 20000);
  int above = 0, used = 0;
  for (int i = 0; i < 2000; ++i) {
    if (i >= 1000) above += h[i];
    if (h[i] > 0) ++used;
  }
  EXPECT_EQ(above, 0);
  EXPECT_GT(used, 900);
}

TEST(SamplerTest, RejectsBadParams) {
  EXPECT_EQ(Sampler::Create({.temperature = -1.0f}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Sampler::Create({.temperature = NAN}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Sampler::Create({.top_k = -2}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Sampler::Create({.top_p = 0.0f}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Sampler::Create({.top_p = 1.5f}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace qkvshare::agents
