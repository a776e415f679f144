#include "eval/planners.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "agents/attention_capture.h"
#include "base/status_macros.h"
#include "cachecard/build.h"

namespace qkvshare::eval {

std::string_view HandoffPolicyName(HandoffPolicy policy) {
  switch (policy) {
    case HandoffPolicy::kFull:
      return "full";
    case HandoffPolicy::kUniform:
      return "uniform";
    case HandoffPolicy::kAdaptive:
      return "adaptive";
  }
  return "?";
}

absl::StatusOr<HandoffPolicy> ParseHandoffPolicy(std::string_view name) {
  for (HandoffPolicy p :
       {HandoffPolicy::kFull, HandoffPolicy::kUniform, HandoffPolicy::kAdaptive}) {
    if (name == HandoffPolicyName(p)) return p;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown policy '", std::string(name), "' (want full, uniform or adaptive)"));
}

BitPlanner DaemonPlanner(const PlannerSettings& settings) {
  return [settings](const HopState& state) -> absl::StatusOr<cachecard::CardEncoding> {
    if (settings.policy == HandoffPolicy::kFull) return cachecard::CardEncoding::Full();
    const int64_t n = state.seq.length();
    quant::AllocationRequest req;
    req.num_tokens = n - state.first;
    req.avg_bits = settings.avg_bits;
    req.policy = quant::AllocationPolicy::kUniform;
    req.key_weight = settings.key_weight;
    req.value_weight = settings.value_weight;
    req.hop = state.hop;
    req.num_hops = state.num_hops;
    req.hop_transform = settings.hop_transform;
    std::vector<float> importance;
    if (settings.policy == HandoffPolicy::kAdaptive && !settings.context_importance.empty()) {
      if (static_cast<int64_t>(settings.context_importance.size()) < n) {
        return absl::InvalidArgumentError(absl::StrCat("context_importance has ",
                                                       settings.context_importance.size(),
                                                       " scores for a context of ", n, " tokens"));
      }
      importance.assign(settings.context_importance.begin() + state.first,
                        settings.context_importance.begin() + n);
      req.policy = quant::AllocationPolicy::kAdaptive;
      req.importance = importance;
    } else if (settings.policy == HandoffPolicy::kAdaptive) {
      QKV_ASSIGN_OR_RETURN(agents::AttentionCapture cap, state.seq.GetAttentionCapture());
      QKV_ASSIGN_OR_RETURN(
          std::vector<float> all,
          quant::TokenImportance({cap.probs.data(), cap.num_layers, cap.num_kv_heads,
                                  static_cast<int>(cap.rows), cap.context},
                                 settings.importance));
      importance.assign(all.begin() + state.first, all.end());
      req.policy = quant::AllocationPolicy::kAdaptive;
      req.importance = importance;
    }
    QKV_ASSIGN_OR_RETURN(quant::BitPlan plan, quant::AllocateBits(req));
    return cachecard::CardEncoding::Quantized(std::move(plan), settings.k_group, settings.v_group);
  };
}

}  // namespace qkvshare::eval
