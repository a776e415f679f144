// File: cachecard/ids.h
// -----------------------------------------------------------------------------
// Identifiers carried by a CacheCard: the 128-bit card id and the model
// fingerprint (SHA-256 of the model, 32 bytes, computed by agents/).
//
// Both are plain value types: copyable, comparable, hashable (absl), and
// printable as lowercase hex. Thread safety: values; CardId::Random needs its
// own generator per thread.
//
// Example:
//   absl::BitGen gen;
//   CardId id = CardId::Random(gen);
//   std::string name = id.ToHex();                     // 32 hex digits
//   QKV_ASSIGN_OR_RETURN(CardId same, CardId::FromHex(name));
#ifndef QKVSHARE_CACHECARD_IDS_H_
#define QKVSHARE_CACHECARD_IDS_H_

#include <array>
#include <cstdint>
#include <string>

#include "absl/random/bit_gen_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace qkvshare::cachecard {

// SHA-256 of the model's weights and config as computed by agents/ (32 bytes).
// A card can only be injected into a model with the same fingerprint.
using ModelFingerprint = std::array<uint8_t, 32>;

// Lowercase hex of a fingerprint (64 digits).
std::string FingerprintHex(const ModelFingerprint& fp);

// A card's identity: 128 random bits. All-zero means "none" (e.g. no parent).
struct CardId {
  std::array<uint8_t, 16> bytes{};

  // A fresh non-zero random id drawn from `gen`.
  static CardId Random(absl::BitGenRef gen);
  // Parses exactly 32 hex digits (either case). Errors: InvalidArgument.
  static absl::StatusOr<CardId> FromHex(absl::string_view hex);

  bool IsZero() const;
  // 32 lowercase hex digits.
  std::string ToHex() const;

  friend bool operator==(const CardId& a, const CardId& b) { return a.bytes == b.bytes; }
  friend bool operator!=(const CardId& a, const CardId& b) { return a.bytes != b.bytes; }
  friend bool operator<(const CardId& a, const CardId& b) { return a.bytes < b.bytes; }
  template <typename H>
  friend H AbslHashValue(H h, const CardId& id) {
    return H::combine(std::move(h), id.bytes);
  }
};

}  // namespace qkvshare::cachecard

#endif  // QKVSHARE_CACHECARD_IDS_H_
