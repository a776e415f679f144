#include "agents/tokenizer/added_vocabulary.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qkvshare::agents::tokenizer_internal {
namespace {

using ::testing::ElementsAre;

// Segments as "text" or "<id>" strings.
std::vector<std::string> Show(std::string_view text,
                              const std::vector<AddedVocabulary::Segment>& segments) {
  std::vector<std::string> out;
  for (const auto& s : segments) {
    const std::string piece(text.substr(s.begin, s.end - s.begin));
    out.push_back(s.id >= 0 ? "<" + std::to_string(s.id) + ":" + piece + ">" : piece);
  }
  return out;
}

std::unique_ptr<AddedVocabulary> Vocab(const char* json, const Normalizer* normalizer = nullptr) {
  const Json parsed = Json::parse(json);
  absl::StatusOr<std::unique_ptr<AddedVocabulary>> v =
      AddedVocabulary::FromJson(&parsed, normalizer, JsonPath{"t.json", "added_tokens"});
  EXPECT_TRUE(v.ok()) << v.status();
  return v.ok() ? *std::move(v) : nullptr;
}

TEST(AddedVocabularyTest, LongestMatchFirst) {
  std::unique_ptr<AddedVocabulary> v = Vocab(R"([
      {"id": 10, "content": "<|im", "special": true, "normalized": false},
      {"id": 11, "content": "<|im_start|>", "special": true, "normalized": false},
      {"id": 12, "content": "<|im_end|>", "special": true, "normalized": false}])");
  ASSERT_NE(v, nullptr);
  const std::string text = "<|im_start|>user\nhi<|im_end|><|im";
  std::vector<AddedVocabulary::Segment> segments;
  v->SplitRaw(text, &segments);
  EXPECT_THAT(Show(text, segments),
              ElementsAre("<11:<|im_start|>>", "user\nhi", "<12:<|im_end|>>", "<10:<|im>"));
  EXPECT_EQ(v->TokenToId("<|im_end|>"), 12);
  EXPECT_EQ(v->id_limit(), 13);
  ASSERT_NE(v->FindById(11), nullptr);
  EXPECT_TRUE(v->FindById(11)->special);
  EXPECT_EQ(v->FindById(5), nullptr);
}

// The tokenizers library's own cases (lstrip/rstrip/single_word).
TEST(AddedVocabularyTest, StripAndSingleWord) {
  std::unique_ptr<AddedVocabulary> v = Vocab(R"([
      {"id": 0, "content": "<mask>", "single_word": true, "lstrip": true, "rstrip": true,
       "normalized": false}])");
  ASSERT_NE(v, nullptr);
  const std::string text = "Hi <mask> there\t<mask>\t<mask>\u2000";
  std::vector<AddedVocabulary::Segment> segments;
  v->SplitRaw(text, &segments);
  EXPECT_THAT(Show(text, segments),
              ElementsAre("Hi", "<0: <mask> >", "there", "<0:\t<mask>\t>", "<0:<mask>\u2000>"));

  std::unique_ptr<AddedVocabulary> single = Vocab(R"([
      {"id": 0, "content": "<mask>", "single_word": true, "normalized": false}])");
  ASSERT_NE(single, nullptr);
  const std::string words = "<mask> My name <mask> A<mask> <mask>ony <mask>";
  segments.clear();
  single->SplitRaw(words, &segments);
  EXPECT_THAT(Show(words, segments), ElementsAre("<0:<mask>>", " My name ", "<0:<mask>>",
                                                 " A<mask> <mask>ony ", "<0:<mask>>"));
}

TEST(AddedVocabularyTest, NormalizedTokensMatchNormalizedText) {
  absl::StatusOr<std::unique_ptr<Normalizer>> lower =
      Normalizer::FromJson(Json::parse(R"({"type": "Lowercase"})"), JsonPath{"t.json", "n"});
  ASSERT_TRUE(lower.ok());
  std::unique_ptr<AddedVocabulary> v = Vocab(R"([
      {"id": 7, "content": "Yesterday", "normalized": true},
      {"id": 8, "content": "[CLS]", "special": true, "normalized": false}])",
                                             lower->get());
  ASSERT_NE(v, nullptr);
  EXPECT_TRUE(v->has_normalized_tokens());
  std::vector<AddedVocabulary::Segment> raw;
  v->SplitRaw("[CLS] I read YESTERDAY", &raw);
  EXPECT_THAT(Show("[CLS] I read YESTERDAY", raw), ElementsAre("<8:[CLS]>", " I read YESTERDAY"));
  // The normalized trie holds "yesterday".
  std::vector<AddedVocabulary::Segment> normalized;
  v->SplitNormalized(" i read yesterday", &normalized);
  EXPECT_THAT(Show(" i read yesterday", normalized), ElementsAre(" i read ", "<7:yesterday>"));
}

}  // namespace
}  // namespace qkvshare::agents::tokenizer_internal
