#include "cachecard/parallel.h"

#include <algorithm>
#include <atomic>
#include <system_error>
#include <thread>
#include <vector>

namespace qkvshare::cachecard {

namespace {
std::atomic<int> max_section_threads{0};
}  // namespace

int SectionThreads(uint64_t bytes) {
  constexpr uint64_t kMinParallelBytes = uint64_t{4} << 20;
  if (bytes < kMinParallelBytes) return 1;
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  const int cap = max_section_threads.load(std::memory_order_relaxed);
  return std::clamp(cores, 1, cap > 0 ? std::min(cap, 4) : 4);
}

void SetMaxSectionThreads(int n) { max_section_threads.store(n > 0 ? n : 0); }

absl::Status ParallelForSections(size_t n, int threads,
                                 const std::function<absl::Status(size_t)>& fn) {
  std::vector<absl::Status> results(n);
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) results[i] = fn(i);
  };
  const size_t extra = n == 0 ? 0 : std::min<size_t>(std::max(threads, 1), n) - 1;
  std::vector<std::thread> pool;
  pool.reserve(extra);
  for (size_t t = 0; t < extra; ++t) {
    try {
      pool.emplace_back(worker);
    } catch (const std::system_error&) {
      break;  // no more threads (RLIMIT_NPROC, memory): the others do the work
    }
  }
  worker();
  for (std::thread& t : pool) t.join();
  for (absl::Status& s : results) {
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace qkvshare::cachecard
