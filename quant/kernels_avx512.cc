// AVX-512 row primitives of quant/kernels_internal.h.
//
// The build has no -march flag: every function here carries a target
// attribute and is only reached through Avx512Ops(), which checks the CPU at
// run time. No STL or lambdas inside the target functions (GCC would compile
// them for the baseline ISA, or share inline instantiations across TUs).
//
// Bit-identical to kernels_scalar.cc: the same IEEE operations in the same
// order (multiply then add, no FMA; -ffp-contract=off in BUILD), F16C
// conversions with explicit rounding, bf16 rounding done with integer ops
// exactly as base/dtype.h FloatToBf16, and pext/pdep for the LSB-first packing.
#include <cstdint>
#include <cstring>

#include "base/dtype.h"
#include "quant/fp16.h"
#include "quant/kernels_internal.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define QKV_HAVE_AVX512_PATH 1
#include <immintrin.h>
// GCC 12's own intrinsics (_mm512_undefined_ps and friends) trip this warning.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#else
#define QKV_HAVE_AVX512_PATH 0
#endif

namespace qkvshare::quant::internal {

#if QKV_HAVE_AVX512_PATH
namespace {

#define QKV_AVX512 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,bmi,bmi2,f16c,avx2,avx")))

QKV_AVX512 inline __mmask16 TailMask(int n) {
  return n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1u);
}

template <DType D>
QKV_AVX512 inline __m512 Load(const void* p, int64_t i, __mmask16 m) {
  if constexpr (D == DType::kF32) {
    return _mm512_maskz_loadu_ps(m, static_cast<const float*>(p) + i);
  } else {
    const __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(p) + i);
    if constexpr (D == DType::kF16) {
      return _mm512_cvtph_ps(h);
    } else {
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
  }
}

// Round to nearest even, as FloatToBf16 (a NaN stays a quiet NaN).
QKV_AVX512 inline __m256i ToBf16(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r =
      _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb)), 16);
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                                _mm512_set1_epi32(0x7f800000));
  r = _mm512_mask_mov_epi32(r, nan,
                            _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40)));
  return _mm512_cvtepi32_epi16(r);
}

template <DType D>
QKV_AVX512 inline void Store(void* p, int64_t i, __mmask16 m, __m512 v) {
  if constexpr (D == DType::kF32) {
    _mm512_mask_storeu_ps(static_cast<float*>(p) + i, m, v);
  } else if constexpr (D == DType::kF16) {
    _mm256_mask_storeu_epi16(static_cast<uint16_t*>(p) + i, m,
                             _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  } else {
    _mm256_mask_storeu_epi16(static_cast<uint16_t*>(p) + i, m, ToBf16(v));
  }
}

// Lanes whose |x| is not <= 65504 (NaN included).
QKV_AVX512 inline __mmask16 NotFinite16(__mmask16 m, __m512 x) {
  return _mm512_mask_cmp_ps_mask(m, _mm512_abs_ps(x), _mm512_set1_ps(kFp16Max), _CMP_NLE_UQ);
}

// min(L, max(0, (x - lo) * scale)) + 0.5, truncated to int, as 16 bytes.
QKV_AVX512 inline __m128i Codes(__m512 x, __m512 lo, __m512 scale, __m512 levels) {
  __m512 v = _mm512_mul_ps(_mm512_sub_ps(x, lo), scale);
  v = _mm512_min_ps(_mm512_max_ps(v, _mm512_setzero_ps()), levels);
  v = _mm512_add_ps(v, _mm512_set1_ps(0.5f));
  return _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(v));
}

// lo + codes * step (multiply, then add).
QKV_AVX512 inline __m512 Values(__m128i codes, __m512 lo, __m512 step) {
  const __m512 f = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(codes));
  return _mm512_add_ps(lo, _mm512_mul_ps(f, step));
}

#define QKV_DISPATCH_DTYPE(dtype, fn, ...)  \
  switch (dtype) {                          \
    case DType::kBF16:                      \
      return fn<DType::kBF16>(__VA_ARGS__); \
    case DType::kF16:                       \
      return fn<DType::kF16>(__VA_ARGS__);  \
    default:                                \
      return fn<DType::kF32>(__VA_ARGS__);  \
  }

// ---- quantize ----------------------------------------------------------------

