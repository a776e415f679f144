#include "agents/tokenizer/bpe_model.h"

#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qkvshare::agents::tokenizer_internal {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::unique_ptr<BpeModel> Model(const std::string& json) {
  absl::StatusOr<std::unique_ptr<BpeModel>> m =
      BpeModel::FromJson(Json::parse(json), JsonPath{"t.json", "model"});
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *std::move(m) : nullptr;
}

std::vector<int32_t> Tokenize(const BpeModel& m, std::string_view word) {
  std::vector<int32_t> ids;
  absl::Status s = m.Tokenize(word, &ids);
  EXPECT_TRUE(s.ok()) << s;
  return ids;
}

// The tokenizers library's own unit test ("unrelated").
constexpr char kUnrelated[] = R"({"type": "BPE",
  "vocab": {"u": 0, "n": 1, "r": 2, "e": 3, "l": 4, "a": 5, "t": 6, "d": 7, "re": 8, "at": 9,
            "ed": 10, "un": 11, "ated": 12, "rel": 13, "related": 14, "unrelated": 15},
  "merges": ["r e", "a t", "e d", "u n", "at ed", "re l", "rel ated", "un related"]})";

TEST(BpeModelTest, MergesInRankOrder) {
  std::unique_ptr<BpeModel> m = Model(kUnrelated);
  ASSERT_NE(m, nullptr);
  EXPECT_THAT(Tokenize(*m, "unrelated"), ElementsAre(15));
  // "unreal": u n r e a l -> (r e)0 -> (u n)3 -> un re a l; "re l" needs l
  // next to re: no. -> un re a l
  EXPECT_THAT(Tokenize(*m, "unreal"), ElementsAre(11, 8, 5, 4));
  EXPECT_THAT(Tokenize(*m, "dated"), ElementsAre(7, 12));
  EXPECT_EQ(m->id_limit(), 16);
  EXPECT_EQ(m->TokenToId("ated"), 12);
  ASSERT_NE(m->IdToToken(13), nullptr);
  EXPECT_EQ(*m->IdToToken(13), "rel");
  EXPECT_EQ(m->IdToToken(16), nullptr);
}

TEST(BpeModelTest, PairFormMergesAndTies) {
  // Same pair at two places: the leftmost merges first ("aaa" -> aa a).
  std::unique_ptr<BpeModel> m =
      Model(R"({"type": "BPE", "vocab": {"a": 0, "aa": 1, "b": 2}, "merges": [["a", "a"]]})");
  ASSERT_NE(m, nullptr);
  EXPECT_THAT(Tokenize(*m, "aaa"), ElementsAre(1, 0));
  EXPECT_THAT(Tokenize(*m, "aaaab"), ElementsAre(1, 1, 2));
}

TEST(BpeModelTest, IgnoreMerges) {
  const char* json = R"({"type": "BPE", "ignore_merges": %s,
      "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4, "bc": 5},
      "merges": ["b c", "a b"]})";
  char buf[512];
  snprintf(buf, sizeof(buf), json, "true");
  std::unique_ptr<BpeModel> with = Model(buf);
  snprintf(buf, sizeof(buf), json, "false");
  std::unique_ptr<BpeModel> without = Model(buf);
  ASSERT_NE(with, nullptr);
  ASSERT_NE(without, nullptr);
  EXPECT_THAT(Tokenize(*with, "abc"), ElementsAre(4));        // whole word in vocab
  EXPECT_THAT(Tokenize(*without, "abc"), ElementsAre(0, 5));  // "b c" ranks first
}

TEST(BpeModelTest, ByteFallbackUnkAndErrors) {
  std::unique_ptr<BpeModel> fallback = Model(R"({"type": "BPE", "byte_fallback": true,
      "unk_token": "<unk>", "vocab": {"<unk>": 0, "<0xC3>": 1, "<0xA9>": 2, "a": 3},
      "merges": []})");
  ASSERT_NE(fallback, nullptr);
  // "é" = C3 A9 -> byte pieces; "ü" = C3 BC has no <0xBC> -> unk.
  EXPECT_THAT(Tokenize(*fallback, "a\u00e9a"), ElementsAre(3, 1, 2, 3));
  EXPECT_THAT(Tokenize(*fallback, "\u00fc"), ElementsAre(0));

  const char* unk = R"({"type": "BPE", "unk_token": "<unk>", "fuse_unk": %s,
      "vocab": {"<unk>": 0, "a": 1, "b": 2}, "merges": []})";
  char buf[512];
  snprintf(buf, sizeof(buf), unk, "true");
  std::unique_ptr<BpeModel> fused = Model(buf);
  snprintf(buf, sizeof(buf), unk, "false");
  std::unique_ptr<BpeModel> unfused = Model(buf);
  ASSERT_NE(fused, nullptr);
  ASSERT_NE(unfused, nullptr);
  EXPECT_THAT(Tokenize(*fused, "accb"), ElementsAre(1, 0, 2));
  EXPECT_THAT(Tokenize(*unfused, "accb"), ElementsAre(1, 0, 0, 2));

  std::unique_ptr<BpeModel> bare = Model(R"({"type": "BPE", "vocab": {"a": 0}, "merges": []})");
  ASSERT_NE(bare, nullptr);
  std::vector<int32_t> ids;
  absl::Status s = bare->Tokenize("a\u00e9", &ids);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("U+00E9"));
}

