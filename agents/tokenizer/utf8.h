// File: agents/tokenizer/utf8.h
// -----------------------------------------------------------------------------
// UTF-8 helpers for the tokenizer (internal): validation, code point decoding
// and a streaming, lossy UTF-8 assembler.
//
// Lossy conversion follows the Unicode "maximal subpart" practice (the same
// as Rust's String::from_utf8_lossy and Python's errors="replace"): every
// maximal ill-formed subsequence becomes one U+FFFD. Because an ill-formed
// subpart never extends past a byte that starts a valid sequence, converting a
// byte stream piece by piece with Utf8Assembler gives exactly the conversion
// of the whole stream; the decoders rely on that.
//
// Thread safety: the free functions are pure; a Utf8Assembler is one
// stream's state and is not shared.
#ifndef QKVSHARE_AGENTS_TOKENIZER_UTF8_H_
#define QKVSHARE_AGENTS_TOKENIZER_UTF8_H_

#include <cstddef>
#include <string>
#include <string_view>

namespace qkvshare::agents::tokenizer_internal {

// The replacement character U+FFFD in UTF-8.
inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";

// Classifies the bytes at the start of `bytes` (non-empty):
//   > 0: a complete, well-formed sequence of that many bytes;
//   = 0: a well-formed but incomplete prefix (more bytes could complete it);
//   < 0: -k, the first k bytes are a maximal ill-formed subpart (k >= 1).
int ScanUtf8(std::string_view bytes);

// Byte offset of the first ill-formed or truncated sequence in `text`, or
// std::string_view::npos when `text` is valid UTF-8.
size_t FindInvalidUtf8(std::string_view text);

// Decodes the code point starting at text[pos]; `text` must be valid UTF-8
// there. Stores the sequence length (1..4 bytes) in *length.
char32_t DecodeUtf8At(std::string_view text, size_t pos, size_t* length);

// The last code point of valid UTF-8 `text` (non-empty).
char32_t LastCodePoint(std::string_view text);

// Appends the UTF-8 encoding of `code_point` (<= 0x10FFFF) to *out.
void AppendUtf8(char32_t code_point, std::string* out);

// "U+00E9 'é'"-style description of a code point, for error messages.
std::string DescribeCodePoint(char32_t code_point);

// Converts a byte stream to valid UTF-8 incrementally. Complete characters
// are appended to the output as soon as their last byte arrives; an
// incomplete tail is held. Ill-formed subparts become U+FFFD.
class Utf8Assembler {
 public:
  // Appends the characters completed by `bytes` to *out.
  void Append(std::string_view bytes, std::string* out);
  // Appends U+FFFD for a held incomplete tail (if any) and resets.
  void Flush(std::string* out);
  // True when an incomplete character is held.
  bool has_pending() const { return !pending_.empty(); }

 private:
  std::string pending_;  // a well-formed but incomplete prefix, <= 3 bytes
};

// Lossy conversion of a whole byte string (Append + Flush).
std::string ToValidUtf8(std::string_view bytes);

}  // namespace qkvshare::agents::tokenizer_internal

#endif  // QKVSHARE_AGENTS_TOKENIZER_UTF8_H_
