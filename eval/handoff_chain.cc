#include "eval/handoff_chain.h"

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "cachecard/chain.h"
#include "cachecard/inject.h"
#include "cachecard/metadata.h"

namespace qkvshare::eval {
namespace {

absl::StatusOr<std::unique_ptr<agents::Sequence>> NewAgent(const agents::ModelHandle& model,
                                                           int64_t tokens) {
  agents::SequenceOptions opts;
  opts.initial_capacity = tokens;
  return agents::Sequence::Create(model, opts);
}

// Appends the widths of `card`'s own tokens (one segment: a freshly built card).
void AppendBits(const cachecard::Card& card, std::vector<uint8_t>* k, std::vector<uint8_t>* v) {
  for (const cachecard::SegmentInfo& s : card.metadata().segments) {
    k->insert(k->end(), s.k_bits.begin(), s.k_bits.end());
    v->insert(v->end(), s.v_bits.begin(), s.v_bits.end());
  }
}

}  // namespace

std::vector<int64_t> SplitIntoHops(int64_t context_tokens, int num_hops) {
  std::vector<int64_t> ends(num_hops);
  for (int h = 0; h < num_hops; ++h) ends[h] = (h + 1) * context_tokens / num_hops;
  return ends;
}

double HandoffChain::avg_bits() const {
  if (k_bits_.empty()) return 0;
  double sum = 0;
  for (size_t i = 0; i < k_bits_.size(); ++i) sum += k_bits_[i] + v_bits_[i];
  return sum / (2.0 * static_cast<double>(k_bits_.size()));
}

uint64_t HandoffChain::card_bytes() const {
  uint64_t sum = 0;
  for (const cachecard::CardPtr& c : cards_) sum += c->metadata().card_bytes;
  return sum;
}

absl::Status HandoffChain::InjectInto(agents::Sequence& seq) const {
  if (cards_.empty()) return absl::FailedPreconditionError("InjectInto: empty handoff chain");
  cachecard::CardSet parents;
  for (const cachecard::CardPtr& c : cards_) parents.Add(c.get());
  const cachecard::Card& leaf = *cards_.back();
  seq.Reset();
  QKV_RETURN_IF_ERROR(
      cachecard::InjectCard(leaf, &parents, seq.model().fingerprint().bytes, &seq.kv_cache()));
  return seq.SetTokensAfterInjection(leaf.metadata().token_ids);
}

absl::StatusOr<HandoffChain> RunHandoffChain(const agents::ModelHandle& model,
                                             absl::Span<const int32_t> context, int num_hops,
                                             const ChainOptions& options,
                                             const BitPlanner& planner) {
  const int64_t total = static_cast<int64_t>(context.size());
  if (num_hops < 1 || num_hops > total) {
    return absl::InvalidArgumentError(
        absl::StrCat("RunHandoffChain: ", num_hops, " hops for a context of ", total, " tokens"));
  }
  const std::vector<int64_t> ends = SplitIntoHops(total, num_hops);
  // Card ids only name cards; a fixed seed keeps runs reproducible.
  absl::InsecureBitGen gen(std::seed_seq{20240601});
  HandoffChain chain;
  int64_t first = 0;
  for (int h = 0; h < num_hops; ++h) {
    QKV_ASSIGN_OR_RETURN(std::unique_ptr<agents::Sequence> agent, NewAgent(model, total));
    if (h > 0 && options.full_precision_prefix) {
      QKV_RETURN_IF_ERROR(agent->Append(context.first(first), agents::LogitsMode::kNone).status());
    } else if (h > 0) {
      QKV_RETURN_IF_ERROR(chain.InjectInto(*agent));
    }
    if (options.capture_window > 0) agent->EnableAttentionCapture(options.capture_window);
    QKV_RETURN_IF_ERROR(
        agent->Append(context.subspan(first, ends[h] - first), agents::LogitsMode::kNone).status());
    absl::StatusOr<cachecard::CardEncoding> enc =
        planner(HopState{*agent, first, h, num_hops, total});
    if (!enc.ok()) {
      return absl::Status(enc.status().code(),
                          absl::StrCat("hop ", h, " planner: ", enc.status().message()));
    }
    cachecard::Provenance prov;
    prov.card_id = cachecard::CardId::Random(gen);
    prov.source_agent = absl::StrCat("eval-hop-", h);
    prov.hop_index = static_cast<uint32_t>(h);
    prov.quant_policy = enc->mode == cachecard::CardMode::kFull ? "full" : "eval";
    prov.budget_bits = enc->mode == cachecard::CardMode::kFull ? 0 : enc->plan.avg_bits;
    const cachecard::Card* parent = h > 0 ? chain.cards_.back().get() : nullptr;
    QKV_ASSIGN_OR_RETURN(cachecard::CardPtr card,
                         cachecard::BuildCard(agent->kv_cache(), ends[h], agent->token_ids(), *enc,
                                              model->fingerprint().bytes, prov, parent));
    AppendBits(*card, &chain.k_bits_, &chain.v_bits_);
    chain.cards_.push_back(std::move(card));
    first = ends[h];
  }
  return chain;
}

}  // namespace qkvshare::eval
