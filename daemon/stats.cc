#include "daemon/stats.h"

#include <algorithm>
#include <cmath>

namespace qkvshare::daemon {

namespace {

double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(std::ceil(q * v.size())) - 1;
  return v[std::min(i, v.size() - 1)];
}

}  // namespace

const std::vector<double>& Stats::Bounds(Distribution d) {
  static const std::vector<double> kMs = {1,   2,   5,   10,  20,  50,  100, 200,
                                          500, 1e3, 2e3, 5e3, 1e4, 3e4, 6e4};
  static const std::vector<double> kRate = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000};
  static const std::vector<double> kBits = {2, 2.5, 3, 3.5, 4, 5, 6, 8, 16, 32};
  switch (d) {
    case kDecodeTokensPerS:
      return kRate;
    case kCardBitsPerElement:
      return kBits;
    default:
      return kMs;
  }
}

void Stats::Observe(Distribution d, double value) {
  if (!std::isfinite(value)) return;
  absl::MutexLock lock(&mu_);
  Dist& x = dists_[d];
  const std::vector<double>& bounds = Bounds(d);
  if (x.buckets.empty()) x.buckets.assign(bounds.size() + 1, 0);
  size_t b = std::lower_bound(bounds.begin(), bounds.end(), value) - bounds.begin();
  ++x.buckets[b];
  x.max = x.count == 0 ? value : std::max(x.max, value);
  ++x.count;
  x.sum += value;
  if (x.window.size() < kWindow) {
    x.window.push_back(value);
  } else {
    x.window[x.next] = value;
    x.next = (x.next + 1) % kWindow;
  }
}

Stats::Summary Stats::Summarize(Distribution d) const {
  Summary s;
  s.bounds = Bounds(d);
  std::vector<double> window;
  {
    absl::MutexLock lock(&mu_);
    const Dist& x = dists_[d];
    s.count = x.count;
    s.sum = x.sum;
    s.max = x.max;
    int64_t run = 0;
    for (size_t i = 0; i <= s.bounds.size(); ++i) {
      run += x.buckets.empty() ? 0 : x.buckets[i];
      s.cumulative.push_back(run);
    }
    window = x.window;
  }
  s.mean = s.count > 0 ? s.sum / s.count : 0;
  s.p50 = Quantile(window, 0.5);
  s.p90 = Quantile(window, 0.9);
  s.p99 = Quantile(window, 0.99);
  return s;
}

std::string_view Stats::Name(Counter c) {
  static constexpr std::string_view kNames[kNumCounters] = {
      "tasks_submitted", "tasks_finished",   "tasks_failed",     "tasks_cancelled",
      "tasks_rejected",  "hops_run",         "tokens_generated", "tokens_prefilled",
      "cards_built",     "card_bytes_built", "cards_injected",   "reprefill_fallbacks",
      "cards_evicted"};
  return kNames[c];
}

std::string_view Stats::Help(Counter c) {
  static constexpr std::string_view kHelp[kNumCounters] = {
      "Tasks accepted by SubmitTask",
      "Tasks that ended FINISHED",
      "Tasks that ended FAILED",
      "Tasks that ended CANCELLED",
      "SubmitTask calls refused (bad input, queue full, shutting down)",
      "Hops run to completion",
      "Tokens generated (decode)",
      "Tokens prefilled (prompts, instructions, re-prefill of handed-over context)",
      "CacheCards built",
      "Bytes of CacheCards built",
      "CacheCards injected into an agent's KV cache",
      "Card handoffs that fell back to re-prefill (e.g. model fingerprint mismatch)",
      "Cards evicted from the shared-memory store (quota or TTL)"};
  return kHelp[c];
}

std::string_view Stats::Name(Distribution d) {
  static constexpr std::string_view kNames[kNumDistributions] = {
      "hop_ttft_ms",   "hop_decode_tokens_per_second", "card_build_ms", "card_inject_ms",
      "task_total_ms", "card_bits_per_element"};
  return kNames[d];
}

std::string_view Stats::Help(Distribution d) {
  static constexpr std::string_view kHelp[kNumDistributions] = {
      "Time from hop start (handoff included) to its first generated token, ms",
      "Decode speed of a hop, tokens per second",
      "Time to quantize and pack a CacheCard, ms",
      "Time to validate and inject a CacheCard into a KV cache, ms",
      "Time from task start to its end, ms",
      "Average code bits per element of built CacheCards"};
  return kHelp[d];
}

}  // namespace qkvshare::daemon
