// Tokenizer on the bundled stories260K tokenizer.json (SentencePiece-style
// BPE with byte fallback) against run.c's golden ids, plus loading errors.
#include "agents/tokenizer/tokenizer.h"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace qkvshare::agents {
namespace {

using ::testing::HasSubstr;

constexpr char kStoriesTokenizer[] = "models/stories260K/tokenizer.json";
constexpr char kGolden[] = "models/stories260K/golden/greedy.json";

std::unique_ptr<Tokenizer> LoadStories() {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromFile(kStoriesTokenizer);
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

nlohmann::json LoadGoldenCases() {
  std::ifstream in(kGolden);
  EXPECT_TRUE(in.good()) << kGolden;
  nlohmann::json golden = nlohmann::json::parse(in);
  return golden.at("cases");
}

std::vector<int32_t> Ids(const nlohmann::json& array) { return array.get<std::vector<int32_t>>(); }

TEST(StoriesTokenizerTest, Metadata) {
  std::unique_ptr<Tokenizer> tok = LoadStories();
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 512);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_TRUE(tok->IsSpecial(0));
  EXPECT_TRUE(tok->IsSpecial(1));
  EXPECT_TRUE(tok->IsSpecial(2));
  EXPECT_FALSE(tok->IsSpecial(265));
  EXPECT_EQ(tok->TokenToId("\u2581the"), 265);
  EXPECT_EQ(tok->TokenToId("<s>"), 1);
  EXPECT_EQ(tok->TokenToId("no such piece"), std::nullopt);
  EXPECT_EQ(tok->IdToToken(13), "<0x0A>");
  EXPECT_EQ(tok->IdToToken(1), "<s>");
  EXPECT_EQ(tok->IdToToken(512), "");
  EXPECT_EQ(tok->IdToToken(-1), "");
}

TEST(StoriesTokenizerTest, GoldenEncodeDecodeAndStream) {
  std::unique_ptr<Tokenizer> tok = LoadStories();
  ASSERT_NE(tok, nullptr);
  const nlohmann::json cases = LoadGoldenCases();
  ASSERT_EQ(cases.size(), 8u);
  for (const nlohmann::json& c : cases) {
    const std::string prompt = c.at("prompt").get<std::string>();
    SCOPED_TRACE("prompt: \"" + prompt + "\"");
    const std::vector<int32_t> prompt_ids = Ids(c.at("prompt_ids"));
    const std::vector<int32_t> generated = Ids(c.at("generated_ids"));
    const std::string text = c.at("text").get<std::string>();

    absl::StatusOr<std::vector<int32_t>> encoded = tok->Encode(prompt);
    ASSERT_TRUE(encoded.ok()) << encoded.status();
    EXPECT_EQ(*encoded, prompt_ids);

    std::vector<int32_t> all = prompt_ids;
    all.insert(all.end(), generated.begin(), generated.end());
    EXPECT_EQ(tok->Decode(all), text);
    // The prompt decodes to itself.
    EXPECT_EQ(tok->Decode(prompt_ids), prompt);

    StreamingDetokenizer stream(*tok);
    std::string streamed;
    for (int32_t id : all) streamed += stream.Push(id);
    streamed += stream.Flush();
    EXPECT_EQ(streamed, text);

    // With the prompt as prefix, the stream yields the completion only.
    StreamingDetokenizer after_prompt(*tok, true, prompt_ids);
    std::string completion;
    for (int32_t id : generated) completion += after_prompt.Push(id);
    completion += after_prompt.Flush();
    EXPECT_EQ(completion, c.at("completion_text").get<std::string>());
  }
}

TEST(StoriesTokenizerTest, HandCheckedPieces) {
  std::unique_ptr<Tokenizer> tok = LoadStories();
  ASSERT_NE(tok, nullptr);
  // "Zoë": 'ë' (C3 AB) is not a piece: byte fallback <0xC3> <0xAB> = ids 198, 174.
  absl::StatusOr<std::vector<int32_t>> ids = tok->Encode("\xC3\xAB", /*add_special_tokens=*/false);
  ASSERT_TRUE(ids.ok()) << ids.status();
  // "▁" alone, then the two byte pieces.
  ASSERT_EQ(ids->size(), 3u);
  EXPECT_EQ(tok->IdToToken((*ids)[0]), "\u2581");
  EXPECT_EQ((*ids)[1], 198);
  EXPECT_EQ((*ids)[2], 174);
  // Special tokens in the text are matched before normalization, and each
  // text segment gets its own "▁" (the legacy Llama behaviour).
  ids = tok->Encode("the<s>the", false);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, (std::vector<int32_t>{265, 1, 265}));
  EXPECT_EQ(tok->Decode(*ids, /*skip_special_tokens=*/false), "the<s> the");
  EXPECT_EQ(tok->Decode(*ids), "the the");
  // The empty text is just BOS (no dummy-prefix "▁").
  ids = tok->Encode("");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, std::vector<int32_t>{1});
  ids = tok->Encode("", false);
  ASSERT_TRUE(ids.ok());
  EXPECT_TRUE(ids->empty());
}

