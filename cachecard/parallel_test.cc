#include "cachecard/parallel.h"

#include <atomic>
#include <cstdint>
#include <set>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"

namespace qkvshare::cachecard {
namespace {

TEST(SectionThreadsTest, OneThreadBelowFourMiBThenCoresCappedAtFour) {
  EXPECT_EQ(SectionThreads(0), 1);
  EXPECT_EQ(SectionThreads((uint64_t{4} << 20) - 1), 1);
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  const int expected = cores < 1 ? 1 : (cores > 4 ? 4 : cores);
  EXPECT_EQ(SectionThreads(uint64_t{4} << 20), expected);
  EXPECT_EQ(SectionThreads(uint64_t{1} << 40), expected);
}

TEST(SectionThreadsTest, ProcessWideCap) {
  SetMaxSectionThreads(1);
  EXPECT_EQ(SectionThreads(uint64_t{1} << 30), 1);
  SetMaxSectionThreads(0);
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  EXPECT_EQ(SectionThreads(uint64_t{1} << 30), cores < 1 ? 1 : (cores > 4 ? 4 : cores));
}

TEST(ParallelForSectionsTest, RunsEveryIndexExactlyOnce) {
  for (int threads : {0, 1, 2, 3, 8}) {
    for (size_t n : {size_t{0}, size_t{1}, size_t{2}, size_t{7}, size_t{60}}) {
      std::vector<std::atomic<int>> calls(n);
      absl::Status s = ParallelForSections(n, threads, [&](size_t i) {
        calls[i].fetch_add(1);
        return absl::OkStatus();
      });
      EXPECT_TRUE(s.ok()) << s;
      for (size_t i = 0; i < n; ++i) {
        EXPECT_EQ(calls[i].load(), 1) << "threads " << threads << " n " << n << " i " << i;
      }
    }
  }
}

TEST(ParallelForSectionsTest, ReturnsLowestFailingIndexAndStillRunsTheRest) {
  std::atomic<int> ran{0};
  absl::Status s = ParallelForSections(20, 4, [&](size_t i) {
    ran.fetch_add(1);
    if (i == 13 || i == 5 || i == 17) return absl::DataLossError(absl::StrCat("section ", i));
    return absl::OkStatus();
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(s.message(), "section 5");
  EXPECT_EQ(ran.load(), 20);
}

TEST(ParallelForSectionsTest, UsesMoreThanOneThreadWhenAskedAndAvailable) {
  if (std::thread::hardware_concurrency() < 2) GTEST_SKIP() << "one core";
  absl::Mutex mu;
  std::set<std::thread::id> ids;
  std::atomic<int> arrived{0};
  absl::Status s = ParallelForSections(2, 2, [&](size_t) {
    {
      absl::MutexLock lock(&mu);
      ids.insert(std::this_thread::get_id());
    }
    // Both indices wait for each other: passes only if they run concurrently
    // (bounded, so a serial implementation fails instead of hanging).
    arrived.fetch_add(1);
    for (int spin = 0; spin < 2000 && arrived.load() < 2; ++spin) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return arrived.load() == 2 ? absl::OkStatus() : absl::DeadlineExceededError("alone");
  });
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(ids.size(), 2u);
}

}  // namespace
}  // namespace qkvshare::cachecard
