#include "cachecard/dtype_convert.h"

#include <cstring>

#include "quant/fp16.h"

namespace qkvshare::cachecard {
namespace {

float LoadFloat(const uint8_t* p, DType t) {
  uint16_t h;
  switch (t) {
    case DType::kF32: {
      float f;
      std::memcpy(&f, p, sizeof f);
      return f;
    }
    case DType::kF16:
      std::memcpy(&h, p, sizeof h);
      return quant::HalfToFloat(h);
    case DType::kBF16:
      std::memcpy(&h, p, sizeof h);
      return Bf16ToFloat(h);
  }
  return 0;
}

void StoreFloat(float f, uint8_t* p, DType t) {
  uint16_t h;
  switch (t) {
    case DType::kF32:
      std::memcpy(p, &f, sizeof f);
      return;
    case DType::kF16:
      h = quant::FloatToHalf(f);
      std::memcpy(p, &h, sizeof h);
      return;
    case DType::kBF16:
      h = FloatToBf16(f);
      std::memcpy(p, &h, sizeof h);
      return;
  }
}

}  // namespace

void ConvertElements(const void* src, DType src_type, void* dst, DType dst_type, size_t n) {
  if (src_type == dst_type) {
    std::memcpy(dst, src, n * DTypeSize(src_type));
    return;
  }
  const auto* in = static_cast<const uint8_t*>(src);
  auto* out = static_cast<uint8_t*>(dst);
  const size_t in_size = DTypeSize(src_type);
  const size_t out_size = DTypeSize(dst_type);
  for (size_t i = 0; i < n; ++i) {
    StoreFloat(LoadFloat(in + i * in_size, src_type), out + i * out_size, dst_type);
  }
}

}  // namespace qkvshare::cachecard
