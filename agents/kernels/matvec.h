// File: agents/kernels/matvec.h
// -----------------------------------------------------------------------------
// Matrix-vector products and small vector helpers for single-token decode,
// where every weight is read once per step and the step is bound by memory
// bandwidth. Torch-free; callers split rows across threads.
//
// Weights are row-major [rows, cols] (nn.Linear layout) in F32 or BF16; the
// input vector and the output are fp32; accumulation is fp32. BF16 weights
// are widened exactly (bf16 -> fp32 is a 16-bit shift), so the only rounding
// differences to a float64 reference are the fp32 sums.
//
// Dispatch: on first use the CPU is probed once (AVX-512F/BW/VL, as on the
// target Zen 4 / Sapphire Rapids CPUs); without it a portable scalar path
// runs. ForceScalarKernelsForTest() pins the scalar path.
//
// Thread safety: the functions are reentrant; callers give each thread a
// disjoint row range.
#ifndef QKVSHARE_AGENTS_KERNELS_MATVEC_H_
#define QKVSHARE_AGENTS_KERNELS_MATVEC_H_

#include <cstdint>

#include "base/dtype.h"

namespace qkvshare::agents::kernels {

// y[r] = sum_c w[r, c] * x[c] (+ bias[r] when bias != nullptr) for r in
// [row_begin, row_end). w: [rows, cols] of `w_dtype` (kF32 or kBF16); x:
// [cols]; y and bias indexed by absolute row.
void MatVecRows(const void* w, DType w_dtype, int64_t cols, const float* x, const float* bias,
                float* y, int64_t row_begin, int64_t row_end);

// out[i] = x[i] * rsqrt(mean(x^2) + eps) * weight[i], i < n (RMSNorm, fp32).
void RmsNorm(const float* x, const float* weight, double eps, int64_t n, float* out);

// Softmax attention of the `group` queries that share one kv head (GQA;
// single-token decode): for each query g, p_g[t] = softmax_t(dot(q_g, k_t))
// and out_g = sum_t p_g[t] * v_t, where k_t = k + t * head_dim and v_t
// likewise (rows of one head of the KvCache, `dtype` kF32 or kBF16). Each
// cache row is read once for the whole group.
//   q: [group, head_dim] fp32, already scaled by 1/sqrt(head_dim);
//   p: [group, ctx] fp32 (the probabilities on return);
//   out: [group, head_dim] fp32 (overwritten).
// REQUIRES: ctx >= 1, group >= 1.
void AttendQueryGroup(const float* q, int64_t group, const void* k, const void* v, DType dtype,
                      int64_t ctx, int64_t head_dim, float* p, float* out);

// Converts n fp32 values to `dtype` (kF32: copy; kBF16: round to nearest even).
void StoreAs(const float* src, DType dtype, void* dst, int64_t n);

// True when the AVX-512 kernels are in use.
bool UsingAvx512();

// Pins the scalar kernels (tests compare both paths). Not thread-safe.
void ForceScalarKernelsForTest(bool scalar);

}  // namespace qkvshare::agents::kernels

#endif  // QKVSHARE_AGENTS_KERNELS_MATVEC_H_
