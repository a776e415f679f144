#include "daemon/prompt.h"

#include <chrono>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "agents/tokenizer/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qkvshare::daemon {
namespace {

using ::testing::HasSubstr;

constexpr char kStoriesTokenizer[] = "models/stories260K/tokenizer.json";

std::string Repeat(const std::string& s, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

// The computed size equals the size of the real expansion.
TEST(PromptTest, ExpandedBytesMatchTheExpansion) {
  const std::string tmpl = "[INST] {instruction} [/INST] {instruction}";
  const std::string inst = "Read {input}, then {previous}, hop {hop}: {input}{other}";
  const std::string input = "Once upon a time";
  const std::string previous = "there was a dog.";
  const std::string expanded = absl::StrReplaceAll(
      tmpl, {{"{instruction}",
              absl::StrReplaceAll(
                  inst, {{"{input}", input}, {"{previous}", previous}, {"{hop}", "12"}})}});
  EXPECT_EQ(ExpandedPromptBytes(tmpl, inst, input.size(), previous.size(), 12),
            static_cast<int64_t>(expanded.size()));
  EXPECT_EQ(ExpandedPromptBytes("{instruction}", "", 5, 5, 1), 0);
}

// {input} x 8000 of a 1 MiB input would be 8 GiB: sized (not built) and
// rejected at once, naming the sizes.
TEST(PromptTest, TemplateBombIsRejectedWithoutExpanding) {
  const std::string bomb = Repeat("{input}", 8000);
  const int64_t mib = 1 << 20;
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(ExpandedPromptBytes("{instruction}", bomb, mib, 0, 1), 8000 * mib);
  absl::Status s = CheckExpandedPromptBytes("{instruction}", bomb, mib, 0, 1, mib, "hop 1");
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("hop 1: the prompt would hold 8388608000 bytes"));
  EXPECT_THAT(s.message(), HasSubstr("{input} x8000 of 1048576 bytes"));
  EXPECT_THAT(s.message(), HasSubstr("limits.max_input_bytes is 1048576"));
  EXPECT_LT(ms, 50);
  // {instruction} repeated in the template multiplies.
  EXPECT_EQ(CheckExpandedPromptBytes("{instruction}{instruction}", "{input}", 600, 0, 1, 1000, "x")
                .code(),
            absl::StatusCode::kInvalidArgument);
  // An input of the full limit fits once, whatever the template adds.
  EXPECT_TRUE(
      CheckExpandedPromptBytes("<s>{instruction}</s>", "Summarize: {input}", mib, 0, 1, mib, "x")
          .ok());
  // Saturates instead of overflowing.
  EXPECT_EQ(ExpandedPromptBytes(Repeat("{instruction}", 4000), bomb, int64_t{1} << 60, 0, 1),
            std::numeric_limits<int64_t>::max());
}

class EncodeBoundedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto t = agents::Tokenizer::FromFile(kStoriesTokenizer);
    ASSERT_TRUE(t.ok()) << t.status();
    tok_ = std::move(*t);
  }
  std::unique_ptr<agents::Tokenizer> tok_;
};

TEST_F(EncodeBoundedTest, ShortTextIsTheFullEncoding) {
  const std::string text = Repeat("Lily saw a big dog in the park. ", 20);
  auto full = tok_->Encode(text, true);
  auto bounded = EncodeBounded(*tok_, text, true, 4096);
  ASSERT_TRUE(full.ok() && bounded.ok());
  EXPECT_EQ(*bounded, *full);
  // Longer than the first prefix (8 tokens' bytes) but within the limit:
  // still the full encoding.
  auto small_limit = EncodeBounded(*tok_, text, true, static_cast<int64_t>(full->size()));
  ASSERT_TRUE(small_limit.ok()) << small_limit.status();
  EXPECT_EQ(*small_limit, *full);
}

// 16 MiB of text against a 512-token limit: the work stops after a few KiB.
TEST_F(EncodeBoundedTest, LongTextStopsEarly) {
  const std::string text = Repeat("Lily saw a big dog in the park. ", 16 << 15);  // 16 MiB
  const auto t0 = std::chrono::steady_clock::now();
  auto ids = EncodeBounded(*tok_, text, true, 512);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(ids.status().message(), HasSubstr("more than 512 tokens"));
  EXPECT_LT(ms, 2000);
}

// One id per 16 bytes: prefixes double until the text is covered.
class SixteenBytesPerToken final : public agents::Tokenizer {
 public:
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool) const override {
    ++calls;
    return std::vector<int32_t>((text.size() + 15) / 16, 7);
  }
  std::string Decode(absl::Span<const int32_t>, bool) const override { return ""; }
  int32_t vocab_size() const override { return 8; }
  std::optional<int32_t> TokenToId(std::string_view) const override { return std::nullopt; }
  std::string IdToToken(int32_t) const override { return ""; }
  bool IsSpecial(int32_t) const override { return false; }
  std::optional<int32_t> bos_id() const override { return std::nullopt; }
  mutable int calls = 0;
};

TEST(EncodeBoundedFakeTest, PrefixesDoubleAndCancellationIsChecked) {
  SixteenBytesPerToken tok;
  const std::string text(100000, 'x');  // 6250 tokens
  // Limit 1000: prefixes of 8000, 16000 bytes (500, 1000 ids), then 32000
  // bytes is 2000 > 1000 ids: OutOfRange after three encodes.
  auto ids = EncodeBounded(tok, text, true, 1000);
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(ids.status().message(), HasSubstr("the first 32000 bytes of 100000 are 2000"));
  EXPECT_EQ(tok.calls, 3);
  // Within the limit: prefixes grow until the whole text is encoded.
  tok.calls = 0;
  ids = EncodeBounded(tok, text, true, 7000);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(ids->size(), 6250u);
  EXPECT_EQ(tok.calls, 2);  // 56000 bytes, then all of it
  // A cancel between prefixes stops the work.
  tok.calls = 0;
  int checks = 0;
  ids = EncodeBounded(tok, text, true, 7000, [&] {
    return ++checks >= 2 ? absl::CancelledError("cancelled by client") : absl::OkStatus();
  });
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(tok.calls, 1);
}

TEST_F(EncodeBoundedTest, InvalidUtf8IsTheTokenizersError) {
  auto ids = EncodeBounded(*tok_, "ok \xff bad", true, 512);
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace qkvshare::daemon
