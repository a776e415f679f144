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
//     accumulators per row, x loaded once per column block for all R rows;
//   StoreSums4(df, a, b, c, d, out)  four lane sums reduced together;
//   DotTile<R, T>(w, stride, xs, cols, ys)  R rows (1..4) x T (1..8)
//     vectors, one accumulator each (a short chunk's register tile).
#if defined(QKVSHARE_AGENTS_KERNELS_MATVEC_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef QKVSHARE_AGENTS_KERNELS_MATVEC_INL_H_
#undef QKVSHARE_AGENTS_KERNELS_MATVEC_INL_H_
#else
#define QKVSHARE_AGENTS_KERNELS_MATVEC_INL_H_
#endif

#include <cstddef>
#include <cstring>

#include "hwy/cache_control.h"
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

#if !HWY_HAVE_SCALABLE && HWY_TARGET != HWY_SCALAR
// out[0 .. 4) = sums of lanes i, i + 4, i + 8, ... of v (its 128-bit blocks
// added), by halving: two extracts and adds on 512-bit vectors, one on 256.
template <class D>
HWY_INLINE void StoreBlockSums(D d, hn::Vec<D> v, float* HWY_RESTRICT out) {
  if constexpr (hn::MaxLanes(D()) > 4) {
    const hn::Half<D> dh;
    StoreBlockSums(dh, hn::Add(hn::LowerHalf(dh, v), hn::UpperHalf(dh, v)), out);
  } else {
    hn::StoreU(v, d, out);
  }
}
#elif HWY_HAVE_SCALABLE
template <class D>
HWY_INLINE void StoreBlockSums(D d, hn::Vec<D> v, float* HWY_RESTRICT out) {
  HWY_ALIGN float buf[HWY_MAX_BYTES / sizeof(float)];
  hn::Store(v, d, buf);
  const size_t n = hn::Lanes(d);
  for (size_t i = 0; i < 4; ++i) {
    float s = buf[i];
    for (size_t j = i + 4; j < n; j += 4) s += buf[j];
    out[i] = s;
  }
}
#endif

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

// out[0 .. 4) = the sums of all lanes of a, b, c and d: four reductions
// combined. Two interleave stages leave lane j of every 128-bit block
// holding a partial sum of vector j % 4 (Highway's interleaves work per
// block on every target), then the blocks are added. About a quarter of the
// shuffles of four ReduceSum calls, and one 128-bit store.
template <class DF>
HWY_INLINE void StoreSums4(DF df, hn::Vec<DF> a, hn::Vec<DF> b, hn::Vec<DF> c, hn::Vec<DF> d,
                           float* HWY_RESTRICT out) {
#if HWY_TARGET == HWY_SCALAR
  (void)df;
  out[0] = hn::GetLane(a);
  out[1] = hn::GetLane(b);
  out[2] = hn::GetLane(c);
  out[3] = hn::GetLane(d);
#else
  const auto ab = hn::Add(hn::InterleaveLower(df, a, b), hn::InterleaveUpper(df, a, b));
  const auto cd = hn::Add(hn::InterleaveLower(df, c, d), hn::InterleaveUpper(df, c, d));
  const hn::Repartition<uint64_t, DF> d64;
  const auto ab64 = hn::BitCast(d64, ab), cd64 = hn::BitCast(d64, cd);
  const auto s = hn::Add(hn::BitCast(df, hn::InterleaveLower(d64, ab64, cd64)),
                         hn::BitCast(df, hn::InterleaveUpper(d64, ab64, cd64)));
  StoreBlockSums(df, s, out);
#endif
}

