// File: quant/controller.h
// -----------------------------------------------------------------------------
// Token-level mixed-precision controller: chooses the bit width of every new
// token's K and V (a BitPlan) under an average-bits budget, from per-token
// importance scores (quant/importance.h). QKVShare (arXiv 2605.03884) §3;
// the gain model follows KV-AdaQuant / KIVI (keys are more sensitive).
//
// Budget: average CODE bits per element over the K and V of the new tokens,
//   (sum_t k_bits[t] + sum_t v_bits[t]) / (2 n),
// group parameters (fp16 lo/hi) excluded. K and V of a token have the same
// number of elements (num_kv_heads * head_dim per layer), so this is also the
// per-element average. Allowed budgets: [2, 8] or exactly 16 (all tokens raw
// fp16). The plan's avg_bits is the nearest achievable value: a step is one
// bit on one side of one token, 1 / (2n), so |avg_bits - budget| <= 1 / (4n)
// (<= 0.02 once n >= 13).
//
// Hops: in a multi-hop handoff, tokens that arrive already quantized in an
// upstream card keep their codes. A request covers ONLY the tokens new in this
// hop (their scores, their count); the budget applies to them alone. `hop`
// (0-based) of `num_hops` is passed to a swappable HopTransform that maps the
// importance to the greedy's scores. The default, ShrinkTowardUniform, does
// not depend on the hop: in the fidelity evaluation on the bundled model
// (docs/results.md) a constant half-way shrink toward uniform measured better
// overall than the earlier hop-dependent blend (BlendTowardUniformByHop):
// clearly at 2.5 and 3 bits, about level at 4.
//
// Thread safety: pure functions.
//
// Example:
//   std::vector<float> imp = ...;  // TokenImportance(...) for the new tokens
//   AllocationRequest req;
//   req.num_tokens = imp.size();
//   req.avg_bits = 3.0;
//   req.importance = imp;
//   req.hop = 0;
//   req.num_hops = 2;
//   QKV_ASSIGN_OR_RETURN(BitPlan plan, AllocateBits(req));
//   // plan.k_bits / plan.v_bits -> Quantize(); plan.avg_bits ~ 3.0
#ifndef QKVSHARE_QUANT_CONTROLLER_H_
#define QKVSHARE_QUANT_CONTROLLER_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "quant/bit_plan.h"

namespace qkvshare::quant {

enum class AllocationPolicy : uint8_t {
  // Every token the same width; a fractional budget gives floor(budget) + 1
  // bits to an evenly spread (Bresenham) subset of tokens, both sides, plus K
  // of one more token when the number of extra bits is odd. The paper's
  // baseline. Ignores importance.
  kUniform = 0,
  // Greedy by expected error: raising one side of token i from b to b + 1
  // bits gains w_side * score_i * 4^-b, score = hop_transform(importance)
  // (the squared quantization step
  // shrinks 4x); bits are handed out from a max-heap, starting from 2 bits
  // everywhere, until the budget is spent. No pinned windows.
  kAdaptive = 1,
};

// Maps the new tokens' importance (finite, >= 0) for hop `hop` of `num_hops`
// (0 <= hop < num_hops) to the scores the adaptive policy uses; returns
// importance.size() finite, non-negative values (double, so that distinct
// fp32 scores stay distinct after an affine blend).
using HopTransform = std::vector<double> (*)(absl::Span<const float> importance, int hop,
                                             int num_hops);

// Normalizes importance to mean 1 (empty or all-zero -> all 1), then shrinks
// it toward uniform: out_i = (1 - alpha) * imp_i / mean(imp) + alpha, alpha in
// [0, 1] the weight of the uniform prior. The hop transforms below are this
// with a fixed or hop-dependent alpha.
std::vector<double> ShrinkImportance(absl::Span<const float> importance, double alpha);

// The shrink of ShrinkTowardUniform: the weight of the uniform prior.
inline constexpr double kImportanceShrink = 0.5;

// The default HopTransform. Normalizes importance to mean 1 (all-zero -> all
// 1), then shrinks it toward uniform by kImportanceShrink at every hop:
//   out_i = (1 - 0.5) * imp_i / mean(imp) + 0.5.
// The importance (attention of the producer's last queries) is a noisy
// estimate of what the consumer will attend to; trusting it fully sends the
// tokens it misjudges to 2 bits, which dominates the mean KL. `hop` and
// `num_hops` are ignored. Chosen by docs/results.md ("Controller").
std::vector<double> ShrinkTowardUniform(absl::Span<const float> importance, int hop, int num_hops);

// The previous default, kept for comparison: normalizes importance to mean 1
// (all-zero -> all 1), then blends toward uniform by the share of hops still
// to come: alpha = (H - 1 - h) / (H - h), out_i = (1 - alpha) * imp_i + alpha.
// The last hop (h = H - 1) uses pure importance; with H = 3, hop 0 uses
// alpha = 2/3 and hop 1 alpha = 1/2. Measured worse overall than
// ShrinkTowardUniform (docs/results.md, controller ablation).
std::vector<double> BlendTowardUniformByHop(absl::Span<const float> importance, int hop,
                                            int num_hops);

struct AllocationRequest {
  // Tokens new in this hop (>= 0).
  int64_t num_tokens = 0;
  // Budget: average code bits per element, in [2, 8] or 16.
  double avg_bits = 3.0;
  // [num_tokens] importance of the new tokens, finite and >= 0 (any scale).
  // Required by kAdaptive; kUniform accepts it empty.
  absl::Span<const float> importance;
  AllocationPolicy policy = AllocationPolicy::kAdaptive;
  // w_K and w_V of the gain model (> 0). Keys are more sensitive: w_K = 3 w_V
  // was the best of a sweep 1.5..6 on the bundled model (docs/results.md; the
  // optimum is flat between 2.5 and 4; it was 2 before the evaluation).
  double key_weight = 3.0;
  double value_weight = 1.0;
  // This hop's index and the handoff's number of hops (0 <= hop < num_hops).
  int hop = 0;
  int num_hops = 1;
  // Applied to importance before kAdaptive allocation; never null.
  HopTransform hop_transform = &ShrinkTowardUniform;
};

// Returns k_bits/v_bits for the request's tokens and their average.
// Guarantees (kAdaptive): widths in 2..8 (or all 16 for budget 16); a token
// with strictly larger (transformed) score never gets fewer bits on the same
// side; K bits >= V bits for each token when key_weight >= value_weight;
// equal scores give widths that differ by at most one bit per side; fully
// deterministic (ties go to K, then to an evenly spread token order).
// Errors: InvalidArgument for num_tokens < 0, importance.size() != num_tokens
// (empty is allowed only for kUniform), a budget outside [2, 8] and not 16, a
// negative or non-finite score (naming the token), weights not finite and
// > 0, hop outside [0, num_hops), or a null hop_transform.
absl::StatusOr<BitPlan> AllocateBits(const AllocationRequest& request);

}  // namespace qkvshare::quant

#endif  // QKVSHARE_QUANT_CONTROLLER_H_
