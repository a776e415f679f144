// Content-derived card ids: determinism across provenance, sensitivity to
// every content field, the byte-by-byte preimage of docs/cachecard.md,
// forged ids, flatten, SameContent.
#include "cachecard/content_id.h"

#include <cstring>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "agents/kv_cache.h"
#include "cachecard/build.h"
#include "cachecard/card.h"
#include "cachecard/chain.h"
#include "cachecard/flatten.h"
#include "cachecard/format.h"
#include "cachecard/metadata_codec.h"
#include "cachecard/testing/synthetic_kv.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qkvshare::cachecard {
namespace {

using ::testing::HasSubstr;
using testing::MakeSyntheticCache;
using testing::RandomPlan;

constexpr agents::KvShape kShape{3, 2, 8};

ModelFingerprint Fingerprint(uint8_t seed) {
  ModelFingerprint fp;
  for (size_t i = 0; i < fp.size(); ++i) fp[i] = static_cast<uint8_t>(seed + i);
  return fp;
}

Provenance Prov(const std::string& agent, int64_t ms) {
  Provenance p;
  for (size_t i = 0; i < p.card_id.bytes.size(); ++i) p.card_id.bytes[i] = ms & 0xff;
  p.source_agent = agent;
  p.hop_index = static_cast<uint32_t>(ms % 7);
  p.created_unix_ms = ms;
  p.quant_policy = agent + "-policy";
  p.budget_bits = static_cast<double>(ms % 5);
  return p;
}

class ContentIdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cache_ = *MakeSyntheticCache(kShape, DType::kF32, 20, /*seed=*/7);
    ids_.resize(20);
    std::iota(ids_.begin(), ids_.end(), 300);
  }
  CardPtr Build(int64_t n, const CardEncoding& enc, const Provenance& prov,
                const Card* parent = nullptr, uint8_t fp = 1) {
    absl::StatusOr<CardPtr> card = BuildCard(*cache_, n, absl::MakeConstSpan(ids_).first(n), enc,
                                             Fingerprint(fp), prov, parent);
    EXPECT_TRUE(card.ok()) << card.status();
    return card.ok() ? std::move(*card) : nullptr;
  }
  CardEncoding Quantized(int64_t tokens, uint64_t seed) {
    return CardEncoding::Quantized(RandomPlan(tokens, {2, 3, 4, 8, 16}, seed),
                                   {quant::GroupAxis::kPerChannel, 4},
                                   {quant::GroupAxis::kPerToken, 8});
  }

  std::unique_ptr<agents::KvCache> cache_;
  std::vector<int32_t> ids_;
};

TEST(Sha256Test, KnownAnswers) {
  const std::string abc = "abc";
  EXPECT_EQ(Sha256Hex(Sha256Of({reinterpret_cast<const uint8_t*>(abc.data()), abc.size()})),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex(Sha256Of({})),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  // DigestTokens is SHA-256 of the little-endian u32 ids: 0x61 0x62 0x63 0x00 = "abc\0".
  const std::string abc0("abc\0", 4);
  EXPECT_EQ(DigestTokens({0x00636261}),
            Sha256Of({reinterpret_cast<const uint8_t*>(abc0.data()), abc0.size()}));
}

TEST_F(ContentIdTest, SameContentSameIdWhateverTheProvenance) {
  CardPtr a = Build(20, Quantized(20, 1), Prov("planner", 1000));
  CardPtr b = Build(20, Quantized(20, 1), Prov("writer", 99999));
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->id(), b->id());
  EXPECT_NE(a->bytes(), b->bytes());  // provenance and header checksum differ
  EXPECT_EQ(a->id(), ComputeContentId(*a));
  EXPECT_EQ(a->metadata().segments[0].origin_card_id, a->id());
  EXPECT_TRUE(VerifyContentId(*a).ok());
  EXPECT_TRUE(SameContent(*a, *b));
}

TEST_F(ContentIdTest, EveryContentFieldChangesTheId) {
  const Provenance p = Prov("a", 1);
  CardPtr base = Build(20, Quantized(20, 1), p);
  CardPtr fewer_tokens = Build(19, Quantized(19, 1), p);
  CardPtr other_bits = Build(20, Quantized(20, 2), p);
  CardPtr other_model = Build(20, Quantized(20, 1), p, nullptr, /*fp=*/2);
  CardPtr full = Build(20, CardEncoding::Full(), p);
  CardPtr other_groups = Build(
      20,
      CardEncoding::Quantized(RandomPlan(20, {2, 3, 4, 8, 16}, 1),
                              {quant::GroupAxis::kPerChannel, 8}, {quant::GroupAxis::kPerToken, 8}),
      p);
  ids_[3] += 1;  // same KV, another token id
  CardPtr other_token = Build(20, Quantized(20, 1), p);
  ids_[3] -= 1;
  cache_ = *MakeSyntheticCache(kShape, DType::kF32, 20, /*seed=*/8);  // other section bytes
  CardPtr other_kv = Build(20, Quantized(20, 1), p);
  const std::vector<const Card*> cards = {base.get(),        fewer_tokens.get(), other_bits.get(),
                                          other_model.get(), full.get(),         other_groups.get(),
                                          other_token.get(), other_kv.get()};
  for (size_t i = 0; i < cards.size(); ++i) {
    ASSERT_NE(cards[i], nullptr);
    for (size_t j = i + 1; j < cards.size(); ++j) {
      EXPECT_NE(cards[i]->id(), cards[j]->id()) << i << " vs " << j;
      EXPECT_FALSE(SameContent(*cards[i], *cards[j])) << i << " vs " << j;
    }
  }
}

