#include "agents/tokenizer/pre_tokenizer.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qkvshare::agents::tokenizer_internal {
namespace {

using ::testing::ElementsAre;

// Pre-tokenizes `pieces` (the first starting the text) and returns the texts.
std::vector<std::string> RunPreTokenizer(const char* json, std::vector<std::string> pieces) {
  absl::StatusOr<std::unique_ptr<PreTokenizer>> p =
      PreTokenizer::FromJson(Json::parse(json), JsonPath{"t.json", "pre_tokenizer"});
  EXPECT_TRUE(p.ok()) << p.status();
  if (!p.ok()) return {};
  std::vector<PreToken> tokens;
  for (size_t i = 0; i < pieces.size(); ++i) tokens.push_back(PreToken{pieces[i], i == 0});
  absl::Status s = (*p)->PreTokenize(&tokens);
  EXPECT_TRUE(s.ok()) << s;
  std::vector<std::string> out;
  for (const PreToken& t : tokens) out.push_back(t.text);
  return out;
}

TEST(PreTokenizerTest, ByteLevel) {
  // GPT-2: regex split, then bytes -> byte-level characters (' ' = Ġ, '\n' = Ċ).
  EXPECT_THAT(
      RunPreTokenizer(R"({"type": "ByteLevel", "add_prefix_space": false, "use_regex": true})",
                      {"Hello world\n\u00e9"}),
      ElementsAre("Hello", "\u0120world", "\u010a", "\u00c3\u00a9"));
  // add_prefix_space adds a space to each piece not starting with one.
  EXPECT_THAT(
      RunPreTokenizer(R"({"type": "ByteLevel", "add_prefix_space": true, "use_regex": false})",
                      {"Hi you", " there"}),
      ElementsAre("\u0120Hi\u0120you", "\u0120there"));
}

TEST(PreTokenizerTest, MetaspacePrependSchemes) {
  EXPECT_THAT(
      RunPreTokenizer(R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always",
                     "split": true})",
                      {"Hey   friend!"}),
      ElementsAre("\u2581Hey", "\u2581", "\u2581", "\u2581friend!"));
  // "first": only the piece at the start of the text gets "▁".
  EXPECT_THAT(
      RunPreTokenizer(R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first",
                     "split": false})",
                      {"Hey my", "how are"}),
      ElementsAre("\u2581Hey\u2581my", "how\u2581are"));
  EXPECT_THAT(
      RunPreTokenizer(R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "never",
                     "split": false})",
                      {"a b"}),
      ElementsAre("a\u2581b"));
  // Legacy form: add_prefix_space true == always; an existing "▁" is kept.
  EXPECT_THAT(
      RunPreTokenizer(R"({"type": "Metaspace", "replacement": "▁", "add_prefix_space": true})",
                      {" x", "y"}),
      ElementsAre("\u2581x", "\u2581y"));
}

TEST(PreTokenizerTest, SplitDigitsAndSequence) {
  const char* llama3 = R"({"type": "Split", "pattern": {"Regex":
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
      "behavior": "Isolated", "invert": false})";
  EXPECT_THAT(RunPreTokenizer(llama3, {"I'VE 1234567 apples!\n\nOK"}),
              ElementsAre("I", "'VE", " ", "123", "456", "7", " apples", "!\n\n", "OK"));
  EXPECT_THAT(RunPreTokenizer(R"({"type": "Digits", "individual_digits": true})", {"ab123c"}),
              ElementsAre("ab", "1", "2", "3", "c"));
  EXPECT_THAT(RunPreTokenizer(R"({"type": "Digits", "individual_digits": false})", {"ab123c4"}),
              ElementsAre("ab", "123", "c", "4"));
  // SmolLM: Digits then ByteLevel.
  EXPECT_THAT(RunPreTokenizer(R"({"type": "Sequence", "pretokenizers": [
                       {"type": "Digits", "individual_digits": true},
                       {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}]})",
                              {"in 2024"}),
              ElementsAre("in", "\u0120", "2", "0", "2", "4"));
  EXPECT_THAT(RunPreTokenizer(R"({"type": "Whitespace"})", {"Hey  man!!, ok"}),
              ElementsAre("Hey", "man", "!!,", "ok"));
  EXPECT_THAT(RunPreTokenizer(R"({"type": "WhitespaceSplit"})", {"Hey  man!!,\tok"}),
              ElementsAre("Hey", "man!!,", "ok"));
  EXPECT_THAT(
      RunPreTokenizer(R"({"type": "Punctuation", "behavior": "Contiguous"})", {"Hey!! you?"}),
      ElementsAre("Hey", "!!", " you", "?"));
}

TEST(PreTokenizerTest, UnsupportedTypesNameTheKey) {
  for (const char* json :
       {R"({"type": "BertPreTokenizer"})", R"({"type": "UnicodeScripts"})",
        R"({"type": "Split", "pattern": {"String": "x"}})",
        R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "sometimes"})",
        R"({"type": "Metaspace", "replacement": "ab"})"}) {
    absl::StatusOr<std::unique_ptr<PreTokenizer>> p =
        PreTokenizer::FromJson(Json::parse(json), JsonPath{"t.json", "pre_tokenizer"});
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << json;
    EXPECT_THAT(std::string(p.status().message()), testing::HasSubstr("key 'pre_tokenizer"))
        << json;
  }
}

}  // namespace
}  // namespace qkvshare::agents::tokenizer_internal
