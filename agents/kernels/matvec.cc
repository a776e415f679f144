// The decode kernels, compiled once per SIMD target by Highway (see
// matvec.h); the exported functions at the bottom dispatch at run time.
#include "agents/kernels/matvec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "agents/kernels/matvec.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
// Must come after foreach_target.h.
#include "agents/kernels/matvec-inl.h"
#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace qkvshare::agents::kernels {
namespace HWY_NAMESPACE {
namespace {

namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;

// Rows streamed side by side per pass of the matrix-vector product: 4 for
// f32 weights; 1 for 16-bit ones, whose widening loads stream faster as one
// sequential stream (measured on Zen 3 / AVX2 with huge pages, 2 threads:
// bf16 one row 13.6-14.6 GB/s, four rows 10.3-11.5; f32 four rows 16-18,
// one row 16.7-17.6).
template <typename T>
constexpr int64_t kRowsPerPass = sizeof(T) == 4 ? 4 : 1;

// Tokens (or queries) per register tile of a short chunk (DotTile: 4 rows
// x kTileTokens accumulators, plus 4 widened weight vectors and one x
// vector): 4 x 6 + 5 = 29 of the 32 vector registers of AVX-512, NEON and
// SVE; 4 x 2 + 5 = 13 of the 16 of AVX2 and SSE (3 or 4 tokens spill there:
// measured 1.4x slower than 2 at 9 tokens with AVX2 forced on Zen 5).
#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_SSE4 || HWY_TARGET == HWY_SSSE3 || \
    HWY_TARGET == HWY_SCALAR || HWY_TARGET == HWY_EMU128
constexpr int kTileTokens = 2;
#else
constexpr int kTileTokens = 6;
#endif

// Runs fn(std::integral_constant<int, T>()) for the runtime t == T, t in
// 1 .. kTileTokens.
template <int T = 1, class Fn>
HWY_INLINE void ForTileTokens(int64_t t, const Fn& fn) {
  if (t == T) return fn(std::integral_constant<int, T>());
  if constexpr (T < kTileTokens) ForTileTokens<T + 1>(t, fn);
}

// DotTile<R, T> for runtime R in 1..4 and T in 1 .. kTileTokens.
template <typename TW>
HWY_INLINE void DotTileN(int64_t R, int64_t T, const TW* HWY_RESTRICT w, size_t stride,
                         const float* const* xs, size_t cols, float* const* ys) {
  ForTileTokens(T, [&](auto tt) {
    constexpr int kT = decltype(tt)::value;
    switch (R) {
      case 4:
        return DotTile<4, kT>(w, stride, xs, cols, ys);
      case 3:
        return DotTile<3, kT>(w, stride, xs, cols, ys);
      case 2:
        return DotTile<2, kT>(w, stride, xs, cols, ys);
      default:
        return DotTile<1, kT>(w, stride, xs, cols, ys);
    }
  });
}

template <typename T>
void MatMulT(const T* HWY_RESTRICT w, int64_t cols, const float* HWY_RESTRICT x, int64_t x_stride,
             int64_t n, const float* HWY_RESTRICT bias, float* HWY_RESTRICT y, int64_t y_stride,
             int64_t r0, int64_t r1) {
  const size_t c = static_cast<size_t>(cols);
  if (n == 1) {
    // Single-token decode: memory-bound, rows streamed (kRowsPerPass).
    int64_t r = r0;
    for (; r + kRowsPerPass<T> <= r1; r += kRowsPerPass<T>) {
      DotRows<kRowsPerPass<T>>(w + r * cols, c, x, c, y + r);
    }
    for (; r < r1; ++r) DotRows<1>(w + r * cols, c, x, c, y + r);
  } else {
    // A short chunk: compute-bound. Tiles of 4 rows (the last 1..3) x up to
    // kTileTokens tokens; the tokens split into near-equal groups (9 -> 5 +
    // 4 with 6-token tiles, 16 -> 6 + 5 + 5) so no group runs a mostly idle
    // tile. The rows stay in L1 for all groups; DotTile prefetches the next
    // 4. Each output is computed alike in every tile (DotTile), so results
    // do not depend on how the rows were split across threads.
    const int64_t groups = (n + kTileTokens - 1) / kTileTokens;
    const int64_t base = n / groups, extra = n % groups;
    const float* xs[kTileTokens];
    float* ys[kTileTokens];
    for (int64_t r = r0; r < r1; r += 4) {
      const int64_t rows = std::min<int64_t>(4, r1 - r);
      int64_t t0 = 0;
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t tn = base + (g < extra ? 1 : 0);
        for (int64_t i = 0; i < tn; ++i) {
          xs[i] = x + (t0 + i) * x_stride;
          ys[i] = y + (t0 + i) * y_stride + r;
        }
        DotTileN(rows, tn, w + r * cols, c, xs, c, ys);
        t0 += tn;
      }
    }
  }
  if (bias != nullptr) {
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t i = r0; i < r1; ++i) y[t * y_stride + i] += bias[i];
    }
  }
}

