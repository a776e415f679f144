// File: quant/fp16-inl.h
// -----------------------------------------------------------------------------
// Per-target (Highway) vector versions of the element conversions of
// quant/fp16.h and base/dtype.h, plus loads/stores of f32 vectors from/to
// buffers of any KV dtype. Include it from a Highway source after
// `hwy/highway.h` (or through `HWY_TARGET_INCLUDE` + `hwy/foreach_target.h`);
// the code lands in qkvshare::quant::HWY_NAMESPACE.
//
// Identical bits on every target: the conversions use integer operations and
// one IEEE addition only, never Highway's own f16/bf16 DemoteTo (which
// truncates on targets without F16C), so they equal the scalar FloatToHalf
// (round to nearest even, NaN quiet with the top payload bits, overflow to
// +-Inf), HalfToFloat (exact, NaN quieted) and FloatToBf16 / Bf16ToFloat for
// EVERY input, NaN and subnormals included (quant/kernels_test.cc checks all
// 2^16 halves and a sweep of floats on every target).
//
// Thread safety: pure functions.

// Per-target include guard (toggled by foreach_target.h).
#if defined(QKVSHARE_QUANT_FP16_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef QKVSHARE_QUANT_FP16_INL_H_
#undef QKVSHARE_QUANT_FP16_INL_H_
#else
#define QKVSHARE_QUANT_FP16_INL_H_
#endif

#include <cstddef>
#include <cstdint>

#include "base/dtype.h"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace qkvshare::quant {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// fp16 bits (one per i32 lane, zero-extended) -> f32, as HalfToFloat.
template <class DF>
HWY_INLINE hn::Vec<DF> HalfBitsToF32(DF df, hn::Vec<hn::RebindToSigned<DF>> h) {
  const hn::RebindToSigned<DF> di;
  const auto sign = hn::ShiftLeft<16>(hn::And(h, hn::Set(di, 0x8000)));
  const auto em = hn::And(h, hn::Set(di, 0x7fff));
  const auto man = hn::And(h, hn::Set(di, 0x3ff));
  // Normal: rebias the exponent 15 -> 127.
  const auto normal = hn::Add(hn::ShiftLeft<13>(em), hn::Set(di, 0x38000000));
  // Inf / NaN: all-ones exponent, payload kept, NaN quieted.
  const auto quiet = hn::IfThenElseZero(hn::Gt(man, hn::Zero(di)), hn::Set(di, 0x400000));
  const auto special = hn::Or(hn::Or(hn::ShiftLeft<13>(man), hn::Set(di, 0x7f800000)), quiet);
  // Zero / subnormal: man * 2^-24, exact.
  const auto sub =
      hn::BitCast(di, hn::Mul(hn::ConvertTo(df, em), hn::Set(df, 5.9604644775390625e-8f)));
  auto r = hn::IfThenElse(hn::Lt(em, hn::Set(di, 0x400)), sub, normal);
  r = hn::IfThenElse(hn::Gt(em, hn::Set(di, 0x7bff)), special, r);
  return hn::BitCast(df, hn::Or(r, sign));
}

// f32 -> fp16 bits (in i32 lanes), round to nearest even, as FloatToHalf.
template <class DF>
HWY_INLINE hn::Vec<hn::RebindToSigned<DF>> F32ToHalfBits(DF df, hn::Vec<DF> v) {
  const hn::RebindToSigned<DF> di;
  const hn::RebindToUnsigned<DF> du;
  const auto u = hn::BitCast(di, v);
  const auto sign =
      hn::And(hn::BitCast(di, hn::ShiftRight<16>(hn::BitCast(du, u))), hn::Set(di, 0x8000));
  const auto a = hn::And(u, hn::Set(di, 0x7fffffff));
  // Normal fp16 range: rebias and round on the 13 dropped bits (a carry into
  // the exponent, up to 0x7c00 = Inf, is the correct result).
  const auto r = hn::Sub(a, hn::Set(di, 0x38000000));
  const auto odd = hn::And(hn::ShiftRight<13>(r), hn::Set(di, 1));
  const auto normal = hn::ShiftRight<13>(hn::Add(r, hn::Add(hn::Set(di, 0xfff), odd)));
  // Subnormal fp16 (|x| < 2^-14): adding 0.5 puts the 2^-24 quantum at the
  // float's last bit, so the FPU rounds to nearest even for us.
  const auto sub = hn::Sub(hn::BitCast(di, hn::Add(hn::BitCast(df, a), hn::Set(df, 0.5f))),
                           hn::Set(di, 0x3f000000));
  const auto nan = hn::Or(hn::Set(di, 0x7e00), hn::And(hn::ShiftRight<13>(a), hn::Set(di, 0x3ff)));
  auto h = hn::IfThenElse(hn::Lt(a, hn::Set(di, 0x38800000)), sub, normal);
  h = hn::IfThenElse(hn::Gt(a, hn::Set(di, 0x477fffff)), hn::Set(di, 0x7c00), h);
  h = hn::IfThenElse(hn::Gt(a, hn::Set(di, 0x7f800000)), nan, h);
  return hn::Or(h, sign);
}

