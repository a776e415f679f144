// File: cachecard/content_id.h
// -----------------------------------------------------------------------------
// Content-derived card ids (docs/cachecard.md "Card id"): a card's id is the
// first 16 bytes of SHA-256 over what the card holds (format version, model
// fingerprint, parent id, KV shape, token ids, every segment's encoding
// parameters and bit widths, and the SHA-256 of every section), so the same
// context encoded the same way has the same id in any daemon lifetime and on
// any machine, and an id that does not match its content is detectable.
// Provenance (source agent, hop index, creation time, policy name, budget,
// origin ids of segments) and checksums are not part of the id.
//
// Writers (BuildCard, Flatten) derive the id while they write
// (cachecard/card_writer.h); readers that take a card from outside (import)
// call VerifyContentId. Also here: the token digest a lookup by id checks,
// and SameContent for deduplicating a card that is already stored.
//
// Thread safety: pure functions; reentrant (OpenSSL's EVP digests).
//
// Example:
//   QKV_RETURN_IF_ERROR(VerifyContentId(*imported));   // InvalidArgument if forged
//   Sha256 expect = DigestTokens(ids);
//   if (DigestTokens(card.metadata().token_ids) != expect) ...
#ifndef QKVSHARE_CACHECARD_CONTENT_ID_H_
#define QKVSHARE_CACHECARD_CONTENT_ID_H_

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "cachecard/card.h"
#include "cachecard/ids.h"
#include "cachecard/metadata.h"

namespace qkvshare::cachecard {

// A SHA-256 digest (32 bytes).
using Sha256 = std::array<uint8_t, 32>;

// The 20 ASCII bytes (with the terminating NUL) that start the id preimage.
inline constexpr char kCardIdDomain[] = "qkvshare.card-id.v2";
static_assert(sizeof(kCardIdDomain) == 20);

// SHA-256 of `bytes`.
Sha256 Sha256Of(absl::Span<const uint8_t> bytes);

// Lowercase hex of a digest (64 digits).
std::string Sha256Hex(const Sha256& digest);

// SHA-256 of the token ids as little-endian u32 (4 bytes per id). The token
// digest a lookup by id compares (cachecard/shm/card_store.h).
Sha256 DigestTokens(absl::Span<const int32_t> token_ids);

// The id of a card with metadata `m` (its provenance and checksums are not
// read) whose sections have the SHA-256 digests `section_digests`, in card
// order: segment 0 layer 0 K, V, layer 1 K, V, ..., then segment 1, ...
// REQUIRES: m passed ValidateMetadata (except for its own id) and
// section_digests.size() == 2 * num_layers * num_segments.
CardId ContentCardId(const CardMetadata& m, absl::Span<const Sha256> section_digests);

// ContentCardId of `card`, hashing its section bytes.
CardId ComputeContentId(const Card& card);

// OK if `card`'s id is ContentCardId of its content. Errors:
// InvalidArgument "card id <id> does not match its content (the content
// hashes to <id'>): ..." (a forged or re-labelled card).
absl::Status VerifyContentId(const Card& card);

// True if `a` and `b` hold the same content: every field ContentCardId
// reads and every section byte are equal (provenance may differ). Used to
// accept a card whose id is already stored only when it is the same card.
bool SameContent(const Card& a, const Card& b);

}  // namespace qkvshare::cachecard

#endif  // QKVSHARE_CACHECARD_CONTENT_ID_H_