void MatMulRowsImpl(const void* w, DType w_dtype, int64_t cols, const float* x, int64_t x_stride,
                    int64_t n, const float* bias, float* y, int64_t y_stride, int64_t r0,
                    int64_t r1) {
  switch (w_dtype) {
    case DType::kF32:
      return MatMulT(static_cast<const float*>(w), cols, x, x_stride, n, bias, y, y_stride, r0, r1);
    case DType::kBF16:
      return MatMulT(static_cast<const hwy::bfloat16_t*>(w), cols, x, x_stride, n, bias, y,
                     y_stride, r0, r1);
    case DType::kF16:
      return MatMulT(static_cast<const hwy::float16_t*>(w), cols, x, x_stride, n, bias, y, y_stride,
                     r0, r1);
  }
}

void RmsNormImpl(const float* HWY_RESTRICT x, const float* HWY_RESTRICT weight, double eps,
                 int64_t n, float* out) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  auto s0 = hn::Zero(df), s1 = hn::Zero(df);
  int64_t i = 0;
  for (; i + 2 * N <= n; i += 2 * N) {
    const auto a = hn::LoadU(df, x + i), b = hn::LoadU(df, x + i + N);
    s0 = hn::MulAdd(a, a, s0);
    s1 = hn::MulAdd(b, b, s1);
  }
  for (; i < n; i += N) {
    const auto a = LoadWidenedN(df, x + i, static_cast<size_t>(std::min(N, n - i)));
    s0 = hn::MulAdd(a, a, s0);
  }
  const double ss = ReduceSum(df, hn::Add(s0, s1));
  const auto inv =
      hn::Set(df, static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps)));
  i = 0;
  for (; i + N <= n; i += N) {
    hn::StoreU(hn::Mul(hn::Mul(hn::LoadU(df, x + i), inv), hn::LoadU(df, weight + i)), df, out + i);
  }
  const float inv_s = hn::GetLane(inv);
  for (; i < n; ++i) out[i] = x[i] * inv_s * weight[i];
}

void RopeImpl(float* HWY_RESTRICT v, int64_t heads, int64_t head_dim, const float* HWY_RESTRICT cos,
              const float* HWY_RESTRICT sin, float scale) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const int64_t half = head_dim / 2;
  const auto sc = hn::Set(df, scale);
  for (int64_t h = 0; h < heads; ++h) {
    float* HWY_RESTRICT p = v + h * head_dim;
    int64_t i = 0;
    for (; i + N <= half; i += N) {
      const auto x1 = hn::LoadU(df, p + i), x2 = hn::LoadU(df, p + half + i);
      const auto c = hn::Mul(hn::LoadU(df, cos + i), sc);
      const auto s = hn::Mul(hn::LoadU(df, sin + i), sc);
      hn::StoreU(hn::NegMulAdd(x2, s, hn::Mul(x1, c)), df, p + i);
      hn::StoreU(hn::MulAdd(x1, s, hn::Mul(x2, c)), df, p + half + i);
    }
    for (; i < half; ++i) {
      const float x1 = p[i], x2 = p[i + half];
      const float c = cos[i] * scale, s = sin[i] * scale;
      p[i] = x1 * c - x2 * s;
      p[i + half] = x2 * c + x1 * s;
    }
  }
}

// silu(g) * u on whole vectors.
template <class V>
HWY_INLINE V SwiGluVec(DF df, V g, V u) {
  const V one = hn::Set(df, 1.0f);
  return hn::Mul(hn::Div(g, hn::Add(one, hn::Exp(df, hn::Neg(g)))), u);
}