template <DType D>
QKV_AVX512 bool MinMaxPerChannelT(const ConstKvView& src, int64_t t0, int nt, const uint8_t* bits,
                                  float* mn, float* mx) {
  const int hd = src.head_dim;
  __mmask16 bad = 0;
  for (int h = 0; h < src.num_heads; ++h) {
    for (int d0 = 0; d0 < hd; d0 += 16) {
      const __mmask16 m = TailMask(hd - d0);
      const int64_t idx = h * src.head_stride + t0 * hd + d0;
      __m512 lo = _mm512_set1_ps(2 * kFp16Max);
      __m512 hi = _mm512_set1_ps(-2 * kFp16Max);
      for (int i = 0; i < nt; ++i) {
        const __m512 x = Load<D>(src.data, idx + static_cast<int64_t>(i) * hd, m);
        bad |= NotFinite16(m, x);
        if (bits[i] <= 8) {
          lo = _mm512_min_ps(lo, x);
          hi = _mm512_max_ps(hi, x);
        }
      }
      const int c = h * hd + d0;
      _mm512_mask_storeu_ps(mn + c, m, lo);
      _mm512_mask_storeu_ps(mx + c, m, hi);
    }
  }
  return bad == 0;
}

QKV_AVX512 bool MinMaxPerChannel(const ConstKvView& src, int64_t t0, int nt, const uint8_t* bits,
                                 float* mn, float* mx) {
  QKV_DISPATCH_DTYPE(src.dtype, MinMaxPerChannelT, src, t0, nt, bits, mn, mx);
}

template <DType D>
QKV_AVX512 bool MinMaxPerTokenT(const ConstKvView& src, int64_t t, int group_size, float* mn,
                                float* mx) {
  const int hd = src.head_dim;
  const int channels = src.channels();
  __mmask16 bad = 0;
  for (int c0 = 0, g = 0; c0 < channels; c0 += group_size, ++g) {
    const int c1 = c0 + group_size < channels ? c0 + group_size : channels;
    __m512 lo = _mm512_set1_ps(2 * kFp16Max);
    __m512 hi = _mm512_set1_ps(-2 * kFp16Max);
    for (int c = c0; c < c1;) {  // one segment per head the group touches
      const int h = c / hd;
      const int d = c - h * hd;
      const int len = hd - d < c1 - c ? hd - d : c1 - c;
      const int64_t idx = h * src.head_stride + t * hd + d;
      for (int k = 0; k < len; k += 16) {
        const __mmask16 m = TailMask(len - k);
        const __m512 x = Load<D>(src.data, idx + k, m);
        bad |= NotFinite16(m, x);
        lo = _mm512_mask_min_ps(lo, m, lo, x);
        hi = _mm512_mask_max_ps(hi, m, hi, x);
      }
      c += len;
    }
    mn[g] = _mm512_reduce_min_ps(lo);
    mx[g] = _mm512_reduce_max_ps(hi);
  }
  return bad == 0;
}

QKV_AVX512 bool MinMaxPerToken(const ConstKvView& src, int64_t t, int group_size, float* mn,
                               float* mx) {
  QKV_DISPATCH_DTYPE(src.dtype, MinMaxPerTokenT, src, t, group_size, mn, mx);
}

