// StreamingDetokenizer: held partial characters, prefix context, and the
// invariant concat(Push...) + Flush() == Decode(all) on random id streams.
#include <unicode/ustring.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "agents/tokenizer/byte_level.h"
#include "agents/tokenizer/tokenizer.h"
#include "agents/tokenizer/utf8.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace qkvshare::agents {
namespace {

using ::testing::ElementsAre;

std::unique_ptr<Tokenizer> LoadStories() {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok =
      Tokenizer::FromFile("models/stories260K/tokenizer.json");
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

int32_t Id(const Tokenizer& tok, const std::string& piece) {
  std::optional<int32_t> id = tok.TokenToId(piece);
  EXPECT_TRUE(id.has_value()) << piece;
  return id.value_or(-1);
}

std::vector<std::string> PushAll(StreamingDetokenizer& stream, const std::vector<int32_t>& ids) {
  std::vector<std::string> out;
  for (int32_t id : ids) out.push_back(stream.Push(id));
  out.push_back(stream.Flush());
  return out;
}

std::string Concat(const std::vector<std::string>& pieces) {
  std::string s;
  for (const std::string& p : pieces) s += p;
  return s;
}

TEST(StreamingDetokenizerTest, EmojiFromByteFallbackPiecesArrivesWhole) {
  std::unique_ptr<Tokenizer> tok = LoadStories();
  ASSERT_NE(tok, nullptr);
  // U+1F389 is F0 9F 8E 89: four byte-fallback pieces.
  absl::StatusOr<std::vector<int32_t>> ids = tok->Encode("the \U0001F389!", false);
  ASSERT_TRUE(ids.ok());
  const std::vector<int32_t> bytes = {Id(*tok, "<0xF0>"), Id(*tok, "<0x9F>"), Id(*tok, "<0x8E>"),
                                      Id(*tok, "<0x89>")};
  ASSERT_NE(std::search(ids->begin(), ids->end(), bytes.begin(), bytes.end()), ids->end());

  StreamingDetokenizer stream(*tok);
  std::vector<std::string> pieces = PushAll(stream, *ids);
  // the | ▁ | F0 | 9F | 8E | 89 | ! | flush
  EXPECT_THAT(pieces, ElementsAre("the", " ", "", "", "", "\U0001F389", "!", ""));
  EXPECT_EQ(Concat(pieces), tok->Decode(*ids));
}

TEST(StreamingDetokenizerTest, IncompleteCharacterIsFlushedAsReplacement) {
  std::unique_ptr<Tokenizer> tok = LoadStories();
  ASSERT_NE(tok, nullptr);
  const std::vector<int32_t> ids = {Id(*tok, "\u2581the"), Id(*tok, "<0xF0>"), Id(*tok, "<0x9F>")};
  StreamingDetokenizer stream(*tok);
  EXPECT_THAT(PushAll(stream, ids), ElementsAre("the", "", "", "\uFFFD"));
  EXPECT_EQ(tok->Decode(ids), "the\uFFFD");
  // An invalid continuation shows up as soon as it is known to be invalid.
  StreamingDetokenizer stream2(*tok);
  EXPECT_THAT(PushAll(stream2, {Id(*tok, "<0xF0>"), Id(*tok, "\u2581the")}),
              ElementsAre("", "\uFFFD the", ""));
}

TEST(StreamingDetokenizerTest, PrefixSetsContextAndEmitsNothing) {
  std::unique_ptr<Tokenizer> tok = LoadStories();
  ASSERT_NE(tok, nullptr);
  const int32_t the = Id(*tok, "\u2581the");
  // Without context the first "▁the" loses its space (Strip decoder); after a
  // prefix it keeps it.
  StreamingDetokenizer fresh(*tok);
  EXPECT_EQ(fresh.Push(the), "the");
  StreamingDetokenizer after(*tok, true, {1, the});
  EXPECT_EQ(after.Push(the), " the");
  // A prefix that ends inside a character: the character comes out whole.
  StreamingDetokenizer split(*tok, true, {the, Id(*tok, "<0xF0>"), Id(*tok, "<0x9F>")});
  EXPECT_EQ(split.Push(Id(*tok, "<0x8E>")), "");
  EXPECT_EQ(split.Push(Id(*tok, "<0x89>")), "\U0001F389");
  EXPECT_EQ(split.Flush(), "");
}

TEST(StreamingDetokenizerTest, SkipSpecialTokensOption) {
  std::unique_ptr<Tokenizer> tok = LoadStories();
  ASSERT_NE(tok, nullptr);
  const int32_t the = Id(*tok, "\u2581the");
  StreamingDetokenizer keep(*tok, /*skip_special_tokens=*/false);
  EXPECT_THAT(PushAll(keep, {1, the, 2}), ElementsAre("<s>", " the", "</s>", ""));
  StreamingDetokenizer skip(*tok);
  EXPECT_THAT(PushAll(skip, {1, the, 2}), ElementsAre("", "the", "", ""));
}

TEST(StreamingDetokenizerTest, IsMovable) {
  std::unique_ptr<Tokenizer> tok = LoadStories();
  ASSERT_NE(tok, nullptr);
  StreamingDetokenizer a(*tok);
  EXPECT_EQ(a.Push(Id(*tok, "<0xC3>")), "");
  StreamingDetokenizer b(std::move(a));
  EXPECT_EQ(b.Push(Id(*tok, "<0xAB>")), "\u00eb");
}

// Random id streams, biased towards byte pieces so that characters are split,
// truncated and ill-formed in every way.
void CheckRandomStreams(const Tokenizer& tok, int32_t byte_lo, int32_t byte_hi) {
  std::mt19937 rng(20240601);
  std::uniform_int_distribution<int32_t> any(-2, tok.vocab_size() + 3);
  std::uniform_int_distribution<int32_t> byte_piece(byte_lo, byte_hi);
  std::uniform_int_distribution<int> length(0, 48);
  std::bernoulli_distribution pick_byte(0.6);
  for (int trial = 0; trial < 400; ++trial) {
    std::vector<int32_t> ids(length(rng));
    for (int32_t& id : ids) id = pick_byte(rng) ? byte_piece(rng) : any(rng);
    for (bool skip : {true, false}) {
      StreamingDetokenizer stream(tok, skip);
      const std::vector<std::string> pieces = PushAll(stream, ids);
      ASSERT_EQ(Concat(pieces), tok.Decode(ids, skip)) << "trial " << trial;
      // Never half a character: every piece is valid UTF-8 on its own.
      for (const std::string& p : pieces) {
        ASSERT_EQ(tokenizer_internal::FindInvalidUtf8(p), std::string::npos) << "trial " << trial;
      }
    }
    // A random split point as prefix gives the suffix of the full decode.
    if (ids.size() >= 2) {
      const size_t cut = ids.size() / 2;
      const std::vector<int32_t> prefix(ids.begin(), ids.begin() + cut);
      StreamingDetokenizer stream(tok, true, prefix);
      std::string tail;
      for (size_t i = cut; i < ids.size(); ++i) tail += stream.Push(ids[i]);
      tail += stream.Flush();
      const std::string full = tok.Decode(ids);
      ASSERT_GE(full.size(), tail.size()) << "trial " << trial;
      EXPECT_EQ(full.substr(full.size() - tail.size()), tail) << "trial " << trial;
    }
  }
}

// Independent reference for the stories260K decoder (Replace "▁"->" ",
// ByteFallback, Fuse, Strip one leading space) with ICU's lossy UTF-8
// conversion (one U+FFFD per maximal ill-formed subpart).
std::string ReferenceStoriesDecode(const Tokenizer& tok, const std::vector<int32_t>& ids,
                                   bool skip) {
  std::string bytes;
  for (int32_t id : ids) {
    const std::string piece = tok.IdToToken(id);
    if (piece.empty() || (skip && tok.IsSpecial(id))) continue;
    if (piece.size() == 6 && piece.compare(0, 3, "<0x") == 0) {
      bytes.push_back(static_cast<char>(std::stoi(piece.substr(3, 2), nullptr, 16)));
      continue;
    }
    for (size_t i = 0; i < piece.size();) {
      if (piece.compare(i, 3, "\u2581") == 0) {
        bytes.push_back(' ');
        i += 3;
      } else {
        bytes.push_back(piece[i++]);
      }
    }
  }
  UErrorCode code = U_ZERO_ERROR;
  std::vector<UChar> utf16(bytes.size() + 1);
  int32_t utf16_len = 0;
  u_strFromUTF8WithSub(utf16.data(), static_cast<int32_t>(utf16.size()), &utf16_len, bytes.data(),
                       static_cast<int32_t>(bytes.size()), 0xFFFD, nullptr, &code);
  std::string text(4 * utf16.size(), '\0');
  int32_t text_len = 0;
  u_strToUTF8(text.data(), static_cast<int32_t>(text.size()), &text_len, utf16.data(), utf16_len,
              &code);
  EXPECT_TRUE(U_SUCCESS(code)) << u_errorName(code);
  text.resize(text_len);
  if (!text.empty() && text[0] == ' ') text.erase(0, 1);
  return text;
}

TEST(StreamingDetokenizerTest, RandomStreamsMatchDecodeSentencePieceStyle) {
  std::unique_ptr<Tokenizer> tok = LoadStories();
  ASSERT_NE(tok, nullptr);
  CheckRandomStreams(*tok, 3, 258);  // <0x00>..<0xFF>
}

TEST(StreamingDetokenizerTest, DecodeMatchesIndependentReference) {
  std::unique_ptr<Tokenizer> tok = LoadStories();
  ASSERT_NE(tok, nullptr);
  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> any(-1, 515);
  std::uniform_int_distribution<int32_t> byte_piece(3, 258);
  std::bernoulli_distribution pick_byte(0.5);
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<int32_t> ids(trial % 40);
    for (int32_t& id : ids) id = pick_byte(rng) ? byte_piece(rng) : any(rng);
    for (bool skip : {true, false}) {
      ASSERT_EQ(tok->Decode(ids, skip), ReferenceStoriesDecode(*tok, ids, skip))
          << "trial " << trial;
    }
  }
}

TEST(StreamingDetokenizerTest, RandomStreamsMatchDecodeByteLevel) {
  // A byte-level vocab: the 256 byte characters (ids 0..255), a few merged
  // pieces and a special token.
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) {
    vocab[std::string(tokenizer_internal::ByteLevelChar(static_cast<uint8_t>(b)))] = b;
  }
  vocab["\u00c3\u00a9"] = 256;  // "é"
  vocab["\u0120the"] = 257;     // " the"
  vocab["<|eot|>"] = 258;
  nlohmann::json json = {
      {"added_tokens",
       {{{"id", 258}, {"content", "<|eot|>"}, {"special", true}, {"normalized", false}}}},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}},
  };
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromJson(json.dump(), "bytes.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  CheckRandomStreams(**tok, 0x80, 0xFF);
  // Sanity: every string round-trips through the full byte alphabet.
  const std::string text = "caf\u00e9 \U0001F389\n\t\u4e2d <|eot|> x";
  absl::StatusOr<std::vector<int32_t>> ids = (*tok)->Encode(text);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ((*tok)->Decode(*ids, false), text);
}