void SwiGluImpl(const float* gate, const float* up, int64_t n, float* out) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  int64_t i = 0;
  for (; i + N <= n; i += N) {
    hn::StoreU(SwiGluVec(df, hn::LoadU(df, gate + i), hn::LoadU(df, up + i)), df, out + i);
  }
  if (i < n) {
    const size_t rest = static_cast<size_t>(n - i);
    HWY_ALIGN float buf[HWY_MAX_BYTES / sizeof(float)];
    hn::Store(SwiGluVec(df, LoadWidenedN(df, gate + i, rest), LoadWidenedN(df, up + i, rest)), df,
              buf);
    std::memcpy(out + i, buf, rest * sizeof(float));
  }
}

void AddInPlaceImpl(float* HWY_RESTRICT x, const float* HWY_RESTRICT y, int64_t n) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  int64_t i = 0;
  for (; i + N <= n; i += N)
    hn::StoreU(hn::Add(hn::LoadU(df, x + i), hn::LoadU(df, y + i)), df, x + i);
  for (; i < n; ++i) x[i] += y[i];
}

void SoftmaxInPlaceImpl(float* HWY_RESTRICT p, int64_t n) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  float mx = p[0];
  int64_t i = 0;
  if (n >= N) {
    auto m = hn::LoadU(df, p);
    for (i = N; i + N <= n; i += N) m = hn::Max(m, hn::LoadU(df, p + i));
    mx = hn::GetLane(hn::MaxOfLanes(df, m));
  }
  for (; i < n; ++i) mx = std::max(mx, p[i]);
  const auto vmx = hn::Set(df, mx);
  auto sum = hn::Zero(df);
  i = 0;
  for (; i + N <= n; i += N) {
    const auto e = hn::Exp(df, hn::Sub(hn::LoadU(df, p + i), vmx));
    hn::StoreU(e, df, p + i);
    sum = hn::Add(sum, e);
  }
  float total = ReduceSum(df, sum);
  for (; i < n; ++i) {
    // The vector exp for the tail too, so every element rounds alike.
    const float e = hn::GetLane(hn::Exp(df, hn::Set(df, p[i] - mx)));
    p[i] = e;
    total += e;
  }
  const float inv = 1.0f / total;
  const auto vinv = hn::Set(df, inv);
  i = 0;
  for (; i + N <= n; i += N) hn::StoreU(hn::Mul(hn::LoadU(df, p + i), vinv), df, p + i);
  for (; i < n; ++i) p[i] *= inv;
}

// Cache rows per attention tile: a tile of K (and then of V) is read from
// memory once and reused from L1 / L2 by every query of the chunk (16 KiB of
// fp32 rows at head_dim 64).
constexpr int64_t kAttnTile = 64;