TEST(StoriesTokenizerTest, RoundTrip) {
  std::unique_ptr<Tokenizer> tok = LoadStories();
  ASSERT_NE(tok, nullptr);
  const std::vector<std::string> texts = {
      "Once upon a time",
      "Max said, \"Zo\u00eb, look at the caf\u00e9!\"",
      "na\u00efve r\u00e9sum\u00e9 \u00c5ngstr\u00f6m \u00df \u0131 \u1e9e",
      "party \U0001F389\U0001F1EB\U0001F1F7 \U0001F468\u200D\U0001F469\u200D\U0001F467 done",
      "\u4e2d\u6587\u6d4b\u8bd5\uff0c\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 "
      "\ud55c\uad6d\uc5b4",
      "line one\nline two\r\n\n\ttabbed\t\tand  two   spaces    four",
      "  leading spaces and trailing  ",
      " ",
      "\n",
      "e\u0301 (decomposed) vs \u00e9 (composed)",
      "tabs\tin\tthe\tmiddle and the end\t",
      "",
  };
  for (const std::string& text : texts) {
    SCOPED_TRACE("text: \"" + text + "\"");
    for (bool specials : {true, false}) {
      absl::StatusOr<std::vector<int32_t>> ids = tok->Encode(text, specials);
      ASSERT_TRUE(ids.ok()) << ids.status();
      EXPECT_EQ(tok->Decode(*ids), text);
    }
  }
  // Golden texts round-trip too.
  for (const nlohmann::json& c : LoadGoldenCases()) {
    const std::string text = c.at("text").get<std::string>();
    absl::StatusOr<std::vector<int32_t>> ids = tok->Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(tok->Decode(*ids), text);
  }
}

// The newer Llama-2/Mistral form: no normalizer, a Metaspace pre-tokenizer
// with prepend_scheme "first" (only the piece that starts the text gets "▁")
// and split false. Expected ids checked with the tokenizers library 0.23.2.
TEST(StoriesTokenizerTest, MetaspacePrependFirstVariant) {
  std::ifstream in(kStoriesTokenizer);
  nlohmann::json json = nlohmann::json::parse(in);
  json["normalizer"] = nullptr;
  json["pre_tokenizer"] = {{"type", "Metaspace"},
                           {"replacement", "\u2581"},
                           {"prepend_scheme", "first"},
                           {"split", false}};
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromJson(json.dump(), "metaspace");
  ASSERT_TRUE(tok.ok()) << tok.status();
  // Plain text encodes as with the legacy normalizer.
  for (const nlohmann::json& c : LoadGoldenCases()) {
    absl::StatusOr<std::vector<int32_t>> ids = (*tok)->Encode(c.at("prompt").get<std::string>());
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, Ids(c.at("prompt_ids")));
  }
  // After <s> the text is not at the start: "the" -> t he (413 260), no "▁".
  absl::StatusOr<std::vector<int32_t>> ids = (*tok)->Encode("the<s>the");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (std::vector<int32_t>{1, 265, 1, 413, 260}));
  EXPECT_EQ((*tok)->Decode(*ids, false), "<s> the<s>the");
  // An existing leading space is the "▁"; split=false keeps "▁▁" runs in one word.
  EXPECT_EQ(*(*tok)->Encode(" the"), (std::vector<int32_t>{1, 265}));
  EXPECT_EQ(*(*tok)->Encode("<s> the"), (std::vector<int32_t>{1, 1, 265}));
  EXPECT_EQ(*(*tok)->Encode("the  the"), (std::vector<int32_t>{1, 265, 410, 265}));
}

TEST(StoriesTokenizerTest, RejectsInvalidUtf8) {
  std::unique_ptr<Tokenizer> tok = LoadStories();
  ASSERT_NE(tok, nullptr);
  for (std::string bad : {std::string("abc\xFF"), std::string("\xC3"), std::string("a\xC3(b"),
                          std::string("\xED\xA0\x80"),  // a UTF-16 surrogate
                          std::string("\xC0\xAF")}) {   // overlong '/'
    absl::StatusOr<std::vector<int32_t>> ids = tok->Encode(bad);
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(ids.status().message(), HasSubstr("UTF-8"));
  }
}

TEST(StoriesTokenizerTest, DecodeIgnoresUnknownIdsAndReplacesBadBytes) {
  std::unique_ptr<Tokenizer> tok = LoadStories();
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->Decode({265, 9999, -5, 265}), "the the");
  // <0xC3> followed by a normal piece: an incomplete character -> U+FFFD.
  EXPECT_EQ(tok->Decode({198, 265}), "\uFFFD the");
  // A lone continuation byte, and a truncated 4-byte sequence at the end.
  EXPECT_EQ(tok->Decode({131}), "\uFFFD");
  EXPECT_EQ(tok->Decode({243, 162}), "\uFFFD");
}

