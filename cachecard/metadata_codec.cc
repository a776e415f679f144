#include "cachecard/metadata_codec.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <string>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace qkvshare::cachecard {
namespace {

template <typename... Args>
absl::Status Malformed(const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat("malformed card: ", args...));
}

absl::Status WithPrefix(const absl::Status& s, absl::string_view prefix) {
  return absl::Status(s.code(), absl::StrCat(prefix, s.message()));
}

template <size_t N>
bool AllZero(const uint8_t (&bytes)[N]) {
  return std::all_of(bytes, bytes + N, [](uint8_t b) { return b == 0; });
}

template <typename T>
T ReadPod(absl::Span<const uint8_t> bytes, uint64_t offset) {
  T value;
  std::memcpy(&value, bytes.data() + offset, sizeof(T));
  return value;
}

template <typename T>
void WritePod(absl::Span<uint8_t> out, uint64_t offset, const T& value) {
  std::memcpy(out.data() + offset, &value, sizeof(T));
}

CardId ToCardId(const uint8_t (&bytes)[16]) {
  CardId id;
  std::memcpy(id.bytes.data(), bytes, 16);
  return id;
}

// Fills the record's fields, everything else (reserved) zero.
SegmentRecord ToRecord(const SegmentInfo& seg, const MetadataLayout& layout, size_t s) {
  SegmentRecord r{};
  r.first_token = static_cast<uint64_t>(seg.first_token);
  r.num_tokens = static_cast<uint64_t>(seg.num_tokens);
  r.mode = static_cast<uint8_t>(seg.mode);
  if (seg.mode == CardMode::kFull) {
    r.raw_dtype = static_cast<uint8_t>(seg.raw_dtype);
  } else {
    r.k_axis = static_cast<uint8_t>(seg.k_group.axis);
    r.v_axis = static_cast<uint8_t>(seg.v_group.axis);
    r.k_group_size = static_cast<uint32_t>(seg.k_group.group_size);
    r.v_group_size = static_cast<uint32_t>(seg.v_group.group_size);
  }
  r.origin_hop_index = seg.origin_hop_index;
  std::memcpy(r.origin_card_id, seg.origin_card_id.bytes.data(), 16);
  r.k_bits_offset = layout.k_bits_offset[s];
  r.v_bits_offset = layout.v_bits_offset[s];
  r.sections_offset = layout.section_records_offset[s];
  return r;
}

// Record -> SegmentInfo for the fields a record holds; checks the parts
// ValidateMetadata cannot see (reserved bytes, fields that must be zero).
absl::StatusOr<SegmentInfo> FromRecord(const SegmentRecord& r, size_t s) {
  if (!AllZero(r.reserved)) return Malformed("segment ", s, ": reserved bytes are not zero");
  if (r.mode > 1) return Malformed("segment ", s, ": mode ", r.mode, " is not 0 or 1");
  if (r.num_tokens > kMaxContextTokens || r.first_token > kMaxContextTokens) {
    return Malformed("segment ", s, ": first_token ", r.first_token, " / num_tokens ", r.num_tokens,
                     " exceed ", kMaxContextTokens);
  }
  SegmentInfo seg;
  seg.first_token = static_cast<int64_t>(r.first_token);
  seg.num_tokens = static_cast<int64_t>(r.num_tokens);
  seg.mode = static_cast<CardMode>(r.mode);
  if (seg.mode == CardMode::kFull) {
    if (r.k_axis != 0 || r.v_axis != 0 || r.k_group_size != 0 || r.v_group_size != 0) {
      return Malformed("segment ", s, ": a full segment has non-zero group fields");
    }
    seg.raw_dtype = static_cast<DType>(r.raw_dtype);
    seg.k_group = {quant::GroupAxis::kPerChannel, 0};
    seg.v_group = {quant::GroupAxis::kPerChannel, 0};
  } else {
    if (r.raw_dtype != 0) return Malformed("segment ", s, ": raw_dtype of a quantized segment");
    if (r.k_group_size > kMaxGroupSize || r.v_group_size > kMaxGroupSize) {
      return Malformed("segment ", s, ": group size ", std::max(r.k_group_size, r.v_group_size),
                       " exceeds ", kMaxGroupSize);
    }
    seg.k_group = {static_cast<quant::GroupAxis>(r.k_axis), static_cast<int>(r.k_group_size)};
    seg.v_group = {static_cast<quant::GroupAxis>(r.v_axis), static_cast<int>(r.v_group_size)};
  }
  seg.origin_hop_index = r.origin_hop_index;
  seg.origin_card_id = ToCardId(r.origin_card_id);
  return seg;
}

