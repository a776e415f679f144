// File: agents/kernels/matvec-inl.h
// -----------------------------------------------------------------------------
// Per-target building blocks of the decode kernels (Highway, gemma.cpp
// style): include this from a kernel source after "hwy/highway.h" inside the
// HWY_TARGET_INCLUDE / foreach_target.h pattern; it is compiled once per SIMD
// target. Used by agents/kernels/matvec.cc; other weight formats (e.g.
// 8/4-bit blocks) build their row-dot kernels from the same pieces:
//   LoadWidened(df, p)   N fp32 lanes from f32 / bf16 / f16 memory;
//   LoadWidenedN(df, p, n)  the same for the first n < N (rest zero);
//   DotRows<R>(w, stride, x, cols, out)  R rows (1..4) against one x, two
//     accumulators per row, x loaded once per column block for all R rows.
#if defined(QKVSHARE_AGENTS_KERNELS_MATVEC_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef QKVSHARE_AGENTS_KERNELS_MATVEC_INL_H_
#undef QKVSHARE_AGENTS_KERNELS_MATVEC_INL_H_
#else
#define QKVSHARE_AGENTS_KERNELS_MATVEC_INL_H_
#endif

#include <cstddef>
#include <cstring>

#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace qkvshare::agents::kernels {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Full vector of fp32 lanes loaded from `p` (unaligned), widened exactly.
template <class DF>
HWY_INLINE hn::Vec<DF> LoadWidened(DF df, const float* HWY_RESTRICT p) {
  return hn::LoadU(df, p);
}
template <class DF>
HWY_INLINE hn::Vec<DF> LoadWidened(DF df, const hwy::bfloat16_t* HWY_RESTRICT p) {
  const hn::Rebind<hwy::bfloat16_t, DF> dh;
  return hn::PromoteTo(df, hn::LoadU(dh, p));
}
template <class DF>
HWY_INLINE hn::Vec<DF> LoadWidened(DF df, const hwy::float16_t* HWY_RESTRICT p) {
  const hn::Rebind<hwy::float16_t, DF> dh;
#if HWY_TARGET == HWY_SSSE3 || HWY_TARGET == HWY_SSE4 || HWY_TARGET == HWY_SCALAR || \
    HWY_TARGET == HWY_EMU128
  // Highway 1.0.3 emulates the conversion here without F16C and maps
  // exponent 31 (inf, NaN) to 2^16: patch those lanes.
  const hn::RebindToUnsigned<DF> du;
  const hn::Rebind<uint16_t, DF> du16;
  const auto h = hn::LoadU(dh, p);
  const auto bits = hn::PromoteTo(du, hn::BitCast(du16, h));
  const auto exp_mask = hn::Set(du, 0x7c00u);
  const auto special = hn::Or(
      hn::ShiftLeft<16>(hn::And(bits, hn::Set(du, 0x8000u))),
      hn::Or(hn::Set(du, 0x7f800000u), hn::ShiftLeft<13>(hn::And(bits, hn::Set(du, 0x3ffu)))));
  return hn::IfThenElse(hn::RebindMask(df, hn::Eq(hn::And(bits, exp_mask), exp_mask)),
                        hn::BitCast(df, special), hn::PromoteTo(df, h));
#else
  return hn::PromoteTo(df, hn::LoadU(dh, p));
#endif
}

// The first n (< Lanes) elements at p widened; the other lanes are zero.
// Never reads past p + n.
template <class DF, typename T>
HWY_INLINE hn::Vec<DF> LoadWidenedN(DF df, const T* HWY_RESTRICT p, size_t n) {
  HWY_ALIGN T buf[HWY_MAX_BYTES / sizeof(float)] = {};
  std::memcpy(buf, p, n * sizeof(T));
  return LoadWidened(df, buf);
}

// Sum of all lanes.
template <class DF>
HWY_INLINE float ReduceSum(DF df, hn::Vec<DF> v) {
  return hn::GetLane(hn::SumOfLanes(df, v));
}

// out[r] = dot(w + r * stride, x) over `cols` for r < R (1 <= R <= 4).
// Rows are streamed side by side; each x block is loaded once for all rows.
template <int R, typename T>
HWY_INLINE void DotRows(const T* HWY_RESTRICT w, size_t stride, const float* HWY_RESTRICT x,
                        size_t cols, float* HWY_RESTRICT out) {
  static_assert(R >= 1 && R <= 4, "1 to 4 rows");
  const hn::ScalableTag<float> df;
  const size_t N = hn::Lanes(df);
  const T* HWY_RESTRICT w0 = w;
  const T* HWY_RESTRICT w1 = w + (R > 1 ? stride : 0);
  const T* HWY_RESTRICT w2 = w + (R > 2 ? 2 * stride : 0);
  const T* HWY_RESTRICT w3 = w + (R > 3 ? 3 * stride : 0);
  auto a0 = hn::Zero(df), b0 = hn::Zero(df), a1 = hn::Zero(df), b1 = hn::Zero(df);
  auto a2 = hn::Zero(df), b2 = hn::Zero(df), a3 = hn::Zero(df), b3 = hn::Zero(df);
  size_t c = 0;
  for (; c + 2 * N <= cols; c += 2 * N) {
    const auto x0 = hn::LoadU(df, x + c);
    const auto x1 = hn::LoadU(df, x + c + N);
    a0 = hn::MulAdd(LoadWidened(df, w0 + c), x0, a0);
    b0 = hn::MulAdd(LoadWidened(df, w0 + c + N), x1, b0);
    if constexpr (R > 1) {
      a1 = hn::MulAdd(LoadWidened(df, w1 + c), x0, a1);
      b1 = hn::MulAdd(LoadWidened(df, w1 + c + N), x1, b1);
    }
    if constexpr (R > 2) {
      a2 = hn::MulAdd(LoadWidened(df, w2 + c), x0, a2);
      b2 = hn::MulAdd(LoadWidened(df, w2 + c + N), x1, b2);
    }
    if constexpr (R > 3) {
      a3 = hn::MulAdd(LoadWidened(df, w3 + c), x0, a3);
      b3 = hn::MulAdd(LoadWidened(df, w3 + c + N), x1, b3);
    }
  }
  for (; c < cols; c += N) {
    const size_t n = cols - c;
    const bool full = n >= N;
    const auto x0 = full ? hn::LoadU(df, x + c) : LoadWidenedN(df, x + c, n);
    auto load = [&](const T* HWY_RESTRICT p) {
      return full ? LoadWidened(df, p + c) : LoadWidenedN(df, p + c, n);
    };
    a0 = hn::MulAdd(load(w0), x0, a0);
    if constexpr (R > 1) a1 = hn::MulAdd(load(w1), x0, a1);
    if constexpr (R > 2) a2 = hn::MulAdd(load(w2), x0, a2);
    if constexpr (R > 3) a3 = hn::MulAdd(load(w3), x0, a3);
  }
  out[0] = ReduceSum(df, hn::Add(a0, b0));
  if constexpr (R > 1) out[1] = ReduceSum(df, hn::Add(a1, b1));
  if constexpr (R > 2) out[2] = ReduceSum(df, hn::Add(a2, b2));
  if constexpr (R > 3) out[3] = ReduceSum(df, hn::Add(a3, b3));
}

}  // namespace HWY_NAMESPACE
}  // namespace qkvshare::agents::kernels
HWY_AFTER_NAMESPACE();

#endif  // include guard (per target)
