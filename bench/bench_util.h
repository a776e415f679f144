// File: bench/bench_util.h
// -----------------------------------------------------------------------------
// Small helpers shared by the benchmarks: per-thread CPU time, the median
// of repeated timings (benchmarks report medians, not bests) and the
// process's resident set size.
//
// Thread safety: pure functions.
#ifndef QKVSHARE_BENCH_BENCH_UTIL_H_
#define QKVSHARE_BENCH_BENCH_UTIL_H_

#include <time.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
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

// This process's resident set (VmRSS of /proc/self/status), in bytes; -1
// when it cannot be read (no /proc).
inline int64_t ResidentBytes() {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return -1;
  char line[256];
  int64_t kib = -1;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::strncmp(line, "VmRSS:", 6) == 0) {
      long long v = 0;
      if (std::sscanf(line + 6, "%lld", &v) == 1) kib = v;
      break;
    }
  }
  std::fclose(f);
  return kib < 0 ? -1 : kib * 1024;
}

}  // namespace qkvshare::bench

#endif  // QKVSHARE_BENCH_BENCH_UTIL_H_