// Checks the header fields that bound the layout arithmetic.
absl::Status CheckHeaderFields(const CardHeader& h) {
  if (!AllZero(h.reserved0) || !AllZero(h.reserved1)) {
    return Malformed("reserved header bytes are not zero");
  }
  if (h.keys_post_rope == 0) {
    return absl::UnimplementedError("card holds pre-RoPE keys; only post-RoPE keys are supported");
  }
  if (h.keys_post_rope != 1) return Malformed("keys_post_rope is ", h.keys_post_rope);
  if (h.num_layers < 1 || h.num_layers > kMaxLayers || h.num_kv_heads < 1 ||
      h.num_kv_heads > kMaxKvHeads || h.head_dim < 1 || h.head_dim > kMaxHeadDim ||
      uint64_t{h.num_kv_heads} * h.head_dim > kMaxChannels) {
    return Malformed("KV shape (layers ", h.num_layers, ", kv heads ", h.num_kv_heads,
                     ", head_dim ", h.head_dim, ") outside the limits");
  }
  if (h.first_token > kMaxContextTokens || h.num_tokens < 1 ||
      h.num_tokens > kMaxContextTokens - h.first_token) {
    return Malformed("first_token ", h.first_token, " / num_tokens ", h.num_tokens,
                     " outside the limits (total <= ", kMaxContextTokens, ")");
  }
  if (h.num_segments < 1 || h.num_segments > kMaxSegments || h.num_segments > h.num_tokens) {
    return Malformed("num_segments ", h.num_segments, " outside 1..min(", kMaxSegments,
                     ", num_tokens)");
  }
  if (h.source_agent_bytes > kMaxStringBytes || h.quant_policy_bytes > kMaxStringBytes) {
    return Malformed("string lengths ", h.source_agent_bytes, " / ", h.quant_policy_bytes,
                     " exceed ", kMaxStringBytes);
  }
  if (h.segments_offset != sizeof(CardHeader)) {
    return Malformed("segments_offset is ", h.segments_offset, ", expected ", sizeof(CardHeader));
  }
  // Records must fit before we read them (the full layout check comes later).
  const uint64_t records =
      uint64_t{h.num_segments} *
      (sizeof(SegmentRecord) + uint64_t{2} * h.num_layers * sizeof(SectionRecord));
  if (records > h.metadata_bytes - sizeof(CardHeader)) {
    return Malformed(h.num_segments, " segment records with their section records (", records,
                     " bytes) do not fit in metadata_bytes ", h.metadata_bytes);
  }
  return absl::OkStatus();
}

absl::Status ExpectOffset(absl::string_view field, uint64_t stored, uint64_t expected) {
  if (stored == expected) return absl::OkStatus();
  return Malformed(field, " is ", stored, ", expected ", expected);
}

// Every byte of [0, end) not inside one of `regions` (sorted, disjoint) is zero.
absl::Status CheckPadding(absl::Span<const uint8_t> bytes,
                          std::vector<std::pair<uint64_t, uint64_t>> regions, uint64_t end) {
  uint64_t pos = 0;
  regions.emplace_back(end, 0);
  for (const auto& [offset, length] : regions) {
    for (uint64_t i = pos; i < offset; ++i) {
      if (bytes[i] != 0) return Malformed("padding byte at offset ", i, " is not zero");
    }
    pos = offset + length;
  }
  return absl::OkStatus();
}

}  // namespace

void SealHeaderChecksum(absl::Span<uint8_t> metadata) {
  const uint64_t checksum = HeaderChecksum(metadata);
  WritePod(metadata, offsetof(CardHeader, header_checksum), checksum);
}

