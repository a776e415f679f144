// File: cachecard/dtype_convert.h
// -----------------------------------------------------------------------------
// Element conversion between the KV cache dtypes (f32, f16, bf16) for `full`
// card sections injected into a cache of another dtype. Conversions to a
// narrower type round to nearest even; NaN stays NaN, overflow to f16 gives
// +-Inf. Same-dtype conversion is a memcpy (bit exact).
//
// Thread safety: pure functions.
#ifndef QKVSHARE_CACHECARD_DTYPE_CONVERT_H_
#define QKVSHARE_CACHECARD_DTYPE_CONVERT_H_

#include <cstddef>
#include <cstdint>

#include "base/dtype.h"

namespace qkvshare::cachecard {

// Converts `n` elements at `src` (of `src_type`) to `dst_type` at `dst`.
// Buffers must not overlap and need no alignment.
void ConvertElements(const void* src, DType src_type, void* dst, DType dst_type, size_t n);

}  // namespace qkvshare::cachecard

#endif  // QKVSHARE_CACHECARD_DTYPE_CONVERT_H_
