// Byte-level BPE tokenizer.json files written here by hand (GPT-2 style and
// Llama-3 style), with ids derived by hand in the comments.
#include <string>
#include <vector>

#include "agents/tokenizer/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qkvshare::agents {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Byte-level alphabet: ' ' is "Ġ" (U+0120), 'é' = C3 A9 is "Ã©".
// The vocab and merges are shared by both files below.
constexpr char kVocabAndMerges[] = R"(
    "vocab": {
      "<|endoftext|>": 0, "h": 1, "e": 2, "l": 3, "o": 4, "w": 5, "r": 6, "d": 7, "Ġ": 8,
      "!": 9, "he": 10, "ll": 11, "hell": 12, "hello": 13, "Ġw": 14, "or": 15, "Ġwor": 16,
      "ld": 17, "Ġworld": 18, "Ã": 19, "©": 20, "Ã©": 21, "1": 22, "2": 23, "3": 24,
      "4": 25, "5": 26, "12": 27, "45": 28, "I": 29, "T": 30, "'": 31, "S": 32, "'S": 33,
      "Ċ": 34, "<|begin_of_text|>": 35
    },
    "merges": [
      "h e", "l l", "he ll", "hell o", "Ġ w", "o r", ["Ġw", "or"], "l d", ["Ã", "©"],
      "1 2", "4 5", "' S", "Ġwor ld"
    ])";

// GPT-2 style: ByteLevel pre-tokenizer with the GPT-2 regex, ByteLevel decoder.
std::string Gpt2Json() {
  return std::string(R"({
  "version": "1.0",
  "added_tokens": [
    {"id": 0, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
     "rstrip": false, "normalized": false, "special": true}
  ],
  "normalizer": null,
  "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                    "use_regex": true},
  "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false,
                     "use_regex": true},
  "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
              "use_regex": true},
  "model": {"type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": false,
            "byte_fallback": false, )") +
         kVocabAndMerges + "}}";
}

// Llama-3 style: Split with Llama-3's regex, then ByteLevel without regex;
// ignore_merges; Sequence[ByteLevel, TemplateProcessing] adds <|begin_of_text|>.
// The last merge "Ġwor ld" is left out so that "Ġworld" is reachable only
// through ignore_merges.
std::string Llama3Json() {
  std::string vocab_and_merges = kVocabAndMerges;
  const std::string last_merge = R"(, "Ġwor ld")";
  vocab_and_merges.erase(vocab_and_merges.find(last_merge), last_merge.size());
  return std::string(R"({
  "added_tokens": [
    {"id": 35, "content": "<|begin_of_text|>", "single_word": false, "lstrip": false,
     "rstrip": false, "normalized": false, "special": true},
    {"id": 0, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
     "rstrip": false, "normalized": false, "special": true}
  ],
  "normalizer": null,
  "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex":
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     "behavior": "Isolated", "invert": false},
    {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
  ]},
  "post_processor": {"type": "Sequence", "processors": [
    {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
    {"type": "TemplateProcessing",
     "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}}],
     "pair": [],
     "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [35],
                                              "tokens": ["<|begin_of_text|>"]}}}
  ]},
  "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
              "use_regex": true},
  "model": {"type": "BPE", "dropout": null, "unk_token": null, "fuse_unk": false,
            "byte_fallback": false, "ignore_merges": true, )") +
         vocab_and_merges + "}}";
}

std::unique_ptr<Tokenizer> Load(const std::string& json, const char* origin) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromJson(json, origin);
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

std::vector<int32_t> Encode(const Tokenizer& tok, const std::string& text, bool specials = true) {
  absl::StatusOr<std::vector<int32_t>> ids = tok.Encode(text, specials);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<int32_t>{};
}

TEST(Gpt2StyleTest, HandDerivedIds) {
  std::unique_ptr<Tokenizer> tok = Load(Gpt2Json(), "gpt2.json");
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 36);
  EXPECT_EQ(tok->bos_id(), std::nullopt);
  // Words "hello" | " world" | "!" (GPT-2 regex).
  //   hello : h e l l o -> (h e) he l l o -> (l l) he ll o -> (he ll) hell o -> hello = 13
  //   Ġworld: Ġ w o r l d -> Ġw o r l d -> Ġw or l d -> Ġwor l d -> Ġwor ld -> Ġworld = 18
  //   !     : 9
  EXPECT_THAT(Encode(*tok, "hello world!"), ElementsAre(13, 18, 9));
  EXPECT_EQ(tok->Decode({13, 18, 9}), "hello world!");
  // "é" is bytes C3 A9 = "Ã©" (merge "Ã ©" -> 21); " é" is a separate word
  // Ġ Ã© (no merge for "Ġ Ã").
  EXPECT_THAT(Encode(*tok, "hello \u00e9"), ElementsAre(13, 8, 21));
  EXPECT_EQ(tok->Decode({13, 8, 21}), "hello \u00e9");
  // "IT'S": the case-sensitive GPT-2 regex does not split "'S" as a
  // contraction: words "IT" | "'" | "S" (merge "' S" cannot apply).
  EXPECT_THAT(Encode(*tok, "IT'S"), ElementsAre(29, 30, 31, 32));
  // Newline is "Ċ"; "\n\n" is one word but there is no merge for it.
  EXPECT_THAT(Encode(*tok, "hello\n\nhello"), ElementsAre(13, 34, 34, 13));
  EXPECT_EQ(tok->Decode({13, 34, 34, 13}), "hello\n\nhello");
}