// outs[t][0 .. width) (+)= sum_{r < rows} ps[t][r] * v_r[0 .. width) for the
// T (1..8) queries of a block, where width = (C - 1) * N + last (C: 1..4
// vectors, the last one `last` lanes) and v_r = v + r * hd. T * C
// accumulators in registers: each V vector loaded once feeds T FMAs, each
// broadcast probability C. `first`: outs overwritten, else accumulated into.
template <int T, int C, typename TV>
HWY_INLINE void ValuesTileTC(const float* const* HWY_RESTRICT ps, const TV* HWY_RESTRICT v,
                             int64_t rows, int64_t hd, size_t last, bool first,
                             float* const* HWY_RESTRICT outs) {
  static_assert(T >= 1 && T <= 8 && C >= 1 && C <= 4, "1..8 queries, 1..4 vectors");
  const DF df;
  const size_t N = hn::Lanes(df);
  const bool whole = last == N;
  // Vector c (< C) of the row at `src`: the last one may be partial.
  auto load_v = [&](const TV* HWY_RESTRICT src, size_t c) {
    return (c + 1 < C || whole) ? LoadWidened(df, src + c * N)
                                : LoadWidenedN(df, src + c * N, last);
  };
  auto load_out = [&](size_t t, size_t c) {
    const float* HWY_RESTRICT o = outs[t] + c * N;
    if (first) return hn::Zero(df);
    return (c + 1 < C || whole) ? hn::LoadU(df, o) : LoadWidenedN(df, o, last);
  };
  auto store_out = [&](hn::Vec<DF> a, size_t t, size_t c) {
    float* HWY_RESTRICT o = outs[t] + c * N;
    if (c + 1 < C || whole) {
      hn::StoreU(a, df, o);
    } else {
      HWY_ALIGN float buf[HWY_MAX_BYTES / sizeof(float)];
      hn::Store(a, df, buf);
      std::memcpy(o, buf, last * sizeof(float));
    }
  };
#define QKV_VT_P(t) const float* HWY_RESTRICT p##t = ps[T > t ? t : 0]
  QKV_VT_P(0);
  QKV_VT_P(1);
  QKV_VT_P(2);
  QKV_VT_P(3);
  QKV_VT_P(4);
  QKV_VT_P(5);
  QKV_VT_P(6);
  QKV_VT_P(7);
#undef QKV_VT_P
#define QKV_VT_ACC(t)                                          \
  auto a0##t = T > t ? load_out(t, 0) : hn::Zero(df);          \
  auto a1##t = T > t && C > 1 ? load_out(t, 1) : hn::Zero(df); \
  auto a2##t = T > t && C > 2 ? load_out(t, 2) : hn::Zero(df); \
  auto a3##t = T > t && C > 3 ? load_out(t, 3) : hn::Zero(df)
  QKV_VT_ACC(0);
  QKV_VT_ACC(1);
  QKV_VT_ACC(2);
  QKV_VT_ACC(3);
  QKV_VT_ACC(4);
  QKV_VT_ACC(5);
  QKV_VT_ACC(6);
  QKV_VT_ACC(7);
#undef QKV_VT_ACC
  for (int64_t r = 0; r < rows; ++r) {
    const TV* HWY_RESTRICT vr = v + r * hd;
    const auto v0 = load_v(vr, 0);
    const auto v1 = C > 1 ? load_v(vr, 1) : v0;
    const auto v2 = C > 2 ? load_v(vr, 2) : v0;
    const auto v3 = C > 3 ? load_v(vr, 3) : v0;
#define QKV_VT_FMA(t)                                       \
  if constexpr (T > t) {                                    \
    const auto pb = hn::Set(df, p##t[r]);                   \
    a0##t = hn::MulAdd(pb, v0, a0##t);                      \
    if constexpr (C > 1) a1##t = hn::MulAdd(pb, v1, a1##t); \
    if constexpr (C > 2) a2##t = hn::MulAdd(pb, v2, a2##t); \
    if constexpr (C > 3) a3##t = hn::MulAdd(pb, v3, a3##t); \
  }
    QKV_VT_FMA(0);
    QKV_VT_FMA(1);
    QKV_VT_FMA(2);
    QKV_VT_FMA(3);
    QKV_VT_FMA(4);
    QKV_VT_FMA(5);
    QKV_VT_FMA(6);
    QKV_VT_FMA(7);
#undef QKV_VT_FMA
  }
#define QKV_VT_STORE(t)                          \
  if constexpr (T > t) {                         \
    store_out(a0##t, t, 0);                      \
    if constexpr (C > 1) store_out(a1##t, t, 1); \
    if constexpr (C > 2) store_out(a2##t, t, 2); \
    if constexpr (C > 3) store_out(a3##t, t, 3); \
  }
  QKV_VT_STORE(0);
  QKV_VT_STORE(1);
  QKV_VT_STORE(2);
  QKV_VT_STORE(3);
  QKV_VT_STORE(4);
  QKV_VT_STORE(5);
  QKV_VT_STORE(6);
  QKV_VT_STORE(7);
#undef QKV_VT_STORE
}

// ValuesTileTC<T, C> for runtime T (1 .. kTileTokens) and C (1..4).
template <int C, typename TV>
HWY_INLINE void ValuesTileC(int64_t T, const float* const* ps, const TV* v, int64_t rows,
                            int64_t hd, size_t last, bool first, float* const* outs) {
  ForTileTokens(T, [&](auto tt) {
    ValuesTileTC<decltype(tt)::value, C>(ps, v, rows, hd, last, first, outs);
  });
}

// The causal attention of n >= 1 tokens (n * group queries of one kv head;
// AttendChunk, and AttendQueryGroup with n = 1): queries in blocks of up to
// kTileTokens, the cache walked in kAttnTile rows. Scores: DotTile tiles of
// 4 K rows x a block of queries (the 4 rows' sums reduced together).
// Values: ValuesTileTC, a block of queries x 4 column vectors. A block
// computes scores up to the context of its last query; the rows past each
// query's own context get probability 0 after its softmax. Every score is
// one accumulator over head_dim reduced in StoreSums4's order, and every
// output lane one ordered sum over the rows, whatever the block: a query's
// result is bit-identical whether its token runs alone (decode) or in a
// chunk, so a chunk matches token-by-token decode exactly here (which
// matters where later steps round activations, as q4 decode does to int8).
template <typename T>
void AttendChunkTiled(const float* q, int64_t q_stride, int64_t n, int64_t group, const T* k,
                      const T* v, int64_t ctx0, int64_t hd, float* p, int64_t p_stride, float* out,
                      int64_t out_stride) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const int64_t nq = n * group;
  // Query j = t * group + g (token t, head g of the group).
  auto qrow = [&](int64_t j) { return q + (j / group) * q_stride + (j % group) * hd; };
  auto prow = [&](int64_t j) { return p + j * p_stride; };
  auto orow = [&](int64_t j) { return out + (j / group) * out_stride + (j % group) * hd; };
  auto ctx_of = [&](int64_t j) { return ctx0 + j / group; };
  const int64_t blocks = (nq + kTileTokens - 1) / kTileTokens;
  const int64_t base = nq / blocks, extra = nq % blocks;
  auto block_begin = [&](int64_t b) { return b * base + std::min(b, extra); };
  const int64_t ctx_last = ctx0 + n - 1;
  const float* xs[kTileTokens];
  float* ys[kTileTokens];
  for (int64_t c0 = 0; c0 < ctx_last; c0 += kAttnTile) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t j0 = block_begin(b), tn = block_begin(b + 1) - j0;
      const int64_t rows = std::min(c0 + kAttnTile, ctx_of(j0 + tn - 1)) - c0;
      for (int64_t i = 0; i < tn; ++i) xs[i] = qrow(j0 + i);
      for (int64_t r = 0; r < rows; r += 4) {
        for (int64_t i = 0; i < tn; ++i) ys[i] = prow(j0 + i) + c0 + r;
        DotTileN(std::min<int64_t>(4, rows - r), tn, k + (c0 + r) * hd, static_cast<size_t>(hd), xs,
                 static_cast<size_t>(hd), ys);
      }
    }
  }
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t j0 = block_begin(b), j1 = block_begin(b + 1);
    const int64_t block_ctx = ctx_of(j1 - 1);
    for (int64_t j = j0; j < j1; ++j) {
      SoftmaxInPlaceImpl(prow(j), ctx_of(j));
      std::fill(prow(j) + ctx_of(j), prow(j) + block_ctx, 0.0f);
    }
  }
  const float* ps[kTileTokens];
  float* outs[kTileTokens];
  for (int64_t c0 = 0; c0 < ctx_last; c0 += kAttnTile) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t j0 = block_begin(b), tn = block_begin(b + 1) - j0;
      const int64_t rows = std::min(c0 + kAttnTile, ctx_of(j0 + tn - 1)) - c0;
      for (int64_t i0 = 0; i0 < hd; i0 += 4 * N) {
        const int64_t vecs = std::min<int64_t>(4, (hd - i0 + N - 1) / N);
        const size_t last = static_cast<size_t>(std::min(N, hd - i0 - (vecs - 1) * N));
        for (int64_t i = 0; i < tn; ++i) {
          ps[i] = prow(j0 + i) + c0;
          outs[i] = orow(j0 + i) + i0;
        }
        const T* vt = v + c0 * hd + i0;
        const bool first = c0 == 0;
        switch (vecs) {
          case 4:
            ValuesTileC<4>(tn, ps, vt, rows, hd, last, first, outs);
            break;
          case 3:
            ValuesTileC<3>(tn, ps, vt, rows, hd, last, first, outs);
            break;
          case 2:
            ValuesTileC<2>(tn, ps, vt, rows, hd, last, first, outs);
            break;
          default:
            ValuesTileC<1>(tn, ps, vt, rows, hd, last, first, outs);
            break;
        }
      }
    }
  }
}

