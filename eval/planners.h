// File: eval/planners.h
// -----------------------------------------------------------------------------
// BitPlanners (eval/handoff_chain.h) for the fidelity evaluation. DaemonPlanner
// does what daemon/hop_runner.cc does on a card handoff: importance from the
// hop agent's attention capture (quant::TokenImportance), restricted to the
// hop's new tokens, then quant::AllocateBits with hop = h, num_hops = H.
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

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
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
