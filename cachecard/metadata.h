// File: cachecard/metadata.h
// -----------------------------------------------------------------------------
// CardMetadata: everything in a CacheCard except the K/V section bytes, as a
// plain C++ value (docs/cachecard.md). It is the single place that knows the
// format's rules:
//
//   - ValidateMetadata() checks the contents (limits, contiguous segments, bit
//     widths, strings, avg_bits) for both the writer and the reader;
//   - PlanLayout() computes the canonical byte layout (every offset, every
//     section size, metadata_bytes, card_bytes) from the contents;
//
// Turning CardMetadata into bytes and back is cachecard/metadata_codec.h.
//
// Thread safety: plain values and pure functions.
//
// Example (writer):
//   CardMetadata m = ...;                        // contents, checksums unset
//   QKV_ASSIGN_OR_RETURN(MetadataLayout layout, PlanLayout(&m));
//   ... write sections at m.segments[s].sections[i].offset, set .checksum ...
#ifndef QKVSHARE_CACHECARD_METADATA_H_
#define QKVSHARE_CACHECARD_METADATA_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "agents/kv_cache.h"
#include "base/dtype.h"
#include "cachecard/format.h"
#include "cachecard/ids.h"
#include "quant/bit_plan.h"
#include "quant/kernels.h"

namespace qkvshare::cachecard {

// Who built a card, when and how. Set by the builder's caller (the daemon).
struct Provenance {
  // Non-zero. Output of BuildCard/Flatten: the content-derived id
  // (cachecard/content_id.h), whatever the caller put here.
  CardId card_id;
  std::string source_agent;  // agent that built the card, <= kMaxStringBytes
  uint32_t hop_index = 0;    // handoffs the context went through (0: first)
  int64_t created_unix_ms = 0;
  std::string quant_policy;  // controller name, e.g. "importance", "uniform", "full"
  double budget_bits = 0;    // requested average bits per element (0: none)
};

// Where one K or V section lives and its XXH64.
struct SectionRef {
  uint64_t offset = 0;  // from byte 0 of the card, 64-aligned
  uint64_t bytes = 0;
  uint64_t checksum = 0;
};

// A run of contiguous tokens encoded with one mode and group specs.
struct SegmentInfo {
  int64_t first_token = 0;
  int64_t num_tokens = 0;
  CardMode mode = CardMode::kQuantized;
  DType raw_dtype = DType::kF32;  // kFull: element type of the sections
  quant::GroupSpec k_group;       // kQuantized only
  quant::GroupSpec v_group;
  CardId origin_card_id;  // the card that encoded this segment
  uint32_t origin_hop_index = 0;
  std::vector<uint8_t> k_bits;  // [num_tokens]; kFull: all 8 * DTypeSize(raw_dtype)
  std::vector<uint8_t> v_bits;  // [num_tokens]
  // [2 * num_layers]: layer l's K at 2l, V at 2l + 1.
  std::vector<SectionRef> sections;

  const SectionRef& k_section(int layer) const { return sections[2 * layer]; }
  const SectionRef& v_section(int layer) const { return sections[2 * layer + 1]; }
};

struct CardMetadata {
  uint32_t format_version = kCardFormatVersion;
  ModelFingerprint fingerprint{};
  CardId parent_id;  // zero iff first_token == 0
  agents::KvShape shape;
  DType source_dtype = DType::kF32;
  int64_t first_token = 0;         // tokens [0, first_token) come from the parent chain
  int64_t num_tokens = 0;          // tokens carried by `segments`
  std::vector<int32_t> token_ids;  // [first_token + num_tokens]: the whole context
  Provenance provenance;
  double avg_bits = 0;  // AverageBits(segments)
  std::vector<SegmentInfo> segments;
  // Set by PlanLayout() / ParseMetadata().
  uint64_t metadata_bytes = 0;
  uint64_t card_bytes = 0;

  const CardId& card_id() const { return provenance.card_id; }
  // Positions [0, total_tokens()) are described by this card and its parents.
  int64_t total_tokens() const { return first_token + num_tokens; }
};

// Offsets of the metadata regions (docs/cachecard.md); sections are in
// CardMetadata::segments[*].sections.
struct MetadataLayout {
  uint64_t segments_offset = 0;
  std::vector<uint64_t> section_records_offset;  // [num_segments]
  uint64_t token_ids_offset = 0;
  std::vector<uint64_t> k_bits_offset;  // [num_segments]
  std::vector<uint64_t> v_bits_offset;
  uint64_t source_agent_offset = 0;
  uint64_t quant_policy_offset = 0;
  uint64_t metadata_end = 0;  // end of the last region, before the padding to 64
};

// Mean of all k_bits and v_bits of `segments` (0 for no tokens). The exact
// value stored in CardHeader::avg_bits.
double AverageBits(absl::Span<const SegmentInfo> segments);

// Expected size of one K (is_key) or V section of `segment` for `shape`:
// num_kv_heads * n * head_dim * DTypeSize for kFull, quant::PackedBytes for
// kQuantized. REQUIRES: the segment passed ValidateMetadata.
uint64_t ExpectedSectionBytes(const agents::KvShape& shape, const SegmentInfo& segment,
                              bool is_key);

// Checks the contents of `m` against the format's rules (everything but
// offsets, sizes and checksums). Errors: InvalidArgument naming the field,
// segment and token, e.g. "segment 1: k_bits[3] = 9 is not a valid width".
absl::Status ValidateMetadata(const CardMetadata& m);

// Validates `m`, then sets every SectionRef's offset and bytes (keeping
// checksums), m->metadata_bytes and m->card_bytes to the canonical layout.
// Errors: InvalidArgument from ValidateMetadata.
absl::StatusOr<MetadataLayout> PlanLayout(CardMetadata* m);

// Region offsets for a card with these counts (the canonical layout of the
// metadata: header, segment records, section records, token ids, bit arrays,
// strings), and metadata_end. `segment_tokens` holds each segment's
// num_tokens. Errors: InvalidArgument on 64-bit overflow.
absl::StatusOr<MetadataLayout> LayoutMetadataRegions(uint32_t num_layers,
                                                     absl::Span<const int64_t> segment_tokens,
                                                     uint64_t total_tokens,
                                                     uint64_t source_agent_bytes,
                                                     uint64_t quant_policy_bytes);

// The canonical metadata_bytes for a layout: metadata_end rounded up to 64.
uint64_t MetadataBytes(const MetadataLayout& layout);

// Sets offset and bytes of every section of `segments` (resizing each
// segment's `sections` to 2 * num_layers, keeping checksums), packing them from
// `metadata_bytes` on, each 64-aligned, and returns card_bytes. REQUIRES:
// segments passed ValidateMetadata. Errors: InvalidArgument on overflow.
absl::StatusOr<uint64_t> LayoutSections(const agents::KvShape& shape, uint64_t metadata_bytes,
                                        std::vector<SegmentInfo>* segments);

}  // namespace qkvshare::cachecard

#endif  // QKVSHARE_CACHECARD_METADATA_H_
