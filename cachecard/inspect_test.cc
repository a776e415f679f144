#include "cachecard/inspect.h"

#include <numeric>
#include <vector>

#include "cachecard/build.h"
#include "cachecard/testing/synthetic_kv.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qkvshare::cachecard {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

TEST(InspectTest, HistogramsBytesAndRatios) {
  const agents::KvShape shape{3, 2, 16};
  auto src = *testing::MakeSyntheticCache(shape, DType::kF32, 64, 1);
  std::vector<int32_t> ids(64);
  std::iota(ids.begin(), ids.end(), 0);
  quant::BitPlan plan = testing::UniformPlan(64, 4);
  for (int t = 0; t < 8; ++t) plan.k_bits[t] = 8;
  Provenance prov;
  prov.card_id.bytes.fill(1);
  prov.source_agent = "summarizer";
  prov.budget_bits = 4.25;
  auto card = *BuildCard(*src, 64, ids,
                         CardEncoding::Quantized(plan, {quant::GroupAxis::kPerChannel, 32},
                                                 {quant::GroupAxis::kPerToken, 32}),
                         ModelFingerprint{}, prov);
  const CardSummary s = Summarize(card->metadata());
  EXPECT_THAT(s.k_bits_histogram, ElementsAre(Pair(4, 56), Pair(8, 8)));
  EXPECT_THAT(s.v_bits_histogram, ElementsAre(Pair(4, 64)));
  ASSERT_EQ(s.layer_bytes.size(), 3u);
  // K: 2 blocks x 32 channels x 4 bytes of params + 56 x 16 + 8 x 32 code bytes;
  // V: 64 tokens x (1 group x 4 bytes + 16 code bytes).
  const uint64_t k = 2 * 32 * 4 + 56 * 16 + 8 * 32;
  const uint64_t v = 64 * (4 + 16);
  EXPECT_THAT(s.layer_bytes, ElementsAre(k + v, k + v, k + v));
  EXPECT_DOUBLE_EQ(s.avg_bits, (56 * 4 + 8 * 8 + 64 * 4) / 128.0);
  const double elements = 2.0 * 3 * 32 * 64;
  EXPECT_DOUBLE_EQ(s.effective_bits, 8.0 * card->bytes().size() / elements);
  EXPECT_DOUBLE_EQ(s.fp16_ratio, card->bytes().size() / (2 * elements));
  EXPECT_THAT(FormatSummary(s), HasSubstr("policy: (none), budget 4.250 bits"));
}

}  // namespace
}  // namespace qkvshare::cachecard
