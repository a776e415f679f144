// Build -> Inject round trips on synthetic caches (fp32 and bf16, the bundled
// model's KV shape and a larger one), error bounds per width, transactional
// failures, immutability of cards.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <numeric>
#include <vector>

#include "agents/kv_cache.h"
#include "cachecard/build.h"
#include "cachecard/card.h"
#include "cachecard/chain.h"
#include "cachecard/inject.h"
#include "cachecard/metadata_codec.h"
#include "cachecard/testing/synthetic_kv.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "quant/fp16.h"

namespace qkvshare::cachecard {
namespace {

using testing::CacheElement;
using ::testing::HasSubstr;
using testing::MakeSyntheticCache;
using testing::RandomPlan;
using testing::SameBytes;
using testing::Snapshot;
using testing::UniformPlan;

constexpr agents::KvShape kStoriesShape{5, 4, 8};  // models/stories260K
constexpr agents::KvShape kLargeShape{30, 3, 64};  // smollm-135m

ModelFingerprint Fingerprint(uint8_t seed) {
  ModelFingerprint fp;
  for (size_t i = 0; i < fp.size(); ++i) fp[i] = static_cast<uint8_t>(seed * 31 + i);
  return fp;
}

Provenance TestProvenance(uint8_t id_seed, uint32_t hop = 0) {
  Provenance p;
  for (size_t i = 0; i < p.card_id.bytes.size(); ++i) {
    p.card_id.bytes[i] = static_cast<uint8_t>(id_seed + i);
  }
  p.source_agent = "planner";
  p.hop_index = hop;
  p.created_unix_ms = 1'780'000'000'000 + id_seed;
  p.quant_policy = "test";
  p.budget_bits = 4;
  return p;
}

std::vector<int32_t> TokenIds(int64_t n, int32_t base = 1) {
  std::vector<int32_t> ids(n);
  std::iota(ids.begin(), ids.end(), base);
  return ids;
}

std::unique_ptr<agents::KvCache> EmptyCache(const agents::KvShape& shape, DType dtype,
                                            int64_t max_tokens = 4096) {
  return *agents::KvCache::Create(shape, dtype, max_tokens, 16);
}

// Expected worst-case |x - x'| for element (t, c) of a quantized section,
// from docs/quantization.md: (hi - lo) / (2 (2^b - 1)) with lo/hi the group's
// coded min/max widened by fp16 rounding, plus fp32 rounding; raw 16-bit
// tokens: fp16 rounding. `src(t, c)` reads the source.
template <typename Src>
double ElementBound(const Src& src, int64_t n, int channels, const quant::GroupSpec& spec,
                    const std::vector<uint8_t>& bits, int64_t t, int c) {
  const double x = src(t, c);
  if (bits[t] == 16) return std::abs(x) * 0x1.0p-11 + 0x1.0p-25;
  double lo = INFINITY, hi = -INFINITY;
  if (spec.axis == quant::GroupAxis::kPerChannel) {
    const int64_t start = t / spec.group_size * spec.group_size;
    for (int64_t u = start; u < std::min<int64_t>(n, start + spec.group_size); ++u) {
      if (bits[u] == 16) continue;
      lo = std::min(lo, src(u, c));
      hi = std::max(hi, src(u, c));
    }
  } else {
    const int start = c / spec.group_size * spec.group_size;
    for (int d = start; d < std::min(channels, start + spec.group_size); ++d) {
      lo = std::min(lo, src(t, d));
      hi = std::max(hi, src(t, d));
    }
  }
  lo -= std::abs(lo) * 0x1.0p-10 + 0x1.0p-24;  // fp16 rounding outward
  hi += std::abs(hi) * 0x1.0p-10 + 0x1.0p-24;
  const double levels = (1 << bits[t]) - 1;
  return (hi - lo) / (2 * levels) + 1e-6 * (std::abs(lo) + std::abs(hi) + 1);
}

// max over all elements of |x - x'| / bound (<= 1 passes) for positions
// [first, first + plan tokens) of `src` vs `dst`, both caches.
double MaxBoundRatio(const agents::KvCache& src, const agents::KvCache& dst, int64_t first,
                     const quant::BitPlan& plan, const CardEncoding& enc, double* mean_error) {
  const agents::KvShape& shape = src.shape();
  const int64_t n = plan.num_tokens();
  const int C = shape.channels();
  double worst = 0, sum = 0;
  int64_t count = 0;
  for (int layer = 0; layer < shape.num_layers; ++layer) {
    for (bool is_key : {true, false}) {
      auto read = [&](const agents::KvCache& cache) {
        return [&cache, layer, is_key, first, &shape](int64_t t, int c) -> double {
          return CacheElement(cache, layer, is_key, c / shape.head_dim, first + t,
                              c % shape.head_dim);
        };
      };
      auto s = read(src);
      auto d = read(dst);
      const quant::GroupSpec& spec = is_key ? enc.k_group : enc.v_group;
      const std::vector<uint8_t>& bits = is_key ? plan.k_bits : plan.v_bits;
      for (int64_t t = 0; t < n; ++t) {
        for (int c = 0; c < C; ++c) {
          double bound = ElementBound(s, n, C, spec, bits, t, c);
          if (dst.dtype() == DType::kBF16) bound += std::abs(d(t, c)) * 0x1.0p-8;
          const double err = std::abs(s(t, c) - d(t, c));
          worst = std::max(worst, err / bound);
          sum += err;
          ++count;
        }
      }
    }
  }
  *mean_error = sum / count;
  return worst;
}

struct RoundTripCase {
  const char* name;
  agents::KvShape shape;
  DType dtype;
  int64_t tokens;
};

class FullRoundTripTest : public ::testing::TestWithParam<RoundTripCase> {};

TEST_P(FullRoundTripTest, RestoresTheCacheBitForBit) {
  const RoundTripCase& tc = GetParam();
  auto src = *MakeSyntheticCache(tc.shape, tc.dtype, tc.tokens, /*seed=*/7);
  absl::StatusOr<CardPtr> card = BuildCard(*src, tc.tokens, TokenIds(tc.tokens),
                                           CardEncoding::Full(), Fingerprint(1), TestProvenance(1));
  ASSERT_TRUE(card.ok()) << card.status();
  const CardMetadata& m = (*card)->metadata();
  EXPECT_EQ(m.total_tokens(), tc.tokens);
  EXPECT_EQ(m.avg_bits, 8.0 * DTypeSize(tc.dtype));
  EXPECT_EQ(m.segments.at(0).mode, CardMode::kFull);

  auto dst = EmptyCache(tc.shape, tc.dtype);
  ASSERT_TRUE(InjectCard(**card, nullptr, Fingerprint(1), dst.get()).ok());
  EXPECT_EQ(dst->length(), tc.tokens);
  EXPECT_TRUE(SameBytes(*src, *dst, tc.tokens));
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, FullRoundTripTest,
    ::testing::Values(RoundTripCase{"stories_f32", kStoriesShape, DType::kF32, 37},
                      RoundTripCase{"stories_bf16", kStoriesShape, DType::kBF16, 37},
                      RoundTripCase{"large_f32", kLargeShape, DType::kF32, 70},
                      RoundTripCase{"large_bf16", kLargeShape, DType::kBF16, 70},
                      // Above cachecard/parallel.h's 4 MiB: built and injected
                      // on several threads.
                      RoundTripCase{"large_f32_parallel", kLargeShape, DType::kF32, 400},
                      RoundTripCase{"large_bf16_parallel", kLargeShape, DType::kBF16, 400}),
    [](const auto& info) { return std::string(info.param.name); });

struct QuantCase {
  const char* name;
  agents::KvShape shape;
  DType dtype;
  int64_t tokens;
  std::vector<uint8_t> widths;  // drawn per token
  int group_size;
};

class QuantizedRoundTripTest : public ::testing::TestWithParam<QuantCase> {};

TEST_P(QuantizedRoundTripTest, WithinTheQuantizationBound) {
  const QuantCase& tc = GetParam();
  auto src = *MakeSyntheticCache(tc.shape, tc.dtype, tc.tokens, /*seed=*/11);
  const quant::BitPlan plan = RandomPlan(tc.tokens, tc.widths, /*seed=*/3);
  const CardEncoding enc =
      CardEncoding::Quantized(plan, {quant::GroupAxis::kPerChannel, tc.group_size},
                              {quant::GroupAxis::kPerToken, tc.group_size});
  absl::StatusOr<CardPtr> card =
      BuildCard(*src, tc.tokens, TokenIds(tc.tokens), enc, Fingerprint(2), TestProvenance(2));
  ASSERT_TRUE(card.ok()) << card.status();
  EXPECT_DOUBLE_EQ((*card)->metadata().avg_bits, plan.avg_bits);

  auto dst = EmptyCache(tc.shape, tc.dtype);
  ASSERT_TRUE(InjectCard(**card, nullptr, Fingerprint(2), dst.get()).ok());
  ASSERT_EQ(dst->length(), tc.tokens);
  double mean_error = 0;
  const double ratio = MaxBoundRatio(*src, *dst, 0, plan, enc, &mean_error);
  RecordProperty("max_bound_ratio", std::to_string(ratio));
  EXPECT_LE(ratio, 1.0);
  EXPECT_GT(mean_error, 0.0);  // it did quantize
}

INSTANTIATE_TEST_SUITE_P(
    Widths, QuantizedRoundTripTest,
    ::testing::Values(
        QuantCase{"stories_f32_16bit", kStoriesShape, DType::kF32, 37, {16}, 32},
        QuantCase{"stories_f32_8bit", kStoriesShape, DType::kF32, 37, {8}, 32},
        QuantCase{"stories_f32_4bit", kStoriesShape, DType::kF32, 37, {4}, 32},
        QuantCase{"stories_f32_3bit", kStoriesShape, DType::kF32, 37, {3}, 32},
        QuantCase{"stories_bf16_3bit", kStoriesShape, DType::kBF16, 37, {3}, 32},
        QuantCase{
            "stories_f32_mixed", kStoriesShape, DType::kF32, 53, {2, 3, 4, 5, 6, 7, 8, 16}, 8},
        QuantCase{"stories_bf16_mixed", kStoriesShape, DType::kBF16, 53, {2, 3, 4, 8, 16}, 16},
        QuantCase{"large_f32_4bit_g64", kLargeShape, DType::kF32, 70, {4}, 64},
        QuantCase{"large_bf16_mixed", kLargeShape, DType::kBF16, 70, {2, 3, 4, 8, 16}, 32},
        // ~7 MB of sections: built and injected on several threads.
        QuantCase{"large_f32_mixed_parallel", kLargeShape, DType::kF32, 600, {2, 3, 4, 8, 16}, 32}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(BuildInjectTest, SixteenBitWithinFp16Rounding) {
  auto src = *MakeSyntheticCache(kStoriesShape, DType::kF32, 20, 5);
  auto card = *BuildCard(*src, 20, TokenIds(20), CardEncoding::Quantized(UniformPlan(20, 16)),
                         Fingerprint(1), TestProvenance(1));
  auto dst = EmptyCache(kStoriesShape, DType::kF32);
  ASSERT_TRUE(InjectCard(*card, nullptr, Fingerprint(1), dst.get()).ok());
  for (int layer = 0; layer < kStoriesShape.num_layers; ++layer) {
    for (int h = 0; h < kStoriesShape.num_kv_heads; ++h) {
      for (int t = 0; t < 20; ++t) {
        for (int d = 0; d < kStoriesShape.head_dim; ++d) {
          const float x = CacheElement(*src, layer, true, h, t, d);
          EXPECT_EQ(CacheElement(*dst, layer, true, h, t, d),
                    quant::HalfToFloat(quant::FloatToHalf(x)));
        }
      }
    }
  }
}

TEST(BuildInjectTest, FullF32CardIntoBf16CacheRoundsEachElement) {
  auto src = *MakeSyntheticCache(kStoriesShape, DType::kF32, 9, 5);
  auto card =
      *BuildCard(*src, 9, TokenIds(9), CardEncoding::Full(), Fingerprint(1), TestProvenance(1));
  auto dst = EmptyCache(kStoriesShape, DType::kBF16);
  ASSERT_TRUE(InjectCard(*card, nullptr, Fingerprint(1), dst.get()).ok());
  for (int h = 0; h < kStoriesShape.num_kv_heads; ++h) {
    for (int t = 0; t < 9; ++t) {
      const float x = CacheElement(*src, 4, false, h, t, 3);
      EXPECT_EQ(CacheElement(*dst, 4, false, h, t, 3), Bf16ToFloat(FloatToBf16(x)));
    }
  }
}

TEST(BuildInjectTest, PartialContextAndOverwriteOfALongerCache) {
  auto src = *MakeSyntheticCache(kStoriesShape, DType::kF32, 30, 5);
  auto card =
      *BuildCard(*src, 12, TokenIds(12), CardEncoding::Full(), Fingerprint(1), TestProvenance(1));
  auto dst = *MakeSyntheticCache(kStoriesShape, DType::kF32, 25, 99, 64);
  ASSERT_TRUE(InjectCard(*card, nullptr, Fingerprint(1), dst.get()).ok());
  EXPECT_EQ(dst->length(), 12);
  EXPECT_TRUE(SameBytes(*src, *dst, 12));
}

TEST(BuildInjectTest, InjectingLeavesTheCardUnchangedAndIsRepeatable) {
  auto src = *MakeSyntheticCache(kStoriesShape, DType::kBF16, 33, 5);
  auto card =
      *BuildCard(*src, 33, TokenIds(33), CardEncoding::Quantized(RandomPlan(33, {2, 4, 8, 16}, 1)),
                 Fingerprint(1), TestProvenance(1));
  const std::vector<uint8_t> before(card->bytes().begin(), card->bytes().end());
  auto a = EmptyCache(kStoriesShape, DType::kBF16);
  auto b = EmptyCache(kStoriesShape, DType::kBF16);
  ASSERT_TRUE(InjectCard(*card, nullptr, Fingerprint(1), a.get()).ok());
  ASSERT_TRUE(InjectCard(*card, nullptr, Fingerprint(1), b.get()).ok());
  ASSERT_TRUE(InjectCard(*card, nullptr, Fingerprint(1), b.get()).ok());
  EXPECT_TRUE(std::equal(before.begin(), before.end(), card->bytes().begin()));
  EXPECT_TRUE(SameBytes(*a, *b, 33));
}

TEST(BuildInjectTest, BuildIsDeterministicAndCountingSinkGivesTheSize) {
  auto src = *MakeSyntheticCache(kLargeShape, DType::kF32, 40, 5);
  const CardEncoding enc = CardEncoding::Quantized(RandomPlan(40, {3, 4, 8}, 2));
  auto a = *BuildCard(*src, 40, TokenIds(40), enc, Fingerprint(1), TestProvenance(1));
  auto b = *BuildCard(*src, 40, TokenIds(40), enc, Fingerprint(1), TestProvenance(1));
  EXPECT_TRUE(
      std::equal(a->bytes().begin(), a->bytes().end(), b->bytes().begin(), b->bytes().end()));
  CountingSink counter;
  ASSERT_TRUE(
      WriteCard(*src, 40, TokenIds(40), enc, Fingerprint(1), TestProvenance(1), nullptr, counter)
          .ok());
  EXPECT_EQ(counter.card_bytes(), a->bytes().size());
  EXPECT_EQ(counter.bytes_written(), 0u);  // nothing encoded
}

// A sink without Window(): every section goes through WritePlannedCard's
// staging path on the calling thread.
class StagedOnlySink final : public CardSink {
 public:
  absl::Status Begin(uint64_t card_bytes) override {
    bytes_.assign(card_bytes, 0xAB);
    return absl::OkStatus();
  }
  absl::Status Write(uint64_t offset, absl::Span<const uint8_t> data) override {
    if (offset > bytes_.size() || data.size() > bytes_.size() - offset) {
      return absl::OutOfRangeError("write outside the card");
    }
    std::copy(data.begin(), data.end(), bytes_.begin() + offset);
    return absl::OkStatus();
  }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

TEST(BuildInjectTest, ParallelInPlaceBuildEqualsStagedSequentialBuild) {
  // 600 tokens of mixed widths: ~7 MB of sections, so BuildCard's in-place
  // path runs on several threads; the staged sink runs them one by one.
  constexpr int64_t kTokens = 600;
  auto src = *MakeSyntheticCache(kLargeShape, DType::kBF16, kTokens, 9);
  for (const CardEncoding& enc :
       {CardEncoding::Full(), CardEncoding::Quantized(RandomPlan(kTokens, {2, 3, 4, 8, 16}, 4))}) {
    auto parallel =
        *BuildCard(*src, kTokens, TokenIds(kTokens), enc, Fingerprint(1), TestProvenance(1));
    ASSERT_GT(parallel->bytes().size(), size_t{4} << 20);
    StagedOnlySink staged;
    ASSERT_TRUE(WriteCard(*src, kTokens, TokenIds(kTokens), enc, Fingerprint(1), TestProvenance(1),
                          nullptr, staged)
                    .ok());
    EXPECT_TRUE(std::equal(parallel->bytes().begin(), parallel->bytes().end(),
                           staged.bytes().begin(), staged.bytes().end()));
  }
}

TEST(BuildInjectTest, BuildRejectsBadInputs) {
  auto src = *MakeSyntheticCache(kStoriesShape, DType::kF32, 10, 5);
  auto fail = [&](int64_t n, std::vector<int32_t> ids, const CardEncoding& enc,
                  const Provenance& prov) {
    absl::StatusOr<CardPtr> card = BuildCard(*src, n, ids, enc, Fingerprint(1), prov);
    EXPECT_EQ(card.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(card.status().message());
  };
  EXPECT_THAT(fail(11, TokenIds(11), CardEncoding::Full(), TestProvenance(1)),
              HasSubstr("num_tokens 11 outside 1..10"));
  EXPECT_THAT(fail(10, TokenIds(9), CardEncoding::Full(), TestProvenance(1)),
              HasSubstr("9 token ids for 10 tokens"));
  EXPECT_THAT(fail(10, TokenIds(10), CardEncoding::Quantized(UniformPlan(9, 4)), TestProvenance(1)),
              HasSubstr("bit plan has 9 K and 9 V widths for the 10 tokens"));
  quant::BitPlan bad = UniformPlan(10, 4);
  bad.v_bits[6] = 9;
  EXPECT_THAT(fail(10, TokenIds(10), CardEncoding::Quantized(bad), TestProvenance(1)),
              HasSubstr("v_bits[6] = 9 is not a valid width"));
  EXPECT_THAT(fail(10, TokenIds(10),
                   CardEncoding::Quantized(UniformPlan(10, 4), {quant::GroupAxis::kPerChannel, 0}),
                   TestProvenance(1)),
              HasSubstr("k_group_size 0"));
  std::vector<int32_t> negative = TokenIds(10);
  negative[4] = -3;
  EXPECT_THAT(fail(10, negative, CardEncoding::Full(), TestProvenance(1)),
              HasSubstr("token id -3 at position 4"));
}

TEST(BuildInjectTest, BuildRejectsNonFiniteKeysNamingTheElement) {
  auto src = *MakeSyntheticCache(kStoriesShape, DType::kF32, 10, 5);
  float nan = NAN;
  // Layer 2 K, head 1, token 6, dim 3.
  std::memcpy(static_cast<float*>(src->k_data(2)) + 1 * src->head_stride() + 6 * 8 + 3, &nan, 4);
  absl::StatusOr<CardPtr> card =
      BuildCard(*src, 10, TokenIds(10), CardEncoding::Quantized(UniformPlan(10, 4)), Fingerprint(1),
                TestProvenance(1));
  EXPECT_EQ(card.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(card.status().message(), HasSubstr("token 6, channel 11"));
}

// Errors that must leave the destination cache exactly as it was.
class InjectFailureTest : public ::testing::Test {
 protected:
  void SetUp() override {
    src_ = *MakeSyntheticCache(kStoriesShape, DType::kF32, 20, 5);
    card_ = *BuildCard(*src_, 20, TokenIds(20), CardEncoding::Quantized(UniformPlan(20, 4)),
                       Fingerprint(1), TestProvenance(1));
  }
  // Runs `inject` on a cache of 7 tokens and checks it is unchanged.
  absl::Status InjectInto(agents::KvCache* dst, const ModelFingerprint& fp) {
    const int64_t length = dst->length();
    const int64_t capacity = dst->capacity();
    const std::vector<uint8_t> before = Snapshot(*dst, length);
    absl::Status s = InjectCard(*card_, nullptr, fp, dst);
    EXPECT_EQ(dst->length(), length);
    EXPECT_EQ(dst->capacity(), capacity);
    EXPECT_EQ(Snapshot(*dst, length), before);
    return s;
  }
  std::unique_ptr<agents::KvCache> src_;
  CardPtr card_;
};

TEST_F(InjectFailureTest, OtherModelFingerprint) {
  auto dst = *MakeSyntheticCache(kStoriesShape, DType::kF32, 7, 9, 64);
  absl::Status s = InjectInto(dst.get(), Fingerprint(2));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("model fingerprint mismatch"));
  EXPECT_THAT(s.message(), HasSubstr(FingerprintHex(Fingerprint(1))));
}

TEST_F(InjectFailureTest, OtherShape) {
  auto dst = *MakeSyntheticCache({5, 4, 16}, DType::kF32, 7, 9, 64);
  absl::Status s = InjectInto(dst.get(), Fingerprint(1));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("KV shape mismatch: card 5 layers x 4 kv heads x head_dim 8"));
}

TEST_F(InjectFailureTest, ContextLimit) {
  auto dst = *MakeSyntheticCache(kStoriesShape, DType::kF32, 7, 9, /*max_tokens=*/19);
  absl::Status s = InjectInto(dst.get(), Fingerprint(1));
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(s.message(), HasSubstr("20 tokens exceed the context limit of 19"));
}

TEST_F(InjectFailureTest, MissingParent) {
  auto child_src = *MakeSyntheticCache(kStoriesShape, DType::kF32, 26, 5);
  auto child = *BuildCard(*child_src, 26, TokenIds(26), CardEncoding::Quantized(UniformPlan(6, 4)),
                          Fingerprint(1), TestProvenance(2, 1), card_.get());
  auto dst = *MakeSyntheticCache(kStoriesShape, DType::kF32, 7, 9, 64);
  const std::vector<uint8_t> before = Snapshot(*dst, 7);
  absl::Status s = InjectCard(*child, nullptr, Fingerprint(1), dst.get());
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("parent card " + card_->id().ToHex()));
  EXPECT_EQ(dst->length(), 7);
  EXPECT_EQ(Snapshot(*dst, 7), before);
}

TEST_F(InjectFailureTest, SectionCorruptedAfterCreation) {
  // A mapping whose memory changes after validation (another writer): the
  // injection re-verifies checksums before writing.
  std::vector<uint8_t> memory(card_->bytes().begin(), card_->bytes().end());
  auto mapped = *Card::FromMapping(memory, nullptr);
  memory[mapped->metadata().segments[0].v_section(3).offset + 5] ^= 0x10;
  auto dst = *MakeSyntheticCache(kStoriesShape, DType::kF32, 7, 9, 64);
  const std::vector<uint8_t> before = Snapshot(*dst, 7);
  absl::Status s = InjectCard(*mapped, nullptr, Fingerprint(1), dst.get());
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("checksum of segment 0 layer 3 V section"));
  EXPECT_EQ(dst->length(), 7);
  EXPECT_EQ(Snapshot(*dst, 7), before);
}

// Recomputes every checksum of `bytes` (a card): the card is then "valid"
// down to its section contents, as a buggy or hostile writer could make it.
void Reseal(std::vector<uint8_t>* bytes) {
  CardMetadata m = *ParseMetadata(*bytes, bytes->size());
  for (SegmentInfo& seg : m.segments) {
    for (SectionRef& ref : seg.sections) {
      ref.checksum = SectionChecksum(absl::MakeConstSpan(*bytes).subspan(ref.offset, ref.bytes));
    }
  }
  const MetadataLayout layout = *PlanLayout(&m);
  ASSERT_TRUE(EncodeMetadata(m, layout, absl::MakeSpan(*bytes).first(m.metadata_bytes)).ok());
}

// A copy of `card` (4-bit, per-token V groups) whose layer `layer` V section
// starts with lo[0] = NaN (fp16 0x7e00), resealed so that every checksum
// matches: only decoding the section finds it.
absl::StatusOr<CardPtr> WithNanInVSection(const Card& card, int layer) {
  std::vector<uint8_t> bytes(card.bytes().begin(), card.bytes().end());
  const uint64_t at = card.metadata().segments[0].v_section(layer).offset;
  bytes[at] = 0x00;
  bytes[at + 1] = 0x7e;
  Reseal(&bytes);
  return Card::Copy(bytes);
}

TEST_F(InjectFailureTest, CorruptSectionContentsRollBack) {
  // Layer 3's V section: per-token groups, token 0 coded, so the section
  // starts with lo[0] (fp16). Make it NaN; earlier layers decode first.
  absl::StatusOr<CardPtr> corrupt = WithNanInVSection(*card_, 3);
  ASSERT_TRUE(corrupt.ok()) << corrupt.status();  // checksums match

  auto dst = *MakeSyntheticCache(kStoriesShape, DType::kF32, 7, 9, 64);
  const std::vector<uint8_t> before = Snapshot(*dst, 7);
  absl::Status s = InjectCard(**corrupt, nullptr, Fingerprint(1), dst.get());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("malformed card"));
  EXPECT_THAT(s.message(), HasSubstr("segment 0 layer 3 V section"));
  EXPECT_EQ(dst->length(), 7);
  EXPECT_EQ(Snapshot(*dst, 7), before);

  auto empty = EmptyCache(kStoriesShape, DType::kF32);
  EXPECT_EQ(InjectCard(**corrupt, nullptr, Fingerprint(1), empty.get()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(empty->length(), 0);
}

TEST(InjectParallelFailureTest, CorruptSectionInALargeCardRollsBackEveryThread) {
  // ~5.8 MB of sections: decoded on several threads. Layer 20's V section is
  // corrupted (lo[0] = NaN, checksums resealed); the sections the other
  // threads wrote meanwhile must be rolled back too.
  constexpr int64_t kTokens = 800;
  auto src = *MakeSyntheticCache(kLargeShape, DType::kBF16, kTokens, 5);
  CardPtr card =
      *BuildCard(*src, kTokens, TokenIds(kTokens), CardEncoding::Quantized(UniformPlan(kTokens, 4)),
                 Fingerprint(1), TestProvenance(1));
  ASSERT_GT(card->bytes().size(), size_t{4} << 20);
  absl::StatusOr<CardPtr> corrupt = WithNanInVSection(*card, 20);
  ASSERT_TRUE(corrupt.ok()) << corrupt.status();

  auto dst = *MakeSyntheticCache(kLargeShape, DType::kBF16, 300, 9, kTokens);
  const std::vector<uint8_t> before = Snapshot(*dst, 300);
  absl::Status s = InjectCard(**corrupt, nullptr, Fingerprint(1), dst.get());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("segment 0 layer 20 V section"));
  EXPECT_EQ(dst->length(), 300);
  EXPECT_EQ(Snapshot(*dst, 300), before);
}

}  // namespace
}  // namespace qkvshare::cachecard
