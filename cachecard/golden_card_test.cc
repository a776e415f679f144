// The checked-in golden card (cachecard/testdata/golden_v<N>.qkvcard) must
// parse, inject, and be byte-identical to what the generator builds today: a
// format change that forgets to bump kCardFormatVersion (and regenerate the
// golden in the same commit) fails here.
#include "cachecard/testing/golden_card.h"

#include <memory>
#include <string>

#include "agents/kv_cache.h"
#include "cachecard/card.h"
#include "cachecard/card_file.h"
#include "cachecard/content_id.h"
#include "cachecard/format.h"
#include "cachecard/inject.h"
#include "cachecard/inspect.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qkvshare::cachecard {
namespace {

using ::testing::ElementsAre;
using testing::GoldenCardId;
using testing::GoldenFingerprint;
using testing::GoldenValue;
using ::testing::HasSubstr;

CardPtr LoadGolden() {
  const std::string path = "cachecard/testdata/" + testing::GoldenFileName();
  absl::StatusOr<CardPtr> card = ImportCard(path);
  EXPECT_TRUE(card.ok()) << card.status()
                         << " (after a format change run: bazel run //cachecard:make_golden_card "
                            "-- $PWD/cachecard/testdata/golden_v<N>.qkvcard)";
  return card.ok() ? *std::move(card) : nullptr;
}

TEST(GoldenCardTest, BytesAreStable) {
  CardPtr golden = LoadGolden();
  ASSERT_NE(golden, nullptr);
  absl::StatusOr<CardPtr> fresh = testing::MakeGoldenCard();
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  const auto a = golden->bytes();
  const auto b = (*fresh)->bytes();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i], b[i]) << "first difference at byte " << i;
  }
}

TEST(GoldenCardTest, Metadata) {
  CardPtr golden = LoadGolden();
  ASSERT_NE(golden, nullptr);
  const CardMetadata& m = golden->metadata();
  EXPECT_EQ(m.format_version, kCardFormatVersion);
  EXPECT_EQ(m.card_id(), GoldenCardId());
  EXPECT_EQ(ComputeContentId(*golden), GoldenCardId());  // the id is the content's
  EXPECT_TRUE(m.parent_id.IsZero());
  EXPECT_EQ(m.fingerprint, GoldenFingerprint());
  EXPECT_TRUE(m.shape == (agents::KvShape{5, 4, 8}));
  EXPECT_EQ(m.total_tokens(), 8);
  EXPECT_THAT(m.token_ids, ElementsAre(1, 403, 407, 261, 378, 9, 500, 2));
  EXPECT_EQ(m.provenance.source_agent, "writer");
  EXPECT_EQ(m.provenance.hop_index, 1u);
  EXPECT_EQ(m.provenance.created_unix_ms, 1'780'000'001'000);
  ASSERT_EQ(m.segments.size(), 2u);
  EXPECT_EQ(m.segments[0].mode, CardMode::kQuantized);
  EXPECT_EQ(m.segments[0].k_group.group_size, 4);
  EXPECT_EQ(m.segments[0].v_group.axis, quant::GroupAxis::kPerToken);
  EXPECT_THAT(m.segments[0].k_bits, ElementsAre(2, 3, 4, 8, 16));
  EXPECT_THAT(m.segments[0].v_bits, ElementsAre(16, 8, 5, 3, 2));
  EXPECT_EQ(m.segments[0].origin_hop_index, 0u);
  EXPECT_EQ(m.segments[1].mode, CardMode::kFull);
  EXPECT_EQ(m.segments[1].raw_dtype, DType::kF32);
  EXPECT_EQ(m.segments[1].first_token, 5);
  EXPECT_EQ(m.segments[1].origin_hop_index, 1u);
  // (5 x (2+3+4+8+16 + 16+8+5+3+2) + 3 x 2 x 32) / 16 tokens' K and V widths.
  EXPECT_DOUBLE_EQ(m.avg_bits, (67.0 + 192.0) / 16.0);
}

TEST(GoldenCardTest, InjectsTheKnownValues) {
  CardPtr golden = LoadGolden();
  ASSERT_NE(golden, nullptr);
  auto cache = *agents::KvCache::Create({5, 4, 8}, DType::kF32, 64);
  ASSERT_TRUE(InjectCard(*golden, nullptr, GoldenFingerprint(), cache.get()).ok());
  ASSERT_EQ(cache->length(), 8);
  auto at = [&](int layer, bool is_key, int h, int t, int d) {
    const auto* data =
        static_cast<const float*>(is_key ? cache->k_data(layer) : cache->v_data(layer));
    return data[h * cache->head_stride() + t * 8 + d];
  };
  for (int layer = 0; layer < 5; ++layer) {
    for (int h = 0; h < 4; ++h) {
      for (int d = 0; d < 8; ++d) {
        for (int t = 5; t < 8; ++t) {  // full fp32 segment: exact
          EXPECT_EQ(at(layer, true, h, t, d), GoldenValue(layer, true, h, t, d));
          EXPECT_EQ(at(layer, false, h, t, d), GoldenValue(layer, false, h, t, d));
        }
        // 16-bit K of token 4 and V of token 0: k/8 values are exact in fp16.
        EXPECT_EQ(at(layer, true, h, 4, d), GoldenValue(layer, true, h, 4, d));
        EXPECT_EQ(at(layer, false, h, 0, d), GoldenValue(layer, false, h, 0, d));
        // 2-bit K of token 0: values span [-1.75, 1.75], so the error is at
        // most half a step of 3.5 / 3, plus fp16 rounding of the range.
        EXPECT_NEAR(at(layer, true, h, 0, d), GoldenValue(layer, true, h, 0, d), 3.5 / 6 + 1e-3);
      }
    }
  }
}

TEST(GoldenCardTest, Summary) {
  CardPtr golden = LoadGolden();
  ASSERT_NE(golden, nullptr);
  const CardSummary s = Summarize(golden->metadata());
  EXPECT_EQ(s.card_id, GoldenCardId().ToHex());
  EXPECT_EQ(s.card_bytes, golden->bytes().size());
  const std::string text = FormatSummary(s);
  EXPECT_THAT(text, HasSubstr("card: " + GoldenCardId().ToHex()));
  EXPECT_THAT(text, HasSubstr("parent: (none)"));
  EXPECT_THAT(text, HasSubstr("k bits: 2b:1 3b:1 4b:1 8b:1 16b:1 32b:3"));
  EXPECT_THAT(text, HasSubstr("v bits: 2b:1 3b:1 5b:1 8b:1 16b:1 32b:3"));
  EXPECT_THAT(text,
              HasSubstr("segment 0: tokens 0..4, quantized K per-channel G=4, V per-token G=16"));
  EXPECT_THAT(text, HasSubstr("segment 1: tokens 5..7, full f32"));
  EXPECT_THAT(text, HasSubstr("source agent: writer, hop 1"));
}

}  // namespace
}  // namespace qkvshare::cachecard
