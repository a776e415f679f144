// File: daemon/card_listing.h
// -----------------------------------------------------------------------------
// What CardService.ListCards / GetCard report of stored cards, read from the
// shared-memory store (cachecard/shm/card_store.h) while other threads use
// it: RPC threads storing, fetching and removing cards, and the store's
// expiry timer dropping expired ones at any moment. Each card is held
// (CardStore::Peek) while its metadata and its parent chain are read, so it
// cannot be dropped under the reader; a listing does not count as a use of
// the card (LRU order and idle time unchanged). Proto-free: server_core.cc
// turns a CardListing into a v1::CardInfo.
//
// Thread safety: thread-safe (the store is).
//
// Example:
//   for (const CardListing& c : ListStoredCards(*store)) {
//     std::cout << c.summary.card_id << " " << c.chain_bytes << "\n";
//   }
#ifndef QKVSHARE_DAEMON_CARD_LISTING_H_
#define QKVSHARE_DAEMON_CARD_LISTING_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "cachecard/ids.h"
#include "cachecard/inspect.h"
#include "cachecard/shm/card_store.h"

namespace qkvshare::daemon {

// One stored card, as read at one moment.
struct CardListing {
  cachecard::shm::StoredCardInfo stored;  // the store's bookkeeping (List())
  cachecard::CardSummary summary;         // Summarize() of its metadata
  uint32_t format_version = 0;            // CardMetadata::format_version
  // card_bytes of the card and all its ancestors (what injecting it maps).
  int64_t chain_bytes = 0;
  // [num_layers]: bytes of the layer's K (V) sections over all segments.
  std::vector<int64_t> layer_k_bytes;
  std::vector<int64_t> layer_v_bytes;
};

// Every stored card, least recently used first. A card dropped between
// listing the store and reading it is left out.
std::vector<CardListing> ListStoredCards(cachecard::shm::CardStore& store);

// Stored card `id`. Errors: NotFound.
absl::StatusOr<CardListing> DescribeStoredCard(cachecard::shm::CardStore& store,
                                               const cachecard::CardId& id);

}  // namespace qkvshare::daemon

#endif  // QKVSHARE_DAEMON_CARD_LISTING_H_
