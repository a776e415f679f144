// File: cachecard/flatten.h
// -----------------------------------------------------------------------------
// Flatten: one self-contained card from a chain of incremental cards (for
// export, or to drop a long chain). The flat card holds the segments of every
// card of the chain, root first, with their section bytes and checksums
// copied byte for byte: nothing is re-quantized, and a per-channel key group
// that ended at a hop boundary stays a short group of its own segment.
// Injecting the flat card gives exactly the cache contents the chain gives.
//
// The flat card has its own content-derived id (docs/cachecard.md "Card
// id"; it differs from the leaf's, whose content is only the leaf's own
// segments plus a parent id), no parent, first_token 0, the
// leaf's fingerprint, shape, token ids, source agent, hop index, policy and
// budget, and avg_bits over all its tokens. Segments keep their
// origin_card_id and origin_hop_index.
//
// Thread safety: reentrant; the chain's cards are only read.
//
// Example:
//   QKV_ASSIGN_OR_RETURN(CardPtr flat,
//       Flatten(*leaf, &parents, {NowUnixMs()}));
#ifndef QKVSHARE_CACHECARD_FLATTEN_H_
#define QKVSHARE_CACHECARD_FLATTEN_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "cachecard/card.h"
#include "cachecard/chain.h"
#include "cachecard/io.h"
#include "cachecard/metadata.h"

namespace qkvshare::cachecard {

struct FlattenOptions {
  int64_t created_unix_ms = 0;
};

// Writes the flat card of the chain ending at `leaf` through `sink` and
// returns its metadata. Errors: those of ResolveChain; DataLoss if a section
// of the chain fails its checksum; InvalidArgument "Flatten: ..." if the
// options are invalid or the result would exceed kMaxSegments segments.
absl::StatusOr<CardMetadata> WriteFlatCard(const Card& leaf, const CardResolver* parents,
                                           const FlattenOptions& options, CardSink& sink);

// As WriteFlatCard, into memory.
absl::StatusOr<CardPtr> Flatten(const Card& leaf, const CardResolver* parents,
                                const FlattenOptions& options);

}  // namespace qkvshare::cachecard

#endif  // QKVSHARE_CACHECARD_FLATTEN_H_
