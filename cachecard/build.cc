#include "cachecard/build.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "cachecard/card_writer.h"
#include "cachecard/section_codec.h"

namespace qkvshare::cachecard {
namespace {

absl::Status BuildError(absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat("BuildCard: ", message));
}

// Checks the inputs that ValidateMetadata cannot see (the cache, the parent).
absl::Status CheckInputs(const agents::KvCache& cache, int64_t num_tokens,
                         absl::Span<const int32_t> token_ids, const CardEncoding& encoding,
                         const ModelFingerprint& fingerprint, const Card* parent) {
  if (num_tokens < 1 || num_tokens > cache.length()) {
    return BuildError(absl::StrCat("num_tokens ", num_tokens, " outside 1..", cache.length(),
                                   " (the cache's length)"));
  }
  if (static_cast<int64_t>(token_ids.size()) != num_tokens) {
    return BuildError(absl::StrCat(token_ids.size(), " token ids for ", num_tokens, " tokens"));
  }
  int64_t first = 0;
  if (parent != nullptr) {
    const CardMetadata& p = parent->metadata();
    first = p.total_tokens();
    if (first >= num_tokens) {
      return BuildError(absl::StrCat("parent ", p.card_id().ToHex(), " already covers ", first,
                                     " tokens; nothing new in ", num_tokens));
    }
    if (p.fingerprint != fingerprint) {
      return BuildError(absl::StrCat("parent ", p.card_id().ToHex(),
                                     " was built for model fingerprint ",
                                     FingerprintHex(p.fingerprint)));
    }
    if (!(p.shape == cache.shape())) {
      return BuildError(
          absl::StrCat("parent ", p.card_id().ToHex(), " has another KV shape than the cache"));
    }
    for (int64_t i = 0; i < first; ++i) {
      if (p.token_ids[i] != token_ids[i]) {
        return BuildError(absl::StrCat("token id ", token_ids[i], " at position ", i,
                                       " differs from the parent's ", p.token_ids[i]));
      }
    }
  }
  if (encoding.mode == CardMode::kQuantized) {
    const quant::BitPlan& plan = encoding.plan;
    if (plan.num_tokens() != num_tokens - first ||
        static_cast<int64_t>(plan.v_bits.size()) != num_tokens - first) {
      return BuildError(absl::StrCat(
          "bit plan has ", plan.k_bits.size(), " K and ", plan.v_bits.size(), " V widths for the ",
          num_tokens - first, " tokens the card carries (", first, "..", num_tokens - 1, ")"));
    }
  } else if (encoding.mode != CardMode::kFull) {
    return BuildError("unknown encoding mode");
  }
  return absl::OkStatus();
}

absl::StatusOr<CardMetadata> Describe(const agents::KvCache& cache, int64_t num_tokens,
                                      absl::Span<const int32_t> token_ids,
                                      const CardEncoding& encoding,
                                      const ModelFingerprint& fingerprint,
                                      const Provenance& provenance, const Card* parent) {
  QKV_RETURN_IF_ERROR(CheckInputs(cache, num_tokens, token_ids, encoding, fingerprint, parent));
  CardMetadata m;
  m.fingerprint = fingerprint;
  m.shape = cache.shape();
  m.source_dtype = cache.dtype();
  if (parent != nullptr) {
    m.parent_id = parent->id();
    m.first_token = parent->metadata().total_tokens();
  }
  m.num_tokens = num_tokens - m.first_token;
  m.token_ids.assign(token_ids.begin(), token_ids.end());
  m.provenance = provenance;
  m.provenance.card_id = PendingCardId();  // derived from the content by WritePlannedCard

  SegmentInfo seg;
  seg.first_token = m.first_token;
  seg.num_tokens = m.num_tokens;
  seg.mode = encoding.mode;
  seg.origin_card_id = m.provenance.card_id;
  seg.origin_hop_index = provenance.hop_index;
  if (encoding.mode == CardMode::kFull) {
    seg.raw_dtype = cache.dtype();
    const auto bits = static_cast<uint8_t>(8 * DTypeSize(cache.dtype()));
    seg.k_bits.assign(m.num_tokens, bits);
    seg.v_bits.assign(m.num_tokens, bits);
  } else {
    seg.k_group = encoding.k_group;
    seg.v_group = encoding.v_group;
    seg.k_bits = encoding.plan.k_bits;
    seg.v_bits = encoding.plan.v_bits;
  }
  m.segments.push_back(std::move(seg));
  m.avg_bits = AverageBits(m.segments);
  return m;
}

}  // namespace

absl::StatusOr<CardMetadata> WriteCard(const agents::KvCache& cache, int64_t num_tokens,
                                       absl::Span<const int32_t> token_ids,
                                       const CardEncoding& encoding,
                                       const ModelFingerprint& fingerprint,
                                       const Provenance& provenance, const Card* parent,
                                       CardSink& sink) {
  QKV_ASSIGN_OR_RETURN(CardMetadata m, Describe(cache, num_tokens, token_ids, encoding, fingerprint,
                                                provenance, parent));
  absl::StatusOr<MetadataLayout> layout = PlanLayout(&m);
  if (!layout.ok()) return BuildError(layout.status().message());
  auto encode = [&](size_t s, size_t i, absl::Span<uint8_t> out) {
    return EncodeSection(cache, m.segments[s], static_cast<int>(i / 2), i % 2 == 0, out);
  };
  absl::Status written = WritePlannedCard(&m, *layout, encode, /*first_own_segment=*/0, sink);
  if (!written.ok()) {
    return absl::Status(written.code(), absl::StrCat("BuildCard: ", written.message()));
  }
  return m;
}

absl::StatusOr<CardPtr> BuildCard(const agents::KvCache& cache, int64_t num_tokens,
                                  absl::Span<const int32_t> token_ids, const CardEncoding& encoding,
                                  const ModelFingerprint& fingerprint, const Provenance& provenance,
                                  const Card* parent) {
  BufferSink sink;
  QKV_RETURN_IF_ERROR(
      WriteCard(cache, num_tokens, token_ids, encoding, fingerprint, provenance, parent, sink)
          .status());
  return Card::FromBuffer(sink.TakeBuffer(), Card::Verify::kMetadataOnly);
}

}  // namespace qkvshare::cachecard
