// Incremental (chained) cards over 5 hops, flatten, and broken chains.
#include "cachecard/chain.h"

#include <cstring>
#include <memory>
#include <numeric>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "agents/kv_cache.h"
#include "cachecard/build.h"
#include "cachecard/card.h"
#include "cachecard/content_id.h"
#include "cachecard/flatten.h"
#include "cachecard/inject.h"
#include "cachecard/testing/synthetic_kv.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qkvshare::cachecard {
namespace {

using ::testing::HasSubstr;
using testing::MakeSyntheticCache;
using testing::RandomPlan;
using testing::SameBytes;
using testing::Snapshot;
using testing::UniformPlan;

constexpr agents::KvShape kShape{5, 4, 8};

ModelFingerprint Fingerprint() {
  ModelFingerprint fp;
  for (size_t i = 0; i < fp.size(); ++i) fp[i] = static_cast<uint8_t>(0xa0 + i);
  return fp;
}

// Copies positions [from, to) of every layer's K and V from `src` to `dst`
// (same shape and dtype): the tokens an agent "decodes" at its hop.
void AppendTokens(const agents::KvCache& src, int64_t from, int64_t to, agents::KvCache* dst) {
  ASSERT_TRUE(dst->Reserve(to).ok());
  const size_t row = kShape.head_dim * DTypeSize(src.dtype());
  for (int layer = 0; layer < kShape.num_layers; ++layer) {
    for (bool is_key : {true, false}) {
      const auto* in = static_cast<const uint8_t*>(is_key ? src.k_data(layer) : src.v_data(layer));
      auto* out = static_cast<uint8_t*>(is_key ? dst->k_data(layer) : dst->v_data(layer));
      for (int h = 0; h < kShape.num_kv_heads; ++h) {
        std::memcpy(out + (h * dst->head_stride() / kShape.head_dim + from) * row,
                    in + (h * src.head_stride() / kShape.head_dim + from) * row, (to - from) * row);
      }
    }
  }
  ASSERT_TRUE(dst->SetLength(to).ok());
}

// Five agents hand one context along; each adds tokens and builds an
// incremental card on the previous one. Hop sizes are not multiples of the
// key group size, so per-channel groups end at hop boundaries.
class FiveHopChainTest : public ::testing::Test {
 protected:
  static constexpr int64_t kHopTokens[5] = {13, 7, 20, 1, 9};

  void SetUp() override {
    int64_t total = 0;
    for (int64_t n : kHopTokens) total += n;
    truth_ = *MakeSyntheticCache(kShape, DType::kF32, total, /*seed=*/21);
    ids_.resize(total);
    std::iota(ids_.begin(), ids_.end(), 100);
    const CardEncoding encodings[5] = {
        CardEncoding::Quantized(RandomPlan(13, {2, 3, 4, 8, 16}, 1),
                                {quant::GroupAxis::kPerChannel, 8},
                                {quant::GroupAxis::kPerToken, 8}),
        CardEncoding::Full(),
        CardEncoding::Quantized(UniformPlan(20, 3), {quant::GroupAxis::kPerChannel, 16},
                                {quant::GroupAxis::kPerToken, 32}),
        CardEncoding::Quantized(UniformPlan(1, 8)),
        CardEncoding::Quantized(RandomPlan(9, {2, 4, 6}, 2), {quant::GroupAxis::kPerChannel, 4},
                                {quant::GroupAxis::kPerToken, 16}),
    };
    int64_t end = 0;
    for (int hop = 0; hop < 5; ++hop) {
      // The agent of this hop: receives the chain so far, decodes its tokens.
      auto agent = *agents::KvCache::Create(kShape, DType::kF32, 256);
      if (hop > 0) {
        ASSERT_TRUE(InjectCard(*cards_.back(), &set_, Fingerprint(), agent.get()).ok());
        ASSERT_EQ(agent->length(), end);
      }
      AppendTokens(*truth_, end, end + kHopTokens[hop], agent.get());
      end += kHopTokens[hop];
      Provenance prov;
      prov.source_agent = "agent" + std::to_string(hop);
      prov.hop_index = hop;
      prov.created_unix_ms = 1000 + hop;
      absl::StatusOr<CardPtr> card =
          BuildCard(*agent, end, absl::MakeConstSpan(ids_).first(end), encodings[hop],
                    Fingerprint(), prov, hop > 0 ? cards_.back().get() : nullptr);
      ASSERT_TRUE(card.ok()) << card.status();
      bytes_.emplace_back((*card)->bytes().begin(), (*card)->bytes().end());
      agents_.push_back(std::move(agent));
      cards_.push_back(*std::move(card));
      set_.Add(cards_.back().get());
    }
  }