void AttendChunkImpl(const float* q, int64_t q_stride, int64_t n, int64_t group, const void* k,
                     const void* v, DType dtype, int64_t ctx0, int64_t hd, float* p,
                     int64_t p_stride, float* out, int64_t out_stride) {
  switch (dtype) {
    case DType::kF32:
      return AttendChunkTiled(q, q_stride, n, group, static_cast<const float*>(k),
                              static_cast<const float*>(v), ctx0, hd, p, p_stride, out, out_stride);
    case DType::kBF16:
      return AttendChunkTiled(q, q_stride, n, group, static_cast<const hwy::bfloat16_t*>(k),
                              static_cast<const hwy::bfloat16_t*>(v), ctx0, hd, p, p_stride, out,
                              out_stride);
    case DType::kF16:
      return AttendChunkTiled(q, q_stride, n, group, static_cast<const hwy::float16_t*>(k),
                              static_cast<const hwy::float16_t*>(v), ctx0, hd, p, p_stride, out,
                              out_stride);
  }
}

template <typename T>
void WidenT(const T* HWY_RESTRICT src, float* HWY_RESTRICT dst, int64_t n) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  int64_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(LoadWidened(df, src + i), df, dst + i);
  if (i < n) {
    const size_t rest = static_cast<size_t>(n - i);
    HWY_ALIGN float buf[HWY_MAX_BYTES / sizeof(float)];
    hn::Store(LoadWidenedN(df, src + i, rest), df, buf);
    std::memcpy(dst + i, buf, rest * sizeof(float));
  }
}

