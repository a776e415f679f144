// File: quant/fp16.h
// -----------------------------------------------------------------------------
// Portable IEEE binary16 (fp16) <-> binary32 conversions with an explicit
// rounding direction, used by the scalar kernels and by tests. The SIMD
// kernels use the vector versions of quant/fp16-inl.h (Highway), which give
// bit-identical results on every target; IEEE 754 fixes the result of every
// rounding direction (quant/fp16_test.cc checks these against the compiler's
// _Float16 conversion in each rounding mode).
//
// Why directed rounding: a quantization group stores its range as fp16
// (lo, hi); rounding lo toward -inf and hi toward +inf keeps every element of
// the group inside [lo, hi] (docs/quantization.md, "Error bounds").
//
// Thread safety: pure functions.
#ifndef QKVSHARE_QUANT_FP16_H_
#define QKVSHARE_QUANT_FP16_H_

#include <cstdint>
#include <cstring>

namespace qkvshare::quant {

// Largest finite fp16 value.
inline constexpr float kFp16Max = 65504.0f;

enum class Fp16Rounding : uint8_t {
  kNearestEven,  // IEEE default (round half to even)
  kDown,         // toward -infinity
  kUp,           // toward +infinity
};

// fp16 bits -> float. Exact for every finite value and infinities; a NaN stays
// a quiet NaN (as VCVTPH2PS).
inline float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  uint32_t u;
  if (exp == 0x1f) {
    u = sign | 0x7f800000u | (man << 13) | (man != 0 ? 0x400000u : 0u);
  } else if (exp != 0) {
    u = sign | ((exp + 112u) << 23) | (man << 13);  // rebias 15 -> 127
  } else {
    // Zero or subnormal: man * 2^-24, exact in binary32.
    float f = static_cast<float>(man) * 5.9604644775390625e-8f;
    std::memcpy(&u, &f, sizeof u);
    u |= sign;
  }
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// float -> fp16 bits, correctly rounded in direction `mode` (overflow follows
// IEEE: to infinity when rounding away from zero, else to +-65504). A NaN
// becomes a quiet NaN with the top payload bits (as VCVTPS2PH).
inline uint16_t FloatToHalf(float f, Fp16Rounding mode = Fp16Rounding::kNearestEven) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const bool negative = sign != 0;
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00u | static_cast<uint16_t>((a >> 13) & 0x3ffu);
  if (a == 0x7f800000u) return sign | 0x7c00u;
  if (a == 0) return sign;
  // Does rounding the magnitude up (away from zero) apply when inexact?
  const bool away_if_inexact =
      (mode == Fp16Rounding::kUp && !negative) || (mode == Fp16Rounding::kDown && negative);
  const int e = static_cast<int>(a >> 23);  // biased binary32 exponent
  const int unbiased = e - 127;
  if (unbiased >= 16) {  // |f| >= 65536: beyond the largest fp16
    if (mode == Fp16Rounding::kNearestEven || away_if_inexact) return sign | 0x7c00u;
    return sign | 0x7bffu;
  }
  // Significand with the implicit bit (binary32 subnormals: implicit bit 0,
  // far below the fp16 range; they still round correctly below).
  const uint32_t m = e == 0 ? (a & 0x7fffffu) : ((a & 0x7fffffu) | 0x800000u);
  // Number of low significand bits that fp16 cannot keep.
  int shift = 13;
  uint32_t base = 0;  // fp16 bits of the exponent part (normal case)
  if (unbiased >= -14) {
    base = static_cast<uint32_t>(unbiased + 14) << 10;  // + (m >> 13) adds the implicit 0x400
  } else {
    shift = 13 + (-14 - unbiased);  // fp16 subnormal: exponent field 0
  }
  uint32_t q;
  bool inexact, above_half, exactly_half;
  if (shift >= 25) {  // m < 2^24 <= half of the last kept unit
    q = 0;
    inexact = true;
    above_half = false;
    exactly_half = false;
  } else {
    q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1);
    inexact = rem != 0;
    above_half = rem > half;
    exactly_half = rem == half;
  }
  uint32_t bits = base + q;  // carries into the exponent (or to 0x7c00) naturally
  bool up;
  if (mode == Fp16Rounding::kNearestEven) {
    up = above_half || (exactly_half && (q & 1u));
  } else {
    up = inexact && away_if_inexact;
  }
  if (up) ++bits;  // never exceeds 0x7c00 (inf), reached only when rounding away
  return sign | static_cast<uint16_t>(bits);
}

}  // namespace qkvshare::quant

#endif  // QKVSHARE_QUANT_FP16_H_
