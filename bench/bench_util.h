// File: bench/bench_util.h
// -----------------------------------------------------------------------------
// Small helpers shared by the benchmarks: per-thread CPU time and the median
// of repeated timings (benchmarks report medians, not bests).
//
// Thread safety: pure functions.
#ifndef QKVSHARE_BENCH_BENCH_UTIL_H_
#define QKVSHARE_BENCH_BENCH_UTIL_H_

#include <time.h>

#include <algorithm>
#include <vector>

namespace qkvshare::bench {

// CPU time of the calling thread, in seconds (CLOCK_THREAD_CPUTIME_ID):
// per-core rates, robust to other processes sharing the machine.
inline double ThreadSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// Median of `v` (mean of the two middle values for an even count); 0 if empty.
inline double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace qkvshare::bench

#endif  // QKVSHARE_BENCH_BENCH_UTIL_H_