QKV_AVX512 void MakeParams(const float* mn, const float* mx, int n, uint8_t* out, float* lo,
                           float* range) {
  const __m512 zero = _mm512_setzero_ps();
  uint16_t* lo16 = reinterpret_cast<uint16_t*>(out);
  uint16_t* hi16 = lo16 + n;
  for (int i = 0; i < n; i += 16) {
    const __mmask16 m = TailMask(n - i);
    // "+ 0" turns -0 into +0, as in the scalar path.
    const __m512 a = _mm512_add_ps(_mm512_maskz_loadu_ps(m, mn + i), zero);
    const __m512 b = _mm512_add_ps(_mm512_maskz_loadu_ps(m, mx + i), zero);
    const __m256i l = _mm512_cvtps_ph(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    const __m256i h = _mm512_cvtps_ph(b, _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC);
    _mm256_mask_storeu_epi16(lo16 + i, m, l);
    _mm256_mask_storeu_epi16(hi16 + i, m, h);
    const __m512 lf = _mm512_cvtph_ps(l);
    _mm512_mask_storeu_ps(lo + i, m, lf);
    _mm512_mask_storeu_ps(range + i, m, _mm512_sub_ps(_mm512_cvtph_ps(h), lf));
  }
}

QKV_AVX512 bool ParamsValid(const uint8_t* in, int n) {
  const uint16_t* lo16 = reinterpret_cast<const uint16_t*>(in);
  const uint16_t* hi16 = lo16 + n;
  const __m256i exp = _mm256_set1_epi16(0x7c00);
  __mmask16 bad = 0;
  for (int i = 0; i < n; i += 16) {
    const __mmask16 m = TailMask(n - i);
    const __m256i l = _mm256_maskz_loadu_epi16(m, lo16 + i);
    const __m256i h = _mm256_maskz_loadu_epi16(m, hi16 + i);
    bad |= _mm256_mask_cmpeq_epi16_mask(m, _mm256_and_si256(l, exp), exp);
    bad |= _mm256_mask_cmpeq_epi16_mask(m, _mm256_and_si256(h, exp), exp);
    bad |= _mm512_mask_cmp_ps_mask(m, _mm512_cvtph_ps(l), _mm512_cvtph_ps(h), _CMP_NLE_UQ);
  }
  return bad == 0;
}

QKV_AVX512 bool RawRowValid(const uint8_t* in, int channels) {
  const uint16_t* p = reinterpret_cast<const uint16_t*>(in);
  const __m512i exp = _mm512_set1_epi16(0x7c00);
  __mmask32 bad = 0;
  for (int c = 0; c < channels; c += 32) {
    const int rest = channels - c;
    const __mmask32 m = rest >= 32 ? 0xffffffffu : ((1u << rest) - 1u);
    const __m512i x = _mm512_maskz_loadu_epi16(m, p + c);
    bad |= _mm512_mask_cmpeq_epi16_mask(m, _mm512_and_si512(x, exp), exp);
  }
  return bad == 0;
}

QKV_AVX512 void LoadParams(const uint8_t* in, int n, float* lo, float* range) {
  const uint16_t* lo16 = reinterpret_cast<const uint16_t*>(in);
  const uint16_t* hi16 = lo16 + n;
  for (int i = 0; i < n; i += 16) {
    const __mmask16 m = TailMask(n - i);
    const __m512 lf = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, lo16 + i));
    const __m512 hf = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, hi16 + i));
    _mm512_mask_storeu_ps(lo + i, m, lf);
    _mm512_mask_storeu_ps(range + i, m, _mm512_sub_ps(hf, lf));
  }
}

QKV_AVX512 void ScaleTable(const float* range, int n, int bits, float* scale) {
  const __m512 levels = _mm512_set1_ps(static_cast<float>((1 << bits) - 1));
  for (int i = 0; i < n; i += 16) {
    const __mmask16 m = TailMask(n - i);
    const __m512 r = _mm512_maskz_loadu_ps(m, range + i);
    const __mmask16 pos = _mm512_cmp_ps_mask(r, _mm512_setzero_ps(), _CMP_GT_OQ);
    _mm512_mask_storeu_ps(scale + i, m, _mm512_maskz_div_ps(pos, levels, r));
  }
}

QKV_AVX512 void StepTable(const float* range, int n, int bits, float* step) {
  const __m512 levels = _mm512_set1_ps(static_cast<float>((1 << bits) - 1));
  for (int i = 0; i < n; i += 16) {
    const __mmask16 m = TailMask(n - i);
    _mm512_mask_storeu_ps(step + i, m, _mm512_div_ps(_mm512_maskz_loadu_ps(m, range + i), levels));
  }
}

template <DType D>
QKV_AVX512 void QuantizeRowPerChannelT(const ConstKvView& src, int64_t t, const float* lo,
                                       const float* scale, int bits, uint8_t* codes) {
  const __m512 levels = _mm512_set1_ps(static_cast<float>((1 << bits) - 1));
  const int hd = src.head_dim;
  for (int h = 0; h < src.num_heads; ++h) {
    const int64_t idx = h * src.head_stride + t * hd;
    for (int d0 = 0; d0 < hd; d0 += 16) {
      const __mmask16 m = TailMask(hd - d0);
      const int c = h * hd + d0;
      const __m512 x = Load<D>(src.data, idx + d0, m);
      const __m128i q =
          Codes(x, _mm512_maskz_loadu_ps(m, lo + c), _mm512_maskz_loadu_ps(m, scale + c), levels);
      _mm_mask_storeu_epi8(codes + c, m, q);
    }
  }
}

QKV_AVX512 void QuantizeRowPerChannel(const ConstKvView& src, int64_t t, const float* lo,
                                      const float* scale, int bits, uint8_t* codes) {
  QKV_DISPATCH_DTYPE(src.dtype, QuantizeRowPerChannelT, src, t, lo, scale, bits, codes);
}

