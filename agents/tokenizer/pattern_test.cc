#include "agents/tokenizer/pattern.h"

#include <string>
#include <vector>

#include "agents/tokenizer/pre_tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qkvshare::agents::tokenizer_internal {
namespace {

using ::testing::ElementsAre;

std::vector<std::string> SplitToStrings(const Pattern& p, std::string_view text,
                                        SplitBehavior behavior, bool invert = false) {
  std::vector<ByteRange> ranges;
  absl::Status s = p.Split(text, behavior, invert, &ranges);
  EXPECT_TRUE(s.ok()) << s;
  std::vector<std::string> out;
  for (const ByteRange& r : ranges) out.emplace_back(text.substr(r.first, r.second - r.first));
  return out;
}

// The examples of the tokenizers library's SplitDelimiterBehavior docs.
TEST(PatternTest, SplitBehaviors) {
  std::unique_ptr<Pattern> dash = Pattern::Literal("-");
  const std::string text = "the-final--countdown";
  EXPECT_THAT(SplitToStrings(*dash, text, SplitBehavior::kRemoved),
              ElementsAre("the", "final", "countdown"));
  EXPECT_THAT(SplitToStrings(*dash, text, SplitBehavior::kIsolated),
              ElementsAre("the", "-", "final", "-", "-", "countdown"));
  EXPECT_THAT(SplitToStrings(*dash, text, SplitBehavior::kMergedWithPrevious),
              ElementsAre("the-", "final-", "-", "countdown"));
  EXPECT_THAT(SplitToStrings(*dash, text, SplitBehavior::kMergedWithNext),
              ElementsAre("the", "-final", "-", "-countdown"));
  EXPECT_THAT(SplitToStrings(*dash, text, SplitBehavior::kContiguous),
              ElementsAre("the", "-", "final", "--", "countdown"));
  // invert: the non-matches become the delimiters (each "-" is its own match).
  EXPECT_THAT(SplitToStrings(*dash, text, SplitBehavior::kRemoved, /*invert=*/true),
              ElementsAre("-", "-", "-"));
  EXPECT_THAT(SplitToStrings(*dash, text, SplitBehavior::kContiguous, /*invert=*/true),
              ElementsAre("the", "-", "final", "--", "countdown"));
  EXPECT_TRUE(SplitToStrings(*dash, "", SplitBehavior::kIsolated).empty());
}

TEST(PatternTest, Gpt2RegexSplitsWords) {
  absl::StatusOr<std::unique_ptr<Pattern>> p = Pattern::FromRegex(kGpt2SplitRegex);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_THAT(
      SplitToStrings(**p, "Hello world's  2024 caf\u00e9!!\n\n  x", SplitBehavior::kIsolated),
      ElementsAre("Hello", " world", "'s", " ", " 2024", " caf\u00e9", "!!", "\n\n ", " x"));
}

TEST(PatternTest, FromJsonAndReplace) {
  absl::StatusOr<std::unique_ptr<Pattern>> s =
      Pattern::FromJson(Json::parse(R"({"String": " "})"), JsonPath{"t.json", "p"});
  ASSERT_TRUE(s.ok());
  absl::StatusOr<std::string> replaced = (*s)->ReplaceAll("a b  c", "\u2581");
  ASSERT_TRUE(replaced.ok());
  EXPECT_EQ(*replaced, "a\u2581b\u2581\u2581c");
  absl::StatusOr<std::unique_ptr<Pattern>> r =
      Pattern::FromJson(Json::parse(R"({"Regex": "\\s+"})"), JsonPath{"t.json", "p"});
  ASSERT_TRUE(r.ok());
  replaced = (*r)->ReplaceAll("a \t b\n", "_");
  ASSERT_TRUE(replaced.ok());
  EXPECT_EQ(*replaced, "a_b_");
  // Unicode classes (PCRE2_UCP): \p{L} covers accented and CJK letters.
  absl::StatusOr<std::unique_ptr<Pattern>> letters = Pattern::FromRegex("\\p{L}+");
  ASSERT_TRUE(letters.ok());
  EXPECT_THAT(
      SplitToStrings(**letters, "\u00e9t\u00e9 \u4e2d\u6587!", SplitBehavior::kRemoved, true),
      ElementsAre("\u00e9t\u00e9", "\u4e2d\u6587"));
}

TEST(PatternTest, Errors) {
  absl::StatusOr<std::unique_ptr<Pattern>> bad =
      Pattern::FromJson(Json::parse(R"({"Regex": "a(b"})"), JsonPath{"t.json", "x.pattern"});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), testing::HasSubstr("'x.pattern.Regex'"));
  bad = Pattern::FromJson(Json::parse(R"({"Glob": "*"})"), JsonPath{"t.json", "x.pattern"});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<SplitBehavior> behavior =
      ParseSplitBehavior(Json("Sideways"), JsonPath{"t.json", "b"});
  EXPECT_EQ(behavior.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace qkvshare::agents::tokenizer_internal