// Rows x tokens register tile of a short-chunk matrix product:
//   ys[t][i] = dot(w + i * stride, xs[t]) over `cols`, i < R, t < T,
// for R (1..4) weight rows and T (1..8) input vectors. R * T accumulators
// stay in registers (named variables: scalable vectors cannot live in
// arrays), so every widened weight vector feeds T FMAs and every x vector R
// (instead of one load of each per FMA in DotRows), and the sums of a token
// are reduced together (StoreSums4). Each xs[t] and ys[t] is its own
// pointer. Every output is computed the same way (one accumulator over the
// columns in order, then StoreSums4's order), whatever R, T and the other
// rows and vectors of the tile: a row's result does not depend on how rows
// and tokens were tiled. With R == 4 the next 4 rows are prefetched.
template <int R, int T, typename TW>
HWY_INLINE void DotTile(const TW* HWY_RESTRICT w, size_t stride,
                        const float* const* HWY_RESTRICT xs, size_t cols,
                        float* const* HWY_RESTRICT ys) {
  static_assert(R >= 1 && R <= 4 && T >= 1 && T <= 8, "1 to 4 rows, 1 to 8 tokens");
  const hn::ScalableTag<float> df;
  const size_t N = hn::Lanes(df);
  const TW* HWY_RESTRICT w0 = w;
  const TW* HWY_RESTRICT w1 = w + (R > 1 ? stride : 0);
  const TW* HWY_RESTRICT w2 = w + (R > 2 ? 2 * stride : 0);
  const TW* HWY_RESTRICT w3 = w + (R > 3 ? 3 * stride : 0);
#define QKV_TILE_X(t) const float* HWY_RESTRICT x##t = xs[T > t ? t : 0]
  QKV_TILE_X(0);
  QKV_TILE_X(1);
  QKV_TILE_X(2);
  QKV_TILE_X(3);
  QKV_TILE_X(4);
  QKV_TILE_X(5);
  QKV_TILE_X(6);
  QKV_TILE_X(7);
#undef QKV_TILE_X
#define QKV_TILE_ACC(t) \
  auto a0##t = hn::Zero(df), a1##t = hn::Zero(df), a2##t = hn::Zero(df), a3##t = hn::Zero(df)
  QKV_TILE_ACC(0);
  QKV_TILE_ACC(1);
  QKV_TILE_ACC(2);
  QKV_TILE_ACC(3);
  QKV_TILE_ACC(4);
  QKV_TILE_ACC(5);
  QKV_TILE_ACC(6);
  QKV_TILE_ACC(7);
#undef QKV_TILE_ACC
  // One column block: v0..v3 the widened weights, LOADX(p) the x block.
#define QKV_TILE_FMA(t, LOADX)                              \
  if constexpr (T > t) {                                    \
    const auto xv = LOADX(x##t);                            \
    a0##t = hn::MulAdd(v0, xv, a0##t);                      \
    if constexpr (R > 1) a1##t = hn::MulAdd(v1, xv, a1##t); \
    if constexpr (R > 2) a2##t = hn::MulAdd(v2, xv, a2##t); \
    if constexpr (R > 3) a3##t = hn::MulAdd(v3, xv, a3##t); \
  }
#define QKV_TILE_STEP(LOADW, LOADX)         \
  do {                                      \
    const auto v0 = LOADW(w0);              \
    const auto v1 = R > 1 ? LOADW(w1) : v0; \
    const auto v2 = R > 2 ? LOADW(w2) : v0; \
    const auto v3 = R > 3 ? LOADW(w3) : v0; \
    QKV_TILE_FMA(0, LOADX);                 \
    QKV_TILE_FMA(1, LOADX);                 \
    QKV_TILE_FMA(2, LOADX);                 \
    QKV_TILE_FMA(3, LOADX);                 \
    QKV_TILE_FMA(4, LOADX);                 \
    QKV_TILE_FMA(5, LOADX);                 \
    QKV_TILE_FMA(6, LOADX);                 \
    QKV_TILE_FMA(7, LOADX);                 \
  } while (false)
  size_t c = 0;
  for (; c + N <= cols; c += N) {
    if constexpr (R == 4) {
      // The next 4 rows (the next tile) are fetched while this one computes.
      hwy::Prefetch(w0 + 4 * stride + c);
      hwy::Prefetch(w1 + 4 * stride + c);
      hwy::Prefetch(w2 + 4 * stride + c);
      hwy::Prefetch(w3 + 4 * stride + c);
    }
#define QKV_LOADW(p) LoadWidened(df, p + c)
#define QKV_LOADX(p) hn::LoadU(df, p + c)
    QKV_TILE_STEP(QKV_LOADW, QKV_LOADX);
#undef QKV_LOADW
#undef QKV_LOADX
  }
  if (c < cols) {
    const size_t rest = cols - c;
#define QKV_LOADW(p) LoadWidenedN(df, p + c, rest)
#define QKV_LOADX(p) LoadWidenedN(df, p + c, rest)
    QKV_TILE_STEP(QKV_LOADW, QKV_LOADX);
#undef QKV_LOADW
#undef QKV_LOADX
  }
#undef QKV_TILE_STEP
#undef QKV_TILE_FMA
  // R < 4: the missing rows' sums are of zero vectors, dropped.
#define QKV_TILE_SUMS(t)                                 \
  if constexpr (T > t) {                                 \
    if constexpr (R == 4) {                              \
      StoreSums4(df, a0##t, a1##t, a2##t, a3##t, ys[t]); \
    } else {                                             \
      float sums[4];                                     \
      StoreSums4(df, a0##t, a1##t, a2##t, a3##t, sums);  \
      for (int i = 0; i < R; ++i) ys[t][i] = sums[i];    \
    }                                                    \
  }
  QKV_TILE_SUMS(0);
  QKV_TILE_SUMS(1);
  QKV_TILE_SUMS(2);
  QKV_TILE_SUMS(3);
  QKV_TILE_SUMS(4);
  QKV_TILE_SUMS(5);
  QKV_TILE_SUMS(6);
  QKV_TILE_SUMS(7);
#undef QKV_TILE_SUMS
}

}  // namespace HWY_NAMESPACE
}  // namespace qkvshare::agents::kernels
HWY_AFTER_NAMESPACE();

#endif  // include guard (per target)
