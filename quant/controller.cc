// AllocateBits: the uniform and adaptive (greedy, max-heap) policies of
// quant/controller.h.
#include "quant/controller.h"

#include <cmath>
#include <cstdint>
#include <queue>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "quant/bit_plan.h"

namespace qkvshare::quant {
namespace {

constexpr int kMinBits = 2;
constexpr int kMaxBits = 8;
constexpr int kRawBits = 16;

absl::Status CheckRequest(const AllocationRequest& r) {
  if (r.num_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_tokens ", r.num_tokens, " < 0"));
  }
  if (!(r.avg_bits == kRawBits || (r.avg_bits >= kMinBits && r.avg_bits <= kMaxBits))) {
    return absl::InvalidArgumentError(
        absl::StrCat("budget ", r.avg_bits, " bits per element is outside [2, 8] and not 16"));
  }
  const bool need_scores = r.policy == AllocationPolicy::kAdaptive;
  if (static_cast<int64_t>(r.importance.size()) != r.num_tokens &&
      (need_scores || !r.importance.empty())) {
    return absl::InvalidArgumentError(absl::StrCat("importance has ", r.importance.size(),
                                                   " scores for ", r.num_tokens, " tokens"));
  }
  for (size_t i = 0; i < r.importance.size(); ++i) {
    const float s = r.importance[i];
    if (!std::isfinite(s) || s < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("importance of token ", i, " is ", s, " (want finite and >= 0)"));
    }
  }
  if (!(std::isfinite(r.key_weight) && r.key_weight > 0 && std::isfinite(r.value_weight) &&
        r.value_weight > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("weights w_K ", r.key_weight, ", w_V ",
                                                   r.value_weight, " must be finite and > 0"));
  }
  if (r.num_hops < 1 || r.hop < 0 || r.hop >= r.num_hops) {
    return absl::InvalidArgumentError(
        absl::StrCat("hop ", r.hop, " outside [0, num_hops = ", r.num_hops, ")"));
  }
  if (r.hop_transform == nullptr) return absl::InvalidArgumentError("null hop_transform");
  return absl::OkStatus();
}

double Average(const BitPlan& p) {
  if (p.k_bits.empty()) return 0;
  double sum = 0;
  for (size_t i = 0; i < p.k_bits.size(); ++i) sum += p.k_bits[i] + p.v_bits[i];
  return sum / (2.0 * static_cast<double>(p.k_bits.size()));
}

// Extra one-bit steps (one side of one token) above `base` bits everywhere
// that bring the average nearest to `budget`.
int64_t ExtraSteps(double budget, int base, int64_t n) {
  return std::llround((budget - base) * 2.0 * static_cast<double>(n));
}

BitPlan Uniform(int64_t n, double budget) {
  BitPlan p;
  if (budget == kRawBits) {
    p.k_bits.assign(n, kRawBits);
    p.v_bits.assign(n, kRawBits);
    return p;
  }
  const int base = budget >= kMaxBits ? kMaxBits : static_cast<int>(std::floor(budget));
  int64_t extra = base == kMaxBits ? 0 : ExtraSteps(budget, base, n);
  p.k_bits.assign(n, static_cast<uint8_t>(base));
  p.v_bits.assign(n, static_cast<uint8_t>(base));
  // `both` tokens get +1 on both sides, evenly spread (Bresenham); an odd
  // leftover step goes to K of the first token not chosen.
  const int64_t both = extra / 2;
  bool odd = extra % 2 != 0;
  for (int64_t i = 0; i < n; ++i) {
    if ((i + 1) * both / n > i * both / n) {
      ++p.k_bits[i];
      ++p.v_bits[i];
    } else if (odd) {
      ++p.k_bits[i];
      odd = false;
    }
  }
  return p;
}

// Reverses the low `width` bits of i: an evenly spread order of 0..2^width-1,
// used to break ties between equal scores without favouring early tokens.
uint32_t BitReverse(uint32_t i, int width) {
  uint32_t r = 0;
  for (int b = 0; b < width; ++b) r |= ((i >> b) & 1u) << (width - 1 - b);
  return r;
}

struct Candidate {
  double gain;      // w_side * score * 4^-bits
  uint8_t side;     // 0 = K, 1 = V
  uint32_t spread;  // tie-break rank of the token
  uint32_t token;
};

// Max-heap order: larger gain first, then K before V, then spread order.
struct Lower {
  bool operator()(const Candidate& a, const Candidate& b) const {
    if (a.gain != b.gain) return a.gain < b.gain;
    if (a.side != b.side) return a.side > b.side;
    return a.spread > b.spread;
  }
};

BitPlan Adaptive(const std::vector<double>& score, double budget, double w_k, double w_v) {
  const int64_t n = static_cast<int64_t>(score.size());
  BitPlan p;
  if (budget == kRawBits) return Uniform(n, budget);
  p.k_bits.assign(n, kMinBits);
  p.v_bits.assign(n, kMinBits);
  int width = 0;
  while ((int64_t{1} << width) < n) ++width;
  const double weight[2] = {w_k, w_v};
  std::vector<Candidate> init;
  init.reserve(2 * n);
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t spread = BitReverse(static_cast<uint32_t>(i), width);
    for (uint8_t side = 0; side < 2; ++side) {
      init.push_back({weight[side] * score[i] * std::ldexp(1.0, -2 * kMinBits), side, spread,
                      static_cast<uint32_t>(i)});
    }
  }
  std::priority_queue<Candidate, std::vector<Candidate>, Lower> heap(Lower{}, std::move(init));
  for (int64_t steps = ExtraSteps(budget, kMinBits, n); steps > 0 && !heap.empty(); --steps) {
    Candidate c = heap.top();
    heap.pop();
    uint8_t& bits = c.side == 0 ? p.k_bits[c.token] : p.v_bits[c.token];
    ++bits;
    if (bits < kMaxBits) {
      c.gain *= 0.25;  // 4^-(b+1) = 4^-b / 4, exact in binary
      heap.push(c);
    }
  }
  return p;
}

}  // namespace

