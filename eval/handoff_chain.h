// File: eval/handoff_chain.h
// -----------------------------------------------------------------------------
// A multi-hop KV handoff of one fixed context, simulated the way the daemon
// runs it (daemon/handoff/handoff.cc), for the fidelity evaluation:
//
//   The context (token ids) is split into `num_hops` contiguous chunks
//   (SplitIntoHops). Hop h's agent is a fresh Sequence that
//     1. injects the chain of cards built by hops 0..h-1 (nothing at hop 0),
//        so its cache holds the context so far, dequantized;
//     2. records attention (Sequence::EnableAttentionCapture) and appends the
//        hop's chunk, teacher-forced (no sampling);
//     3. asks a BitPlanner for the encoding of ONLY its new tokens, from its
//        own attention capture and cache;
//     4. builds an incremental card of those tokens chained on hop h-1's card
//        (tokens of earlier hops keep their codes: never re-quantized).
//   The consumer of the last card injects the whole chain (InjectInto).
//
// Hop numbering is the controller's (quant::AllocationRequest): hop h of
// num_hops handoffs, 0 <= h < num_hops; the daemon's workflow of W agents
// has num_hops = W - 1 handoffs.
//
// Ownership: a HandoffChain owns its cards. Thread safety: none needed (no
// shared state); one chain per thread.
//
// Example:
//   BitPlanner planner = DaemonPlanner({.avg_bits = 3.0});
//   QKV_ASSIGN_OR_RETURN(HandoffChain chain,
//                        RunHandoffChain(model, context_ids, /*num_hops=*/4, {}, planner));
//   QKV_ASSIGN_OR_RETURN(auto consumer, agents::Sequence::Create(model));
//   QKV_RETURN_IF_ERROR(chain.InjectInto(*consumer));   // length() == context size
#ifndef QKVSHARE_EVAL_HANDOFF_CHAIN_H_
#define QKVSHARE_EVAL_HANDOFF_CHAIN_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "agents/model.h"
#include "agents/sequence.h"
#include "cachecard/build.h"
#include "cachecard/card.h"

namespace qkvshare::eval {

// What a hop's planner sees: the hop's agent after it appended its chunk.
struct HopState {
  // The hop's agent: its cache holds the context so far (positions
  // [0, seq.length())), its attention capture the last queries of the chunk.
  const agents::Sequence& seq;
  // Tokens [0, first) came in the upstream card chain; [first, length()) are
  // this hop's new tokens, the ones the card encodes.
  int64_t first = 0;
  int hop = 0;       // 0-based
  int num_hops = 1;  // handoffs in the chain
  // Tokens of the whole handed-off context; hop h's chunk is
  // SplitIntoHops(context_tokens, num_hops) (known in advance, like num_hops).
  int64_t context_tokens = 0;
};

// Chooses the encoding of a hop's new tokens (mode, per-token widths and
// group specs). For kQuantized, plan sizes must equal the new token count.
using BitPlanner = std::function<absl::StatusOr<cachecard::CardEncoding>(const HopState&)>;

// Chunk ends of `context_tokens` split into `num_hops` hops: hop h covers
// [ends[h-1], ends[h]) (ends[-1] = 0), ends[h] = floor((h + 1) * T / H), so
// chunk sizes differ by at most one token. REQUIRES: 1 <= num_hops <= T.
std::vector<int64_t> SplitIntoHops(int64_t context_tokens, int num_hops);

struct ChainOptions {
  // Query positions each hop's agent records (Sequence::EnableAttentionCapture);
  // the planner may use fewer. 0: no capture.
  int capture_window = 4;
  // Diagnostic, not what the daemon does: each hop's agent prefills the whole
  // context so far at full precision instead of injecting the upstream cards,
  // so its new tokens' K/V carry no error from the quantized prefix. The
  // difference to the default isolates that drift from the quantization error
  // of the cards themselves (the consumer always injects the card chain).
  bool full_precision_prefix = false;
};

// The cards of one simulated handoff and what they cost.
class HandoffChain {
 public:
  // Hop order: cards()[h] encodes hop h's tokens and chains on cards()[h-1].
  const std::vector<cachecard::CardPtr>& cards() const { return cards_; }
  // Mean code bits per element over every context token, K and V.
  double avg_bits() const;
  // Sum of the cards' sizes in bytes (metadata + sections).
  uint64_t card_bytes() const;
  // Per-token widths of the whole context, in position order ([T]).
  const std::vector<uint8_t>& k_bits() const { return k_bits_; }
  const std::vector<uint8_t>& v_bits() const { return v_bits_; }

  // Injects the whole chain into `seq` (any previous contents are replaced)
  // and declares its token ids. Errors: those of cachecard::InjectCard and
  // Sequence::SetTokensAfterInjection.
  absl::Status InjectInto(agents::Sequence& seq) const;

 private:
  friend absl::StatusOr<HandoffChain> RunHandoffChain(const agents::ModelHandle&,
                                                      absl::Span<const int32_t>, int,
                                                      const ChainOptions&, const BitPlanner&);
  std::vector<cachecard::CardPtr> cards_;
  std::vector<uint8_t> k_bits_;
  std::vector<uint8_t> v_bits_;
};

// Runs the handoff of `context` over `num_hops` hops (see the file comment).
// Errors: InvalidArgument for num_hops outside [1, context.size()]; the
// errors of Sequence (token ids, context limit), of the planner (prefixed
// with the hop), of BuildCard and InjectCard.
absl::StatusOr<HandoffChain> RunHandoffChain(const agents::ModelHandle& model,
                                             absl::Span<const int32_t> context, int num_hops,
                                             const ChainOptions& options,
                                             const BitPlanner& planner);

}  // namespace qkvshare::eval

#endif  // QKVSHARE_EVAL_HANDOFF_CHAIN_H_
