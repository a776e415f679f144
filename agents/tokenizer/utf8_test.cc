#include "agents/tokenizer/utf8.h"

#include <string>

#include "gtest/gtest.h"

namespace qkvshare::agents::tokenizer_internal {
namespace {

TEST(Utf8Test, ScanClassifiesSequences) {
  EXPECT_EQ(ScanUtf8("a"), 1);
  EXPECT_EQ(ScanUtf8("\xC3\xA9"), 2);
  EXPECT_EQ(ScanUtf8("\xE2\x96\x81"), 3);
  EXPECT_EQ(ScanUtf8("\xF0\x9F\x8E\x89"), 4);
  EXPECT_EQ(ScanUtf8("\xF0\x9F\x8E"), 0);       // incomplete
  EXPECT_EQ(ScanUtf8("\xC3"), 0);               // incomplete
  EXPECT_EQ(ScanUtf8("\x80"), -1);              // lone continuation
  EXPECT_EQ(ScanUtf8("\xC0\xAF"), -1);          // overlong lead
  EXPECT_EQ(ScanUtf8("\xE0\x80\x80"), -1);      // overlong: E0 needs A0..BF
  EXPECT_EQ(ScanUtf8("\xED\xA0\x80"), -1);      // surrogate: ED needs 80..9F
  EXPECT_EQ(ScanUtf8("\xF4\x90\x80\x80"), -1);  // above U+10FFFF
  EXPECT_EQ(ScanUtf8("\xF0\x9F\x41"), -2);      // 2-byte maximal subpart
  EXPECT_EQ(ScanUtf8("\xFF"), -1);
}

TEST(Utf8Test, FindInvalid) {
  EXPECT_EQ(FindInvalidUtf8(""), std::string_view::npos);
  EXPECT_EQ(FindInvalidUtf8("caf\xC3\xA9 \xF0\x9F\x8E\x89"), std::string_view::npos);
  EXPECT_EQ(FindInvalidUtf8("abc\xFF"), 3u);
  EXPECT_EQ(FindInvalidUtf8("ab\xC3"), 2u);
}

TEST(Utf8Test, DecodeAndEncodeCodePoints) {
  size_t length = 0;
  EXPECT_EQ(DecodeUtf8At("x\xF0\x9F\x8E\x89", 1, &length), 0x1F389u);
  EXPECT_EQ(length, 4u);
  EXPECT_EQ(LastCodePoint("a\xC3\xA9"), 0xE9u);
  std::string s;
  for (char32_t cp : {U'a', U'\u00e9', U'\u2581', U'\U0001F389'}) AppendUtf8(cp, &s);
  EXPECT_EQ(s, "a\xC3\xA9\xE2\x96\x81\xF0\x9F\x8E\x89");
  EXPECT_EQ(DescribeCodePoint(U'z'), "U+007A 'z'");
  EXPECT_EQ(DescribeCodePoint(U'\n'), "U+000A");
}

TEST(Utf8Test, LossyConversionReplacesMaximalSubparts) {
  EXPECT_EQ(ToValidUtf8("ok"), "ok");
  EXPECT_EQ(ToValidUtf8("\xF0\x9F\x8E"
                        "A"),
            "\uFFFD"
            "A");  // truncated: one U+FFFD
  EXPECT_EQ(ToValidUtf8("\xE0\x80"
                        "A"),
            "\uFFFD\uFFFD"
            "A");
  EXPECT_EQ(ToValidUtf8("\x80\x80"), "\uFFFD\uFFFD");
  EXPECT_EQ(ToValidUtf8("a\xC3"), "a\uFFFD");
}

TEST(Utf8Test, AssemblerHoldsIncompleteCharacters) {
  Utf8Assembler a;
  std::string out;
  a.Append("x\xF0\x9F", &out);
  EXPECT_EQ(out, "x");
  EXPECT_TRUE(a.has_pending());
  a.Append("\x8E", &out);
  EXPECT_EQ(out, "x");
  a.Append("\x89y", &out);
  EXPECT_EQ(out, "x\U0001F389y");
  EXPECT_FALSE(a.has_pending());
  a.Append("\xC3", &out);
  a.Flush(&out);
  EXPECT_EQ(out, "x\U0001F389y\uFFFD");
  // Piecewise conversion equals whole conversion.
  const std::string bytes = "a\xF0\x9F\x8E\x89\xE0\x80\xC3\xA9\xF0\x9F\xED\xA0\x80z\xC3";
  for (size_t cut = 0; cut <= bytes.size(); ++cut) {
    Utf8Assembler b;
    std::string piecewise;
    b.Append(bytes.substr(0, cut), &piecewise);
    b.Append(bytes.substr(cut), &piecewise);
    b.Flush(&piecewise);
    EXPECT_EQ(piecewise, ToValidUtf8(bytes)) << "cut " << cut;
  }
}

}  // namespace
}  // namespace qkvshare::agents::tokenizer_internal
