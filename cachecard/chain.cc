#include "cachecard/chain.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace qkvshare::cachecard {

const Card* CardSet::Find(const CardId& id) const {
  auto it = cards_.find(id);
  return it == cards_.end() ? nullptr : it->second;
}

absl::StatusOr<std::vector<const Card*>> ResolveChain(const Card& leaf,
                                                      const CardResolver* resolver) {
  std::vector<const Card*> chain = {&leaf};
  const CardMetadata& leaf_m = leaf.metadata();
  while (chain.back()->metadata().first_token > 0) {
    const CardMetadata& child = chain.back()->metadata();
    if (chain.size() >= static_cast<size_t>(kMaxChainLength)) {
      return absl::FailedPreconditionError(absl::StrCat("chain: card ", leaf_m.card_id().ToHex(),
                                                        " has more than ", kMaxChainLength,
                                                        " ancestors"));
    }
    const Card* parent = resolver == nullptr ? nullptr : resolver->Find(child.parent_id);
    if (parent == nullptr) {
      return absl::NotFoundError(absl::StrCat("parent card ", child.parent_id.ToHex(), " of card ",
                                              child.card_id().ToHex(), " not found"));
    }
    const CardMetadata& p = parent->metadata();
    const std::string link =
        absl::StrCat("chain: parent ", p.card_id().ToHex(), " of card ", child.card_id().ToHex());
    if (p.total_tokens() != child.first_token) {
      return absl::FailedPreconditionError(absl::StrCat(
          link, " ends at token ", p.total_tokens(), ", the child starts at ", child.first_token));
    }
    if (p.fingerprint != leaf_m.fingerprint) {
      return absl::FailedPreconditionError(
          absl::StrCat(link, " has model fingerprint ", FingerprintHex(p.fingerprint),
                       ", the leaf ", FingerprintHex(leaf_m.fingerprint)));
    }
    if (!(p.shape == leaf_m.shape)) {
      return absl::FailedPreconditionError(absl::StrCat(link, " has another KV shape"));
    }
    // The leaf holds the whole context's ids; every ancestor must agree on its prefix.
    auto mismatch = std::mismatch(p.token_ids.begin(), p.token_ids.end(), leaf_m.token_ids.begin());
    if (mismatch.first != p.token_ids.end()) {
      const auto pos = mismatch.first - p.token_ids.begin();
      return absl::FailedPreconditionError(absl::StrCat(link, " has token id ", *mismatch.first,
                                                        " at position ", pos, ", the leaf ",
                                                        *mismatch.second));
    }
    chain.push_back(parent);
  }
  std::reverse(chain.begin(), chain.end());
  return chain;
}

}  // namespace qkvshare::cachecard
