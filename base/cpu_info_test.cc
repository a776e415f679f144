#include "base/cpu_info.h"

#include <string>

#include "gtest/gtest.h"
#include "hwy/targets.h"

namespace qkvshare {
namespace {

TEST(CpuInfoTest, SummaryNamesCpuAndBestTarget) {
  const std::string summary = CpuSummary();
  EXPECT_NE(summary.find("cpu: "), std::string::npos) << summary;
  EXPECT_NE(summary.find(BestSimdTargetName()), std::string::npos) << summary;
  EXPECT_FALSE(CpuModelName().empty());
}

TEST(CpuInfoTest, ForceEachUsableTargetMakesItBest) {
  const auto targets = UsableSimdTargets();
  ASSERT_FALSE(targets.empty());
  for (int64_t t : targets) {
    ASSERT_TRUE(ForceSimdTarget(hwy::TargetName(t)).ok()) << hwy::TargetName(t);
    EXPECT_EQ(BestSimdTargetName(), hwy::TargetName(t));
  }
  ASSERT_TRUE(ForceSimdTarget("best").ok());
  EXPECT_EQ(BestSimdTargetName(), hwy::TargetName(targets.front()));
}

TEST(CpuInfoTest, UnknownTargetIsInvalidArgument) {
  EXPECT_EQ(ForceSimdTarget("avx9000").code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace qkvshare