template <DType D>
QKV_AVX512 void QuantizeRowPerTokenT(const ConstKvView& src, int64_t t, int group_size,
                                     const float* lo, const float* scale, int bits,
                                     uint8_t* codes) {
  const __m512 levels = _mm512_set1_ps(static_cast<float>((1 << bits) - 1));
  const int hd = src.head_dim;
  const int channels = src.channels();
  for (int c0 = 0, g = 0; c0 < channels; c0 += group_size, ++g) {
    const int c1 = c0 + group_size < channels ? c0 + group_size : channels;
    const __m512 vlo = _mm512_set1_ps(lo[g]);
    const __m512 vscale = _mm512_set1_ps(scale[g]);
    for (int c = c0; c < c1;) {
      const int h = c / hd;
      const int d = c - h * hd;
      const int len = hd - d < c1 - c ? hd - d : c1 - c;
      const int64_t idx = h * src.head_stride + t * hd + d;
      for (int k = 0; k < len; k += 16) {
        const __mmask16 m = TailMask(len - k);
        _mm_mask_storeu_epi8(codes + c + k, m,
                             Codes(Load<D>(src.data, idx + k, m), vlo, vscale, levels));
      }
      c += len;
    }
  }
}

QKV_AVX512 void QuantizeRowPerToken(const ConstKvView& src, int64_t t, int group_size,
                                    const float* lo, const float* scale, int bits, uint8_t* codes) {
  QKV_DISPATCH_DTYPE(src.dtype, QuantizeRowPerTokenT, src, t, group_size, lo, scale, bits, codes);
}