TEST(Gpt2StyleTest, AddedTokenInText) {
  std::unique_ptr<Tokenizer> tok = Load(Gpt2Json(), "gpt2.json");
  ASSERT_NE(tok, nullptr);
  // "hello" | <|endoftext|> | "world": w o r l d -> w or l d -> w or ld (no
  // merge for "w or"): 5 15 17.
  const std::vector<int32_t> ids = Encode(*tok, "hello<|endoftext|>world");
  EXPECT_THAT(ids, ElementsAre(13, 0, 5, 15, 17));
  EXPECT_TRUE(tok->IsSpecial(0));
  EXPECT_EQ(tok->Decode(ids), "helloworld");
  EXPECT_EQ(tok->Decode(ids, /*skip_special_tokens=*/false), "hello<|endoftext|>world");
}

TEST(Gpt2StyleTest, UnknownCharacterWithoutFallbackIsAnError) {
  std::unique_ptr<Tokenizer> tok = Load(Gpt2Json(), "gpt2.json");
  ASSERT_NE(tok, nullptr);
  absl::StatusOr<std::vector<int32_t>> ids = tok->Encode("hello zoo");
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ids.status().message(), HasSubstr("U+007A 'z'"));
}

TEST(Gpt2StyleTest, RoundTripsWhatTheVocabCovers) {
  std::unique_ptr<Tokenizer> tok = Load(Gpt2Json(), "gpt2.json");
  ASSERT_NE(tok, nullptr);
  for (const std::string text : {"hello world", "  hello   world  ", "\u00e9\u00e9 \u00e9!\n",
                                 "hello<|endoftext|>", "12 345 IT'S"}) {
    EXPECT_EQ(tok->Decode(Encode(*tok, text), false), text);
  }
}

TEST(Llama3StyleTest, HandDerivedIds) {
  std::unique_ptr<Tokenizer> tok = Load(Llama3Json(), "llama3.json");
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->bos_id(), 35);
  // Llama-3 regex words: "hello" | " world" | " " | "123" | "45".
  //   hello, Ġworld: whole words in the vocab, taken as is (ignore_merges)
  //   Ġ: 8;  123: 1 2 3 -> 12 3 = 27 24;  45: in the vocab = 28
  EXPECT_THAT(Encode(*tok, "hello world 12345"), ElementsAre(35, 13, 18, 8, 27, 24, 28));
  EXPECT_THAT(Encode(*tok, "hello world 12345", false), ElementsAre(13, 18, 8, 27, 24, 28));
  // The case-insensitive contraction makes "'S" one word: "IT" | "'S" -> 29 30 33.
  EXPECT_THAT(Encode(*tok, "IT'S", false), ElementsAre(29, 30, 33));
  EXPECT_EQ(tok->Decode({35, 13, 18, 8, 27, 24, 28}), "hello world 12345");
  EXPECT_EQ(tok->Decode({35, 13}, /*skip_special_tokens=*/false), "<|begin_of_text|>hello");
}

TEST(Llama3StyleTest, WithoutIgnoreMergesTheMergesDecide) {
  std::string json = Llama3Json();
  const std::string flag = R"("ignore_merges": true)";
  json.replace(json.find(flag), flag.size(), R"("ignore_merges": false)");
  std::unique_ptr<Tokenizer> tok = Load(json, "llama3-merges.json");
  ASSERT_NE(tok, nullptr);
  // Ġworld -> ... -> Ġwor ld (no "Ġwor ld" merge in this file): 16 17.
  EXPECT_THAT(Encode(*tok, " world", false), ElementsAre(16, 17));
}

TEST(Llama3StyleTest, AddedTokensAndStreaming) {
  std::unique_ptr<Tokenizer> tok = Load(Llama3Json(), "llama3.json");
  ASSERT_NE(tok, nullptr);
  const std::vector<int32_t> ids = Encode(*tok, "hello<|endoftext|> \u00e9\u00e9");
  // BOS, hello, <|endoftext|>, then " éé" is one word ([^\r\n\p{L}\p{N}]?\p{L}+):
  // Ġ Ã© Ã© = 8 21 21. Each "Ã©" completes one 'é'.
  EXPECT_THAT(ids, ElementsAre(35, 13, 0, 8, 21, 21));
  StreamingDetokenizer stream(*tok);
  std::vector<std::string> pieces;
  for (int32_t id : ids) pieces.push_back(stream.Push(id));
  pieces.push_back(stream.Flush());
  EXPECT_THAT(pieces, ElementsAre("", "hello", "", " ", "\u00e9", "\u00e9", ""));
}

}  // namespace
}  // namespace qkvshare::agents
