// File: agents/kv_cache.h
// -----------------------------------------------------------------------------
// KvCache: the key/value cache of ONE sequence for every layer of a model.
// This is the contract between the runtime (agents/torch), the CacheCard
// builder/injector (cachecard/) and the quantizer (quant/); it has no torch
// dependency so those packages build and test without libtorch.
//
// Layout (documented in docs/kv_cache.md; cards rely on it):
//   - per layer l, K and V are each one dense row-major array
//       [num_kv_heads, capacity, head_dim]
//     of dtype() elements, so element (head h, token t, dim d) of K is at
//       k_data(l) + (h * capacity() + t) * head_dim + d      (in elements).
//     head_stride() = capacity() * head_dim elements separate two heads.
//   - tokens occupy positions 0 .. length()-1 (RoPE position == index); keys
//     are stored AFTER RoPE has been applied, values as projected.
//   - contents at positions >= length() are unspecified.
//
// Lifecycle: Create() -> Reserve()/write/SetLength() or Truncate() -> destroy.
// Reserve() may move the buffers: pointers from k_data()/v_data() are
// invalidated by Reserve() and by nothing else.
//
// Thread safety: none. One owner (an agent's sequence) at a time; the owner
// serializes prefill, decode, card build and inject.
//
// Example (fill from outside, e.g. a card injection):
//   QKV_RETURN_IF_ERROR(cache->Reserve(n));          // may fail: nothing changed
//   for (int l = 0; l < shape.num_layers; ++l) Write(cache->k_data(l), ...);
//   QKV_RETURN_IF_ERROR(cache->SetLength(n));
#ifndef QKVSHARE_AGENTS_KV_CACHE_H_
#define QKVSHARE_AGENTS_KV_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "base/dtype.h"

namespace qkvshare::agents {

// The geometry of a model's KV cache.
struct KvShape {
  int num_layers = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  // Channels of one token in one layer's K (or V): num_kv_heads * head_dim.
  int channels() const { return num_kv_heads * head_dim; }
  bool operator==(const KvShape& o) const {
    return num_layers == o.num_layers && num_kv_heads == o.num_kv_heads && head_dim == o.head_dim;
  }
};

class KvCache {
 public:
  // Creates an empty cache (length 0) able to grow to `max_tokens` tokens,
  // with room for `initial_capacity` tokens allocated now (0: a small default).
  // Errors: InvalidArgument for non-positive dimensions or max_tokens, or
  // initial_capacity > max_tokens; ResourceExhausted when allocation fails.
  static absl::StatusOr<std::unique_ptr<KvCache>> Create(const KvShape& shape, DType dtype,
                                                         int64_t max_tokens,
                                                         int64_t initial_capacity = 0);

  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;
  ~KvCache();

  const KvShape& shape() const { return shape_; }
  DType dtype() const { return dtype_; }
  // Tokens held (positions 0 .. length()-1).
  int64_t length() const { return length_; }
  // Tokens that fit without reallocation.
  int64_t capacity() const { return capacity_; }
  // Hard limit (the model's context limit, or the daemon's).
  int64_t max_tokens() const { return max_tokens_; }
  // Elements between consecutive heads of one layer's K or V.
  int64_t head_stride() const { return capacity_ * shape_.head_dim; }
  // Bytes allocated for K and V of all layers.
  size_t allocated_bytes() const;

  // Ensures capacity() >= tokens, growing geometrically and keeping the first
  // length() tokens. Errors: OutOfRange when tokens > max_tokens();
  // ResourceExhausted when allocation fails. On error nothing changes.
  absl::Status Reserve(int64_t tokens);

  // Sets length() after the caller has written positions [0, n) directly.
  // Errors: OutOfRange when n > capacity().
  absl::Status SetLength(int64_t n);

  // Drops tokens from the end: length() becomes min(n, length()).
  void Truncate(int64_t n);

  // Start of layer `layer`'s K or V array ([num_kv_heads, capacity, head_dim]).
  // REQUIRES: 0 <= layer < shape().num_layers.
  void* k_data(int layer) { return LayerBase(layer, 0); }
  void* v_data(int layer) { return LayerBase(layer, 1); }
  const void* k_data(int layer) const { return LayerBase(layer, 0); }
  const void* v_data(int layer) const { return LayerBase(layer, 1); }

 private:
  KvCache(const KvShape& shape, DType dtype, int64_t max_tokens);
  // kv: 0 for K, 1 for V.
  void* LayerBase(int layer, int kv) const;
  size_t LayerBytes(int64_t capacity) const;

  KvShape shape_;
  DType dtype_;
  int64_t max_tokens_;
  int64_t capacity_ = 0;
  int64_t length_ = 0;
  // [num_layers][2 (K, V)][num_kv_heads][capacity][head_dim], 64-byte aligned.
  std::unique_ptr<char, void (*)(void*)> data_;
};

}  // namespace qkvshare::agents

#endif  // QKVSHARE_AGENTS_KV_CACHE_H_
