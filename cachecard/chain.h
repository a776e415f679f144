// File: cachecard/chain.h
// -----------------------------------------------------------------------------
// Chains of incremental cards. A card with first_token > 0 names its parent
// (parent_id), which covers positions [0, first_token); the parent may itself
// be incremental. ResolveChain() walks the parents through a CardResolver and
// checks every link, so injection and flatten can trust the chain.
//
// Ownership: resolvers hand out non-owning pointers; whoever implements one
// documents how long they stay valid (the shm store: while the caller holds a
// handle to a descendant, since a child pins its parent).
//
// Thread safety: CardSet is not synchronized (build it, then read it from any
// number of threads).
//
// Example:
//   CardSet parents;
//   parents.Add(hop1.get());
//   parents.Add(hop2.get());
//   QKV_ASSIGN_OR_RETURN(std::vector<const Card*> chain, ResolveChain(*hop3, &parents));
//   // chain == {hop1, hop2, hop3}
#ifndef QKVSHARE_CACHECARD_CHAIN_H_
#define QKVSHARE_CACHECARD_CHAIN_H_

#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "cachecard/card.h"
#include "cachecard/ids.h"

namespace qkvshare::cachecard {

// Finds cards by id (the parents of an incremental card).
class CardResolver {
 public:
  virtual ~CardResolver() = default;
  // The card with `id`, or nullptr when unknown.
  virtual const Card* Find(const CardId& id) const = 0;
};

// A resolver over cards the caller keeps alive.
class CardSet final : public CardResolver {
 public:
  // Adds (or replaces) the card under its id. REQUIRES: `card` outlives the set.
  void Add(const Card* card) { cards_[card->id()] = card; }
  const Card* Find(const CardId& id) const override;

 private:
  absl::flat_hash_map<CardId, const Card*> cards_;
};

// The chain ending at `leaf`, root first: {root, ..., leaf}; just {leaf} for a
// self-contained card (`resolver` may then be null). Checks every link: the
// parent exists, ends exactly where its child starts, has the same
// fingerprint and KV shape, and the same token ids for the shared prefix.
// Errors: NotFound "parent card <id> of card <id>"; FailedPrecondition
// "chain: ..." for a broken link or more than kMaxChainLength cards.
absl::StatusOr<std::vector<const Card*>> ResolveChain(const Card& leaf,
                                                      const CardResolver* resolver);

}  // namespace qkvshare::cachecard

#endif  // QKVSHARE_CACHECARD_CHAIN_H_