void WidenToF32Impl(const void* src, DType dtype, float* dst, int64_t n) {
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::kBF16:
      return WidenT(static_cast<const hwy::bfloat16_t*>(src), dst, n);
    case DType::kF16:
      return WidenT(static_cast<const hwy::float16_t*>(src), dst, n);
  }
}

// fp32 -> bf16 bits, round to nearest even, NaN kept a (quiet) NaN.
template <class DU>
HWY_INLINE hn::Vec<DU> RoundToBf16Bits(DU du, hn::Vec<DU> u) {
  const hn::RebindToSigned<DU> di;
  const auto lsb = hn::And(hn::ShiftRight<16>(u), hn::Set(du, 1u));
  const auto rounded = hn::ShiftRight<16>(hn::Add(u, hn::Add(hn::Set(du, 0x7fffu), lsb)));
  const auto quiet_nan = hn::ShiftRight<16>(hn::Or(u, hn::Set(du, 0x400000u)));
  const auto is_nan = hn::RebindMask(
      du, hn::Gt(hn::BitCast(di, hn::And(u, hn::Set(du, 0x7fffffffu))), hn::Set(di, 0x7f800000)));
  return hn::IfThenElse(is_nan, quiet_nan, rounded);
}

// Whether this target's fp32 -> f16 demotion rounds to nearest even in
// hardware (F16C, Arm fcvt); Highway 1.0.3's emulation elsewhere truncates.
#if HWY_TARGET == HWY_SSSE3 || HWY_TARGET == HWY_SSE4 || HWY_TARGET == HWY_SCALAR || \
    HWY_TARGET == HWY_EMU128
constexpr bool kNativeF16Demote = false;
#else
constexpr bool kNativeF16Demote = true;
#endif

// IEEE binary16 bits of f, round to nearest even (overflow to inf, NaN kept
// a quiet NaN, subnormals rounded).
uint16_t F16BitsRne(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65520
  if (abs < 0x38800000u) {  // below the smallest normal half (2^-14): subnormal or zero
    if (abs < 0x33000000u) return static_cast<uint16_t>(sign);  // < 2^-25 rounds to 0
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const int shift = 126 - static_cast<int>(abs >> 23);  // 14..24 (value = mant * 2^-(shift+..))
    const uint32_t half_bits = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1), halfway = 1u << (shift - 1);
    const uint32_t r = half_bits + (rem > halfway || (rem == halfway && (half_bits & 1u)));
    return static_cast<uint16_t>(sign | r);
  }
  const uint32_t rebased = abs - (112u << 23);  // exponent 127 -> 15
  const uint32_t r = (rebased + 0xfffu + ((rebased >> 13) & 1u)) >> 13;
  return static_cast<uint16_t>(sign | r);
}