// A Tokenizer that is not built from tokenizer.json: ids are bytes.
class BytesTokenizer final : public Tokenizer {
 public:
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool) const override {
    return std::vector<int32_t>(text.begin(), text.end());
  }
  std::string Decode(absl::Span<const int32_t> ids, bool) const override {
    std::string bytes;
    for (int32_t id : ids) bytes.push_back(static_cast<char>(id));
    // ASCII and complete 4-byte sequences; anything else ends the text with
    // one U+FFFD (enough for the held-back rule to matter).
    std::string out;
    for (size_t i = 0; i < bytes.size(); ++i) {
      const auto b = static_cast<uint8_t>(bytes[i]);
      if (b < 0x80) {
        out.push_back(bytes[i]);
      } else if (b >= 0xF0 && i + 3 < bytes.size()) {
        out.append(bytes, i, 4);
        i += 3;
      } else {
        out += "\uFFFD";
        break;
      }
    }
    return out;
  }
  int32_t vocab_size() const override { return 256; }
  std::optional<int32_t> TokenToId(std::string_view) const override { return std::nullopt; }
  std::string IdToToken(int32_t) const override { return ""; }
  bool IsSpecial(int32_t) const override { return false; }
  std::optional<int32_t> bos_id() const override { return std::nullopt; }
};

TEST(StreamingDetokenizerTest, FallbackForOtherTokenizerImplementations) {
  BytesTokenizer tok;
  StreamingDetokenizer stream(tok);
  const std::vector<int32_t> ids = {'a', 0xF0, 0x9F, 0x8E, 0x89, 'b'};
  const std::vector<std::string> pieces = PushAll(stream, ids);
  EXPECT_THAT(pieces, ElementsAre("a", "", "", "", "\U0001F389", "b", ""));
  EXPECT_EQ(Concat(pieces), tok.Decode(ids, true));
}

}  // namespace
}  // namespace qkvshare::agents
