#include "agents/tokenizer/byte_level.h"

#include <array>

#include "agents/tokenizer/utf8.h"

namespace qkvshare::agents::tokenizer_internal {
namespace {

constexpr char32_t kFirstRemapped = 0x100;
constexpr int kCodePointLimit = 0x100 + 68;  // every stand-in is below this

struct Tables {
  std::array<std::string, 256> byte_to_char;
  std::array<int, kCodePointLimit> char_to_byte;
};

const Tables& GetTables() {
  static const Tables* const tables = [] {
    auto* t = new Tables();
    t->char_to_byte.fill(-1);
    char32_t next = kFirstRemapped;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const char32_t cp = printable ? static_cast<char32_t>(b) : next++;
      AppendUtf8(cp, &t->byte_to_char[b]);
      t->char_to_byte[cp] = b;
    }
    return t;
  }();
  return *tables;
}

}  // namespace

std::string_view ByteLevelChar(uint8_t byte) { return GetTables().byte_to_char[byte]; }

int ByteLevelByte(char32_t code_point) {
  if (code_point >= static_cast<char32_t>(kCodePointLimit)) return -1;
  return GetTables().char_to_byte[code_point];
}

void AppendByteLevel(std::string_view bytes, std::string* out) {
  const Tables& t = GetTables();
  for (char c : bytes) out->append(t.byte_to_char[static_cast<uint8_t>(c)]);
}

bool DecodeByteLevel(std::string_view text, std::string* out) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t length = 0;
    const int b = ByteLevelByte(DecodeUtf8At(text, pos, &length));
    if (b < 0) return false;
    out->push_back(static_cast<char>(b));
    pos += length;
  }
  return true;
}

}  // namespace qkvshare::agents::tokenizer_internal
