// File: cachecard/testing/golden_card.h
// -----------------------------------------------------------------------------
// The golden card checked in as cachecard/testdata/golden_v<N>.qkvcard
// (N = kCardFormatVersion): a flattened two-hop chain on the bundled model's
// KV shape (5 layers, 4 kv heads, head_dim 8), with
//   segment 0: tokens 0..4, quantized, mixed K/V widths, G = 4 (keys
//              per-channel) / 16 (values per-token), hop 0, from an fp32 cache;
//   segment 1: tokens 5..7, full fp32, hop 1.
// Cache contents are exact binary fractions from an integer formula, so the
// bytes depend only on the format and the quantizer, not on libm.
// Regenerate with: bazel run //cachecard:make_golden_card --
// $PWD/cachecard/testdata/golden_v<N>.qkvcard
#ifndef QKVSHARE_CACHECARD_TESTING_GOLDEN_CARD_H_
#define QKVSHARE_CACHECARD_TESTING_GOLDEN_CARD_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "cachecard/card.h"
#include "cachecard/ids.h"

namespace qkvshare::cachecard::testing {

inline constexpr int64_t kGoldenTokens = 8;

// Element (layer, K or V, head, token, dim) of the golden card's source cache.
float GoldenValue(int layer, bool is_key, int head, int64_t token, int dim);
// The golden card's model fingerprint and final (flattened) card id.
ModelFingerprint GoldenFingerprint();
CardId GoldenCardId();
// File name of the golden card of this format version: "golden_v<N>.qkvcard".
std::string GoldenFileName();

// Builds the golden card (deterministic).
absl::StatusOr<CardPtr> MakeGoldenCard();

}  // namespace qkvshare::cachecard::testing

#endif  // QKVSHARE_CACHECARD_TESTING_GOLDEN_CARD_H_
