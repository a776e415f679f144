#include "cachecard/inspect.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace qkvshare::cachecard {
namespace {

std::string Histogram(const std::map<int, int64_t>& h) {
  std::vector<std::string> parts;
  for (const auto& [bits, count] : h) parts.push_back(absl::StrCat(bits, "b:", count));
  return absl::StrJoin(parts, " ");
}

const char* AxisName(quant::GroupAxis axis) {
  return axis == quant::GroupAxis::kPerChannel ? "per-channel" : "per-token";
}

}  // namespace

CardSummary Summarize(const CardMetadata& m) {
  CardSummary s;
  s.card_id = m.card_id().ToHex();
  if (!m.parent_id.IsZero()) s.parent_id = m.parent_id.ToHex();
  s.fingerprint = FingerprintHex(m.fingerprint);
  s.shape = m.shape;
  s.source_dtype = m.source_dtype;
  s.first_token = m.first_token;
  s.num_tokens = m.num_tokens;
  s.total_tokens = m.total_tokens();
  s.layer_bytes.assign(m.shape.num_layers, 0);
  for (const SegmentInfo& seg : m.segments) {
    SegmentSummary out;
    out.first_token = seg.first_token;
    out.num_tokens = seg.num_tokens;
    out.mode = seg.mode;
    out.raw_dtype = seg.raw_dtype;
    out.k_group = seg.k_group;
    out.v_group = seg.v_group;
    out.origin_card_id = seg.origin_card_id.ToHex();
    out.origin_hop_index = seg.origin_hop_index;
    for (size_t i = 0; i < seg.sections.size(); ++i) {
      out.section_bytes += seg.sections[i].bytes;
      s.layer_bytes[i / 2] += seg.sections[i].bytes;
    }
    for (uint8_t b : seg.k_bits) ++s.k_bits_histogram[b];
    for (uint8_t b : seg.v_bits) ++s.v_bits_histogram[b];
    s.segments.push_back(out);
  }
  s.metadata_bytes = m.metadata_bytes;
  s.card_bytes = m.card_bytes;
  s.avg_bits = m.avg_bits;
  const double elements =
      2.0 * m.shape.num_layers * m.shape.channels() * static_cast<double>(m.num_tokens);
  if (elements > 0) {
    s.effective_bits = 8.0 * static_cast<double>(m.card_bytes) / elements;
    s.fp16_ratio = static_cast<double>(m.card_bytes) / (2.0 * elements);
  }
  s.provenance = m.provenance;
  return s;
}

std::string FormatSummary(const CardSummary& s) {
  std::string out;
  absl::StrAppend(&out, "card: ", s.card_id, "\n");
  absl::StrAppend(&out, "parent: ", s.parent_id.empty() ? "(none)" : s.parent_id, "\n");
  absl::StrAppend(&out, "model fingerprint: ", s.fingerprint, "\n");
  absl::StrAppend(&out, "kv shape: ", s.shape.num_layers, " layers, ", s.shape.num_kv_heads,
                  " kv heads, head_dim ", s.shape.head_dim, ", source dtype ",
                  std::string(DTypeName(s.source_dtype)), "\n");
  absl::StrAppend(&out, "tokens: ", s.num_tokens, " carried (positions ", s.first_token, "..",
                  s.total_tokens - 1, "), context ", s.total_tokens, "\n");
  absl::StrAppend(
      &out, "bytes: ", s.card_bytes, " (metadata ", s.metadata_bytes, ")",
      absl::StrFormat(", %.3f bits/element effective, %.4f x fp16", s.effective_bits, s.fp16_ratio),
      "\n");
  absl::StrAppend(&out, absl::StrFormat("avg code bits: %.4f\n", s.avg_bits));
  absl::StrAppend(&out, "k bits: ", Histogram(s.k_bits_histogram), "\n");
  absl::StrAppend(&out, "v bits: ", Histogram(s.v_bits_histogram), "\n");
  for (size_t i = 0; i < s.segments.size(); ++i) {
    const SegmentSummary& g = s.segments[i];
    absl::StrAppend(&out, "segment ", i, ": tokens ", g.first_token, "..",
                    g.first_token + g.num_tokens - 1, ", ");
    if (g.mode == CardMode::kFull) {
      absl::StrAppend(&out, "full ", std::string(DTypeName(g.raw_dtype)));
    } else {
      absl::StrAppend(&out, "quantized K ", AxisName(g.k_group.axis), " G=", g.k_group.group_size,
                      ", V ", AxisName(g.v_group.axis), " G=", g.v_group.group_size);
    }
    absl::StrAppend(&out, ", ", g.section_bytes, " bytes, from card ", g.origin_card_id, " (hop ",
                    g.origin_hop_index, ")\n");
  }
  absl::StrAppend(&out, "bytes per layer: ", absl::StrJoin(s.layer_bytes, " "), "\n");
  const Provenance& p = s.provenance;
  absl::StrAppend(&out, "source agent: ", p.source_agent, ", hop ", p.hop_index, ", created ",
                  p.created_unix_ms, " ms\n");
  absl::StrAppend(&out, "policy: ", p.quant_policy.empty() ? "(none)" : p.quant_policy,
                  absl::StrFormat(", budget %.3f bits\n", p.budget_bits));
  return out;
}

}  // namespace qkvshare::cachecard
