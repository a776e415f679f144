// File: eval/planners.h
// -----------------------------------------------------------------------------
// BitPlanners (eval/handoff_chain.h) for the fidelity evaluation. DaemonPlanner
// does what daemon/handoff/handoff.cc does on a card handoff: importance from the
// hop agent's attention capture (quant::TokenImportance), restricted to the
// hop's new tokens, then quant::AllocateBits with hop = h, num_hops = H.
//
// A chain schedule (PlannerSettings::chain_schedule, an evaluation option, not
// what the daemon does) moves budget between the hops of one chain: early
// hops spend less than the budget, later hops more, like the one-hop
// controller moves bits from old tokens to recent ones (docs/results.md,
// "Chain-level budget schedule").
//
// Thread safety: planners are stateless values; safe to share.
//
// Example:
//   PlannerSettings s;
//   s.policy = HandoffPolicy::kAdaptive;
//   s.avg_bits = 3.0;
//   BitPlanner planner = DaemonPlanner(s);
#ifndef QKVSHARE_EVAL_PLANNERS_H_
#define QKVSHARE_EVAL_PLANNERS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "eval/handoff_chain.h"
#include "quant/controller.h"
#include "quant/importance.h"
#include "quant/kernels.h"

namespace qkvshare::eval {

enum class HandoffPolicy {
  kFull,      // raw KV in the cache dtype (the lossless transfer baseline)
  kUniform,   // quant::AllocationPolicy::kUniform
  kAdaptive,  // quant::AllocationPolicy::kAdaptive with attention importance
};

// "full", "uniform", "adaptive".
std::string_view HandoffPolicyName(HandoffPolicy policy);
// Inverse of HandoffPolicyName. Errors: InvalidArgument for other names.
absl::StatusOr<HandoffPolicy> ParseHandoffPolicy(std::string_view name);

// How a chain's budget is split over its hops (ChainHopBits).
enum class ChainSchedule {
  kFlat,  // every hop the budget (the daemon's behaviour)
  kRamp,  // linear in the hop: shape s * (h / (H - 1) - 1/2), s = strength
  kBank,  // hops 0..H-2 shape -s, the last hop +s * (H - 1) (the saved bits)
  // Hop 0 (BOS, the prompt: read by every later query) at the budget; hops
  // 1..H-1 a kRamp of strength s over the rest of the chain's bits.
  kRampPinFirst,
};

// "flat", "ramp", "bank", "ramp_pin_first".
std::string_view ChainScheduleName(ChainSchedule schedule);
// Inverse of ChainScheduleName. Errors: InvalidArgument for other names.
absl::StatusOr<ChainSchedule> ParseChainSchedule(std::string_view name);

// Budget of each hop of a chain, in code bits (K and V of all its tokens),
// for a chain whose hop h has hop_tokens[h] new tokens and whose budget is
// `avg_bits` code bits per element over ALL its tokens.
//   Budget meaning: sum over hops of the result <= floor(2 * avg_bits * T),
//   T = sum of hop_tokens, i.e. the chain's average over all its tokens, K
//   and V, is at most avg_bits (equal to it whenever 2 * avg_bits * T is an
//   integer); each hop's average lies in [2, 8].
// Hop h's per-element budget is clamp(avg_bits + shape_h - c, 2, 8) with the
// offset c that makes the token-weighted mean exactly avg_bits (so unequal
// chunk sizes and clamping keep the total); then rounded to whole bits by
// largest remainder. kFlat, strength 0 or one hop: every hop avg_bits (up to
// that rounding). Errors: InvalidArgument for avg_bits outside [2, 8],
// strength < 0 or not finite, an empty or non-positive hop_tokens.
absl::StatusOr<std::vector<int64_t>> ChainHopBits(absl::Span<const int64_t> hop_tokens,
                                                  double avg_bits, ChainSchedule schedule,
                                                  double strength);

struct PlannerSettings {
  HandoffPolicy policy = HandoffPolicy::kAdaptive;
  // Budget: average code bits per element of the new tokens, [2, 8] or 16.
  double avg_bits = 3.0;
  // quant::TokenImportance options (the daemon's importance_window and
  // head reduction). window must not exceed ChainOptions::capture_window.
  quant::ImportanceOptions importance;
  // quant::AllocationRequest fields; the defaults are quant's.
  quant::HopTransform hop_transform = quant::AllocationRequest{}.hop_transform;
  double key_weight = quant::AllocationRequest{}.key_weight;
  double value_weight = quant::AllocationRequest{}.value_weight;
  // Diagnostic, not available to a real hop: when non-empty, the importance
  // of every context token (e.g. ConsumerImportance in eval/fidelity.h), used
  // instead of the hop agent's attention capture.
  std::vector<float> context_importance;
  // Chain-level budget schedule (ChainHopBits): with anything but kFlat and a
  // budget in [2, 8], hop h of a chain of HopState::context_tokens tokens
  // gets ChainHopBits(...)[h] / (2 * its tokens) as its AllocationRequest
  // budget, and avg_bits is the chain's average. Budget 16 is never moved.
  ChainSchedule chain_schedule = ChainSchedule::kFlat;
  double chain_strength = 0;  // the schedule's s, bits per element
  // KIVI grouping of the card.
  quant::GroupSpec k_group{quant::GroupAxis::kPerChannel, 32};
  quant::GroupSpec v_group{quant::GroupAxis::kPerToken, 32};
};

// The daemon's card planner (see the file comment). Errors: those of
// Sequence::GetAttentionCapture (capture off), quant::TokenImportance and
// quant::AllocateBits.
BitPlanner DaemonPlanner(const PlannerSettings& settings);

}  // namespace qkvshare::eval

#endif  // QKVSHARE_EVAL_PLANNERS_H_
