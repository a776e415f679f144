// File: base/dtype.h
// -----------------------------------------------------------------------------
// Element types of KV caches, weights and quantization inputs, shared by
// agents/, quant/ and cachecard/ (which must not see torch types).
// The numeric values are written to disk by cachecard/: never renumber.
#ifndef QKVSHARE_BASE_DTYPE_H_
#define QKVSHARE_BASE_DTYPE_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace qkvshare {

enum class DType : uint8_t {
  kF32 = 0,   // IEEE binary32
  kF16 = 1,   // IEEE binary16
  kBF16 = 2,  // bfloat16 (upper half of binary32)
};

// Bytes per element: 4 for kF32, 2 otherwise.
constexpr size_t DTypeSize(DType t) { return t == DType::kF32 ? 4 : 2; }

// "f32", "f16", "bf16".
constexpr std::string_view DTypeName(DType t) {
  return t == DType::kF32 ? "f32" : (t == DType::kF16 ? "f16" : "bf16");
}

// bfloat16 <-> float. The conversion to bf16 rounds to nearest even and keeps
// NaN a NaN.
inline float Bf16ToFloat(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline uint16_t FloatToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

}  // namespace qkvshare

#endif  // QKVSHARE_BASE_DTYPE_H_
