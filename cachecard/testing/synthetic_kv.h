// File: cachecard/testing/synthetic_kv.h
// -----------------------------------------------------------------------------
// Synthetic KV caches for cachecard tests and bench/card_bench: deterministic
// pseudo-random data with realistic statistics (keys: normal with a
// per-channel offset and scale, a few outlier channels, as post-RoPE keys
// look; values: normal per token), plus helpers to read elements and compare
// caches. Not for production code.
//
// Thread safety: pure functions (each call has its own generator).
#ifndef QKVSHARE_CACHECARD_TESTING_SYNTHETIC_KV_H_
#define QKVSHARE_CACHECARD_TESTING_SYNTHETIC_KV_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "agents/kv_cache.h"
#include "base/dtype.h"
#include "quant/bit_plan.h"

namespace qkvshare::cachecard::testing {

// A cache of `shape` and `dtype` holding `tokens` tokens of synthetic data
// drawn from `seed` (same seed, same data). max_tokens defaults to tokens.
absl::StatusOr<std::unique_ptr<agents::KvCache>> MakeSyntheticCache(const agents::KvShape& shape,
                                                                    DType dtype, int64_t tokens,
                                                                    uint64_t seed,
                                                                    int64_t max_tokens = 0);

// Element (head, token, dim) of layer `layer`'s K (is_key) or V, as float.
float CacheElement(const agents::KvCache& cache, int layer, bool is_key, int head, int64_t token,
                   int dim);

// Whether positions [0, tokens) of a and b (same shape and dtype) are equal
// bit for bit in every layer's K and V.
bool SameBytes(const agents::KvCache& a, const agents::KvCache& b, int64_t tokens);

// Raw bytes of positions [0, tokens) of every layer's K and V, in layer, K/V,
// head order: to compare a cache before and after a failed injection.
std::vector<uint8_t> Snapshot(const agents::KvCache& cache, int64_t tokens);

// A plan of `tokens` widths drawn from `choices` (cycled by a seeded
// generator), with avg_bits set.
quant::BitPlan RandomPlan(int64_t tokens, const std::vector<uint8_t>& choices, uint64_t seed);

// A plan giving every token width `bits`.
quant::BitPlan UniformPlan(int64_t tokens, uint8_t bits);

}  // namespace qkvshare::cachecard::testing

#endif  // QKVSHARE_CACHECARD_TESTING_SYNTHETIC_KV_H_
