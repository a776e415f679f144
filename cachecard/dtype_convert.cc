// ConvertElements on Highway (every SIMD target, chosen at run time), with the
// vector conversions of quant/fp16-inl.h: bit-identical to the scalar
// quant/fp16.h and base/dtype.h conversions on every target, which also
// convert the tail shorter than a vector.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cachecard/dtype_convert.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
// Must come after foreach_target.h.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "base/dtype.h"
#include "cachecard/dtype_convert.h"
#include "hwy/highway.h"
#include "quant/fp16-inl.h"
#include "quant/fp16.h"

#ifndef QKVSHARE_CACHECARD_DTYPE_CONVERT_ONCE_
#define QKVSHARE_CACHECARD_DTYPE_CONVERT_ONCE_
namespace qkvshare::cachecard {
namespace {

float LoadFloat(const void* p, size_t i, DType t) {
  switch (t) {
    case DType::kF32:
      return static_cast<const float*>(p)[i];
    case DType::kF16:
      return quant::HalfToFloat(static_cast<const uint16_t*>(p)[i]);
    case DType::kBF16:
      return Bf16ToFloat(static_cast<const uint16_t*>(p)[i]);
  }
  return 0;
}

void StoreFloat(float f, void* p, size_t i, DType t) {
  switch (t) {
    case DType::kF32:
      static_cast<float*>(p)[i] = f;
      return;
    case DType::kF16:
      static_cast<uint16_t*>(p)[i] = quant::FloatToHalf(f);
      return;
    case DType::kBF16:
      static_cast<uint16_t*>(p)[i] = FloatToBf16(f);
      return;
  }
}

}  // namespace
}  // namespace qkvshare::cachecard
#endif  // QKVSHARE_CACHECARD_DTYPE_CONVERT_ONCE_

HWY_BEFORE_NAMESPACE();
namespace qkvshare::cachecard {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

template <DType S, DType D>
void ConvertT(const void* src, void* dst, size_t n) {
  const hn::ScalableTag<float> df;
  const size_t lanes = hn::Lanes(df);
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    quant::HWY_NAMESPACE::StoreFromF32<D>(
        df, quant::HWY_NAMESPACE::LoadAsF32<S>(df, src, static_cast<int64_t>(i)), dst,
        static_cast<int64_t>(i));
  }
  for (; i < n; ++i) StoreFloat(LoadFloat(src, i, S), dst, i, D);
}

// Different dtypes only (the caller copies equal ones).
void Convert(const void* src, DType src_type, void* dst, DType dst_type, size_t n) {
  switch (src_type) {
    case DType::kF32:
      return dst_type == DType::kF16 ? ConvertT<DType::kF32, DType::kF16>(src, dst, n)
                                     : ConvertT<DType::kF32, DType::kBF16>(src, dst, n);
    case DType::kF16:
      return dst_type == DType::kF32 ? ConvertT<DType::kF16, DType::kF32>(src, dst, n)
                                     : ConvertT<DType::kF16, DType::kBF16>(src, dst, n);
    case DType::kBF16:
      return dst_type == DType::kF32 ? ConvertT<DType::kBF16, DType::kF32>(src, dst, n)
                                     : ConvertT<DType::kBF16, DType::kF16>(src, dst, n);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace qkvshare::cachecard
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qkvshare::cachecard {
HWY_EXPORT(Convert);

void ConvertElements(const void* src, DType src_type, void* dst, DType dst_type, size_t n) {
  if (src_type == dst_type) {
    std::memcpy(dst, src, n * DTypeSize(src_type));
    return;
  }
  HWY_DYNAMIC_DISPATCH(Convert)(src, src_type, dst, dst_type, n);
}

}  // namespace qkvshare::cachecard
#endif  // HWY_ONCE
