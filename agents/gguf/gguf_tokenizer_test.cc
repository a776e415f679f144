#include "agents/gguf/gguf_tokenizer.h"

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "agents/file_util.h"
#include "agents/gguf/gguf_file.h"
#include "agents/tokenizer/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace qkvshare::agents::gguf {
namespace {

constexpr char kModelDir[] = "models/stories260K";

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return nlohmann::json::parse(s.str());
}

std::unique_ptr<Tokenizer> FromGguf(const std::string& path) {
  auto file = GgufFile::Open(path);
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return nullptr;
  absl::StatusOr<std::string> json = TokenizerJsonFromGguf(**file);
  EXPECT_TRUE(json.ok()) << json.status();
  if (!json.ok()) return nullptr;
  auto tok = Tokenizer::FromJson(*json, path);
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

// The merges HF's converter derives from the SentencePiece scores are the
// ones of the checked-in tokenizer.json, in the same order.
TEST(GgufTokenizerTest, SpmMergesEqualHfConverters) {
  auto file = GgufFile::Open("agents/gguf/testdata/stories260K-F32.gguf");
  ASSERT_TRUE(file.ok()) << file.status();
  absl::StatusOr<std::string> json = TokenizerJsonFromGguf(**file);
  ASSERT_TRUE(json.ok()) << json.status();
  const nlohmann::json ours = nlohmann::json::parse(*json);
  const nlohmann::json hf = ReadJson(std::string(kModelDir) + "/tokenizer.json");
  std::vector<std::string> hf_merges = hf["model"]["merges"];
  ASSERT_EQ(ours["model"]["merges"].size(), hf_merges.size());
  for (size_t i = 0; i < hf_merges.size(); ++i) {
    const std::string left = ours["model"]["merges"][i][0], right = ours["model"]["merges"][i][1];
    EXPECT_EQ(left + " " + right, hf_merges[i]) << "merge " << i;
  }
  EXPECT_EQ(ours["model"]["vocab"], hf["model"]["vocab"]);
  EXPECT_EQ(ours["normalizer"], hf["normalizer"]);
  EXPECT_EQ(ours["decoder"], hf["decoder"]);
}

// Every golden prompt and text encodes and decodes as with tokenizer.json.
TEST(GgufTokenizerTest, GoldenPromptsLikeHfTokenizer) {
  auto gguf_tok = FromGguf("agents/gguf/testdata/stories260K-Q4_0.gguf");
  auto hf_tok = Tokenizer::FromFile(std::string(kModelDir) + "/tokenizer.json");
  ASSERT_NE(gguf_tok, nullptr);
  ASSERT_TRUE(hf_tok.ok()) << hf_tok.status();
  EXPECT_EQ(gguf_tok->vocab_size(), 512);
  EXPECT_EQ(gguf_tok->bos_id(), 1);
  const nlohmann::json golden = ReadJson(std::string(kModelDir) + "/golden/greedy.json");
  int cases = 0;
  for (const nlohmann::json& c : golden["cases"]) {
    const std::string prompt = c["prompt"];
    const std::vector<int32_t> want = c["prompt_ids"];
    auto ids = gguf_tok->Encode(prompt);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, want) << prompt;
    EXPECT_EQ(*ids, *(*hf_tok)->Encode(prompt)) << prompt;
    std::vector<int32_t> all = want;
    const std::vector<int32_t> generated = c["generated_ids"];
    all.insert(all.end(), generated.begin(), generated.end());
    EXPECT_EQ(gguf_tok->Decode(all), (*hf_tok)->Decode(all)) << prompt;
    EXPECT_EQ(gguf_tok->Decode(all), c["text"].get<std::string>()) << prompt;
    const std::string text = c["text"];
    EXPECT_EQ(*gguf_tok->Encode(text), *(*hf_tok)->Encode(text)) << prompt;
    ++cases;
  }
  EXPECT_EQ(cases, 8);
  EXPECT_TRUE(gguf_tok->IsSpecial(1));
  EXPECT_EQ(gguf_tok->IdToToken(3), "<0x00>");
}

// A GGUF without tokenizer metadata has no tokenizer.
TEST(GgufTokenizerTest, NoTokenizerAndUnsupportedModels) {
  auto make = [](const std::string& model) {
    std::string b = "GGUF";
    auto put = [&b](auto v) { b.append(reinterpret_cast<const char*>(&v), sizeof v); };
    put(uint32_t{3});
    put(uint64_t{0});
    put(uint64_t{model.empty() ? 0u : 1u});
    if (!model.empty()) {
      const std::string key = "tokenizer.ggml.model";
      put(uint64_t{key.size()});
      b += key;
      put(uint32_t{8});
      put(uint64_t{model.size()});
      b += model;
    }
    return GgufFile::FromBytes(b, "t.gguf");
  };
  auto none = make("");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(*TokenizerJsonFromGguf(**none), "");
  auto bert = make("bert");
  ASSERT_TRUE(bert.ok()) << bert.status();
  EXPECT_THAT(TokenizerJsonFromGguf(**bert).status().message(),
              ::testing::HasSubstr("'bert' is not supported"));
  auto llama = make("llama");  // no tokens
  ASSERT_TRUE(llama.ok());
  EXPECT_THAT(TokenizerJsonFromGguf(**llama).status().message(),
              ::testing::HasSubstr("tokenizer.ggml.tokens' not found"));
}

