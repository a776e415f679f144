// Metadata encode/parse: round trip, cards over 4 GiB (synthetic metadata, no
// section bytes), and crafted headers with valid checksums that must be
// rejected with a specific error.
#include "cachecard/metadata_codec.h"

#include <cstring>
#include <limits>
#include <vector>

#include "cachecard/format.h"
#include "cachecard/metadata.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qkvshare::cachecard {
namespace {

using ::testing::HasSubstr;

CardId Id(uint8_t seed) {
  CardId id;
  for (size_t i = 0; i < id.bytes.size(); ++i) id.bytes[i] = static_cast<uint8_t>(seed + i);
  return id;
}

// A chained card of two segments (full bf16 + quantized mixed) on [10, 17).
CardMetadata TwoSegmentCard() {
  CardMetadata m;
  for (size_t i = 0; i < m.fingerprint.size(); ++i) m.fingerprint[i] = static_cast<uint8_t>(i);
  m.parent_id = Id(1);
  m.shape = {5, 4, 8};
  m.source_dtype = DType::kBF16;
  m.first_token = 10;
  m.num_tokens = 7;
  for (int i = 0; i < 17; ++i) m.token_ids.push_back(1000 + i);
  m.provenance = {Id(2), "coder", 3, 1'780'000'000'123, "importance", 3.5};
  SegmentInfo full;
  full.first_token = 10;
  full.num_tokens = 3;
  full.mode = CardMode::kFull;
  full.raw_dtype = DType::kBF16;
  full.k_group = {quant::GroupAxis::kPerChannel, 0};
  full.v_group = {quant::GroupAxis::kPerChannel, 0};
  full.origin_card_id = Id(3);
  full.origin_hop_index = 2;
  full.k_bits = full.v_bits = {16, 16, 16};
  SegmentInfo q;
  q.first_token = 13;
  q.num_tokens = 4;
  q.k_group = {quant::GroupAxis::kPerChannel, 32};
  q.v_group = {quant::GroupAxis::kPerToken, 16};
  q.origin_card_id = Id(2);
  q.origin_hop_index = 3;
  q.k_bits = {2, 3, 8, 16};
  q.v_bits = {4, 4, 5, 6};
  m.segments = {full, q};
  m.avg_bits = AverageBits(m.segments);
  return m;
}

// Plans `m`, gives sections made-up checksums, encodes the metadata.
std::vector<uint8_t> Encode(CardMetadata* m) {
  absl::StatusOr<MetadataLayout> layout = PlanLayout(m);
  EXPECT_TRUE(layout.ok()) << layout.status();
  uint64_t k = 1;
  for (SegmentInfo& seg : m->segments) {
    for (SectionRef& ref : seg.sections) ref.checksum = 0x1234567800000000ull + k++;
  }
  std::vector<uint8_t> out(m->metadata_bytes);
  EXPECT_TRUE(EncodeMetadata(*m, *layout, absl::MakeSpan(out)).ok());
  return out;
}

CardHeader Header(const std::vector<uint8_t>& meta) {
  CardHeader h;
  std::memcpy(&h, meta.data(), sizeof h);
  return h;
}

void SetHeader(std::vector<uint8_t>* meta, const CardHeader& h) {
  std::memcpy(meta->data(), &h, sizeof h);
  SealHeaderChecksum(absl::MakeSpan(*meta));
}

TEST(MetadataCodecTest, RoundTrip) {
  CardMetadata m = TwoSegmentCard();
  const std::vector<uint8_t> meta = Encode(&m);
  EXPECT_EQ(meta.size() % 64, 0u);
  absl::StatusOr<CardMetadata> back = ParseMetadata(meta, m.card_bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->fingerprint, m.fingerprint);
  EXPECT_EQ(back->parent_id, m.parent_id);
  EXPECT_EQ(back->card_id(), Id(2));
  EXPECT_TRUE(back->shape == m.shape);
  EXPECT_EQ(back->source_dtype, DType::kBF16);
  EXPECT_EQ(back->first_token, 10);
  EXPECT_EQ(back->num_tokens, 7);
  EXPECT_EQ(back->token_ids, m.token_ids);
  EXPECT_EQ(back->provenance.source_agent, "coder");
  EXPECT_EQ(back->provenance.quant_policy, "importance");
  EXPECT_EQ(back->provenance.hop_index, 3u);
  EXPECT_EQ(back->provenance.created_unix_ms, 1'780'000'000'123);
  EXPECT_EQ(back->provenance.budget_bits, 3.5);
  EXPECT_EQ(back->avg_bits, m.avg_bits);
  ASSERT_EQ(back->segments.size(), 2u);
  for (size_t s = 0; s < 2; ++s) {
    const SegmentInfo& a = back->segments[s];
    const SegmentInfo& b = m.segments[s];
    EXPECT_EQ(a.first_token, b.first_token);
    EXPECT_EQ(a.mode, b.mode);
    EXPECT_EQ(a.k_group.group_size, b.k_group.group_size);
    EXPECT_EQ(a.v_group.axis, b.v_group.axis);
    EXPECT_EQ(a.origin_card_id, b.origin_card_id);
    EXPECT_EQ(a.k_bits, b.k_bits);
    EXPECT_EQ(a.v_bits, b.v_bits);
    ASSERT_EQ(a.sections.size(), 10u);
    for (size_t i = 0; i < 10; ++i) {
      EXPECT_EQ(a.sections[i].offset, b.sections[i].offset);
      EXPECT_EQ(a.sections[i].bytes, b.sections[i].bytes);
      EXPECT_EQ(a.sections[i].checksum, b.sections[i].checksum);
      EXPECT_EQ(a.sections[i].offset % 64, 0u);
    }
  }
  // Full bf16 sections: 4 heads x 3 tokens x 8 dims x 2 bytes.
  EXPECT_EQ(m.segments[0].sections[0].bytes, 192u);
}

TEST(MetadataCodecTest, CardsOverFourGiB) {
  // 32 layers x 8 kv heads x 128 dims, fp32, 20000 tokens: 5.2 GB of sections.
  CardMetadata m;
  m.shape = {32, 8, 128};
  m.num_tokens = 20000;
  m.token_ids.assign(20000, 5);
  m.provenance.card_id = Id(9);
  SegmentInfo seg;
  seg.num_tokens = 20000;
  seg.mode = CardMode::kFull;
  seg.raw_dtype = DType::kF32;
  seg.origin_card_id = Id(9);
  seg.k_bits.assign(20000, 32);
  seg.v_bits.assign(20000, 32);
  m.segments = {seg};
  m.avg_bits = 32;
  const std::vector<uint8_t> meta = Encode(&m);
  const uint64_t section = uint64_t{8} * 20000 * 128 * 4;
  EXPECT_EQ(m.card_bytes, m.metadata_bytes + 64 * section);
  EXPECT_GT(m.card_bytes, uint64_t{4} << 30);
  EXPECT_GT(m.segments[0].sections[63].offset, uint64_t{4} << 30);
  EXPECT_EQ(m.segments[0].sections[63].offset, m.metadata_bytes + 63 * section);

  absl::StatusOr<CardMetadata> back = ParseMetadata(meta, m.card_bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->card_bytes, m.card_bytes);
  EXPECT_EQ(back->segments[0].sections[63].offset, m.metadata_bytes + 63 * section);

  absl::StatusOr<CardMetadata> short_file = ParseMetadata(meta, m.card_bytes - 1);
  EXPECT_EQ(short_file.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(short_file.status().message(), HasSubstr("truncated card"));
  absl::StatusOr<CardMetadata> long_file = ParseMetadata(meta, m.card_bytes + 1);
  EXPECT_EQ(long_file.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(long_file.status().message(), HasSubstr("trailing bytes"));
}

TEST(MetadataCodecTest, PreambleErrors) {
  CardMetadata m = TwoSegmentCard();
  std::vector<uint8_t> meta = Encode(&m);
  EXPECT_EQ(ParseMetadata({}, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ParseMetadata({}, 0).status().message(), HasSubstr("empty card"));
  std::vector<uint8_t> bad_magic = meta;
  bad_magic[0] = 'X';
  absl::Status s = ParseMetadata(bad_magic, m.card_bytes).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("not a CacheCard: magic is 0x584b5643"));
  std::vector<uint8_t> future = meta;
  future[4] = kCardFormatVersion + 1;
  s = ParseMetadata(future, m.card_bytes).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(s.message(), HasSubstr(absl::StrCat("card format version ", kCardFormatVersion + 1,
                                                  " is not supported")));
  std::vector<uint8_t> v1 = meta;  // version 1 cards had random ids
  v1[4] = 1;
  EXPECT_EQ(ParseMetadata(v1, m.card_bytes).status().code(), absl::StatusCode::kUnimplemented);
  CardHeader h = Header(meta);
  h.metadata_bytes = 100;
  SetHeader(&meta, h);
  s = ParseMetadata(meta, m.card_bytes).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("metadata_bytes 100 outside [256"));
}

// Each crafted header has a valid checksum, so only field validation stops it.
struct Craft {
  const char* name;
  void (*edit)(CardHeader* h, std::vector<uint8_t>* meta);
  absl::StatusCode code;
  const char* message;
};

class CraftedHeaderTest : public ::testing::TestWithParam<Craft> {};

TEST_P(CraftedHeaderTest, RejectedWithASpecificError) {
  CardMetadata m = TwoSegmentCard();
  std::vector<uint8_t> meta = Encode(&m);
  CardHeader h = Header(meta);
  GetParam().edit(&h, &meta);
  SetHeader(&meta, h);
  absl::Status s = ParseMetadata(meta, h.card_bytes).status();
  EXPECT_EQ(s.code(), GetParam().code) << s;
  EXPECT_THAT(s.message(), HasSubstr(GetParam().message));
}

constexpr uint64_t kU64Max = std::numeric_limits<uint64_t>::max();

// Offsets into TwoSegmentCard's metadata.
constexpr size_t kSeg0 = sizeof(CardHeader);
constexpr size_t kSeg1 = kSeg0 + sizeof(SegmentRecord);
constexpr size_t kSections0 = kSeg1 + sizeof(SegmentRecord);

template <typename T>
void Poke(std::vector<uint8_t>* meta, size_t offset, T value) {
  std::memcpy(meta->data() + offset, &value, sizeof value);
}

INSTANTIATE_TEST_SUITE_P(Fields, CraftedHeaderTest,
                         ::testing::Values(Craft{"num_tokens_overflow",
                                                 [](CardHeader* h, std::vector<uint8_t>*) {
                                                   h->num_tokens = kU64Max - 5;
                                                 },
                                                 absl::StatusCode::kInvalidArgument,
                                                 "malformed card: first_token 10 / num_tokens"},
                                           Craft{"first_token_huge",
                                                 [](CardHeader* h, std::vector<uint8_t>*) {
                                                   h->first_token = uint64_t{1} << 63;
                                                 },
                                                 absl::StatusCode::kInvalidArgument,
                                                 "outside the limits"},
                                           Craft{"card_bytes_max",
                                                 [](CardHeader* h, std::vector<uint8_t>*) {
                                                   h->card_bytes = kU64Max;
                                                 },
                                                 absl::StatusCode::kInvalidArgument,
                                                 "card_bytes is 18446744073709551615"},
                                           Craft{"zero_layers",
                                                 [](CardHeader* h, std::vector<uint8_t>*) {
                                                   h->num_layers = 0;
                                                 },
                                                 absl::StatusCode::kInvalidArgument,
                                                 "KV shape (layers 0"},
                                           Craft{"channels_over_limit",
                                                 [](CardHeader* h, std::vector<uint8_t>*) {
                                                   h->num_kv_heads = 4096;
                                                   h->head_dim = 4096;
                                                 },
                                                 absl::StatusCode::kInvalidArgument, "KV shape"},
                                           Craft{"segments_do_not_fit",
                                                 [](CardHeader* h, std::vector<uint8_t>*) {
                                                   h->num_segments = 7;
                                                   h->num_tokens = 7;
                                                 },
                                                 absl::StatusCode::kInvalidArgument,
                                                 "do not fit in metadata_bytes"},
                                           Craft{"reserved_byte",
                                                 [](CardHeader* h, std::vector<uint8_t>*) {
                                                   h->reserved1[40] = 1;
                                                 },
                                                 absl::StatusCode::kInvalidArgument,
                                                 "reserved header bytes are not zero"},
                                           Craft{"pre_rope",
                                                 [](CardHeader* h, std::vector<uint8_t>*) {
                                                   h->keys_post_rope = 0;
                                                 },
                                                 absl::StatusCode::kUnimplemented, "pre-RoPE keys"},
                                           Craft{"token_ids_offset",
                                                 [](CardHeader* h, std::vector<uint8_t>*) {
                                                   h->token_ids_offset += 8;
                                                 },
                                                 absl::StatusCode::kInvalidArgument,
                                                 "token_ids_offset is"},
                                           Craft{"segments_offset",
                                                 [](CardHeader* h, std::vector<uint8_t>*) {
                                                   h->segments_offset = kU64Max - 8;
                                                 },
                                                 absl::StatusCode::kInvalidArgument,
                                                 "segments_offset is 18446744073709551607"},
                                           Craft{"string_too_long",
                                                 [](CardHeader* h, std::vector<uint8_t>*) {
                                                   h->source_agent_bytes = 5000;
                                                 },
                                                 absl::StatusCode::kInvalidArgument,
                                                 "string lengths 5000"},
                                           Craft{
                                               "string_longer_than_written",
                                               [](CardHeader* h, std::vector<uint8_t>*) {
                                                 h->source_agent_bytes = 900;
                                               },
                                               absl::StatusCode::kInvalidArgument,
                                               "metadata_bytes is"},
                                           Craft{"avg_bits",
                                                 [](CardHeader* h, std::vector<uint8_t>*) {
                                                   h->avg_bits += 0.5;
                                                 },
                                                 absl::StatusCode::kInvalidArgument, "avg_bits"},
                                           Craft{"budget_nan",
                                                 [](CardHeader* h, std::vector<uint8_t>*) {
                                                   h->budget_bits =
                                                       std::numeric_limits<double>::quiet_NaN();
                                                 },
                                                 absl::StatusCode::kInvalidArgument,
                                                 "budget_bits nan"},
                                           Craft{"no_parent_for_chained",
                                                 [](CardHeader* h, std::vector<uint8_t>*) {
                                                   std::memset(h->parent_id, 0, 16);
                                                 },
                                                 absl::StatusCode::kInvalidArgument,
                                                 "a parent is required"},
                                           Craft{"segment_gap",
                                                 [](CardHeader*, std::vector<uint8_t>* meta) {
                                                   Poke<uint64_t>(
                                                       meta,
                                                       kSeg1 + offsetof(SegmentRecord, first_token),
                                                       14);
                                                 },
                                                 absl::StatusCode::kInvalidArgument,
                                                 "segment 1: first_token 14, expected 13"},
                                           Craft{"segment_tokens_huge",
                                                 [](CardHeader*, std::vector<uint8_t>* meta) {
                                                   Poke<uint64_t>(
                                                       meta,
                                                       kSeg1 + offsetof(SegmentRecord, num_tokens),
                                                       kU64Max);
                                                 },
                                                 absl::StatusCode::kInvalidArgument,
                                                 "segment 1: first_token 13 / num_tokens"},
                                           Craft{"segment_mode",
                                                 [](CardHeader*, std::vector<uint8_t>* meta) {
                                                   Poke<uint8_t>(
                                                       meta, kSeg0 + offsetof(SegmentRecord, mode),
                                                       7);
                                                 },
                                                 absl::StatusCode::kInvalidArgument,
                                                 "segment 0: mode 7"},
                                           Craft{"full_segment_group",
                                                 [](CardHeader*, std::vector<uint8_t>* meta) {
                                                   Poke<uint32_t>(meta,
                                                                  kSeg0 + offsetof(SegmentRecord,
                                                                                   k_group_size),
                                                                  32);
                                                 },
                                                 absl::StatusCode::kInvalidArgument,
                                                 "non-zero group fields"},
                                           Craft{"group_size_zero",
                                                 [](CardHeader*, std::vector<uint8_t>* meta) {
                                                   Poke<uint32_t>(meta,
                                                                  kSeg1 + offsetof(SegmentRecord,
                                                                                   v_group_size),
                                                                  0);
                                                 },
                                                 absl::StatusCode::kInvalidArgument,
                                                 "segment 1: v_group_size 0"},
                                           Craft{"bad_axis",
                                                 [](CardHeader*, std::vector<uint8_t>* meta) {
                                                   Poke<uint8_t>(
                                                       meta,
                                                       kSeg1 + offsetof(SegmentRecord, k_axis), 2);
                                                 },
                                                 absl::StatusCode::kInvalidArgument,
                                                 "segment 1: k_axis 2"},
                                           Craft{"k_bits_offset",
                                                 [](CardHeader*, std::vector<uint8_t>* meta) {
                                                   Poke<uint64_t>(meta,
                                                                  kSeg1 + offsetof(SegmentRecord,
                                                                                   k_bits_offset),
                                                                  1ull << 40);
                                                 },
                                                 absl::StatusCode::kInvalidArgument,
                                                 "segment 1 k_bits_offset is 1099511627776"},
                                           Craft{"section_offset",
                                                 [](CardHeader*, std::vector<uint8_t>* meta) {
                                                   Poke<uint64_t>(
                                                       meta, kSections0 + 3 * sizeof(SectionRecord),
                                                       kU64Max - 63);
                                                 },
                                                 absl::StatusCode::kInvalidArgument,
                                                 "segment 0 layer 1 V section at"},
                                           Craft{"section_bytes",
                                                 [](CardHeader*, std::vector<uint8_t>* meta) {
                                                   Poke<uint64_t>(meta, kSections0 + 8, kU64Max);
                                                 },
                                                 absl::StatusCode::kInvalidArgument,
                                                 "segment 0 layer 0 K section at"},
                                           Craft{"full_bits_wrong",
                                                 [](CardHeader* h, std::vector<uint8_t>* meta) {
                                                   // segment 0 k_bits start right after the token
                                                   // ids (17 x 4, padded to 72).
                                                   Poke<uint8_t>(meta, h->token_ids_offset + 72 + 1,
                                                                 8);
                                                 },
                                                 absl::StatusCode::kInvalidArgument,
                                                 "k_bits[1] = 8 but a full segment of bf16"},
                                           Craft{"quantized_bits_invalid",
                                                 [](CardHeader* h, std::vector<uint8_t>* meta) {
                                                   // segment 1 v_bits: after seg 0's k/v bits (8 +
                                                   // 8).
                                                   Poke<uint8_t>(
                                                       meta, h->token_ids_offset + 72 + 16 + 8 + 2,
                                                       1);
                                                 },
                                                 absl::StatusCode::kInvalidArgument,
                                                 "v_bits[2] = 1 is not a valid width"},
                                           Craft{"token_id_too_large",
                                                 [](CardHeader* h, std::vector<uint8_t>* meta) {
                                                   Poke<uint32_t>(meta,
                                                                  h->token_ids_offset + 4 * 16,
                                                                  0x80000000u);
                                                 },
                                                 absl::StatusCode::kInvalidArgument,
                                                 "token id 2147483648 at position 16"},
                                           Craft{"padding_not_zero",
                                                 [](CardHeader* h, std::vector<uint8_t>* meta) {
                                                   Poke<uint8_t>(meta, h->token_ids_offset + 68,
                                                                 1);  // after 17 ids
                                                 },
                                                 absl::StatusCode::kInvalidArgument,
                                                 "padding byte at offset"}),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace qkvshare::cachecard