template <DType D>
QKV_AVX512 bool RawRowT(const ConstKvView& src, int64_t t, uint8_t* out) {
  uint16_t* o = reinterpret_cast<uint16_t*>(out);
  const int hd = src.head_dim;
  __mmask16 bad = 0;
  for (int h = 0; h < src.num_heads; ++h) {
    const int64_t idx = h * src.head_stride + t * hd;
    for (int d0 = 0; d0 < hd; d0 += 16) {
      const __mmask16 m = TailMask(hd - d0);
      const __m512 x = Load<D>(src.data, idx + d0, m);
      bad |= NotFinite16(m, x);
      _mm256_mask_storeu_epi16(o + h * hd + d0, m,
                               _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
  }
  return bad == 0;
}

QKV_AVX512 bool RawRow(const ConstKvView& src, int64_t t, uint8_t* out) {
  QKV_DISPATCH_DTYPE(src.dtype, RawRowT, src, t, out);
}

// ---- packing -----------------------------------------------------------------

// Selects the low `bits` bits of each of 8 bytes.
inline uint64_t ByteLaneMask(int bits) { return 0x0101010101010101ull * ((1ull << bits) - 1); }

QKV_AVX512 void PackRow(const uint8_t* codes, int channels, int bits, uint8_t* out) {
  if (bits == 8) {
    std::memcpy(out, codes, static_cast<size_t>(channels));
    return;
  }
  const uint64_t mask = ByteLaneMask(bits);
  const size_t row = RowBytes(channels, bits);
  const int full = channels / 8;  // chunks of 8 codes -> `bits` bytes
  for (int i = 0; i < full; ++i) {
    uint64_t w;
    std::memcpy(&w, codes + 8 * i, 8);
    const uint64_t p = _pext_u64(w, mask);
    const size_t o = static_cast<size_t>(i) * bits;
    // A full 8-byte store is fine while it stays inside the row: its zero high
    // bytes are overwritten by the next chunk.
    if (o + 8 <= row) {
      std::memcpy(out + o, &p, 8);
    } else {
      std::memcpy(out + o, &p, static_cast<size_t>(bits));
    }
  }
  const int rest = channels - 8 * full;
  if (rest > 0) {
    uint64_t w = 0;
    std::memcpy(&w, codes + 8 * full, static_cast<size_t>(rest));
    const uint64_t p = _pext_u64(w, mask);
    std::memcpy(out + static_cast<size_t>(full) * bits, &p,
                static_cast<size_t>(rest * bits + 7) / 8);
  }
}

QKV_AVX512 void UnpackRow(const uint8_t* in, int channels, int bits, uint8_t* codes) {
  if (bits == 8) {
    std::memcpy(codes, in, static_cast<size_t>(channels));
    return;
  }
  const uint64_t mask = ByteLaneMask(bits);
  const size_t row = RowBytes(channels, bits);
  const int full = channels / 8;
  for (int i = 0; i < full; ++i) {
    const size_t o = static_cast<size_t>(i) * bits;
    uint64_t w = 0;
    if (o + 8 <= row) {
      std::memcpy(&w, in + o, 8);
    } else {
      std::memcpy(&w, in + o, static_cast<size_t>(bits));
    }
    const uint64_t q = _pdep_u64(w, mask);  // uses only the low 8*bits bits of w
    std::memcpy(codes + 8 * i, &q, 8);
  }
  const int rest = channels - 8 * full;
  if (rest > 0) {
    uint64_t w = 0;
    std::memcpy(&w, in + static_cast<size_t>(full) * bits,
                static_cast<size_t>(rest * bits + 7) / 8);
    const uint64_t q = _pdep_u64(w, mask);
    std::memcpy(codes + 8 * full, &q, 8);  // codes has slack past `channels`
  }
}

// ---- dequantize --------------------------------------------------------------

template <DType D>
QKV_AVX512 void DequantizeRowPerChannelT(const uint8_t* codes, const float* lo, const float* step,
                                         const KvView& dst, int64_t t) {
  const int hd = dst.head_dim;
  for (int h = 0; h < dst.num_heads; ++h) {
    const int64_t idx = h * dst.head_stride + t * hd;
    for (int d0 = 0; d0 < hd; d0 += 16) {
      const __mmask16 m = TailMask(hd - d0);
      const int c = h * hd + d0;
      const __m512 y = Values(_mm_maskz_loadu_epi8(m, codes + c), _mm512_maskz_loadu_ps(m, lo + c),
                              _mm512_maskz_loadu_ps(m, step + c));
      Store<D>(dst.data, idx + d0, m, y);
    }
  }
}

QKV_AVX512 void DequantizeRowPerChannel(const uint8_t* codes, const float* lo, const float* step,
                                        const KvView& dst, int64_t t) {
  QKV_DISPATCH_DTYPE(dst.dtype, DequantizeRowPerChannelT, codes, lo, step, dst, t);
}

template <DType D>
QKV_AVX512 void DequantizeRowPerTokenT(const uint8_t* codes, int group_size, const float* lo,
                                       const float* step, const KvView& dst, int64_t t) {
  const int hd = dst.head_dim;
  const int channels = dst.channels();
  for (int c0 = 0, g = 0; c0 < channels; c0 += group_size, ++g) {
    const int c1 = c0 + group_size < channels ? c0 + group_size : channels;
    const __m512 vlo = _mm512_set1_ps(lo[g]);
    const __m512 vstep = _mm512_set1_ps(step[g]);
    for (int c = c0; c < c1;) {
      const int h = c / hd;
      const int d = c - h * hd;
      const int len = hd - d < c1 - c ? hd - d : c1 - c;
      const int64_t idx = h * dst.head_stride + t * hd + d;
      for (int k = 0; k < len; k += 16) {
        const __mmask16 m = TailMask(len - k);
        Store<D>(dst.data, idx + k, m, Values(_mm_maskz_loadu_epi8(m, codes + c + k), vlo, vstep));
      }
      c += len;
    }
  }
}

QKV_AVX512 void DequantizeRowPerToken(const uint8_t* codes, int group_size, const float* lo,
                                      const float* step, const KvView& dst, int64_t t) {
  QKV_DISPATCH_DTYPE(dst.dtype, DequantizeRowPerTokenT, codes, group_size, lo, step, dst, t);
}

template <DType D>
QKV_AVX512 void RawRowOutT(const uint8_t* in, const KvView& dst, int64_t t) {
  const uint16_t* p = reinterpret_cast<const uint16_t*>(in);
  const int hd = dst.head_dim;
  for (int h = 0; h < dst.num_heads; ++h) {
    const int64_t idx = h * dst.head_stride + t * hd;
    for (int d0 = 0; d0 < hd; d0 += 16) {
      const __mmask16 m = TailMask(hd - d0);
      Store<D>(dst.data, idx + d0, m,
               _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p + h * hd + d0)));
    }
  }
}

QKV_AVX512 void RawRowOut(const uint8_t* in, const KvView& dst, int64_t t) {
  QKV_DISPATCH_DTYPE(dst.dtype, RawRowOutT, in, dst, t);
}

#undef QKV_DISPATCH_DTYPE

constexpr KernelOps kAvx512Ops = {
    MinMaxPerChannel,
    MinMaxPerToken,
    MakeParams,
    ParamsValid,
    RawRowValid,
    LoadParams,
    ScaleTable,
    StepTable,
    QuantizeRowPerChannel,
    QuantizeRowPerToken,
    RawRow,
    PackRow,
    UnpackRow,
    DequantizeRowPerChannel,
    DequantizeRowPerToken,
    RawRowOut,
};

bool CpuHasAvx512Path() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("bmi2");
}

}  // namespace

const KernelOps* Avx512Ops() {
  static const bool supported = CpuHasAvx512Path();
  return supported ? &kAvx512Ops : nullptr;
}

#else  // !QKV_HAVE_AVX512_PATH

const KernelOps* Avx512Ops() { return nullptr; }

#endif

}  // namespace qkvshare::quant::internal
