// File: cachecard/format.h
// -----------------------------------------------------------------------------
// The CacheCard on-disk/in-memory records: magic, format version, limits and the
// three fixed-size POD records (CardHeader, SegmentRecord, SectionRecord). The
// byte-level specification, with a table per record, is docs/cachecard.md; this
// header must agree with it field for field.
//
// These records are only ever copied to and from card bytes with memcpy (never
// reinterpret_cast over a buffer), so card bytes need no alignment. All fields
// are little-endian; the build refuses big-endian targets.
//
// Parsing and validation live in cachecard/metadata.h; nothing here validates.
// Thread safety: constants and plain structs only.
#ifndef QKVSHARE_CACHECARD_FORMAT_H_
#define QKVSHARE_CACHECARD_FORMAT_H_

#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "absl/types/span.h"

namespace qkvshare::cachecard {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "CacheCard records are little-endian and copied with memcpy");
static_assert(std::numeric_limits<double>::is_iec559, "f64 fields are IEEE-754 binary64");

// "QKVC".
inline constexpr uint8_t kCardMagic[4] = {'Q', 'K', 'V', 'C'};

// Increment this whenever the byte layout or the meaning of any field changes
// (including the quantizer's packed K/V section layout, docs/quantization.md).
// Readers accept exactly this version. Regenerate the golden card
// (cachecard/testdata/golden_v<N>.qkvcard) in the same commit.
inline constexpr uint32_t kCardFormatVersion = 2;

// Alignment of metadata arrays/strings and of metadata_bytes / sections.
inline constexpr uint64_t kMetadataAlignment = 8;
inline constexpr uint64_t kSectionAlignment = 64;

// Limits a valid card respects (docs/cachecard.md). They bound all arithmetic a
// reader does before any allocation.
inline constexpr uint32_t kMaxLayers = 4096;
inline constexpr uint32_t kMaxKvHeads = 4096;
inline constexpr uint32_t kMaxHeadDim = 4096;
inline constexpr uint32_t kMaxChannels = 65536;  // num_kv_heads * head_dim
inline constexpr uint64_t kMaxContextTokens = (uint64_t{1} << 31) - 1;
inline constexpr uint32_t kMaxSegments = 65536;
inline constexpr uint32_t kMaxStringBytes = 1024;
inline constexpr uint32_t kMaxGroupSize = uint32_t{1} << 24;
// Longest parent chain an injection or flatten follows.
inline constexpr int kMaxChainLength = 4096;

// Segment encoding (SegmentRecord::mode).
enum class CardMode : uint8_t {
  kFull = 0,       // sections hold the source cache's own dtype, unquantized
  kQuantized = 1,  // sections hold quant::Quantize output
};

// Fixed header at byte 0 of every card. docs/cachecard.md "CardHeader".
struct CardHeader {
  uint8_t magic[4];
  uint32_t format_version;
  uint64_t card_bytes;
  uint64_t metadata_bytes;
  uint64_t header_checksum;  // XXH64 of [0, metadata_bytes), this field as zero
  uint8_t model_fingerprint[32];
  uint8_t card_id[16];
  uint8_t parent_id[16];
  uint32_t num_layers;
  uint32_t num_kv_heads;
  uint32_t head_dim;
  uint8_t source_dtype;  // qkvshare::DType
  uint8_t keys_post_rope;
  uint8_t reserved0[2];
  uint64_t first_token;
  uint64_t num_tokens;
  uint32_t num_segments;
  uint32_t hop_index;
  int64_t created_unix_ms;
  double budget_bits;
  double avg_bits;
  uint64_t segments_offset;
  uint64_t token_ids_offset;
  uint64_t source_agent_offset;
  uint64_t quant_policy_offset;
  uint32_t source_agent_bytes;
  uint32_t quant_policy_bytes;
  uint8_t reserved1[56];
};
static_assert(std::is_standard_layout_v<CardHeader> && std::is_trivially_copyable_v<CardHeader>);
static_assert(sizeof(CardHeader) == 256);
static_assert(offsetof(CardHeader, header_checksum) == 24);
static_assert(offsetof(CardHeader, model_fingerprint) == 32);
static_assert(offsetof(CardHeader, num_layers) == 96);
static_assert(offsetof(CardHeader, first_token) == 112);
static_assert(offsetof(CardHeader, created_unix_ms) == 136);
static_assert(offsetof(CardHeader, segments_offset) == 160);
static_assert(offsetof(CardHeader, source_agent_bytes) == 192);
static_assert(offsetof(CardHeader, reserved1) == 200);

// One per segment, right after the header. docs/cachecard.md "SegmentRecord".
struct SegmentRecord {
  uint64_t first_token;
  uint64_t num_tokens;
  uint8_t mode;       // CardMode
  uint8_t raw_dtype;  // kFull: qkvshare::DType of the sections; kQuantized: 0
  uint8_t k_axis;     // quant::GroupAxis (kQuantized), else 0
  uint8_t v_axis;
  uint32_t k_group_size;  // kQuantized: 1..kMaxGroupSize, else 0
  uint32_t v_group_size;
  uint32_t origin_hop_index;
  uint8_t origin_card_id[16];
  uint64_t k_bits_offset;
  uint64_t v_bits_offset;
  uint64_t sections_offset;
  uint8_t reserved[24];
};
static_assert(std::is_standard_layout_v<SegmentRecord> &&
              std::is_trivially_copyable_v<SegmentRecord>);
static_assert(sizeof(SegmentRecord) == 96);
static_assert(offsetof(SegmentRecord, origin_card_id) == 32);
static_assert(offsetof(SegmentRecord, sections_offset) == 64);

// One per (segment, layer, K|V). docs/cachecard.md "SectionRecord".
struct SectionRecord {
  uint64_t offset;
  uint64_t bytes;
  uint64_t checksum;  // XXH64 (seed 0) of the section's bytes
};
static_assert(std::is_standard_layout_v<SectionRecord> &&
              std::is_trivially_copyable_v<SectionRecord>);
static_assert(sizeof(SectionRecord) == 24);

// XXH64 (seed 0) of `bytes`: the section checksum.
uint64_t SectionChecksum(absl::Span<const uint8_t> bytes);

// The header checksum of a card's metadata: XXH64 (seed 0) of `metadata`
// (= bytes [0, metadata_bytes)) with the 8 bytes of header_checksum taken as
// zero. REQUIRES: metadata.size() >= sizeof(CardHeader).
uint64_t HeaderChecksum(absl::Span<const uint8_t> metadata);

// Rounds `x` up to a multiple of `alignment` (a power of two). Returns false on
// 64-bit overflow.
inline bool AlignUp(uint64_t x, uint64_t alignment, uint64_t* out) {
  uint64_t sum;
  if (__builtin_add_overflow(x, alignment - 1, &sum)) return false;
  *out = sum & ~(alignment - 1);
  return true;
}

}  // namespace qkvshare::cachecard

#endif  // QKVSHARE_CACHECARD_FORMAT_H_
