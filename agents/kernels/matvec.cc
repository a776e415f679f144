// The decode kernels, compiled once per SIMD target by Highway (see
// matvec.h); the exported functions at the bottom dispatch at run time.
#include "agents/kernels/matvec.h"

#include <algorithm>
#include <cmath>
#include <cstring>

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

template <typename T>
void MatMulT(const T* HWY_RESTRICT w, int64_t cols, const float* HWY_RESTRICT x, int64_t x_stride,
             int64_t n, const float* HWY_RESTRICT bias, float* HWY_RESTRICT y, int64_t y_stride,
             int64_t r0, int64_t r1) {
  const size_t c = static_cast<size_t>(cols);
  int64_t r = r0;
  for (; r + kRowsPerPass<T> <= r1; r += kRowsPerPass<T>) {
    for (int64_t t = 0; t < n; ++t) {
      DotRows<kRowsPerPass<T>>(w + r * cols, c, x + t * x_stride, c, y + t * y_stride + r);
    }
  }
  for (; r < r1; ++r) {
    for (int64_t t = 0; t < n; ++t)
      DotRows<1>(w + r * cols, c, x + t * x_stride, c, y + t * y_stride + r);
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

// Attention of NG (1..4) queries of a group: each K/V row is loaded once for
// all of them; accumulators stay in registers (explicit variables, since
// scalable vectors cannot live in arrays).
template <int NG, typename T>
void AttendBlock(const float* HWY_RESTRICT q, const T* HWY_RESTRICT k, const T* HWY_RESTRICT v,
                 int64_t ctx, int64_t hd, float* HWY_RESTRICT p, float* HWY_RESTRICT out) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const float* HWY_RESTRICT q0 = q;
  const float* HWY_RESTRICT q1 = q + (NG > 1 ? hd : 0);
  const float* HWY_RESTRICT q2 = q + (NG > 2 ? 2 * hd : 0);
  const float* HWY_RESTRICT q3 = q + (NG > 3 ? 3 * hd : 0);
  float* HWY_RESTRICT p0 = p;
  float* HWY_RESTRICT p1 = p + (NG > 1 ? ctx : 0);
  float* HWY_RESTRICT p2 = p + (NG > 2 ? 2 * ctx : 0);
  float* HWY_RESTRICT p3 = p + (NG > 3 ? 3 * ctx : 0);
  const int64_t full = hd / N * N;
  const size_t rest = static_cast<size_t>(hd - full);
  // Scores.
  for (int64_t t = 0; t < ctx; ++t) {
    const T* HWY_RESTRICT kt = k + t * hd;
    auto a0 = hn::Zero(df), a1 = hn::Zero(df), a2 = hn::Zero(df), a3 = hn::Zero(df);
    for (int64_t i = 0; i < hd; i += N) {
      const bool whole = i < full;
      const auto kv = whole ? LoadWidened(df, kt + i) : LoadWidenedN(df, kt + i, rest);
      auto qv = [&](const float* HWY_RESTRICT qg) {
        return whole ? hn::LoadU(df, qg + i) : LoadWidenedN(df, qg + i, rest);
      };
      a0 = hn::MulAdd(kv, qv(q0), a0);
      if constexpr (NG > 1) a1 = hn::MulAdd(kv, qv(q1), a1);
      if constexpr (NG > 2) a2 = hn::MulAdd(kv, qv(q2), a2);
      if constexpr (NG > 3) a3 = hn::MulAdd(kv, qv(q3), a3);
    }
    p0[t] = ReduceSum(df, a0);
    if constexpr (NG > 1) p1[t] = ReduceSum(df, a1);
    if constexpr (NG > 2) p2[t] = ReduceSum(df, a2);
    if constexpr (NG > 3) p3[t] = ReduceSum(df, a3);
  }
  SoftmaxInPlaceImpl(p0, ctx);
  if constexpr (NG > 1) SoftmaxInPlaceImpl(p1, ctx);
  if constexpr (NG > 2) SoftmaxInPlaceImpl(p2, ctx);
  if constexpr (NG > 3) SoftmaxInPlaceImpl(p3, ctx);
  // out_g = sum_t p_g[t] v_t, one column block at a time.
  for (int64_t i = 0; i < hd; i += N) {
    const bool whole = i < full;
    auto a0 = hn::Zero(df), a1 = hn::Zero(df), a2 = hn::Zero(df), a3 = hn::Zero(df);
    for (int64_t t = 0; t < ctx; ++t) {
      const T* HWY_RESTRICT vt = v + t * hd + i;
      const auto vv = whole ? LoadWidened(df, vt) : LoadWidenedN(df, vt, rest);
      a0 = hn::MulAdd(hn::Set(df, p0[t]), vv, a0);
      if constexpr (NG > 1) a1 = hn::MulAdd(hn::Set(df, p1[t]), vv, a1);
      if constexpr (NG > 2) a2 = hn::MulAdd(hn::Set(df, p2[t]), vv, a2);
      if constexpr (NG > 3) a3 = hn::MulAdd(hn::Set(df, p3[t]), vv, a3);
    }
    auto store = [&](decltype(a0) a, int g) {
      float* HWY_RESTRICT o = out + g * hd + i;
      if (whole) {
        hn::StoreU(a, df, o);
      } else {
        HWY_ALIGN float buf[HWY_MAX_BYTES / sizeof(float)];
        hn::Store(a, df, buf);
        std::memcpy(o, buf, rest * sizeof(float));
      }
    };
    store(a0, 0);
    if constexpr (NG > 1) store(a1, 1);
    if constexpr (NG > 2) store(a2, 2);
    if constexpr (NG > 3) store(a3, 3);
  }
}

template <typename T>
void AttendT(const float* q, int64_t group, const T* k, const T* v, int64_t ctx, int64_t hd,
             float* p, float* out) {
  for (int64_t g = 0; g < group; g += 4) {
    const float* qg = q + g * hd;
    float* pg = p + g * ctx;
    float* og = out + g * hd;
    switch (std::min<int64_t>(4, group - g)) {
      case 4:
        AttendBlock<4>(qg, k, v, ctx, hd, pg, og);
        break;
      case 3:
        AttendBlock<3>(qg, k, v, ctx, hd, pg, og);
        break;
      case 2:
        AttendBlock<2>(qg, k, v, ctx, hd, pg, og);
        break;
      default:
        AttendBlock<1>(qg, k, v, ctx, hd, pg, og);
        break;
    }
  }
}

void AttendQueryGroupImpl(const float* q, int64_t group, const void* k, const void* v, DType dtype,
                          int64_t ctx, int64_t hd, float* p, float* out) {
  switch (dtype) {
    case DType::kF32:
      return AttendT(q, group, static_cast<const float*>(k), static_cast<const float*>(v), ctx, hd,
                     p, out);
    case DType::kBF16:
      return AttendT(q, group, static_cast<const hwy::bfloat16_t*>(k),
                     static_cast<const hwy::bfloat16_t*>(v), ctx, hd, p, out);
    case DType::kF16:
      return AttendT(q, group, static_cast<const hwy::float16_t*>(k),
                     static_cast<const hwy::float16_t*>(v), ctx, hd, p, out);
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
HWY_EXPORT(AttendQueryGroupImpl);
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
  HWY_DYNAMIC_DISPATCH(AttendQueryGroupImpl)(q, group, k, v, dtype, ctx, head_dim, p, out);
}

void WidenToF32(const void* src, DType dtype, float* dst, int64_t n) {
  HWY_DYNAMIC_DISPATCH(WidenToF32Impl)(src, dtype, dst, n);
}

void StoreAs(const float* src, DType dtype, void* dst, int64_t n) {
  HWY_DYNAMIC_DISPATCH(StoreAsImpl)(src, dtype, dst, n);
}

}  // namespace qkvshare::agents::kernels
#endif  // HWY_ONCE