  std::unique_ptr<agents::KvCache> truth_;
  std::vector<int32_t> ids_;
  std::vector<CardPtr> cards_;
  std::vector<std::vector<uint8_t>> bytes_;  // each card's bytes right after building
  std::vector<std::unique_ptr<agents::KvCache>> agents_;
  CardSet set_;
};

TEST_F(FiveHopChainTest, EachCardCarriesOnlyItsHopsTokens) {
  int64_t first = 0;
  for (int hop = 0; hop < 5; ++hop) {
    const CardMetadata& m = cards_[hop]->metadata();
    EXPECT_EQ(m.first_token, first);
    EXPECT_EQ(m.num_tokens, kHopTokens[hop]);
    EXPECT_EQ(m.parent_id, hop == 0 ? CardId() : cards_[hop - 1]->id());
    EXPECT_EQ(m.token_ids.size(), static_cast<size_t>(first + kHopTokens[hop]));
    first += kHopTokens[hop];
  }
}

TEST_F(FiveHopChainTest, InjectedPrefixIsIdenticalAtEveryHop) {
  // Tokens are quantized once: what hop k's agent received for [0, end_k-1)
  // is exactly what injecting the final chain gives for those positions.
  auto final_cache = *agents::KvCache::Create(kShape, DType::kF32, 256);
  ASSERT_TRUE(InjectCard(*cards_.back(), &set_, Fingerprint(), final_cache.get()).ok());
  ASSERT_EQ(final_cache->length(), 50);
  int64_t end = 0;
  for (int hop = 1; hop < 5; ++hop) {
    end += kHopTokens[hop - 1];
    auto received = *agents::KvCache::Create(kShape, DType::kF32, 256);
    ASSERT_TRUE(InjectCard(*cards_[hop - 1], &set_, Fingerprint(), received.get()).ok());
    EXPECT_TRUE(SameBytes(*received, *final_cache, end)) << "hop " << hop;
  }
}

TEST_F(FiveHopChainTest, FlattenKeepsCodesByteIdenticalAndInjectsTheSameCache) {
  absl::StatusOr<CardPtr> flat = Flatten(*cards_.back(), &set_, {5000});
  ASSERT_TRUE(flat.ok()) << flat.status();
  const CardMetadata& f = (*flat)->metadata();
  EXPECT_EQ(f.first_token, 0);
  EXPECT_EQ(f.num_tokens, 50);
  EXPECT_TRUE(f.parent_id.IsZero());
  EXPECT_EQ(f.card_id(), ComputeContentId(**flat));
  EXPECT_NE(f.card_id(), cards_.back()->id());
  EXPECT_EQ(f.provenance.source_agent, "agent4");
  EXPECT_EQ(f.token_ids, ids_);
  ASSERT_EQ(f.segments.size(), 5u);
  for (int hop = 0; hop < 5; ++hop) {
    const SegmentInfo& seg = f.segments[hop];
    const SegmentInfo& orig = cards_[hop]->metadata().segments[0];
    EXPECT_EQ(seg.origin_card_id, cards_[hop]->id());
    EXPECT_EQ(seg.origin_hop_index, static_cast<uint32_t>(hop));
    EXPECT_EQ(seg.k_bits, orig.k_bits);
    for (size_t i = 0; i < seg.sections.size(); ++i) {
      const auto a = (*flat)->section(seg.sections[i]);
      const auto b = cards_[hop]->section(orig.sections[i]);
      ASSERT_TRUE(std::equal(a.begin(), a.end(), b.begin(), b.end())) << hop << " " << i;
    }
  }
  // Flattening did not touch the chain.
  for (int hop = 0; hop < 5; ++hop) {
    EXPECT_TRUE(std::equal(bytes_[hop].begin(), bytes_[hop].end(), cards_[hop]->bytes().begin(),
                           cards_[hop]->bytes().end()));
  }
  auto via_chain = *agents::KvCache::Create(kShape, DType::kF32, 256);
  auto via_flat = *agents::KvCache::Create(kShape, DType::kF32, 256);
  ASSERT_TRUE(InjectCard(*cards_.back(), &set_, Fingerprint(), via_chain.get()).ok());
  ASSERT_TRUE(InjectCard(**flat, nullptr, Fingerprint(), via_flat.get()).ok());
  EXPECT_EQ(via_flat->length(), 50);
  EXPECT_TRUE(SameBytes(*via_chain, *via_flat, 50));
}

TEST_F(FiveHopChainTest, FlattenOfAMidChainCardAndOfAFlatCard) {
  auto mid = *Flatten(*cards_[2], &set_, {1});
  EXPECT_EQ(mid->metadata().segments.size(), 3u);
  EXPECT_EQ(mid->metadata().total_tokens(), 40);
  auto again = *Flatten(*mid, nullptr, {2});
  EXPECT_EQ(again->metadata().segments.size(), 3u);
  auto a = *agents::KvCache::Create(kShape, DType::kF32, 256);
  auto b = *agents::KvCache::Create(kShape, DType::kF32, 256);
  ASSERT_TRUE(InjectCard(*cards_[2], &set_, Fingerprint(), a.get()).ok());
  ASSERT_TRUE(InjectCard(*again, nullptr, Fingerprint(), b.get()).ok());
  EXPECT_TRUE(SameBytes(*a, *b, 40));
}

TEST_F(FiveHopChainTest, FullHopIsExactAndOthersWithinQuantization) {
  auto cache = *agents::KvCache::Create(kShape, DType::kF32, 256);
  ASSERT_TRUE(InjectCard(*cards_.back(), &set_, Fingerprint(), cache.get()).ok());
  // Hop 1 (positions 13..19) was a full card of fp32: exact.
  auto full_part = *agents::KvCache::Create(kShape, DType::kF32, 256);
  AppendTokens(*truth_, 0, 20, full_part.get());
  const auto got = Snapshot(*cache, 20);
  const auto want = Snapshot(*full_part, 20);
  const size_t row = kShape.head_dim * 4;
  for (size_t block = 0; block < got.size() / (20 * row); ++block) {
    for (int t = 13; t < 20; ++t) {
      const size_t at = block * 20 * row + t * row;
      EXPECT_EQ(std::memcmp(got.data() + at, want.data() + at, row), 0) << block << " " << t;
    }
  }
}

// A resolver that answers with whatever card the test mapped to an id.
class MapResolver : public CardResolver {
 public:
  void Map(const CardId& id, const Card* card) { map_[id] = card; }
  const Card* Find(const CardId& id) const override {
    auto it = map_.find(id);
    return it == map_.end() ? nullptr : it->second;
  }

