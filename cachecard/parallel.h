// File: cachecard/parallel.h
// -----------------------------------------------------------------------------
// Internal to cachecard/: runs independent per-section work (encode at build,
// decode at inject) on a few threads. Sections never overlap, in the card or
// in the KvCache, so they need no locking; results do not depend on the
// thread count (each section is produced by the same code either way).
//
// Measured (bench/handoff_bench, smollm-135m bf16, 4096 tokens, 2 cores):
// see docs/performance.md "Handoff TTFT".
//
// Thread safety: reentrant; `fn` must be safe to call concurrently for
// different indices.
#ifndef QKVSHARE_CACHECARD_PARALLEL_H_
#define QKVSHARE_CACHECARD_PARALLEL_H_

#include <cstddef>
#include <cstdint>
#include <functional>

#include "absl/status/status.h"

namespace qkvshare::cachecard {

// Threads for work over `bytes` bytes of card sections: 1 below 4 MiB (a
// thread start costs more than it saves there), else the number of cores,
// capped at 4 and at SetMaxSectionThreads().
int SectionThreads(uint64_t bytes);

// Process-wide cap on SectionThreads(); n <= 0 restores the default (no cap
// beyond min(cores, 4)). bench/card_bench sets 1 to measure per-core rates.
// Thread-safe.
void SetMaxSectionThreads(int n);

// Calls fn(i) for every i in [0, n) on up to `threads` threads (the calling
// thread is one of them). Every index runs even after a failure; returns the
// Status of the lowest failing index, or OK.
absl::Status ParallelForSections(size_t n, int threads,
                                 const std::function<absl::Status(size_t)>& fn);

}  // namespace qkvshare::cachecard

#endif  // QKVSHARE_CACHECARD_PARALLEL_H_
