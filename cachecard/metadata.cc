#include "cachecard/metadata.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace qkvshare::cachecard {
namespace {

bool IsKnownDType(DType t) { return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16; }

// Checked a + b (and a * b); false on 64-bit overflow.
bool Add(uint64_t a, uint64_t b, uint64_t* out) { return !__builtin_add_overflow(a, b, out); }
bool Mul(uint64_t a, uint64_t b, uint64_t* out) { return !__builtin_mul_overflow(a, b, out); }

absl::Status Overflow(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("size of ", what, " overflows 64 bits"));
}

// Appends a region of `bytes` at the next `alignment` boundary after *cursor.
absl::Status Place(uint64_t bytes, uint64_t alignment, absl::string_view what, uint64_t* cursor,
                   uint64_t* offset) {
  if (!AlignUp(*cursor, alignment, offset) || !Add(*offset, bytes, cursor)) return Overflow(what);
  return absl::OkStatus();
}

absl::Status ValidateSegment(const CardMetadata& m, size_t s, int64_t expected_first) {
  const SegmentInfo& seg = m.segments[s];
  const std::string where = absl::StrCat("segment ", s);
  if (seg.first_token != expected_first) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": first_token ", seg.first_token,
                                                   ", expected ", expected_first,
                                                   " (segments must be contiguous)"));
  }
  if (seg.num_tokens < 1 || seg.num_tokens > m.num_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": num_tokens ", seg.num_tokens, " outside 1..", m.num_tokens));
  }
  if (seg.origin_card_id.IsZero()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": origin_card_id is zero"));
  }
  if (static_cast<int64_t>(seg.k_bits.size()) != seg.num_tokens ||
      static_cast<int64_t>(seg.v_bits.size()) != seg.num_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", seg.k_bits.size(), " k_bits and ",
                                                   seg.v_bits.size(), " v_bits for ",
                                                   seg.num_tokens, " tokens"));
  }
  if (seg.mode == CardMode::kFull) {
    if (!IsKnownDType(seg.raw_dtype)) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": raw_dtype ", static_cast<int>(seg.raw_dtype), " is not a known dtype"));
    }
  } else if (seg.mode == CardMode::kQuantized) {
    for (const auto* spec : {&seg.k_group, &seg.v_group}) {
      const char* side = spec == &seg.k_group ? "k" : "v";
      if (spec->axis != quant::GroupAxis::kPerChannel &&
          spec->axis != quant::GroupAxis::kPerToken) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": ", side, "_axis ",
                                                       static_cast<int>(spec->axis),
                                                       " is not 0 (per-channel) or 1 (per-token)"));
      }
      if (spec->group_size < 1 || static_cast<uint32_t>(spec->group_size) > kMaxGroupSize) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": ", side, "_group_size ", spec->group_size, " outside 1..", kMaxGroupSize));
      }
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": mode ", static_cast<int>(seg.mode), " is not 0 or 1"));
  }
  const int full_bits = 8 * static_cast<int>(DTypeSize(seg.raw_dtype));
  for (int side = 0; side < 2; ++side) {
    const std::vector<uint8_t>& bits = side == 0 ? seg.k_bits : seg.v_bits;
    for (size_t t = 0; t < bits.size(); ++t) {
      bool ok =
          seg.mode == CardMode::kFull ? bits[t] == full_bits : quant::IsValidTokenBits(bits[t]);
      if (!ok) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": ", side == 0 ? "k" : "v", "_bits[", t, "] = ", bits[t],
            seg.mode == CardMode::kFull
                ? absl::StrCat(" but a full segment of ", std::string(DTypeName(seg.raw_dtype)),
                               " needs ", full_bits)
                : std::string(" is not a valid width (2..8 or 16)"),
            " (token ", seg.first_token + static_cast<int64_t>(t), ")"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

double AverageBits(absl::Span<const SegmentInfo> segments) {
  uint64_t sum = 0;
  uint64_t count = 0;
  for (const SegmentInfo& seg : segments) {
    for (uint8_t b : seg.k_bits) sum += b;
    for (uint8_t b : seg.v_bits) sum += b;
    count += seg.k_bits.size() + seg.v_bits.size();
  }
  return count == 0 ? 0.0 : static_cast<double>(sum) / static_cast<double>(count);
}

uint64_t ExpectedSectionBytes(const agents::KvShape& shape, const SegmentInfo& segment,
                              bool is_key) {
  if (segment.mode == CardMode::kFull) {
    return static_cast<uint64_t>(shape.channels()) * static_cast<uint64_t>(segment.num_tokens) *
           DTypeSize(segment.raw_dtype);
  }
  return quant::PackedBytes(shape.channels(), is_key ? segment.k_group : segment.v_group,
                            is_key ? segment.k_bits : segment.v_bits);
}

absl::Status ValidateMetadata(const CardMetadata& m) {
  if (m.format_version != kCardFormatVersion) {
    return absl::InvalidArgumentError(absl::StrCat("format_version ", m.format_version,
                                                   ", this build writes ", kCardFormatVersion));
  }
  const agents::KvShape& sh = m.shape;
  if (sh.num_layers < 1 || static_cast<uint32_t>(sh.num_layers) > kMaxLayers ||
      sh.num_kv_heads < 1 || static_cast<uint32_t>(sh.num_kv_heads) > kMaxKvHeads ||
      sh.head_dim < 1 || static_cast<uint32_t>(sh.head_dim) > kMaxHeadDim ||
      static_cast<uint64_t>(sh.num_kv_heads) * sh.head_dim > kMaxChannels) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV shape (layers ", sh.num_layers, ", kv heads ", sh.num_kv_heads,
                     ", head_dim ", sh.head_dim, ") outside the limits (", kMaxLayers, ", ",
                     kMaxKvHeads, ", ", kMaxHeadDim, ", channels ", kMaxChannels, ")"));
  }
  if (!IsKnownDType(m.source_dtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat("source_dtype ", static_cast<int>(m.source_dtype), " is not a known dtype"));
  }
  if (m.first_token < 0 || m.num_tokens < 1 ||
      static_cast<uint64_t>(m.first_token) > kMaxContextTokens ||
      static_cast<uint64_t>(m.num_tokens) > kMaxContextTokens - m.first_token) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokens: first_token ", m.first_token, ", num_tokens ", m.num_tokens,
                     " (need num_tokens >= 1, total <= ", kMaxContextTokens, ")"));
  }
  if (m.provenance.card_id.IsZero()) return absl::InvalidArgumentError("card_id is zero");
  if (m.parent_id.IsZero() != (m.first_token == 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("parent_id ", m.parent_id.ToHex(), " with first_token ", m.first_token,
                     " (a parent is required exactly when first_token > 0)"));
  }
  if (static_cast<int64_t>(m.token_ids.size()) != m.total_tokens()) {
    return absl::InvalidArgumentError(absl::StrCat(m.token_ids.size(), " token ids for ",
                                                   m.total_tokens(), " tokens of context"));
  }
  for (size_t i = 0; i < m.token_ids.size(); ++i) {
    if (m.token_ids[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", m.token_ids[i], " at position ", i, " is negative"));
    }
  }
  if (m.provenance.source_agent.size() > kMaxStringBytes ||
      m.provenance.quant_policy.size() > kMaxStringBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "source agent (", m.provenance.source_agent.size(), " bytes) or quant policy (",
        m.provenance.quant_policy.size(), " bytes) longer than ", kMaxStringBytes, " bytes"));
  }
  if (!std::isfinite(m.provenance.budget_bits) || m.provenance.budget_bits < 0 ||
      m.provenance.budget_bits > 32) {
    return absl::InvalidArgumentError(
        absl::StrCat("budget_bits ", m.provenance.budget_bits, " outside [0, 32]"));
  }
  if (m.segments.empty() || m.segments.size() > kMaxSegments ||
      static_cast<int64_t>(m.segments.size()) > m.num_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(m.segments.size(), " segments for ",
                                                   m.num_tokens, " tokens (1..", kMaxSegments,
                                                   ", at most one per token)"));
  }
  int64_t next = m.first_token;
  for (size_t s = 0; s < m.segments.size(); ++s) {
    QKV_RETURN_IF_ERROR(ValidateSegment(m, s, next));
    next += m.segments[s].num_tokens;
  }
  if (next != m.total_tokens()) {
    return absl::InvalidArgumentError(
        absl::StrCat("segments end at token ", next, ", the card at ", m.total_tokens()));
  }
  const double avg = AverageBits(m.segments);
  if (m.avg_bits != avg) {
    return absl::InvalidArgumentError(
        absl::StrCat("avg_bits ", m.avg_bits, " differs from the bit widths' mean ", avg));
  }
  return absl::OkStatus();
}

