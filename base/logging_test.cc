#include "base/logging.h"

#include <spdlog/spdlog.h>

#include <string>

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

TEST(LogSafeTest, EscapesWhatCouldForgeALine) {
  EXPECT_EQ(LogSafe("story"), "story");
  EXPECT_EQ(LogSafe("x\n[critical] forged"), "x\\n[critical] forged");
  EXPECT_EQ(LogSafe("a\r\tb\x1b[31m\x7f"), "a\\r\\tb\\x1b[31m\\x7f");
  EXPECT_EQ(LogSafe("back\\slash"), "back\\\\slash");
  // Valid UTF-8 stays; invalid bytes and C1 controls are escaped.
  EXPECT_EQ(LogSafe("caf\xc3\xa9 \xe6\x97\xa5"), "caf\xc3\xa9 \xe6\x97\xa5");
  EXPECT_EQ(LogSafe("\xff\xc3"), "\\xff\\xc3");
  EXPECT_EQ(LogSafe("\xc2\x85"), "\\xc2\\x85");
  EXPECT_EQ(LogSafe("\xed\xa0\x80"), "\\xed\\xa0\\x80");  // a surrogate
}

TEST(LogSafeTest, BoundsTheLength) {
  EXPECT_EQ(LogSafe(std::string(1000, 'a'), 10), "aaaaaaaaaa...(+990 bytes)");
  // Cut on a character boundary.
  EXPECT_EQ(LogSafe("aaaa\xc3\xa9"
                    "bbb",
                    5),
            "aaaa...(+5 bytes)");
}

// The formatter escapes control characters of every message.
TEST(LoggingTest, MessagesAreOneLine) {
  ASSERT_TRUE(InitLogging("info", /*journald_style=*/true).ok());
  testing::internal::CaptureStderr();
  spdlog::info("workflow {} rejected", "w\n[critical] forged");
  spdlog::default_logger()->flush();
  const std::string out = testing::internal::GetCapturedStderr();
  EXPECT_EQ(out, "[info] workflow w\\n[critical] forged rejected\n");
}

}  // namespace
}  // namespace qkvshare
