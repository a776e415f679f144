// File: agents/tokenizer/byte_level.h
// -----------------------------------------------------------------------------
// GPT-2's byte-level alphabet (internal): every byte 0..255 stands for one
// printable Unicode character (`bytes_to_unicode` in OpenAI's encoder.py and
// in the Hugging Face tokenizers ByteLevel pre-tokenizer/decoder). Printable
// Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves; the
// other 68 bytes map, in byte order, to U+0100..U+0143 (so ' ' is 'Ġ' and
// '\n' is 'Ċ').
//
// Thread safety: the tables are immutable after first use.
#ifndef QKVSHARE_AGENTS_TOKENIZER_BYTE_LEVEL_H_
#define QKVSHARE_AGENTS_TOKENIZER_BYTE_LEVEL_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace qkvshare::agents::tokenizer_internal {

// The UTF-8 of the character standing for `byte`.
std::string_view ByteLevelChar(uint8_t byte);

// The byte that character `code_point` stands for, or -1 if it stands for none.
int ByteLevelByte(char32_t code_point);

// Appends the byte-level characters of every byte of `bytes` to *out.
void AppendByteLevel(std::string_view bytes, std::string* out);

// Maps the byte-level characters of `text` (valid UTF-8) back to bytes.
// Returns false, leaving *out unspecified, if some character of `text` is not
// in the alphabet.
bool DecodeByteLevel(std::string_view text, std::string* out);

}  // namespace qkvshare::agents::tokenizer_internal

#endif  // QKVSHARE_AGENTS_TOKENIZER_BYTE_LEVEL_H_