absl::StatusOr<MetadataLayout> LayoutMetadataRegions(uint32_t num_layers,
                                                     absl::Span<const int64_t> segment_tokens,
                                                     uint64_t total_tokens,
                                                     uint64_t source_agent_bytes,
                                                     uint64_t quant_policy_bytes) {
  MetadataLayout layout;
  const uint64_t num_segments = segment_tokens.size();
  uint64_t cursor = sizeof(CardHeader);
  uint64_t bytes;
  if (!Mul(num_segments, sizeof(SegmentRecord), &bytes)) return Overflow("segment records");
  QKV_RETURN_IF_ERROR(
      Place(bytes, kMetadataAlignment, "segment records", &cursor, &layout.segments_offset));
  uint64_t records_per_segment;
  if (!Mul(uint64_t{2} * num_layers, sizeof(SectionRecord), &records_per_segment)) {
    return Overflow("section records");
  }
  layout.section_records_offset.resize(num_segments);
  for (uint64_t s = 0; s < num_segments; ++s) {
    QKV_RETURN_IF_ERROR(Place(records_per_segment, kMetadataAlignment, "section records", &cursor,
                              &layout.section_records_offset[s]));
  }
  if (!Mul(total_tokens, sizeof(uint32_t), &bytes)) return Overflow("token ids");
  QKV_RETURN_IF_ERROR(
      Place(bytes, kMetadataAlignment, "token ids", &cursor, &layout.token_ids_offset));
  layout.k_bits_offset.resize(num_segments);
  layout.v_bits_offset.resize(num_segments);
  for (uint64_t s = 0; s < num_segments; ++s) {
    const uint64_t n = static_cast<uint64_t>(segment_tokens[s]);
    QKV_RETURN_IF_ERROR(Place(n, kMetadataAlignment, "k_bits", &cursor, &layout.k_bits_offset[s]));
    QKV_RETURN_IF_ERROR(Place(n, kMetadataAlignment, "v_bits", &cursor, &layout.v_bits_offset[s]));
  }
  QKV_RETURN_IF_ERROR(Place(source_agent_bytes, kMetadataAlignment, "source agent", &cursor,
                            &layout.source_agent_offset));
  QKV_RETURN_IF_ERROR(Place(quant_policy_bytes, kMetadataAlignment, "quant policy", &cursor,
                            &layout.quant_policy_offset));
  layout.metadata_end = cursor;
  uint64_t metadata_bytes;
  if (!AlignUp(cursor, kSectionAlignment, &metadata_bytes)) return Overflow("metadata");
  return layout;
}

