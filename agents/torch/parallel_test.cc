#include "agents/torch/parallel.h"

#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "agents/compute_threads.h"
#include "gtest/gtest.h"

namespace qkvshare::agents::internal {
namespace {

// The regression this guards: without -fopenmp on the caller's translation
// unit, at::parallel_for compiles to a plain loop on the calling thread and
// the decode kernels used one core of two.
TEST(TorchParallelForTest, SplitsAcrossTheConfiguredThreads) {
  if (std::thread::hardware_concurrency() < 2) GTEST_SKIP() << "needs 2 cores";
  SetComputeThreads(2);
  std::mutex mu;
  std::set<std::thread::id> threads;
  std::vector<int> hits(1024, 0);
  TorchParallelFor(1024, 16, [&](int64_t b, int64_t e) {
    std::lock_guard<std::mutex> lock(mu);
    threads.insert(std::this_thread::get_id());
    for (int64_t i = b; i < e; ++i) ++hits[i];
  });
  EXPECT_EQ(threads.size(), 2u);
  for (int i = 0; i < 1024; ++i) ASSERT_EQ(hits[i], 1) << "index " << i;
}

TEST(TorchParallelForTest, SmallRangesRunInlineOnce) {
  SetComputeThreads(2);
  std::set<std::thread::id> threads;
  int calls = 0;
  TorchParallelFor(8, 16, [&](int64_t b, int64_t e) {
    threads.insert(std::this_thread::get_id());
    EXPECT_EQ(b, 0);
    EXPECT_EQ(e, 8);
    ++calls;
  });
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(threads.count(std::this_thread::get_id()), 1u);
}

}  // namespace
}  // namespace qkvshare::agents::internal
