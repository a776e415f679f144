#include "agents/tokenizer/post_processor.h"

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qkvshare::agents::tokenizer_internal {
namespace {

using ::testing::ElementsAre;

std::unique_ptr<PostProcessor> Make(const char* json) {
  const Json parsed = Json::parse(json);
  absl::StatusOr<std::unique_ptr<PostProcessor>> p = PostProcessor::FromJson(
      parsed.is_null() ? nullptr : &parsed, JsonPath{"t.json", "post_processor"});
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? *std::move(p) : nullptr;
}

TEST(PostProcessorTest, Templates) {
  std::unique_ptr<PostProcessor> llama = Make(R"({"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
      "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}})");
  ASSERT_NE(llama, nullptr);
  EXPECT_THAT(llama->Apply({5, 6}), ElementsAre(1, 5, 6));
  EXPECT_EQ(llama->bos_id(), 1);

  std::unique_ptr<PostProcessor> eos_only = Make(R"({"type": "TemplateProcessing",
      "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
      "special_tokens": {"</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}})");
  ASSERT_NE(eos_only, nullptr);
  EXPECT_THAT(eos_only->Apply({5}), ElementsAre(5, 2));
  EXPECT_EQ(eos_only->bos_id(), std::nullopt);

  std::unique_ptr<PostProcessor> roberta = Make(
      R"({"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0], "trim_offsets": true})");
  ASSERT_NE(roberta, nullptr);
  EXPECT_THAT(roberta->Apply({7}), ElementsAre(0, 7, 2));
  EXPECT_EQ(roberta->bos_id(), 0);

  std::unique_ptr<PostProcessor> none = Make("null");
  ASSERT_NE(none, nullptr);
  EXPECT_THAT(none->Apply({7}), ElementsAre(7));
  EXPECT_EQ(none->bos_id(), std::nullopt);

  std::unique_ptr<PostProcessor> byte_level =
      Make(R"({"type": "ByteLevel", "trim_offsets": false})");
  ASSERT_NE(byte_level, nullptr);
  EXPECT_THAT(byte_level->Apply({7}), ElementsAre(7));
}

TEST(PostProcessorTest, Errors) {
  for (const char* json : {
           R"({"type": "Unknown"})",
           R"({"type": "TemplateProcessing", "single": [{"Sequence": {"id": "B"}}]})",
           R"({"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}]})",
           R"({"type": "RobertaProcessing", "sep": "</s>", "cls": ["<s>", 0]})",
       }) {
    const Json parsed = Json::parse(json);
    absl::StatusOr<std::unique_ptr<PostProcessor>> p =
        PostProcessor::FromJson(&parsed, JsonPath{"t.json", "post_processor"});
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << json;
  }
}

}  // namespace
}  // namespace qkvshare::agents::tokenizer_internal
