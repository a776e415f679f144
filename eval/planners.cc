#include "eval/planners.h"

#include <algorithm>
#include <cmath>
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

std::string_view ChainScheduleName(ChainSchedule schedule) {
  switch (schedule) {
    case ChainSchedule::kFlat:
      return "flat";
    case ChainSchedule::kRamp:
      return "ramp";
    case ChainSchedule::kBank:
      return "bank";
    case ChainSchedule::kRampPinFirst:
      return "ramp_pin_first";
  }
  return "?";
}

absl::StatusOr<ChainSchedule> ParseChainSchedule(std::string_view name) {
  for (ChainSchedule s : {ChainSchedule::kFlat, ChainSchedule::kRamp, ChainSchedule::kBank,
                          ChainSchedule::kRampPinFirst}) {
    if (name == ChainScheduleName(s)) return s;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown chain schedule '", std::string(name),
                                                 "' (want flat, ramp, bank or ramp_pin_first)"));
}

absl::StatusOr<std::vector<int64_t>> ChainHopBits(absl::Span<const int64_t> hop_tokens,
                                                  double avg_bits, ChainSchedule schedule,
                                                  double strength) {
  constexpr double kMin = 2, kMax = 8;
  if (!(avg_bits >= kMin && avg_bits <= kMax)) {
    return absl::InvalidArgumentError(
        absl::StrCat("ChainHopBits: budget ", avg_bits, " is outside [2, 8]"));
  }
  if (!(strength >= 0 && std::isfinite(strength))) {
    return absl::InvalidArgumentError(absl::StrCat("ChainHopBits: strength ", strength));
  }
  const int hops = static_cast<int>(hop_tokens.size());
  if (hops == 0) return absl::InvalidArgumentError("ChainHopBits: no hops");
  int64_t total = 0;
  for (int64_t n : hop_tokens) {
    if (n <= 0) return absl::InvalidArgumentError("ChainHopBits: a hop without tokens");
    total += n;
  }
  const int64_t target =
      static_cast<int64_t>(std::floor(2.0 * avg_bits * static_cast<double>(total) + 1e-6));
  if (schedule == ChainSchedule::kRampPinFirst && hops > 1) {
    const int64_t first = std::min<int64_t>(
        static_cast<int64_t>(
            std::floor(2.0 * avg_bits * static_cast<double>(hop_tokens[0]) + 1e-6)),
        target - 2 * static_cast<int64_t>(kMin) * (total - hop_tokens[0]));
    const double rest = static_cast<double>(target - first) / (2.0 * (total - hop_tokens[0]));
    QKV_ASSIGN_OR_RETURN(
        std::vector<int64_t> bits,
        ChainHopBits(hop_tokens.subspan(1), std::min(rest, kMax), ChainSchedule::kRamp, strength));
    bits.insert(bits.begin(), first);
    return bits;
  }
  std::vector<double> shape(hops, 0.0);
  for (int h = 0; h < hops && hops > 1; ++h) {
    if (schedule == ChainSchedule::kRamp) {
      shape[h] = strength * (static_cast<double>(h) / (hops - 1) - 0.5);
    } else if (schedule == ChainSchedule::kBank) {
      shape[h] = h + 1 < hops ? -strength : strength * (hops - 1);
    }
  }
  // Offset c: sum_h n_h clamp(B + shape_h - c) = B T; the left side is
  // continuous and non-increasing in c, 8 T at c = lo and 2 T at c = hi.
  auto per_element = [&](int h, double c) {
    return std::clamp(avg_bits + shape[h] - c, kMin, kMax);
  };
  auto mean_at = [&](double c) {
    double sum = 0;
    for (int h = 0; h < hops; ++h) sum += static_cast<double>(hop_tokens[h]) * per_element(h, c);
    return sum / static_cast<double>(total);
  };
  double lo = -(kMax - kMin) - 1, hi = (kMax - kMin) + 1;
  for (const double s : shape) {
    lo = std::min(lo, s - (kMax - kMin) - 1);
    hi = std::max(hi, s + (kMax - kMin) + 1);
  }
  for (int it = 0; it < 200; ++it) {
    const double mid = 0.5 * (lo + hi);
    (mean_at(mid) > avg_bits ? lo : hi) = mid;
  }
  // Whole bits by largest remainder, the total at most floor(2 B T).
  std::vector<int64_t> bits(hops);
  std::vector<std::pair<double, int>> remainder;
  int64_t sum = 0;
  for (int h = 0; h < hops; ++h) {
    const double exact = 2.0 * static_cast<double>(hop_tokens[h]) * per_element(h, hi);
    bits[h] = static_cast<int64_t>(std::floor(exact + 1e-9));
    bits[h] = std::clamp(bits[h], static_cast<int64_t>(kMin) * 2 * hop_tokens[h],
                         static_cast<int64_t>(kMax) * 2 * hop_tokens[h]);
    remainder.push_back({exact - static_cast<double>(bits[h]), h});
    sum += bits[h];
  }
  // Largest remainder first; ties to the later hop (closer to the consumer).
  std::sort(remainder.begin(), remainder.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second > b.second;
  });
  for (size_t i = 0; sum < target && i < remainder.size(); ++i) {
    const int h = remainder[i].second;
    if (bits[h] < static_cast<int64_t>(kMax) * 2 * hop_tokens[h]) ++bits[h], ++sum;
  }
  for (int h = 0; sum > target && h < hops; ++h) {  // only from rounding noise
    if (bits[h] > static_cast<int64_t>(kMin) * 2 * hop_tokens[h]) --bits[h], --sum;
  }
  return bits;
}

BitPlanner DaemonPlanner(const PlannerSettings& settings) {
  return [settings](const HopState& state) -> absl::StatusOr<cachecard::CardEncoding> {
    if (settings.policy == HandoffPolicy::kFull) return cachecard::CardEncoding::Full();
    const int64_t n = state.seq.length();
    quant::AllocationRequest req;
    req.num_tokens = n - state.first;
    req.avg_bits = settings.avg_bits;
    if (settings.chain_schedule != ChainSchedule::kFlat && settings.avg_bits >= 2 &&
        settings.avg_bits <= 8) {
      if (state.context_tokens < n || state.hop < 0 || state.hop >= state.num_hops) {
        return absl::InvalidArgumentError(
            absl::StrCat("chain schedule: hop ", state.hop, " of ", state.num_hops, ", context ",
                         state.context_tokens, " tokens, agent at ", n));
      }
      const std::vector<int64_t> ends = SplitIntoHops(state.context_tokens, state.num_hops);
      std::vector<int64_t> tokens(ends.size());
      for (size_t h = 0; h < ends.size(); ++h) tokens[h] = ends[h] - (h > 0 ? ends[h - 1] : 0);
      if (tokens[state.hop] != req.num_tokens) {
        return absl::InvalidArgumentError(
            absl::StrCat("chain schedule: hop ", state.hop, " has ", req.num_tokens,
                         " new tokens, the split says ", tokens[state.hop]));
      }
      QKV_ASSIGN_OR_RETURN(std::vector<int64_t> hop_bits,
                           ChainHopBits(tokens, settings.avg_bits, settings.chain_schedule,
                                        settings.chain_strength));
      req.avg_bits = static_cast<double>(hop_bits[state.hop]) / (2.0 * req.num_tokens);
    }
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