void StoreAsImpl(const float* HWY_RESTRICT src, DType dtype, void* dst, int64_t n) {
  if (dtype == DType::kF32) {
    std::memcpy(dst, src, n * sizeof(float));
    return;
  }
  const DF df;
  const hn::RebindToUnsigned<DF> du;
  const hn::RebindToSigned<DF> di;
  const hn::Rebind<uint16_t, DF> du16;
  const hn::Rebind<hwy::float16_t, DF> df16;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  auto* d = static_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; i += N) {
    const size_t len = static_cast<size_t>(std::min(N, n - i));
    const auto x =
        len == static_cast<size_t>(N) ? hn::LoadU(df, src + i) : LoadWidenedN(df, src + i, len);
    HWY_ALIGN uint16_t buf[HWY_MAX_BYTES / sizeof(float)];
    if (dtype == DType::kBF16) {
      const auto bits = RoundToBf16Bits(du, hn::BitCast(du, x));
      // Values are < 2^16, so the saturating demotion is exact.
      hn::Store(hn::DemoteTo(du16, hn::BitCast(di, bits)), du16, buf);
    } else if (kNativeF16Demote) {
      hn::Store(hn::BitCast(du16, hn::DemoteTo(df16, x)), du16, buf);
    } else {
      for (size_t j = 0; j < len; ++j) buf[j] = F16BitsRne(src[i + j]);
    }
    std::memcpy(d + i, buf, len * sizeof(uint16_t));
  }
}

}  // namespace
}  // namespace HWY_NAMESPACE
}  // namespace qkvshare::agents::kernels
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qkvshare::agents::kernels {

HWY_EXPORT(MatMulRowsImpl);
HWY_EXPORT(RmsNormImpl);
HWY_EXPORT(RopeImpl);
HWY_EXPORT(SwiGluImpl);
HWY_EXPORT(AddInPlaceImpl);
HWY_EXPORT(SoftmaxInPlaceImpl);
HWY_EXPORT(AttendChunkImpl);
HWY_EXPORT(StoreAsImpl);
HWY_EXPORT(WidenToF32Impl);

void MatVecRows(const void* w, DType w_dtype, int64_t cols, const float* x, const float* bias,
                float* y, int64_t row_begin, int64_t row_end) {
  HWY_DYNAMIC_DISPATCH(MatMulRowsImpl)
  (w, w_dtype, cols, x, cols, 1, bias, y, 0, row_begin, row_end);
}

void MatMulRows(const void* w, DType w_dtype, int64_t cols, const float* x, int64_t x_stride,
                int64_t n, const float* bias, float* y, int64_t y_stride, int64_t row_begin,
                int64_t row_end) {
  HWY_DYNAMIC_DISPATCH(MatMulRowsImpl)
  (w, w_dtype, cols, x, x_stride, n, bias, y, y_stride, row_begin, row_end);
}

void RmsNorm(const float* x, const float* weight, double eps, int64_t n, float* out) {
  HWY_DYNAMIC_DISPATCH(RmsNormImpl)(x, weight, eps, n, out);
}

void Rope(float* v, int64_t heads, int64_t head_dim, const float* cos, const float* sin,
          float scale) {
  HWY_DYNAMIC_DISPATCH(RopeImpl)(v, heads, head_dim, cos, sin, scale);
}

void SwiGlu(const float* gate, const float* up, int64_t n, float* out) {
  HWY_DYNAMIC_DISPATCH(SwiGluImpl)(gate, up, n, out);
}

void AddInPlace(float* x, const float* y, int64_t n) {
  HWY_DYNAMIC_DISPATCH(AddInPlaceImpl)(x, y, n);
}

void SoftmaxInPlace(float* p, int64_t n) { HWY_DYNAMIC_DISPATCH(SoftmaxInPlaceImpl)(p, n); }

void AttendQueryGroup(const float* q, int64_t group, const void* k, const void* v, DType dtype,
                      int64_t ctx, int64_t head_dim, float* p, float* out) {
  HWY_DYNAMIC_DISPATCH(AttendChunkImpl)
  (q, head_dim * group, 1, group, k, v, dtype, ctx, head_dim, p, ctx, out, head_dim * group);
}

void AttendChunk(const float* q, int64_t q_stride, int64_t n, int64_t group, const void* k,
                 const void* v, DType dtype, int64_t ctx0, int64_t head_dim, float* p,
                 int64_t p_stride, float* out, int64_t out_stride) {
  HWY_DYNAMIC_DISPATCH(AttendChunkImpl)
  (q, q_stride, n, group, k, v, dtype, ctx0, head_dim, p, p_stride, out, out_stride);
}

void WidenToF32(const void* src, DType dtype, float* dst, int64_t n) {
  HWY_DYNAMIC_DISPATCH(WidenToF32Impl)(src, dtype, dst, n);
}

void StoreAs(const float* src, DType dtype, void* dst, int64_t n) {
  HWY_DYNAMIC_DISPATCH(StoreAsImpl)(src, dtype, dst, n);
}

}  // namespace qkvshare::agents::kernels
#endif  // HWY_ONCE
