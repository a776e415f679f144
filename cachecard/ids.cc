#include "cachecard/ids.h"

#include "absl/random/distributions.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace qkvshare::cachecard {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string Hex(const uint8_t* data, size_t n) {
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(data), n));
}

}  // namespace

std::string FingerprintHex(const ModelFingerprint& fp) { return Hex(fp.data(), fp.size()); }

CardId CardId::Random(absl::BitGenRef gen) {
  CardId id;
  do {
    for (uint8_t& b : id.bytes) b = absl::Uniform<uint8_t>(gen);
  } while (id.IsZero());
  return id;
}

absl::StatusOr<CardId> CardId::FromHex(absl::string_view hex) {
  CardId id;
  if (hex.size() != 2 * id.bytes.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("card id '", hex, "': expected 32 hex digits, got ", hex.size()));
  }
  for (size_t i = 0; i < id.bytes.size(); ++i) {
    int hi = HexValue(hex[2 * i]);
    int lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("card id '", hex, "': not a hex digit at offset ", 2 * i));
    }
    id.bytes[i] = static_cast<uint8_t>(hi * 16 + lo);
  }
  return id;
}

bool CardId::IsZero() const {
  for (uint8_t b : bytes) {
    if (b != 0) return false;
  }
  return true;
}

std::string CardId::ToHex() const { return Hex(bytes.data(), bytes.size()); }

}  // namespace qkvshare::cachecard
