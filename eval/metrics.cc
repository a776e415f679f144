#include "eval/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace qkvshare::eval {
namespace {

// log(sum_i exp(x_i)) and max_i x_i.
double LogSumExp(absl::Span<const float> x, double max) {
  double sum = 0;
  for (float v : x) sum += std::exp(static_cast<double>(v) - max);
  return max + std::log(sum);
}

}  // namespace

double KlDivergence(absl::Span<const float> reference_logits, absl::Span<const float> logits) {
  const double pmax = *std::max_element(reference_logits.begin(), reference_logits.end());
  const double qmax = *std::max_element(logits.begin(), logits.end());
  const double p_lse = LogSumExp(reference_logits, pmax);
  const double q_lse = LogSumExp(logits, qmax);
  double kl = 0;
  for (size_t i = 0; i < reference_logits.size(); ++i) {
    const double log_p = reference_logits[i] - p_lse;
    const double log_q = logits[i] - q_lse;
    kl += std::exp(log_p) * (log_p - log_q);
  }
  return std::max(0.0, kl);  // rounding can give -1e-17 for identical rows
}

int32_t ArgMax(absl::Span<const float> logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

int64_t CommonPrefixLength(absl::Span<const int32_t> a, absl::Span<const int32_t> b) {
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return static_cast<int64_t>(i);
}

}  // namespace qkvshare::eval