uint64_t MetadataBytes(const MetadataLayout& layout) {
  // LayoutMetadataRegions checked that this does not overflow.
  uint64_t out = 0;
  AlignUp(layout.metadata_end, kSectionAlignment, &out);
  return out;
}

absl::StatusOr<uint64_t> LayoutSections(const agents::KvShape& shape, uint64_t metadata_bytes,
                                        std::vector<SegmentInfo>* segments) {
  uint64_t cursor = metadata_bytes;
  for (SegmentInfo& seg : *segments) {
    seg.sections.resize(2 * static_cast<size_t>(shape.num_layers));
    for (size_t i = 0; i < seg.sections.size(); ++i) {
      SectionRef& ref = seg.sections[i];
      ref.bytes = ExpectedSectionBytes(shape, seg, /*is_key=*/i % 2 == 0);
      QKV_RETURN_IF_ERROR(Place(ref.bytes, kSectionAlignment, "sections", &cursor, &ref.offset));
    }
  }
  return cursor;
}

absl::StatusOr<MetadataLayout> PlanLayout(CardMetadata* m) {
  QKV_RETURN_IF_ERROR(ValidateMetadata(*m));
  std::vector<int64_t> segment_tokens;
  segment_tokens.reserve(m->segments.size());
  for (const SegmentInfo& seg : m->segments) segment_tokens.push_back(seg.num_tokens);
  QKV_ASSIGN_OR_RETURN(
      MetadataLayout layout,
      LayoutMetadataRegions(m->shape.num_layers, segment_tokens, m->total_tokens(),
                            m->provenance.source_agent.size(), m->provenance.quant_policy.size()));
  m->metadata_bytes = MetadataBytes(layout);
  QKV_ASSIGN_OR_RETURN(m->card_bytes, LayoutSections(m->shape, m->metadata_bytes, &m->segments));
  return layout;
}

}  // namespace qkvshare::cachecard
