#include "agents/tokenizer/normalizer.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qkvshare::agents::tokenizer_internal {
namespace {

std::string Normalize(const char* json, std::string text) {
  absl::StatusOr<std::unique_ptr<Normalizer>> n =
      Normalizer::FromJson(Json::parse(json), JsonPath{"t.json", "normalizer"});
  EXPECT_TRUE(n.ok()) << n.status();
  if (!n.ok()) return "<error>";
  absl::Status s = (*n)->Normalize(&text);
  EXPECT_TRUE(s.ok()) << s;
  return text;
}

TEST(NormalizerTest, LlamaPrependAndReplace) {
  const char* llama = R"({"type": "Sequence", "normalizers": [
      {"type": "Prepend", "prepend": "▁"},
      {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]})";
  EXPECT_EQ(Normalize(llama, "Hello  world"), "\u2581Hello\u2581\u2581world");
  EXPECT_EQ(Normalize(llama, " x"), "\u2581\u2581x");
  EXPECT_EQ(Normalize(llama, ""), "");  // Prepend leaves empty text alone
}

TEST(NormalizerTest, UnicodeForms) {
  // "é" decomposed (e + U+0301) and composed (U+00E9); "ﬁ" ligature.
  EXPECT_EQ(Normalize(R"({"type": "NFC"})", "e\u0301t\u00e9"), "\u00e9t\u00e9");
  EXPECT_EQ(Normalize(R"({"type": "NFD"})", "\u00e9"), "e\u0301");
  EXPECT_EQ(Normalize(R"({"type": "NFKC"})", "\ufb01ne \u2460"), "fine 1");
  EXPECT_EQ(Normalize(R"({"type": "NFKD"})", "\ufb01\u00e9"), "fie\u0301");
  EXPECT_EQ(Normalize(R"({"type": "NFC"})", "already NFC \u4e2d"), "already NFC \u4e2d");
}

TEST(NormalizerTest, CaseStripAndAccents) {
  EXPECT_EQ(Normalize(R"({"type": "Lowercase"})", "HeLLo \u00c9T\u00c9"), "hello \u00e9t\u00e9");
  EXPECT_EQ(Normalize(R"({"type": "Strip", "strip_left": true, "strip_right": true})",
                      "\u3000 \t a b \n"),
            "a b");
  EXPECT_EQ(Normalize(R"({"type": "Strip", "strip_left": false, "strip_right": true})", " a "),
            " a");
  EXPECT_EQ(Normalize(R"({"type": "Sequence", "normalizers": [{"type": "NFD"},
                          {"type": "StripAccents"}, {"type": "NFC"}]})",
                      "caf\u00e9 na\u00efve"),
            "cafe naive");
  EXPECT_EQ(Normalize(R"({"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "})",
                      "a    b  c"),
            "a b c");
}

TEST(NormalizerTest, UnsupportedTypesNameTheKey) {
  for (const char* json :
       {R"({"type": "BertNormalizer"})", R"({"type": "Precompiled"})",
        R"({"type": "Sequence", "normalizers": [{"type": "Nmt"}]})", R"({"normalizers": []})"}) {
    absl::StatusOr<std::unique_ptr<Normalizer>> n =
        Normalizer::FromJson(Json::parse(json), JsonPath{"t.json", "normalizer"});
    EXPECT_EQ(n.status().code(), absl::StatusCode::kInvalidArgument) << json;
    EXPECT_THAT(std::string(n.status().message()), testing::HasSubstr("t.json: key 'normalizer"))
        << json;
  }
}

}  // namespace
}  // namespace qkvshare::agents::tokenizer_internal