TEST(StoriesTokenizerTest, ConcurrentEncodeAndDecodeAgree) {
  std::unique_ptr<Tokenizer> tok = LoadStories();
  ASSERT_NE(tok, nullptr);
  std::vector<std::string> texts;
  for (const nlohmann::json& c : LoadGoldenCases()) {
    // Split into words so that the BPE word cache is shared and contended.
    std::stringstream words(c.at("text").get<std::string>());
    for (std::string w; words >> w;) texts.push_back(w);
  }
  std::vector<std::vector<int32_t>> expected;
  for (const std::string& t : texts) expected.push_back(*tok->Encode(t));
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 3; ++round) {
        for (size_t i = 0; i < texts.size(); ++i) {
          const size_t k = (i * 7 + static_cast<size_t>(t)) % texts.size();
          absl::StatusOr<std::vector<int32_t>> ids = tok->Encode(texts[k]);
          if (!ids.ok() || *ids != expected[k] || tok->Decode(*ids) != texts[k]) ++mismatches[t];
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_THAT(mismatches, ::testing::Each(0));
}

class TokenizerLoadTest : public ::testing::Test {
 protected:
  std::string WriteTemp(const std::string& name, const std::string& content) {
    const char* dir = std::getenv("TEST_TMPDIR");
    const std::string path = std::string(dir == nullptr ? "/tmp" : dir) + "/" + name;
    std::ofstream(path) << content;
    return path;
  }
};

TEST_F(TokenizerLoadTest, MissingFileIsNotFound) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromFile("/nonexistent/tok.json");
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(tok.status().message(), HasSubstr("/nonexistent/tok.json"));
}

TEST_F(TokenizerLoadTest, MalformedJsonNamesTheFile) {
  const std::string path = WriteTemp("malformed.json", "{\"model\": {\"type\": \"BPE\",");
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromFile(path);
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tok.status().message(), HasSubstr(path));
  EXPECT_THAT(tok.status().message(), HasSubstr("malformed JSON"));
}

TEST_F(TokenizerLoadTest, UnsupportedModelTypesNameFileAndKey) {
  for (const char* type : {"Unigram", "WordPiece", "WordLevel"}) {
    const std::string path =
        WriteTemp(std::string(type) + ".json",
                  std::string(R"({"model": {"type": ")") + type + R"(", "vocab": [["a", 0.0]]}})");
    absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromFile(path);
    EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(tok.status().message(), HasSubstr(path));
    EXPECT_THAT(tok.status().message(), HasSubstr("'model.type'"));
    EXPECT_THAT(tok.status().message(), HasSubstr(type));
  }
}

TEST_F(TokenizerLoadTest, MalformedComponentsNameTheKey) {
  struct Case {
    const char* json;
    const char* key;
  };
  const Case cases[] = {
      {R"({"model": 3})", "'model'"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}})", "'model.merges[0]'"},
      {R"({"model": {"type": "BPE", "vocab": {"a": -1}}})", "'model.vocab.a'"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 0}, "dropout": 0.1}})", "'model.dropout'"},
      {R"({"model": {"type": "BPE", "vocab": {}}, "normalizer": {"type": "BertNormalizer"}})",
       "'normalizer.type'"},
      {R"({"model": {"type": "BPE", "vocab": {}},
           "normalizer": {"type": "Sequence", "normalizers": [{"type": "Precompiled"}]}})",
       "'normalizer.normalizers[0].type'"},
      {R"({"model": {"type": "BPE", "vocab": {}}, "pre_tokenizer": {"type": "BertPreTokenizer"}})",
       "'pre_tokenizer.type'"},
      {R"({"model": {"type": "BPE", "vocab": {}},
           "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(unclosed"},
                             "behavior": "Isolated"}})",
       "'pre_tokenizer.pattern.Regex'"},
      {R"({"model": {"type": "BPE", "vocab": {}}, "decoder": {"type": "WordPiece"}})",
       "'decoder.type'"},
      {R"({"model": {"type": "BPE", "vocab": {}}, "added_tokens": [{"content": "x"}]})",
       "'added_tokens[0].id'"},
      {R"({"model": {"type": "BPE", "vocab": {}},
           "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken":
               {"id": "<s>", "type_id": 0}}], "special_tokens": {}}})",
       "'post_processor.special_tokens.<s>'"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromJson(c.json, "inline.json");
    EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument) << c.json;
    EXPECT_THAT(tok.status().message(), HasSubstr("inline.json")) << c.json;
    EXPECT_THAT(tok.status().message(), HasSubstr(c.key)) << c.json;
  }
}

TEST_F(TokenizerLoadTest, LoadsFromATempFileCopy) {
  std::ifstream in(kStoriesTokenizer);
  std::stringstream content;
  content << in.rdbuf();
  const std::string path = WriteTemp("copy.json", content.str());
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromFile(path);
  ASSERT_TRUE(tok.ok()) << tok.status();
  absl::StatusOr<std::vector<int32_t>> ids = (*tok)->Encode("Once upon a time");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (std::vector<int32_t>{1, 403, 407, 261, 378}));
}

}  // namespace
}  // namespace qkvshare::agents