absl::Status EncodeMetadata(const CardMetadata& m, const MetadataLayout& layout,
                            absl::Span<uint8_t> out) {
  if (out.size() != m.metadata_bytes || m.metadata_bytes != MetadataBytes(layout)) {
    return absl::InvalidArgumentError(absl::StrCat("EncodeMetadata: buffer of ", out.size(),
                                                   " bytes for metadata_bytes ", m.metadata_bytes,
                                                   " (layout: ", MetadataBytes(layout), ")"));
  }
  std::memset(out.data(), 0, out.size());
  CardHeader h{};
  std::memcpy(h.magic, kCardMagic, sizeof h.magic);
  h.format_version = m.format_version;
  h.card_bytes = m.card_bytes;
  h.metadata_bytes = m.metadata_bytes;
  std::memcpy(h.model_fingerprint, m.fingerprint.data(), sizeof h.model_fingerprint);
  std::memcpy(h.card_id, m.provenance.card_id.bytes.data(), sizeof h.card_id);
  std::memcpy(h.parent_id, m.parent_id.bytes.data(), sizeof h.parent_id);
  h.num_layers = static_cast<uint32_t>(m.shape.num_layers);
  h.num_kv_heads = static_cast<uint32_t>(m.shape.num_kv_heads);
  h.head_dim = static_cast<uint32_t>(m.shape.head_dim);
  h.source_dtype = static_cast<uint8_t>(m.source_dtype);
  h.keys_post_rope = 1;
  h.first_token = static_cast<uint64_t>(m.first_token);
  h.num_tokens = static_cast<uint64_t>(m.num_tokens);
  h.num_segments = static_cast<uint32_t>(m.segments.size());
  h.hop_index = m.provenance.hop_index;
  h.created_unix_ms = m.provenance.created_unix_ms;
  h.budget_bits = m.provenance.budget_bits;
  h.avg_bits = m.avg_bits;
  h.segments_offset = layout.segments_offset;
  h.token_ids_offset = layout.token_ids_offset;
  h.source_agent_offset = layout.source_agent_offset;
  h.quant_policy_offset = layout.quant_policy_offset;
  h.source_agent_bytes = static_cast<uint32_t>(m.provenance.source_agent.size());
  h.quant_policy_bytes = static_cast<uint32_t>(m.provenance.quant_policy.size());
  WritePod(out, 0, h);

  for (size_t s = 0; s < m.segments.size(); ++s) {
    const SegmentInfo& seg = m.segments[s];
    WritePod(out, layout.segments_offset + s * sizeof(SegmentRecord), ToRecord(seg, layout, s));
    for (size_t i = 0; i < seg.sections.size(); ++i) {
      const SectionRef& ref = seg.sections[i];
      WritePod(out, layout.section_records_offset[s] + i * sizeof(SectionRecord),
               SectionRecord{ref.offset, ref.bytes, ref.checksum});
    }
    std::memcpy(out.data() + layout.k_bits_offset[s], seg.k_bits.data(), seg.k_bits.size());
    std::memcpy(out.data() + layout.v_bits_offset[s], seg.v_bits.data(), seg.v_bits.size());
  }
  for (size_t i = 0; i < m.token_ids.size(); ++i) {
    WritePod(out, layout.token_ids_offset + i * sizeof(uint32_t),
             static_cast<uint32_t>(m.token_ids[i]));
  }
  const std::string& agent = m.provenance.source_agent;
  const std::string& policy = m.provenance.quant_policy;
  std::memcpy(out.data() + layout.source_agent_offset, agent.data(), agent.size());
  std::memcpy(out.data() + layout.quant_policy_offset, policy.data(), policy.size());
  SealHeaderChecksum(out);
  return absl::OkStatus();
}

absl::StatusOr<CardHeader> ReadPreamble(absl::Span<const uint8_t> prefix, uint64_t available) {
  if (available == 0) return absl::InvalidArgumentError("empty card (0 bytes)");
  const uint64_t n = std::min<uint64_t>(prefix.size(), available);
  auto truncated = [&](uint64_t need, absl::string_view what) {
    return absl::DataLossError(
        absl::StrCat("truncated card: ", n, " bytes, the ", what, " needs ", need));
  };
  if (n < sizeof kCardMagic) return truncated(sizeof kCardMagic, "magic");
  if (std::memcmp(prefix.data(), kCardMagic, sizeof kCardMagic) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "not a CacheCard: magic is 0x",
        absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(prefix.data()), 4)),
        ", expected \"QKVC\""));
  }
  if (n < 8) return truncated(8, "format version");
  const uint32_t version = ReadPod<uint32_t>(prefix, offsetof(CardHeader, format_version));
  if (version != kCardFormatVersion) {
    return absl::UnimplementedError(absl::StrCat("card format version ", version,
                                                 " is not supported (this build reads version ",
                                                 kCardFormatVersion, ")"));
  }
  if (n < sizeof(CardHeader)) return truncated(sizeof(CardHeader), "header");
  const CardHeader h = ReadPod<CardHeader>(prefix, 0);
  if (h.card_bytes > available) {
    return absl::DataLossError(absl::StrCat("truncated card: ", available,
                                            " bytes available, the header declares card_bytes ",
                                            h.card_bytes));
  }
  if (h.card_bytes < available) {
    return absl::DataLossError(absl::StrCat("trailing bytes after the card: ", available,
                                            " bytes available, card_bytes is ", h.card_bytes));
  }
  if (h.metadata_bytes < sizeof(CardHeader) || h.metadata_bytes > h.card_bytes) {
    return absl::DataLossError(absl::StrCat("metadata_bytes ", h.metadata_bytes, " outside [",
                                            sizeof(CardHeader), ", card_bytes ", h.card_bytes,
                                            "]"));
  }
  return h;
}

