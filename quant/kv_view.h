// File: quant/kv_view.h
// -----------------------------------------------------------------------------
// Strided views of one layer's K or V over a range of tokens, as 2-D matrices
// [num_tokens, channels] with channels = num_heads * head_dim. They describe
// the agents' KV cache layout ([num_kv_heads, capacity, head_dim] per layer,
// docs/kv_cache.md) without depending on it:
//
//   element (t, c), c = h * head_dim + d, lives at
//     data + (h * head_stride + t * head_dim + d)        (in elements)
//
// `data` points at token 0 of the view (not necessarily position 0 of the
// cache). Views do not own memory.
#ifndef QKVSHARE_QUANT_KV_VIEW_H_
#define QKVSHARE_QUANT_KV_VIEW_H_

#include <cstdint>

#include "base/dtype.h"

namespace qkvshare::quant {

struct ConstKvView {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  int num_heads = 0;
  int head_dim = 0;
  int64_t head_stride = 0;  // elements between heads (>= num_tokens * head_dim)
  int64_t num_tokens = 0;
  int channels() const { return num_heads * head_dim; }
};

struct KvView {
  void* data = nullptr;
  DType dtype = DType::kF32;
  int num_heads = 0;
  int head_dim = 0;
  int64_t head_stride = 0;
  int64_t num_tokens = 0;
  int channels() const { return num_heads * head_dim; }
  operator ConstKvView() const {
    return {data, dtype, num_heads, head_dim, head_stride, num_tokens};
  }
};

}  // namespace qkvshare::quant

#endif  // QKVSHARE_QUANT_KV_VIEW_H_
