#include "agents/tokenizer/utf8.h"

#include <cstdint>

#include "absl/strings/str_format.h"

namespace qkvshare::agents::tokenizer_internal {

int ScanUtf8(std::string_view bytes) {
  const auto* s = reinterpret_cast<const uint8_t*>(bytes.data());
  const size_t n = bytes.size();
  const uint8_t b = s[0];
  if (b < 0x80) return 1;
  // Well-formed byte sequences (Unicode Table 3-7): the lead byte fixes the
  // number of continuation bytes and the range allowed for the first one.
  int need = 0;
  uint8_t lo = 0x80;
  uint8_t hi = 0xBF;
  if (b >= 0xC2 && b <= 0xDF) {
    need = 1;
  } else if (b == 0xE0) {
    need = 2;
    lo = 0xA0;
  } else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) {
    need = 2;
  } else if (b == 0xED) {
    need = 2;
    hi = 0x9F;
  } else if (b == 0xF0) {
    need = 3;
    lo = 0x90;
  } else if (b >= 0xF1 && b <= 0xF3) {
    need = 3;
  } else if (b == 0xF4) {
    need = 3;
    hi = 0x8F;
  } else {
    return -1;  // 0x80..0xC1 or 0xF5..0xFF can never start a sequence
  }
  for (int i = 1; i <= need; ++i) {
    if (static_cast<size_t>(i) >= n) return 0;
    const uint8_t c = s[i];
    if (c < lo || c > hi) return -i;
    lo = 0x80;
    hi = 0xBF;
  }
  return need + 1;
}

size_t FindInvalidUtf8(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    // Fast path for ASCII runs.
    if (static_cast<uint8_t>(text[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const int r = ScanUtf8(text.substr(pos));
    if (r <= 0) return pos;
    pos += static_cast<size_t>(r);
  }
  return std::string_view::npos;
}

char32_t DecodeUtf8At(std::string_view text, size_t pos, size_t* length) {
  const auto* s = reinterpret_cast<const uint8_t*>(text.data()) + pos;
  const uint8_t b = s[0];
  if (b < 0x80) {
    *length = 1;
    return b;
  }
  if (b < 0xE0) {
    *length = 2;
    return (static_cast<char32_t>(b & 0x1F) << 6) | (s[1] & 0x3F);
  }
  if (b < 0xF0) {
    *length = 3;
    return (static_cast<char32_t>(b & 0x0F) << 12) | (static_cast<char32_t>(s[1] & 0x3F) << 6) |
           (s[2] & 0x3F);
  }
  *length = 4;
  return (static_cast<char32_t>(b & 0x07) << 18) | (static_cast<char32_t>(s[1] & 0x3F) << 12) |
         (static_cast<char32_t>(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
}

char32_t LastCodePoint(std::string_view text) {
  size_t start = text.size() - 1;
  while (start > 0 && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80) --start;
  size_t length = 0;
  return DecodeUtf8At(text, start, &length);
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string DescribeCodePoint(char32_t cp) {
  std::string s = absl::StrFormat("U+%04X", static_cast<uint32_t>(cp));
  if (cp >= 0x20 && cp != 0x7F) {
    s += " '";
    AppendUtf8(cp, &s);
    s += "'";
  }
  return s;
}

void Utf8Assembler::Append(std::string_view bytes, std::string* out) {
  std::string joined;
  std::string_view rest = bytes;
  if (!pending_.empty()) {
    joined = pending_;
    joined.append(bytes.data(), bytes.size());
    pending_.clear();
    rest = joined;
  }
  while (!rest.empty()) {
    const int r = ScanUtf8(rest);
    if (r > 0) {
      out->append(rest.data(), static_cast<size_t>(r));
      rest.remove_prefix(static_cast<size_t>(r));
    } else if (r < 0) {
      out->append(kReplacementChar);
      rest.remove_prefix(static_cast<size_t>(-r));
    } else {
      pending_.assign(rest.data(), rest.size());
      return;
    }
  }
}

void Utf8Assembler::Flush(std::string* out) {
  // A well-formed incomplete prefix is one maximal subpart: one U+FFFD.
  if (!pending_.empty()) out->append(kReplacementChar);
  pending_.clear();
}

std::string ToValidUtf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  Utf8Assembler assembler;
  assembler.Append(bytes, &out);
  assembler.Flush(&out);
  return out;
}

}  // namespace qkvshare::agents::tokenizer_internal
