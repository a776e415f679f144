// File: cachecard/build.h
// -----------------------------------------------------------------------------
// Building a CacheCard from an agent's KvCache (the sending side of a
// handoff). The card carries positions [first, num_tokens) of the cache:
// first = 0 for a self-contained card, or first = parent's total_tokens() for
// an incremental card that references `parent` for the prefix, so that in a
// multi-hop handoff every token is quantized exactly once.
//
// Encodings (docs/cachecard.md "Modes"):
//   - CardEncoding::Full(): the cache's own dtype, raw (the full-precision
//     KV transfer baseline; injecting into a cache of the same dtype restores
//     it bit for bit);
//   - CardEncoding::Quantized(plan, k_group, v_group): quant::Quantize with
//     the plan's per-token K and V widths (2..8 or 16) for the carried tokens.
//
// The cache is only read. Building is deterministic: the same inputs give
// the same bytes. The card's id is derived from its content
// (cachecard/content_id.h, docs/cachecard.md "Card id"): the same context
// at the same encoding gets the same id, whatever the provenance says.
//
// Thread safety: reentrant; the caller keeps the cache unchanged meanwhile
// (its owner serializes build with prefill/decode).
//
// Example (hop 2 of a handoff, incremental on hop 1's card):
//   CardEncoding enc = CardEncoding::Quantized(controller_plan);
//   Provenance prov{/*card_id=*/{}, "writer", /*hop_index=*/2, NowUnixMs(),
//                   "importance", /*budget_bits=*/3.0};
//   QKV_ASSIGN_OR_RETURN(CardPtr card, BuildCard(cache, cache.length(), ids, enc,
//                                                fingerprint, prov, hop1_card));
#ifndef QKVSHARE_CACHECARD_BUILD_H_
#define QKVSHARE_CACHECARD_BUILD_H_

#include <cstdint>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "agents/kv_cache.h"
#include "cachecard/card.h"
#include "cachecard/io.h"
#include "cachecard/metadata.h"
#include "quant/bit_plan.h"
#include "quant/kernels.h"

namespace qkvshare::cachecard {

// How a card encodes its tokens.
struct CardEncoding {
  CardMode mode = CardMode::kQuantized;
  // kQuantized: K and V widths of the tokens the card carries (size =
  // num_tokens - first); avg_bits is ignored (the card records the actual one).
  quant::BitPlan plan;
  // kQuantized: KIVI grouping, keys per-channel, values per-token.
  quant::GroupSpec k_group{quant::GroupAxis::kPerChannel, 32};
  quant::GroupSpec v_group{quant::GroupAxis::kPerToken, 32};

  static CardEncoding Full() {
    CardEncoding e;
    e.mode = CardMode::kFull;
    return e;
  }
  static CardEncoding Quantized(quant::BitPlan plan,
                                quant::GroupSpec k_group = {quant::GroupAxis::kPerChannel, 32},
                                quant::GroupSpec v_group = {quant::GroupAxis::kPerToken, 32}) {
    CardEncoding e;
    e.plan = std::move(plan);
    e.k_group = k_group;
    e.v_group = v_group;
    return e;
  }
};

// Builds a card of positions [0, num_tokens) of `cache` in memory.
// provenance.card_id is ignored; the card's id is content-derived.
//   token_ids [num_tokens]: the context's token ids (positions 0..num_tokens-1);
//   parent: null for a self-contained card, else the card this one extends
//     (it must cover a strict prefix of the context: same fingerprint and KV
//     shape, token ids equal to the first parent->total_tokens() ids).
// Errors: InvalidArgument "BuildCard: ..." for num_tokens outside
// 1..cache.length(), a token id count, plan size, width or group spec that
// does not fit, a provenance field out of range, a parent that does not
// match, or a NaN/Inf in the cache (from quant::Quantize, naming token and
// channel); ResourceExhausted when memory cannot be allocated.
absl::StatusOr<CardPtr> BuildCard(const agents::KvCache& cache, int64_t num_tokens,
                                  absl::Span<const int32_t> token_ids, const CardEncoding& encoding,
                                  const ModelFingerprint& fingerprint, const Provenance& provenance,
                                  const Card* parent = nullptr);

// As BuildCard, writing the card through `sink` (a shm segment, a file, a
// CountingSink for the size alone). Returns the card's metadata. On error the
// sink holds an incomplete card (Finish() was not called).
absl::StatusOr<CardMetadata> WriteCard(const agents::KvCache& cache, int64_t num_tokens,
                                       absl::Span<const int32_t> token_ids,
                                       const CardEncoding& encoding,
                                       const ModelFingerprint& fingerprint,
                                       const Provenance& provenance, const Card* parent,
                                       CardSink& sink);

}  // namespace qkvshare::cachecard

#endif  // QKVSHARE_CACHECARD_BUILD_H_