// An independent implementation of docs/cachecard.md "Card id", from the
// card's bytes (the header and records as written), byte by byte.
CardId IdFromSpec(absl::Span<const uint8_t> card) {
  std::string pre("qkvshare.card-id.v2", 20);  // with the NUL
  auto bytes = [&](uint64_t off, uint64_t n) {
    pre.append(reinterpret_cast<const char*>(card.data() + off), n);
  };
  auto u64_at = [&](uint64_t off) {
    uint64_t v;
    std::memcpy(&v, card.data() + off, 8);
    return v;
  };
  auto u32_at = [&](uint64_t off) {
    uint32_t v;
    std::memcpy(&v, card.data() + off, 4);
    return v;
  };
  bytes(4, 4);     // format_version
  bytes(32, 32);   // model_fingerprint
  bytes(80, 16);   // parent_id
  bytes(96, 12);   // num_layers, num_kv_heads, head_dim
  bytes(108, 1);   // source_dtype
  bytes(112, 16);  // first_token, num_tokens
  bytes(128, 4);   // num_segments
  const uint64_t total = u64_at(112) + u64_at(120);
  bytes(u64_at(168), 4 * total);  // token ids
  const uint32_t layers = u32_at(96);
  for (uint32_t s = 0; s < u32_at(128); ++s) {
    const uint64_t rec = 256 + 96 * uint64_t{s};
    bytes(rec, 16);      // first_token, num_tokens
    bytes(rec + 16, 4);  // mode, raw_dtype, k_axis, v_axis
    bytes(rec + 20, 8);  // k_group_size, v_group_size
    const uint64_t n = u64_at(rec + 8);
    bytes(u64_at(rec + 48), n);  // k_bits
    bytes(u64_at(rec + 56), n);  // v_bits
    for (uint32_t i = 0; i < 2 * layers; ++i) {
      const uint64_t sec = u64_at(rec + 64) + 24 * uint64_t{i};
      bytes(sec + 8, 8);  // section bytes (size)
      const Sha256 d = Sha256Of(card.subspan(u64_at(sec), u64_at(sec + 8)));
      pre.append(reinterpret_cast<const char*>(d.data()), d.size());
    }
  }
  const Sha256 d = Sha256Of({reinterpret_cast<const uint8_t*>(pre.data()), pre.size()});
  CardId id;
  std::memcpy(id.bytes.data(), d.data(), 16);
  return id;
}

TEST_F(ContentIdTest, MatchesTheByteLevelSpecification) {
  CardPtr root = Build(12, Quantized(12, 3), Prov("a", 5));
  ASSERT_TRUE(root);
  EXPECT_EQ(root->id(), IdFromSpec(root->bytes()));
  CardPtr child = Build(20, CardEncoding::Full(), Prov("b", 6), root.get());
  ASSERT_TRUE(child);
  EXPECT_EQ(child->id(), IdFromSpec(child->bytes()));
  CardSet parents;
  parents.Add(root.get());
  absl::StatusOr<CardPtr> flat = Flatten(*child, &parents, {/*created_unix_ms=*/7});
  ASSERT_TRUE(flat.ok()) << flat.status();
  EXPECT_EQ((*flat)->id(), IdFromSpec((*flat)->bytes()));
}

TEST_F(ContentIdTest, ChainAndFlatten) {
  CardPtr root = Build(12, Quantized(12, 3), Prov("a", 5));
  CardPtr child = Build(20, Quantized(8, 4), Prov("b", 6), root.get());
  ASSERT_TRUE(root && child);
  EXPECT_EQ(child->metadata().parent_id, root->id());
  EXPECT_EQ(child->metadata().segments[0].origin_card_id, child->id());
  CardSet parents;
  parents.Add(root.get());
  absl::StatusOr<CardPtr> flat1 = Flatten(*child, &parents, {/*created_unix_ms=*/1});
  absl::StatusOr<CardPtr> flat2 = Flatten(*child, &parents, {/*created_unix_ms=*/2});
  ASSERT_TRUE(flat1.ok() && flat2.ok());
  EXPECT_EQ((*flat1)->id(), (*flat2)->id());
  EXPECT_NE((*flat1)->id(), child->id());  // other content: no parent, two segments
  EXPECT_TRUE(VerifyContentId(**flat1).ok());
  // Segments keep the ids of the cards that encoded them.
  ASSERT_EQ((*flat1)->metadata().segments.size(), 2u);
  EXPECT_EQ((*flat1)->metadata().segments[0].origin_card_id, root->id());
  EXPECT_EQ((*flat1)->metadata().segments[1].origin_card_id, child->id());
}

TEST_F(ContentIdTest, RelabelledCardIsRefusedWithTheReason) {
  CardPtr a = Build(20, Quantized(20, 1), Prov("a", 1));
  CardPtr other = Build(19, Quantized(19, 1), Prov("a", 1));
  ASSERT_TRUE(a && other);
  // A well-formed card (checksums valid) whose id is another card's.
  std::vector<uint8_t> bytes(a->bytes().begin(), a->bytes().end());
  std::memcpy(bytes.data() + 64, other->id().bytes.data(), 16);
  SealHeaderChecksum(absl::MakeSpan(bytes).first(a->metadata().metadata_bytes));
  absl::StatusOr<CardPtr> forged = Card::Copy(bytes);
  ASSERT_TRUE(forged.ok()) << forged.status();  // passes every format check
  absl::Status s = VerifyContentId(**forged);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(),
              HasSubstr("card id " + other->id().ToHex() +
                        " does not match its content (the content hashes to " + a->id().ToHex()));
}

}  // namespace
}  // namespace qkvshare::cachecard