// Metadata-only GGUF bytes: string, string-array, int32-array, uint32 and
// bool keys.
class MetadataWriter {
 public:
  void String(const std::string& key, const std::string& v) {
    Key(key, 8);
    Str(v);
  }
  void Strings(const std::string& key, const std::vector<std::string>& v) {
    Key(key, 9);
    Put(uint32_t{8});
    Put(uint64_t{v.size()});
    for (const std::string& x : v) Str(x);
  }
  void Ints(const std::string& key, const std::vector<int32_t>& v) {
    Key(key, 9);
    Put(uint32_t{5});
    Put(uint64_t{v.size()});
    for (int32_t x : v) Put(x);
  }
  void U32(const std::string& key, uint32_t v) {
    Key(key, 4);
    Put(v);
  }
  void Bool(const std::string& key, bool v) {
    Key(key, 7);
    Put(uint8_t{v});
  }
  std::string Bytes() const {
    std::string b = "GGUF";
    auto put = [&b](auto v) { b.append(reinterpret_cast<const char*>(&v), sizeof v); };
    put(uint32_t{3});
    put(uint64_t{0});
    put(uint64_t{count_});
    return b + body_;
  }

 private:
  template <typename T>
  void Put(T v) {
    body_.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  void Str(const std::string& s) {
    Put(uint64_t{s.size()});
    body_ += s;
  }
  void Key(const std::string& k, uint32_t type) {
    Str(k);
    Put(type);
    ++count_;
  }
  std::string body_;
  uint64_t count_ = 0;
};

// A byte-level ("gpt2") vocabulary (agents/tokenizer/tokenizer_byte_level_test.cc's):
// "hello" and " world" are single tokens through the merges.
std::unique_ptr<Tokenizer> Gpt2Style(const std::string& pre, bool add_bos) {
  MetadataWriter w;
  w.String("tokenizer.ggml.model", "gpt2");
  w.String("tokenizer.ggml.pre", pre);
  const std::vector<std::string> tokens = {"<|endoftext|>",
                                           "h",
                                           "e",
                                           "l",
                                           "o",
                                           "w",
                                           "r",
                                           "d",
                                           "\xC4\xA0",
                                           "!",
                                           "he",
                                           "ll",
                                           "hell",
                                           "hello",
                                           "\xC4\xA0w",
                                           "or",
                                           "\xC4\xA0wor",
                                           "ld",
                                           "\xC4\xA0world",
                                           "<|begin_of_text|>"};
  w.Strings("tokenizer.ggml.tokens", tokens);
  std::vector<int32_t> types(tokens.size(), 1);
  types[0] = types[19] = 3;
  w.Ints("tokenizer.ggml.token_type", types);
  w.Strings("tokenizer.ggml.merges", {"h e", "l l", "he ll", "hell o", "\xC4\xA0 w", "o r",
                                      "\xC4\xA0w or", "l d", "\xC4\xA0wor ld"});
  w.U32("tokenizer.ggml.bos_token_id", 19);
  w.U32("tokenizer.ggml.eos_token_id", 0);
  w.Bool("tokenizer.ggml.add_bos_token", add_bos);
  auto file = GgufFile::FromBytes(w.Bytes(), "gpt2.gguf");
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return nullptr;
  absl::StatusOr<std::string> json = TokenizerJsonFromGguf(**file);
  EXPECT_TRUE(json.ok()) << json.status();
  if (!json.ok()) return nullptr;
  auto tok = Tokenizer::FromJson(*json, "gpt2.gguf");
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

TEST(GgufTokenizerTest, Gpt2ByteLevel) {
  for (const std::string pre : {"default", "llama-bpe", "qwen2"}) {
    const bool bos = pre == "llama-bpe";
    auto tok = Gpt2Style(pre, bos);
    ASSERT_NE(tok, nullptr) << pre;
    auto ids = tok->Encode("hello world!");
    ASSERT_TRUE(ids.ok()) << ids.status();
    std::vector<int32_t> want = {13, 18, 9};
    if (bos) want.insert(want.begin(), 19);
    EXPECT_EQ(*ids, want) << pre;
    EXPECT_EQ(tok->Decode(*ids), "hello world!") << pre;
    EXPECT_TRUE(tok->IsSpecial(0));
    EXPECT_EQ(*tok->Encode("hello<|endoftext|>"),
              bos ? std::vector<int32_t>({19, 13, 0}) : std::vector<int32_t>({13, 0}));
  }
  MetadataWriter w;
  w.String("tokenizer.ggml.model", "gpt2");
  w.String("tokenizer.ggml.pre", "deepseek-coder");
  w.Strings("tokenizer.ggml.tokens", {"a"});
  auto file = GgufFile::FromBytes(w.Bytes(), "pre.gguf");
  ASSERT_TRUE(file.ok());
  EXPECT_THAT(TokenizerJsonFromGguf(**file).status().message(),
              ::testing::HasSubstr("'deepseek-coder' is not supported"));
}

}  // namespace
}  // namespace qkvshare::agents::gguf
