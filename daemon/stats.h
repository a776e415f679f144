// File: daemon/stats.h
// -----------------------------------------------------------------------------
// Stats: the daemon's counters and latency distributions, the one source for
// GetStats (gRPC), the Prometheus endpoint and the shutdown log line.
// Distributions keep cumulative count/sum and fixed histogram buckets (for
// Prometheus) plus the most recent 4096 samples (for p50/p90/p99).
//
// Thread safety: all methods are thread-safe.
#ifndef QKVSHARE_DAEMON_STATS_H_
#define QKVSHARE_DAEMON_STATS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace qkvshare::daemon {

class Stats {
 public:
  enum Counter {
    kTasksSubmitted,
    kTasksFinished,
    kTasksFailed,
    kTasksCancelled,
    kTasksRejected,
    kHopsRun,
    kTokensGenerated,
    kTokensPrefilled,
    kCardsBuilt,
    kCardBytesBuilt,
    kCardsInjected,
    kReprefillFallbacks,
    kCardsEvicted,
    kNumCounters,
  };
  enum Distribution {
    kHopTtftMs,         // hop start (handoff included) -> first token, ms
    kDecodeTokensPerS,  // per hop
    kCardBuildMs,
    kInjectMs,
    kTaskTotalMs,
    kCardBitsPerElement,  // actual average code bits of built cards
    kNumDistributions,
  };

  struct Summary {
    int64_t count = 0;
    double sum = 0, mean = 0, p50 = 0, p90 = 0, p99 = 0, max = 0;
    // Cumulative counts per upper bound (Prometheus "le"), +Inf last.
    std::vector<double> bounds;
    std::vector<int64_t> cumulative;
  };

  void Add(Counter c, int64_t n = 1) { counters_[c].fetch_add(n, std::memory_order_relaxed); }
  int64_t Get(Counter c) const { return counters_[c].load(std::memory_order_relaxed); }
  void Observe(Distribution d, double value);
  Summary Summarize(Distribution d) const;

  // snake_case metric names ("tasks_submitted", "hop_ttft_ms") and help text.
  static std::string_view Name(Counter c);
  static std::string_view Name(Distribution d);
  static std::string_view Help(Counter c);
  static std::string_view Help(Distribution d);

 private:
  static constexpr int kWindow = 4096;
  struct Dist {
    int64_t count = 0;
    double sum = 0, max = 0;
    std::vector<int64_t> buckets;  // per bound, non-cumulative; last = +Inf
    std::vector<double> window;    // ring of recent samples
    size_t next = 0;
  };
  static const std::vector<double>& Bounds(Distribution d);

  std::array<std::atomic<int64_t>, kNumCounters> counters_{};
  mutable absl::Mutex mu_;
  std::array<Dist, kNumDistributions> dists_ ABSL_GUARDED_BY(mu_);
};

}  // namespace qkvshare::daemon

#endif  // QKVSHARE_DAEMON_STATS_H_
