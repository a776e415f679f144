// File: eval/metrics.h
// -----------------------------------------------------------------------------
// Fidelity metrics between a reference model run (full-precision KV cache)
// and a run on a handed-off (quantized) KV cache: KL divergence of
// next-token distributions, top-1 agreement, first divergence of two greedy
// token streams. Computed in double from fp32 logits.
//
// Thread safety: pure functions.
#ifndef QKVSHARE_EVAL_METRICS_H_
#define QKVSHARE_EVAL_METRICS_H_

#include <cstdint>

#include "absl/types/span.h"

namespace qkvshare::eval {

// KL(P || Q) in nats, P = softmax(reference_logits), Q = softmax(logits),
// both [vocab] fp32, computed in double with max subtraction (log-sum-exp).
// REQUIRES: equal non-zero sizes, finite values.
double KlDivergence(absl::Span<const float> reference_logits, absl::Span<const float> logits);

// Index of the first maximum (run.c's argmax; greedy decoding).
// REQUIRES: non-empty.
int32_t ArgMax(absl::Span<const float> logits);

// Number of leading positions where `a` and `b` agree, at most
// min(a.size(), b.size()): the tokens until the first divergence.
int64_t CommonPrefixLength(absl::Span<const int32_t> a, absl::Span<const int32_t> b);

}  // namespace qkvshare::eval

#endif  // QKVSHARE_EVAL_METRICS_H_
