#include "daemon/tcp_auth.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qkvshare::daemon {
namespace {

using ::testing::HasSubstr;

std::string WriteFile(const std::string& name, const std::string& text, mode_t mode) {
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/" + name;
  std::ofstream(path) << text;
  chmod(path.c_str(), mode);
  return path;
}

TEST(TcpAuthTest, ReadsAPrivateTokenFile) {
  auto token = ReadTokenFile(WriteFile("ok", "0123456789abcdef-token\n", 0600));
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(*token, "0123456789abcdef-token");
  EXPECT_TRUE(ReadTokenFile(WriteFile("ro", "0123456789abcdef\n", 0400)).ok());
}

TEST(TcpAuthTest, RefusesWeakOrExposedTokenFiles) {
  absl::Status s = ReadTokenFile(WriteFile("readable", "0123456789abcdef\n", 0644)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("has mode 0644; want 0600 or 0400"));
  s = ReadTokenFile(WriteFile("short", "secret\n", 0600)).status();
  EXPECT_THAT(s.message(), HasSubstr("holds 6 bytes; want at least 16"));
  s = ReadTokenFile(WriteFile("spaces", "0123456789 abcdef\n", 0600)).status();
  EXPECT_THAT(s.message(), HasSubstr("one word of printable characters"));
  const std::string target = WriteFile("target", "0123456789abcdef\n", 0600);
  const std::string link = std::string(std::getenv("TEST_TMPDIR")) + "/link";
  ASSERT_EQ(symlink(target.c_str(), link.c_str()), 0);
  EXPECT_EQ(ReadTokenFile(link).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReadTokenFile("/nonexistent/token").status().code(), absl::StatusCode::kNotFound);
}

TEST(TcpAuthTest, ConstantTimeEquals) {
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abcd"));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
}

TEST(TcpAuthTest, ProcessorWantsTheBearerToken) {
  BearerTokenProcessor p("0123456789abcdef");
  using Input = grpc::AuthMetadataProcessor::InputMetadata;
  using Output = grpc::AuthMetadataProcessor::OutputMetadata;
  auto run = [&](const std::string& value, bool set) {
    Input in;
    if (set) in.insert({"authorization", value});
    Output consumed, response;
    grpc::Status s = p.Process(in, nullptr, &consumed, &response);
    if (s.ok()) EXPECT_EQ(consumed.count("authorization"), 1u);
    return s;
  };
  EXPECT_TRUE(run("Bearer 0123456789abcdef", true).ok());
  EXPECT_EQ(run("", false).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(run("Bearer 0123456789abcdeX", true).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(run("0123456789abcdef", true).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(run("Bearer 0123456789abcdef0", true).error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

}  // namespace
}  // namespace qkvshare::daemon
