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
  // quant::AllocationRequest fields.
  quant::HopTransform hop_transform = &quant::BlendTowardUniformByHop;
  double key_weight = 2.0;
  double value_weight = 1.0;
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
