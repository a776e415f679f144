#include "agents/sampler.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace qkvshare::agents {
namespace {

// Higher logit first; on equal logits the lower id.
bool Better(const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

// Candidates examined before falling back to a full sort for top_p.
constexpr size_t kTopPFirstPass = 256;

}  // namespace

int32_t ArgMax(absl::Span<const float> logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

absl::StatusOr<Sampler> Sampler::Create(const SamplingParams& p) {
  if (std::isnan(p.temperature) || p.temperature < 0) {
    return absl::InvalidArgumentError(absl::StrCat("temperature ", p.temperature, " must be >= 0"));
  }
  if (p.top_k < 0) return absl::InvalidArgumentError(absl::StrCat("top_k ", p.top_k, " < 0"));
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p ", p.top_p, " must be in (0, 1]"));
  }
  return Sampler(p);
}

double Sampler::Uniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

int32_t Sampler::Sample(absl::Span<const float> logits) {
  if (params_.greedy()) return ArgMax(logits);
  const size_t vocab = logits.size();
  candidates_.resize(vocab);
  for (size_t i = 0; i < vocab; ++i) candidates_[i] = {logits[i], static_cast<int32_t>(i)};
  size_t n = vocab;
  bool sorted = false;
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < vocab) {
    n = params_.top_k;
    std::partial_sort(candidates_.begin(), candidates_.begin() + n, candidates_.end(), Better);
    candidates_.resize(n);
    sorted = true;
  }
  // Probabilities over the candidates, at the temperature.
  const float max_logit = std::max_element(candidates_.begin(), candidates_.end(), Better)->first;
  const double inv_t = 1.0 / params_.temperature;
  double total = 0;
  for (auto& c : candidates_) {
    const double w = std::exp((static_cast<double>(c.first) - max_logit) * inv_t);
    c.first = static_cast<float>(w);
    total += w;
  }
  if (params_.top_p < 1.0f) {
    // Weights are monotone in the logits, so Better() still ranks them.
    const double target = params_.top_p * total;
    auto mass_reaches = [&](size_t k) -> size_t {  // prefix length reaching target, or 0
      double acc = 0;
      for (size_t i = 0; i < k; ++i) {
        acc += candidates_[i].first;
        if (acc >= target) return i + 1;
      }
      return 0;
    };
    size_t keep = 0;
    if (!sorted && n > kTopPFirstPass) {
      std::partial_sort(candidates_.begin(), candidates_.begin() + kTopPFirstPass,
                        candidates_.end(), Better);
      keep = mass_reaches(kTopPFirstPass);
    }
    if (keep == 0) {
      if (!sorted) std::sort(candidates_.begin(), candidates_.end(), Better);
      keep = mass_reaches(n);
      if (keep == 0) keep = n;  // rounding: take everything
    }
    candidates_.resize(keep);
    total = 0;
    for (const auto& c : candidates_) total += c.first;
  }
  const double u = Uniform() * total;
  double acc = 0;
  for (const auto& c : candidates_) {
    acc += c.first;
    if (u < acc) return c.second;
  }
  return candidates_.back().second;
}

}  // namespace qkvshare::agents
