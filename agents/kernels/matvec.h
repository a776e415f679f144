// File: agents/kernels/matvec.h
// -----------------------------------------------------------------------------
// The vector kernels of single-token decode (and of short prefill chunks):
// matrix-vector products, RMSNorm, RoPE, softmax, SwiGLU and attention over
// the KV cache. Decode reads every weight once per step, so it is bound by
// memory bandwidth; these kernels keep the streams sequential and the
// arithmetic in registers. Torch-free; callers split rows across threads.
//
// One source, every SIMD target: agents/kernels/matvec.cc is compiled by
// Google Highway once per target of the architecture (x86: SSE4, AVX2, AVX3
// = AVX-512, AVX3_DL...; aarch64: NEON, SVE...; EMU128 everywhere) and each
// call dispatches at run time (HWY_DYNAMIC_DISPATCH) to the best target the
// CPU supports. base/cpu_info.h names the target (BestSimdTargetName()) and
// can force a weaker one (ForceSimdTarget()) for tests and benchmarks.
//
// Dtypes: weights row-major [rows, cols] (nn.Linear layout) in F32, BF16 or
// F16; the KV cache in F32, BF16 or F16; activations, inputs and outputs fp32;
// every sum in fp32. BF16/F16 values are widened exactly in registers, so the
// only differences to a float64 reference are fp32 rounding of the sums, whose
// order depends on the target's vector width (results agree across targets to
// ~1e-6 relative, not bit for bit).
//
// Thread safety: the functions are reentrant; callers give each thread a
// disjoint row range (MatVecRows) or disjoint outputs.
#ifndef QKVSHARE_AGENTS_KERNELS_MATVEC_H_
#define QKVSHARE_AGENTS_KERNELS_MATVEC_H_

#include <cstdint>

#include "base/dtype.h"

namespace qkvshare::agents::kernels {

// y[r] = sum_c w[r, c] * x[c] (+ bias[r] when bias != nullptr) for r in
// [row_begin, row_end). w: [rows, cols] of `w_dtype` (kF32, kBF16 or kF16);
// x: [cols] fp32; y and bias indexed by absolute row.
void MatVecRows(const void* w, DType w_dtype, int64_t cols, const float* x, const float* bias,
                float* y, int64_t row_begin, int64_t row_end);

// The same for `n` input vectors at once (a short prefill chunk): for t < n,
// y[t * y_stride + r] = sum_c w[r, c] * x[t * x_stride + c] (+ bias[r]).
// n == 1 is MatVecRows (memory-bound decode: rows streamed). n >= 2 is
// compute-bound: register tiles of 4 rows x up to 6 tokens (2 on 16-register
// targets: AVX2, SSE) whose accumulators are reduced together, each weight
// row read from memory once for all n vectors (prefetched, then from L1). The
// sums of a tile are ordered differently from MatVecRows', so a chunk's
// results may differ from n single calls in the last bits (fp32 rounding).
void MatMulRows(const void* w, DType w_dtype, int64_t cols, const float* x, int64_t x_stride,
                int64_t n, const float* bias, float* y, int64_t y_stride, int64_t row_begin,
                int64_t row_end);

// out[i] = x[i] * rsqrt(mean(x^2) + eps) * weight[i], i < n (RMSNorm, fp32).
// out may alias x.
void RmsNorm(const float* x, const float* weight, double eps, int64_t n, float* out);

// RoPE (HF rotate_half pairs (i, i + head_dim / 2)) in place on `heads`
// consecutive vectors of head_dim at v, then multiplies by `scale`:
//   (x1, x2) -> ((x1 cos - x2 sin) * scale, (x2 cos + x1 sin) * scale).
// cos, sin: [head_dim / 2] for the position. REQUIRES: head_dim even.
void Rope(float* v, int64_t heads, int64_t head_dim, const float* cos, const float* sin,
          float scale);

// out[i] = silu(gate[i]) * up[i] = gate[i] / (1 + exp(-gate[i])) * up[i].
// out may alias gate or up.
void SwiGlu(const float* gate, const float* up, int64_t n, float* out);

// x[i] += y[i], i < n (the residual stream).
void AddInPlace(float* x, const float* y, int64_t n);

// Numerically stable softmax of p[0 .. n) in place. REQUIRES: n >= 1.
void SoftmaxInPlace(float* p, int64_t n);

// Softmax attention of the `group` queries that share one kv head (GQA) over
// the first `ctx` cache rows: for each query g, p_g[t] = softmax_t(dot(q_g,
// k_t)) and out_g = sum_t p_g[t] * v_t, where k_t = k + t * head_dim and v_t
// likewise (rows of one head of the KvCache, `dtype` kF32, kBF16 or kF16).
// Single-token decode (ctx = position + 1): AttendChunk with n = 1.
//   q: [group, head_dim] fp32, already scaled by 1/sqrt(head_dim);
//   p: [group, ctx] fp32 (the probabilities on return);
//   out: [group, head_dim] fp32 (overwritten).
// REQUIRES: ctx >= 1, group >= 1.
void AttendQueryGroup(const float* q, int64_t group, const void* k, const void* v, DType dtype,
                      int64_t ctx, int64_t head_dim, float* p, float* out);

// The same for a causal chunk of n consecutive tokens (a receiver's
// instruction after a card inject): token t's `group` queries attend to the
// first ctx0 + t cache rows. The cache is walked in tiles of rows; each tile
// of K and of V is read from memory once for all n * group queries (one call
// per token would stream the whole head n times). Register tiles: scores
// as 4 K rows x up to 6 queries (MatMulRows' tiles), values as up to 6
// queries x 4 vectors of head_dim. Each query's result is bit-identical to
// what a call with only its own token (e.g. AttendQueryGroup) returns, so a
// chunk attends exactly as token-by-token decode.
//   q: token t's queries at q + t * q_stride, [group, head_dim] fp32, scaled;
//   p: row (t * group + g) at p + (t * group + g) * p_stride, p_stride >=
//      ctx0 + n - 1 (the probabilities of query g of token t on return, in
//      its first ctx0 + t entries; entries up to ctx0 + n - 1 may be
//      overwritten, with 0; the rest is untouched);
//   out: token t's [group, head_dim] at out + t * out_stride (overwritten).
// REQUIRES: n >= 1, ctx0 >= 1, group >= 1.
void AttendChunk(const float* q, int64_t q_stride, int64_t n, int64_t group, const void* k,
                 const void* v, DType dtype, int64_t ctx0, int64_t head_dim, float* p,
                 int64_t p_stride, float* out, int64_t out_stride);

// Widens n values of `dtype` (kF32, kBF16 or kF16) at src to fp32 (exact).
void WidenToF32(const void* src, DType dtype, float* dst, int64_t n);

// Converts n fp32 values to `dtype` (kF32: copy; kBF16 and kF16: round to
// nearest even; NaN stays NaN).
void StoreAs(const float* src, DType dtype, void* dst, int64_t n);

}  // namespace qkvshare::agents::kernels

#endif  // QKVSHARE_AGENTS_KERNELS_MATVEC_H_