absl::StatusOr<CardMetadata> ParseMetadata(absl::Span<const uint8_t> prefix, uint64_t available) {
  QKV_ASSIGN_OR_RETURN(const CardHeader h, ReadPreamble(prefix, available));
  if (prefix.size() < h.metadata_bytes) {
    return absl::DataLossError(absl::StrCat("truncated card metadata: ", prefix.size(),
                                            " bytes, metadata_bytes is ", h.metadata_bytes));
  }
  const absl::Span<const uint8_t> meta = prefix.first(h.metadata_bytes);
  const uint64_t checksum = HeaderChecksum(meta);
  if (checksum != h.header_checksum) {
    return absl::DataLossError(absl::StrCat("header checksum mismatch: stored ",
                                            absl::Hex(h.header_checksum), ", computed ",
                                            absl::Hex(checksum)));
  }
  QKV_RETURN_IF_ERROR(CheckHeaderFields(h));

  CardMetadata m;
  m.format_version = h.format_version;
  std::memcpy(m.fingerprint.data(), h.model_fingerprint, m.fingerprint.size());
  m.provenance.card_id = ToCardId(h.card_id);
  m.parent_id = ToCardId(h.parent_id);
  m.shape = {static_cast<int>(h.num_layers), static_cast<int>(h.num_kv_heads),
             static_cast<int>(h.head_dim)};
  m.source_dtype = static_cast<DType>(h.source_dtype);
  m.first_token = static_cast<int64_t>(h.first_token);
  m.num_tokens = static_cast<int64_t>(h.num_tokens);
  m.provenance.hop_index = h.hop_index;
  m.provenance.created_unix_ms = h.created_unix_ms;
  m.provenance.budget_bits = h.budget_bits;
  m.avg_bits = h.avg_bits;

  std::vector<SegmentRecord> records(h.num_segments);
  std::vector<int64_t> segment_tokens(h.num_segments);
  m.segments.reserve(h.num_segments);
  for (size_t s = 0; s < records.size(); ++s) {
    records[s] = ReadPod<SegmentRecord>(meta, h.segments_offset + s * sizeof(SegmentRecord));
    QKV_ASSIGN_OR_RETURN(SegmentInfo seg, FromRecord(records[s], s));
    segment_tokens[s] = seg.num_tokens;
    m.segments.push_back(std::move(seg));
  }
  // The canonical layout for these counts; every stored offset must match it.
  absl::StatusOr<MetadataLayout> layout_or =
      LayoutMetadataRegions(h.num_layers, segment_tokens, h.first_token + h.num_tokens,
                            h.source_agent_bytes, h.quant_policy_bytes);
  if (!layout_or.ok()) return WithPrefix(layout_or.status(), "malformed card: ");
  const MetadataLayout& layout = *layout_or;
  QKV_RETURN_IF_ERROR(ExpectOffset("metadata_bytes", h.metadata_bytes, MetadataBytes(layout)));
  QKV_RETURN_IF_ERROR(
      ExpectOffset("token_ids_offset", h.token_ids_offset, layout.token_ids_offset));
  QKV_RETURN_IF_ERROR(
      ExpectOffset("source_agent_offset", h.source_agent_offset, layout.source_agent_offset));
  QKV_RETURN_IF_ERROR(
      ExpectOffset("quant_policy_offset", h.quant_policy_offset, layout.quant_policy_offset));
  std::vector<std::pair<uint64_t, uint64_t>> regions = {
      {0, sizeof(CardHeader)}, {layout.segments_offset, records.size() * sizeof(SegmentRecord)}};
  const uint64_t records_bytes = uint64_t{2} * h.num_layers * sizeof(SectionRecord);
  for (size_t s = 0; s < records.size(); ++s) {
    const std::string where = absl::StrCat("segment ", s, " ");
    QKV_RETURN_IF_ERROR(ExpectOffset(where + "sections_offset", records[s].sections_offset,
                                     layout.section_records_offset[s]));
    QKV_RETURN_IF_ERROR(
        ExpectOffset(where + "k_bits_offset", records[s].k_bits_offset, layout.k_bits_offset[s]));
    QKV_RETURN_IF_ERROR(
        ExpectOffset(where + "v_bits_offset", records[s].v_bits_offset, layout.v_bits_offset[s]));
    regions.emplace_back(layout.section_records_offset[s], records_bytes);
  }
  // All regions now lie inside `meta`: read them.
  const uint64_t total = h.first_token + h.num_tokens;
  regions.emplace_back(layout.token_ids_offset, total * sizeof(uint32_t));
  m.token_ids.resize(total);
  for (uint64_t i = 0; i < total; ++i) {
    const uint32_t id = ReadPod<uint32_t>(meta, layout.token_ids_offset + i * sizeof(uint32_t));
    if (id > static_cast<uint32_t>(std::numeric_limits<int32_t>::max())) {
      return Malformed("token id ", id, " at position ", i, " exceeds 2^31 - 1");
    }
    m.token_ids[i] = static_cast<int32_t>(id);
  }
  for (size_t s = 0; s < m.segments.size(); ++s) {
    SegmentInfo& seg = m.segments[s];
    const uint64_t n = static_cast<uint64_t>(seg.num_tokens);
    seg.k_bits.assign(meta.begin() + layout.k_bits_offset[s],
                      meta.begin() + layout.k_bits_offset[s] + n);
    seg.v_bits.assign(meta.begin() + layout.v_bits_offset[s],
                      meta.begin() + layout.v_bits_offset[s] + n);
    regions.emplace_back(layout.k_bits_offset[s], n);
    regions.emplace_back(layout.v_bits_offset[s], n);
    seg.sections.resize(2 * static_cast<size_t>(h.num_layers));
    for (size_t i = 0; i < seg.sections.size(); ++i) {
      const auto r = ReadPod<SectionRecord>(
          meta, layout.section_records_offset[s] + i * sizeof(SectionRecord));
      seg.sections[i] = {r.offset, r.bytes, r.checksum};
    }
  }
  auto text = [&](uint64_t offset, uint64_t bytes) {
    return std::string(reinterpret_cast<const char*>(meta.data()) + offset, bytes);
  };
  m.provenance.source_agent = text(layout.source_agent_offset, h.source_agent_bytes);
  m.provenance.quant_policy = text(layout.quant_policy_offset, h.quant_policy_bytes);
  regions.emplace_back(layout.source_agent_offset, h.source_agent_bytes);
  regions.emplace_back(layout.quant_policy_offset, h.quant_policy_bytes);
  // The header's own padding is covered by its reserved-field checks.
  QKV_RETURN_IF_ERROR(CheckPadding(meta, std::move(regions), h.metadata_bytes));

  absl::Status valid = ValidateMetadata(m);
  if (!valid.ok()) return WithPrefix(valid, "malformed card: ");

  // Sections: canonical offsets and expected sizes, ending at card_bytes.
  std::vector<SegmentInfo> planned = m.segments;
  absl::StatusOr<uint64_t> card_bytes = LayoutSections(m.shape, h.metadata_bytes, &planned);
  if (!card_bytes.ok()) return WithPrefix(card_bytes.status(), "malformed card: ");
  for (size_t s = 0; s < planned.size(); ++s) {
    for (size_t i = 0; i < planned[s].sections.size(); ++i) {
      const SectionRef& want = planned[s].sections[i];
      const SectionRef& got = m.segments[s].sections[i];
      if (got.offset != want.offset || got.bytes != want.bytes) {
        return Malformed("segment ", s, " layer ", i / 2, i % 2 == 0 ? " K" : " V", " section at ",
                         got.offset, " of ", got.bytes, " bytes, expected ", want.offset, " of ",
                         want.bytes);
      }
    }
  }
  QKV_RETURN_IF_ERROR(ExpectOffset("card_bytes", h.card_bytes, *card_bytes));
  m.metadata_bytes = h.metadata_bytes;
  m.card_bytes = h.card_bytes;
  return m;
}

}  // namespace qkvshare::cachecard