TEST(BpeModelTest, ContinuingSubwordPrefixAndSuffix) {
  // Initial symbols of "abc": "a", "##b", "##c</w>"; a merge result drops the
  // right part's prefix: "a" + "##b" -> "ab", "ab" + "##c</w>" -> "abc</w>".
  std::unique_ptr<BpeModel> m = Model(R"({"type": "BPE", "continuing_subword_prefix": "##",
      "end_of_word_suffix": "</w>",
      "vocab": {"a": 0, "##b": 1, "##c</w>": 2, "ab": 3, "abc</w>": 4},
      "merges": ["a ##b", "ab ##c</w>"]})");
  ASSERT_NE(m, nullptr);
  EXPECT_THAT(Tokenize(*m, "abc"), ElementsAre(4));
  EXPECT_THAT(Tokenize(*m, "ac"), ElementsAre(0, 2));
}

TEST(BpeModelTest, LoadErrorsNameTheKey) {
  struct Case {
    const char* json;
    const char* key;
  };
  for (const Case& c : {
           Case{R"({"type": "Unigram", "vocab": []})", "'model.type'"},
           Case{R"({"type": "WordPiece", "vocab": {}})", "'model.type'"},
           Case{R"({"type": "BPE", "vocab": {"a": 0}, "merges": ["a"]})", "'model.merges[0]'"},
           Case{R"({"type": "BPE", "vocab": {"a": 0}, "merges": [["a", "b"]]})",
                "'model.merges[0]'"},
           Case{R"({"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]})",
                "'model.merges[0]'"},
           Case{R"({"type": "BPE", "vocab": {"a": "zero"}})", "'model.vocab.a'"},
           Case{R"({"type": "BPE", "merges": []})", "'model.vocab'"},
       }) {
    absl::StatusOr<std::unique_ptr<BpeModel>> m =
        BpeModel::FromJson(Json::parse(c.json), JsonPath{"t.json", "model"});
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << c.json;
    EXPECT_THAT(std::string(m.status().message()), HasSubstr(c.key)) << c.json;
  }
}

// Reference: repeatedly merge the lowest-ranked adjacent pair, leftmost first
// (O(n^2), obviously right).
std::vector<std::string> NaiveBpe(const std::string& word,
                                  const std::vector<std::pair<std::string, std::string>>& merges) {
  std::vector<std::string> symbols;
  for (char c : word) symbols.emplace_back(1, c);
  while (true) {
    size_t best_rank = merges.size();
    size_t best_pos = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      for (size_t r = 0; r < best_rank; ++r) {
        if (merges[r].first == symbols[i] && merges[r].second == symbols[i + 1]) {
          best_rank = r;
          best_pos = i;
          break;
        }
      }
    }
    if (best_rank == merges.size()) return symbols;
    symbols[best_pos] += symbols[best_pos + 1];
    symbols.erase(symbols.begin() + best_pos + 1);
  }
}

TEST(BpeModelTest, HeapMergeLoopMatchesNaiveReference) {
  // Random merges over a 3-letter alphabet; every merge result is in the vocab.
  std::mt19937 rng(42);
  std::vector<std::string> tokens = {"a", "b", "c"};
  std::vector<std::pair<std::string, std::string>> merges;
  std::uniform_int_distribution<size_t> pick(0, 2);
  while (merges.size() < 40) {
    std::uniform_int_distribution<size_t> any(0, tokens.size() - 1);
    const std::string& l = tokens[any(rng)];
    const std::string& r = tokens[any(rng)];
    if (l.size() + r.size() > 6) continue;
    bool seen = false;
    for (const auto& m : merges) seen = seen || (m.first == l && m.second == r);
    if (seen) continue;
    merges.emplace_back(l, r);
    bool exists = false;
    for (const auto& t : tokens) exists = exists || t == l + r;
    if (!exists) tokens.push_back(l + r);
  }
  Json vocab = Json::object();
  for (size_t i = 0; i < tokens.size(); ++i) vocab[tokens[i]] = i;
  Json merge_list = Json::array();
  for (const auto& m : merges) merge_list.push_back(m.first + " " + m.second);
  std::unique_ptr<BpeModel> model =
      Model(Json{{"type", "BPE"}, {"vocab", vocab}, {"merges", merge_list}}.dump());
  ASSERT_NE(model, nullptr);
  for (int trial = 0; trial < 300; ++trial) {
    std::string word(1 + trial % 60, 'a');
    for (char& c : word) c = static_cast<char>('a' + pick(rng));
    std::vector<int32_t> expected;
    for (const std::string& s : NaiveBpe(word, merges)) expected.push_back(*model->TokenToId(s));
    ASSERT_EQ(Tokenize(*model, word), expected) << word;
    ASSERT_EQ(Tokenize(*model, word), expected) << word << " (cached)";
  }
}

}  // namespace
}  // namespace qkvshare::agents::tokenizer_internal