 private:
  absl::flat_hash_map<CardId, const Card*> map_;
};

TEST_F(FiveHopChainTest, BrokenLinksAreRejectedBeforeWriting) {
  auto check = [&](const MapResolver& resolver, absl::StatusCode code, const std::string& part) {
    auto dst = *MakeSyntheticCache(kShape, DType::kF32, 3, 4, 256);
    const auto before = Snapshot(*dst, 3);
    absl::Status s = InjectCard(*cards_[2], &resolver, Fingerprint(), dst.get());
    EXPECT_EQ(s.code(), code) << s;
    EXPECT_THAT(s.message(), HasSubstr(part));
    EXPECT_EQ(dst->length(), 3);
    EXPECT_EQ(Snapshot(*dst, 3), before);
  };
  // Card 2's parent id resolves to card 0 (ends at 13, card 2 starts at 20).
  MapResolver wrong_end;
  wrong_end.Map(cards_[1]->id(), cards_[0].get());
  check(wrong_end, absl::StatusCode::kFailedPrecondition,
        "ends at token 13, the child starts at 20");
  // The grandparent is missing.
  MapResolver missing;
  missing.Map(cards_[1]->id(), cards_[1].get());
  check(missing, absl::StatusCode::kNotFound, "parent card " + cards_[0]->id().ToHex());

  // A parent of the right length with other token ids.
  std::vector<int32_t> other_ids(ids_.begin(), ids_.begin() + 20);
  other_ids[15] = 7;
  auto impostor_src = *MakeSyntheticCache(kShape, DType::kF32, 20, 3);
  auto impostor =
      *BuildCard(*impostor_src, 20, other_ids, CardEncoding::Full(), Fingerprint(), Provenance());
  MapResolver wrong_ids;
  wrong_ids.Map(cards_[1]->id(), impostor.get());
  check(wrong_ids, absl::StatusCode::kFailedPrecondition, "has token id 7 at position 15");
}

TEST_F(FiveHopChainTest, BuildRejectsAParentThatDoesNotMatch) {
  std::vector<int32_t> ids(ids_.begin(), ids_.begin() + 25);
  ids[3] = 1;
  Provenance prov;
  absl::StatusOr<CardPtr> card =
      BuildCard(*agents_[1], 20, absl::MakeConstSpan(ids).first(20), CardEncoding::Full(),
                Fingerprint(), prov, cards_[0].get());
  EXPECT_EQ(card.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(card.status().message(), HasSubstr("token id 1 at position 3 differs"));
  card = BuildCard(*agents_[0], 13, absl::MakeConstSpan(ids_).first(13), CardEncoding::Full(),
                   Fingerprint(), prov, cards_[0].get());
  EXPECT_THAT(card.status().message(), HasSubstr("already covers 13 tokens"));
}

}  // namespace
}  // namespace qkvshare::cachecard
