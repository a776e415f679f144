#include "agents/kernels/matvec.h"

#include <immintrin.h>

#include <cmath>
#include <cstring>

namespace qkvshare::agents::kernels {
namespace {

bool g_force_scalar = false;

bool CpuHasAvx512() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl");
  return has;
}

// ---------------------------------------------------------------------------
// Scalar reference paths.

inline float Load(const void* p, DType t, int64_t i) {
  return t == DType::kF32 ? static_cast<const float*>(p)[i]
                          : Bf16ToFloat(static_cast<const uint16_t*>(p)[i]);
}

void MatVecScalar(const void* w, DType t, int64_t cols, const float* x, const float* bias, float* y,
                  int64_t r0, int64_t r1) {
  const size_t esize = DTypeSize(t);
  for (int64_t r = r0; r < r1; ++r) {
    const void* row = static_cast<const char*>(w) + r * cols * esize;
    float acc = 0;
    for (int64_t c = 0; c < cols; ++c) acc += Load(row, t, c) * x[c];
    y[r] = acc + (bias != nullptr ? bias[r] : 0.0f);
  }
}

float DotScalar(const void* a, DType t, const float* b, int64_t n) {
  float acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += Load(a, t, i) * b[i];
  return acc;
}

void AxpyScalar(float alpha, const void* v, DType t, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] += alpha * Load(v, t, i);
}

// ---------------------------------------------------------------------------
// AVX-512 paths. Columns are processed 16 at a time; the tail with masks.

#define QKV_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,fma")))

QKV_AVX512 inline __m512 LoadBf16(const uint16_t* p) {
  __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
QKV_AVX512 inline __m512 LoadBf16Masked(const uint16_t* p, __mmask16 m) {
  __m256i h = _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
QKV_AVX512 inline __m512 LoadF32(const float* p) { return _mm512_loadu_ps(p); }
QKV_AVX512 inline __m512 LoadF32Masked(const float* p, __mmask16 m) {
  return _mm512_maskz_loadu_ps(m, p);
}

// One row at a time, 4 independent accumulators over 64 columns: a single
// sequential stream per thread, which the hardware prefetcher follows well
// (measured on Zen 4: ~1.7x the bandwidth of interleaving 8 rows).
template <typename T, __m512 (*LoadW)(const T*), __m512 (*LoadWMasked)(const T*, __mmask16)>
QKV_AVX512 inline float RowDot(const T* w, const float* x, int64_t cols) {
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  __m512 a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
  int64_t c = 0;
  for (; c + 64 <= cols; c += 64) {
    a0 = _mm512_fmadd_ps(LoadW(w + c), _mm512_loadu_ps(x + c), a0);
    a1 = _mm512_fmadd_ps(LoadW(w + c + 16), _mm512_loadu_ps(x + c + 16), a1);
    a2 = _mm512_fmadd_ps(LoadW(w + c + 32), _mm512_loadu_ps(x + c + 32), a2);
    a3 = _mm512_fmadd_ps(LoadW(w + c + 48), _mm512_loadu_ps(x + c + 48), a3);
  }
  for (; c + 16 <= cols; c += 16) a0 = _mm512_fmadd_ps(LoadW(w + c), _mm512_loadu_ps(x + c), a0);
  if (c < cols) {
    const __mmask16 m = static_cast<__mmask16>((1u << (cols - c)) - 1);
    a1 = _mm512_fmadd_ps(LoadWMasked(w + c, m), _mm512_maskz_loadu_ps(m, x + c), a1);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

template <typename T, __m512 (*LoadW)(const T*), __m512 (*LoadWMasked)(const T*, __mmask16)>
QKV_AVX512 void MatVecAvx512(const T* w, int64_t cols, const float* x, const float* bias, float* y,
                             int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    y[r] =
        RowDot<T, LoadW, LoadWMasked>(w + r * cols, x, cols) + (bias != nullptr ? bias[r] : 0.0f);
  }
}

template <typename T, __m512 (*LoadW)(const T*), __m512 (*LoadWMasked)(const T*, __mmask16)>
QKV_AVX512 float DotAvx512(const T* a, const float* b, int64_t n) {
  const int64_t full = n & ~int64_t{15};
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < full; i += 16) acc = _mm512_fmadd_ps(LoadW(a + i), LoadF32(b + i), acc);
  if (full < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - full)) - 1);
    acc = _mm512_fmadd_ps(LoadWMasked(a + full, m), _mm512_maskz_loadu_ps(m, b + full), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

template <typename T, __m512 (*LoadW)(const T*), __m512 (*LoadWMasked)(const T*, __mmask16)>
QKV_AVX512 void AxpyAvx512(float alpha, const T* v, float* out, int64_t n) {
  const __m512 a = _mm512_set1_ps(alpha);
  const int64_t full = n & ~int64_t{15};
  for (int64_t i = 0; i < full; i += 16) {
    _mm512_storeu_ps(out + i, _mm512_fmadd_ps(a, LoadW(v + i), _mm512_loadu_ps(out + i)));
  }
  if (full < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - full)) - 1);
    _mm512_mask_storeu_ps(
        out + full, m,
        _mm512_fmadd_ps(a, LoadWMasked(v + full, m), _mm512_maskz_loadu_ps(m, out + full)));
  }
}

bool UseAvx512() { return !g_force_scalar && CpuHasAvx512(); }

}  // namespace

bool UsingAvx512() { return UseAvx512(); }

void ForceScalarKernelsForTest(bool scalar) { g_force_scalar = scalar; }

void MatVecRows(const void* w, DType w_dtype, int64_t cols, const float* x, const float* bias,
                float* y, int64_t row_begin, int64_t row_end) {
  if (!UseAvx512()) return MatVecScalar(w, w_dtype, cols, x, bias, y, row_begin, row_end);
  if (w_dtype == DType::kBF16) {
    MatVecAvx512<uint16_t, LoadBf16, LoadBf16Masked>(static_cast<const uint16_t*>(w), cols, x, bias,
                                                     y, row_begin, row_end);
  } else {
    MatVecAvx512<float, LoadF32, LoadF32Masked>(static_cast<const float*>(w), cols, x, bias, y,
                                                row_begin, row_end);
  }
}

float Dot(const void* a, DType a_dtype, const float* b, int64_t n) {
  if (!UseAvx512()) return DotScalar(a, a_dtype, b, n);
  if (a_dtype == DType::kBF16) {
    return DotAvx512<uint16_t, LoadBf16, LoadBf16Masked>(static_cast<const uint16_t*>(a), b, n);
  }
  return DotAvx512<float, LoadF32, LoadF32Masked>(static_cast<const float*>(a), b, n);
}

void Axpy(float alpha, const void* v, DType v_dtype, float* out, int64_t n) {
  if (!UseAvx512()) return AxpyScalar(alpha, v, v_dtype, out, n);
  if (v_dtype == DType::kBF16) {
    AxpyAvx512<uint16_t, LoadBf16, LoadBf16Masked>(alpha, static_cast<const uint16_t*>(v), out, n);
  } else {
    AxpyAvx512<float, LoadF32, LoadF32Masked>(alpha, static_cast<const float*>(v), out, n);
  }
}

void RmsNorm(const float* x, const float* weight, double eps, int64_t n, float* out) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * inv * weight[i];
}

void StoreAs(const float* src, DType dtype, void* dst, int64_t n) {
  if (dtype == DType::kF32) {
    std::memcpy(dst, src, n * sizeof(float));
    return;
  }
  auto* d = static_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; ++i) d[i] = FloatToBf16(src[i]);
}

}  // namespace qkvshare::agents::kernels