// f32 -> fp16 bits (in i32 lanes) rounded toward +inf (`up`) or -inf, as
// FloatToHalf(x, kUp / kDown), for |x| <= 65504 and x != -0 (callers add
// +0.0f; larger magnitudes and NaN are the caller's to exclude).
template <class DF>
HWY_INLINE hn::Vec<hn::RebindToSigned<DF>> F32ToHalfBitsDirected(DF df, hn::Vec<DF> v, bool up) {
  const hn::RebindToSigned<DF> di;
  const hn::RebindToUnsigned<DF> du;
  const auto u = hn::BitCast(di, v);
  const auto sign =
      hn::And(hn::BitCast(di, hn::ShiftRight<16>(hn::BitCast(du, u))), hn::Set(di, 0x8000));
  const auto a = hn::And(u, hn::Set(di, 0x7fffffff));
  // Magnitude truncated toward zero, and whether that dropped anything.
  const auto normal = hn::ShiftRight<13>(hn::Sub(a, hn::Set(di, 0x38000000)));
  const auto normal_inexact = hn::Ne(hn::And(a, hn::Set(di, 0x1fff)), hn::Zero(di));
  const auto y = hn::Mul(hn::BitCast(df, a), hn::Set(df, 16777216.0f));  // exact: |x| / 2^-24
  const auto sub = hn::ConvertTo(di, y);                                 // truncates
  const auto sub_inexact = hn::RebindMask(di, hn::Ne(hn::ConvertTo(df, sub), y));
  const auto is_sub = hn::Lt(a, hn::Set(di, 0x38800000));
  const auto mag = hn::IfThenElse(is_sub, sub, normal);
  const auto inexact = hn::Or(hn::And(is_sub, sub_inexact), hn::AndNot(is_sub, normal_inexact));
  // Away from zero when rounding up a positive or down a negative value.
  const auto negative = hn::Ne(sign, hn::Zero(di));
  const auto away = up ? hn::Not(negative) : negative;
  const auto bump = hn::IfThenElseZero(hn::And(inexact, away), hn::Set(di, 1));
  return hn::Or(hn::Add(mag, bump), sign);
}

// bf16 bits (in i32 lanes) -> f32, exact.
template <class DF>
HWY_INLINE hn::Vec<DF> Bf16BitsToF32(DF df, hn::Vec<hn::RebindToSigned<DF>> h) {
  return hn::BitCast(df, hn::ShiftLeft<16>(h));
}

// f32 -> bf16 bits (in i32 lanes), round to nearest even, NaN stays NaN; as
// FloatToBf16.
template <class DF>
HWY_INLINE hn::Vec<hn::RebindToSigned<DF>> F32ToBf16Bits(DF df, hn::Vec<DF> v) {
  const hn::RebindToSigned<DF> di;
  const hn::RebindToUnsigned<DF> du;
  const auto u = hn::BitCast(du, v);
  const auto hi = hn::ShiftRight<16>(u);
  const auto rounded =
      hn::ShiftRight<16>(hn::Add(u, hn::Add(hn::Set(du, 0x7fff), hn::And(hi, hn::Set(du, 1)))));
  const auto nan = hn::Or(hi, hn::Set(du, 0x40));
  const auto is_nan =
      hn::Gt(hn::And(hn::BitCast(di, v), hn::Set(di, 0x7fffffff)), hn::Set(di, 0x7f800000));
  return hn::IfThenElse(is_nan, hn::BitCast(di, nan), hn::BitCast(di, rounded));
}

// Loads Lanes(df) elements of dtype D at p + i (in elements) as f32.
template <DType D, class DF>
HWY_INLINE hn::Vec<DF> LoadAsF32(DF df, const void* p, int64_t i) {
  if constexpr (D == DType::kF32) {
    return hn::LoadU(df, static_cast<const float*>(p) + i);
  } else {
    const hn::RebindToSigned<DF> di;
    const hn::Rebind<uint16_t, DF> d16;
    const auto h = hn::PromoteTo(di, hn::LoadU(d16, static_cast<const uint16_t*>(p) + i));
    if constexpr (D == DType::kF16) {
      return HalfBitsToF32(df, h);
    } else {
      return Bf16BitsToF32(df, h);
    }
  }
}

// Stores Lanes(df) f32 values to p + i (in elements) as dtype D, rounded to
// nearest even.
template <DType D, class DF>
HWY_INLINE void StoreFromF32(DF df, hn::Vec<DF> v, void* p, int64_t i) {
  if constexpr (D == DType::kF32) {
    hn::StoreU(v, df, static_cast<float*>(p) + i);
  } else {
    const hn::Rebind<uint16_t, DF> d16;
    const auto bits = D == DType::kF16 ? F32ToHalfBits(df, v) : F32ToBf16Bits(df, v);
    hn::StoreU(hn::DemoteTo(d16, bits), d16, static_cast<uint16_t*>(p) + i);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace qkvshare::quant
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