std::vector<double> ShrinkImportance(absl::Span<const float> importance, double alpha) {
  std::vector<double> out(importance.size(), 1.0);
  double sum = 0;
  for (float s : importance) sum += s;
  if (importance.empty() || !(sum > 0)) return out;
  const double mean = sum / static_cast<double>(importance.size());
  for (size_t i = 0; i < importance.size(); ++i) {
    out[i] = (1.0 - alpha) * (importance[i] / mean) + alpha;
  }
  return out;
}

std::vector<double> BlendTowardUniformByHop(absl::Span<const float> importance, int hop,
                                            int num_hops) {
  const double alpha =
      num_hops > hop ? static_cast<double>(num_hops - 1 - hop) / (num_hops - hop) : 0.0;
  return ShrinkImportance(importance, alpha);
}

std::vector<double> ShrinkTowardUniform(absl::Span<const float> importance, int /*hop*/,
                                        int /*num_hops*/) {
  return ShrinkImportance(importance, kImportanceShrink);
}

absl::StatusOr<BitPlan> AllocateBits(const AllocationRequest& request) {
  if (absl::Status s = CheckRequest(request); !s.ok()) return s;
  const int64_t n = request.num_tokens;
  BitPlan plan;
  if (request.policy == AllocationPolicy::kUniform) {
    plan = Uniform(n, request.avg_bits);
  } else {
    std::vector<double> score =
        request.hop_transform(request.importance, request.hop, request.num_hops);
    if (static_cast<int64_t>(score.size()) != n) {
      return absl::InvalidArgumentError(
          absl::StrCat("hop_transform returned ", score.size(), " scores for ", n, " tokens"));
    }
    for (size_t i = 0; i < score.size(); ++i) {
      if (!std::isfinite(score[i]) || score[i] < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("hop_transform gave token ", i, " the score ", score[i]));
      }
    }
    plan = Adaptive(score, request.avg_bits, request.key_weight, request.value_weight);
  }
  plan.avg_bits = Average(plan);
  return plan;
}

}  // namespace qkvshare::quant
