#include "daemon/card_listing.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "cachecard/card.h"
#include "cachecard/metadata.h"

namespace qkvshare::daemon {

namespace {

using cachecard::shm::CardHandle;
using cachecard::shm::CardStore;
using cachecard::shm::StoredCardInfo;

// Reads `card`, which the caller holds (so its ancestors stay stored too:
// a child pins its parent).
CardListing Describe(const CardStore& store, StoredCardInfo stored, const cachecard::Card& card) {
  const cachecard::CardMetadata& m = card.metadata();
  CardListing out;
  out.stored = std::move(stored);
  out.summary = cachecard::Summarize(m);
  out.format_version = m.format_version;
  for (const cachecard::Card* c = &card; c != nullptr;) {
    out.chain_bytes += static_cast<int64_t>(c->metadata().card_bytes);
    c = c->metadata().parent_id.IsZero() ? nullptr : store.Find(c->metadata().parent_id);
  }
  // The summary gives K + V per layer; split them by the sections of every segment.
  for (uint32_t l = 0; l < static_cast<uint32_t>(m.shape.num_layers); ++l) {
    int64_t kb = 0, vb = 0;
    for (const cachecard::SegmentInfo& seg : m.segments) {
      kb += static_cast<int64_t>(cachecard::ExpectedSectionBytes(m.shape, seg, true));
      vb += static_cast<int64_t>(cachecard::ExpectedSectionBytes(m.shape, seg, false));
    }
    out.layer_k_bytes.push_back(kb);
    out.layer_v_bytes.push_back(vb);
  }
  return out;
}

}  // namespace

std::vector<CardListing> ListStoredCards(CardStore& store) {
  std::vector<CardListing> out;
  for (StoredCardInfo& s : store.List()) {
    // Held while read: the expiry timer or another RPC may drop it otherwise.
    absl::StatusOr<CardHandle> held = store.Peek(s.id);
    if (!held.ok()) continue;  // dropped since List()
    out.push_back(Describe(store, std::move(s), **held));
  }
  return out;
}

absl::StatusOr<CardListing> DescribeStoredCard(CardStore& store, const cachecard::CardId& id) {
  for (StoredCardInfo& s : store.List()) {
    if (s.id != id) continue;
    absl::StatusOr<CardHandle> held = store.Peek(id);
    if (!held.ok()) break;  // dropped since List()
    return Describe(store, std::move(s), **held);
  }
  return absl::NotFoundError(absl::StrCat("no card '", id.ToHex(), "'"));
}

}  // namespace qkvshare::daemon
