// File: quant/kernels_internal.h
// -----------------------------------------------------------------------------
// Internals of quant/kernels.h, exposed for tests and bench/ only: the kernel
// paths (portable scalar, Highway SIMD) and the per-row primitives each path
// implements. The layout walk (which bytes hold which row) lives once, in
// kernels.cc; the paths only differ in how a row is computed, and must give
// bit-identical bytes and outputs (kernels_test.cc checks this).
//
// Every primitive works on one token row (all channels c = h * head_dim + d of
// one token) or one per-channel group block, reading or writing a strided view
// and contiguous scratch arrays indexed by channel (K) or group (V).
//
// Thread safety: pure functions; the ops tables are immutable.
#ifndef QKVSHARE_QUANT_KERNELS_INTERNAL_H_
#define QKVSHARE_QUANT_KERNELS_INTERNAL_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "base/dtype.h"
#include "quant/fp16.h"
#include "quant/kernels.h"
#include "quant/kv_view.h"

namespace qkvshare::quant::internal {

enum class KernelPath : uint8_t {
  kScalar = 0,  // portable C++ (kernels_scalar.cc), any CPU: the reference
  kSimd = 1,    // Highway (kernels_hwy.cc), best target of this CPU chosen at
                // run time (HWY_DYNAMIC_DISPATCH; base/cpu_info.h ForceSimdTarget)
};

// "scalar" / "simd".
const char* KernelPathName(KernelPath path);

// Whether `path` is compiled in and this CPU can run it.
bool KernelPathSupported(KernelPath path);

// The path Quantize()/Dequantize() use: the fastest supported one.
KernelPath BestKernelPath();

// Quantize()/Dequantize() on an explicit path. Errors: as the public
// functions, plus FailedPrecondition if !KernelPathSupported(path).
absl::Status QuantizeWithPath(KernelPath path, const ConstKvView& src, const GroupSpec& spec,
                              absl::Span<const uint8_t> token_bits, absl::Span<uint8_t> out);
absl::Status DequantizeWithPath(KernelPath path, absl::Span<const uint8_t> packed,
                                const GroupSpec& spec, absl::Span<const uint8_t> token_bits,
                                const KvView& dst);

// Bytes of one token row of `channels` codes of width `bits` (2..8: dense,
// padded to a whole byte; 16: raw fp16).
inline size_t RowBytes(int channels, int bits) {
  return bits == 16 ? 2 * static_cast<size_t>(channels)
                    : (static_cast<size_t>(channels) * bits + 7) / 8;
}

// Row primitives of one path. Notation: C = channels, n = number of
// parameter slots (C for per-channel blocks, ceil(C / G) for per-token rows),
// L = 2^b - 1. "Finite" below means |x| <= 65504 (the fp16 range), which also
// rejects NaN and +-Inf; a primitive returning false has found such an element
// and the caller locates it for the error message.
struct KernelOps {
  // Per-channel min/max over the `nt` tokens t0.. of `src` whose bits[t] <= 8
  // (at least one), into mn[C], mx[C]. Returns false if any of the nt tokens
  // (of any width) has a non-finite element.
  bool (*min_max_per_channel)(const ConstKvView& src, int64_t t0, int nt, const uint8_t* bits,
                              float* mn, float* mx);
  // Per-group min/max over the channels of token t (groups of G channels, the
  // last one shorter), into mn[n], mx[n]. Returns false on a non-finite element.
  bool (*min_max_per_token)(const ConstKvView& src, int64_t t, int group_size, float* mn,
                            float* mx);
  // Group parameters from min/max: lo = fp16 round-down(mn), hi = fp16
  // round-up(mx), written as lo[n] then hi[n] (fp16, little-endian) at `out`;
  // also returns lo and range = hi - lo as floats (what the decoder will see).
  void (*make_params)(const float* mn, const float* mx, int n, uint8_t* out, float* lo,
                      float* range);
  // Whether n params at `in` (lo[n] then hi[n], fp16) are finite with
  // lo <= hi, and whether a raw row of `channels` fp16 values is finite.
  bool (*params_valid)(const uint8_t* in, int n);
  bool (*raw_row_valid)(const uint8_t* in, int channels);
  // Decodes params written by make_params: lo[n], range[n].
  void (*load_params)(const uint8_t* in, int n, float* lo, float* range);
  // scale[i] = range[i] > 0 ? L / range[i] : 0 (quantize); step[i] = range[i] / L
  // (dequantize).
  void (*scale_table)(const float* range, int n, int bits, float* scale);
  void (*step_table)(const float* range, int n, int bits, float* step);
  // codes[c] = min(L, max(0, (x[t, c] - lo[c]) * scale[c])) + 0.5, truncated.
  void (*quantize_row_per_channel)(const ConstKvView& src, int64_t t, const float* lo,
                                   const float* scale, int bits, uint8_t* codes);
  // As above with lo/scale taken per group of G channels.
  void (*quantize_row_per_token)(const ConstKvView& src, int64_t t, int group_size, const float* lo,
                                 const float* scale, int bits, uint8_t* codes);
  // Token t as raw fp16 (round to nearest even), 2*C bytes at `out`. Returns
  // false on a non-finite element.
  bool (*raw_row)(const ConstKvView& src, int64_t t, uint8_t* out);
  // Dense LSB-first packing of codes[C] (each < 2^bits) into RowBytes(C, bits)
  // bytes, and its inverse. `codes` has room for C + 64 bytes when unpacking.
  void (*pack_row)(const uint8_t* codes, int channels, int bits, uint8_t* out);
  void (*unpack_row)(const uint8_t* in, int channels, int bits, uint8_t* codes);
  // dst[t, c] = lo[c] + codes[c] * step[c] (multiply, then add; no FMA),
  // rounded to dst's dtype (nearest even).
  void (*dequantize_row_per_channel)(const uint8_t* codes, const float* lo, const float* step,
                                     const KvView& dst, int64_t t);
  void (*dequantize_row_per_token)(const uint8_t* codes, int group_size, const float* lo,
                                   const float* step, const KvView& dst, int64_t t);
  // dst[t, c] = fp16 row at `in`, rounded to dst's dtype.
  void (*raw_row_out)(const uint8_t* in, const KvView& dst, int64_t t);
};

// The ops of each path. SimdOps() are those of the Highway target that
// dispatch picks now (it follows ForceSimdTarget); they take the scalar
// primitives where a row-sized loop does not pay (group parameters, tables).
const KernelOps& ScalarOps();
const KernelOps& SimdOps();

// ---- element helpers shared by the scalar path and the SIMD tails ----------

// |x| <= 65504 (the fp16 range); false for NaN and +-Inf.
inline bool Finite16(float x) { return x <= kFp16Max && x >= -kFp16Max; }

// min(L, max(0, (x - lo) * scale)) + 0.5; the caller truncates it to the code.
inline float Quantize1(float x, float lo, float scale, float levels) {
  float v = (x - lo) * scale;
  v = v < 0.0f ? 0.0f : v;
  v = v > levels ? levels : v;
  return v + 0.5f;
}

// Element i of a buffer of dtype D as float, and back (rounded to nearest
// even).
template <DType D>
inline float LoadElem(const void* p, int64_t i) {
  if constexpr (D == DType::kF32) {
    return static_cast<const float*>(p)[i];
  } else if constexpr (D == DType::kBF16) {
    return Bf16ToFloat(static_cast<const uint16_t*>(p)[i]);
  } else {
    return HalfToFloat(static_cast<const uint16_t*>(p)[i]);
  }
}
template <DType D>
inline void StoreElem(void* p, int64_t i, float v) {
  if constexpr (D == DType::kF32) {
    static_cast<float*>(p)[i] = v;
  } else if constexpr (D == DType::kBF16) {
    static_cast<uint16_t*>(p)[i] = FloatToBf16(v);
  } else {
    static_cast<uint16_t*>(p)[i] = FloatToHalf(v);
  }
}

inline uint16_t ReadU16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
inline void WriteU16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v & 0xff);
  p[1] = static_cast<uint8_t>(v >> 8);
}

}  // namespace qkvshare::quant::internal

#endif  // QKVSHARE_QUANT_KERNELS_INTERNAL_H_
