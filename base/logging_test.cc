#include "base/logging.h"

#include <spdlog/spdlog.h>

#include "gtest/gtest.h"

namespace qkvshare {
namespace {

TEST(LoggingTest, ExplicitLevelWins) {
  ASSERT_TRUE(InitLogging("debug").ok());
  EXPECT_EQ(spdlog::get_level(), spdlog::level::debug);
  ASSERT_TRUE(InitLogging("warn", /*journald_style=*/true).ok());
  EXPECT_EQ(spdlog::get_level(), spdlog::level::warn);
}

TEST(LoggingTest, EnvironmentLevel) {
  setenv("QKVSHARE_LOG_LEVEL", "error", 1);
  ASSERT_TRUE(InitLogging().ok());
  EXPECT_EQ(spdlog::get_level(), spdlog::level::err);
  unsetenv("QKVSHARE_LOG_LEVEL");
}

TEST(LoggingTest, UnknownLevelIsAnErrorAndFallsBackToInfo) {
  absl::Status s = InitLogging("loud");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("loud"), std::string::npos);
  EXPECT_EQ(spdlog::get_level(), spdlog::level::info);
}

}  // namespace
}  // namespace qkvshare
