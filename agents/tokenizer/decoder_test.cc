#include "agents/tokenizer/decoder.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qkvshare::agents::tokenizer_internal {
namespace {

std::unique_ptr<Decoder> Make(const char* json) {
  const Json parsed = Json::parse(json);
  absl::StatusOr<std::unique_ptr<Decoder>> d =
      Decoder::FromJson(parsed.is_null() ? nullptr : &parsed, JsonPath{"t.json", "decoder"});
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? *std::move(d) : nullptr;
}

// Decodes `tokens` in one stream; also checks every split into Push calls
// agrees (the stream is the only decoding path, so this checks its state).
std::string Decode(const Decoder& decoder, const std::vector<std::string>& tokens) {
  DecodeStream stream(decoder);
  std::string out;
  for (const std::string& t : tokens) stream.Push(t, &out);
  stream.Flush(&out);
  return out;
}

constexpr char kLlama[] = R"({"type": "Sequence", "decoders": [
    {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
    {"type": "ByteFallback"}, {"type": "Fuse"},
    {"type": "Strip", "content": " ", "start": 1, "stop": 0}]})";

TEST(DecoderTest, LlamaChain) {
  std::unique_ptr<Decoder> d = Make(kLlama);
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(Decode(*d, {"\u2581Hello", "\u2581wor", "ld", "<0x0A>", "<0xC3>", "<0xAB>"}),
            "Hello world\n\u00eb");
  // Only one leading space is stripped.
  EXPECT_EQ(Decode(*d, {"\u2581\u2581x"}), " x");
  EXPECT_EQ(Decode(*d, {"\u2581", "\u2581", "x"}), " x");
  // A leading byte-fallback space is stripped as well (it is a space after Fuse).
  EXPECT_EQ(Decode(*d, {"<0x20>", "x"}), "x");
  EXPECT_EQ(Decode(*d, {}), "");
}

TEST(DecoderTest, StripStopHoldsTrailingCharacters) {
  std::unique_ptr<Decoder> d = Make(R"({"type": "Sequence", "decoders": [
      {"type": "Fuse"}, {"type": "Strip", "content": "x", "start": 0, "stop": 2}]})");
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(Decode(*d, {"ax", "xx"}), "ax");
  EXPECT_EQ(Decode(*d, {"ax", "b", "x"}), "axb");
  DecodeStream stream(*d);
  std::string out;
  stream.Push("ax", &out);
  EXPECT_EQ(out, "a");  // the "x" might be trailing
  stream.Push("b", &out);
  EXPECT_EQ(out, "axb");
}

TEST(DecoderTest, MetaspaceByteLevelAndNoDecoder) {
  std::unique_ptr<Decoder> meta = Make(
      R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true})");
  ASSERT_NE(meta, nullptr);
  EXPECT_EQ(Decode(*meta, {"\u2581Hey", "\u2581friend!"}), "Hey friend!");
  std::unique_ptr<Decoder> never = Make(
      R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "never", "split": true})");
  ASSERT_NE(never, nullptr);
  EXPECT_EQ(Decode(*never, {"\u2581Hey", "\u2581friend!"}), " Hey friend!");

  std::unique_ptr<Decoder> byte_level = Make(R"({"type": "ByteLevel"})");
  ASSERT_NE(byte_level, nullptr);
  // "Ġ" = ' ', "Ċ" = '\n', "Ã©" = C3 A9; a token outside the alphabet stays as is.
  EXPECT_EQ(Decode(*byte_level, {"Hello", "\u0120w\u00c3", "\u00a9", "\u010a", "<|x|>", "\u4e2d"}),
            "Hello w\u00e9\n<|x|>\u4e2d");

  std::unique_ptr<Decoder> none = Make("null");
  ASSERT_NE(none, nullptr);
  EXPECT_EQ(Decode(*none, {"a", "b", "c"}), "a b c");
}

TEST(DecoderTest, UnsupportedChainsNameTheKey) {
  for (const char* json : {
           R"({"type": "WordPiece", "prefix": "##"})",
           R"({"type": "CTC"})",
           R"({"type": "BPEDecoder", "suffix": "</w>"})",
           R"({"type": "Sequence", "decoders": [{"type": "ByteFallback"},
               {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}]})",
           R"({"type": "Sequence", "decoders": [{"type": "Fuse"},
               {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}]})",
           R"({"type": "Replace", "pattern": {"Regex": "▁"}, "content": " "})",
       }) {
    const Json parsed = Json::parse(json);
    absl::StatusOr<std::unique_ptr<Decoder>> d =
        Decoder::FromJson(&parsed, JsonPath{"t.json", "decoder"});
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << json;
    EXPECT_THAT(std::string(d.status().message()), testing::HasSubstr("t.json: key 'decoder"))
        << json;
  }
}

}  // namespace
}  // namespace qkvshare::agents::tokenizer_internal
