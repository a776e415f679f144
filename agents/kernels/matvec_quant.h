// File: agents/kernels/matvec_quant.h
// -----------------------------------------------------------------------------
// Single-token decode matrix-vector products straight from quantized weight
// blocks (agents/weights/block_formats.h: q8 = GGUF Q8_0 blocks, q4 = GGUF
// Q4_1 blocks), and the per-tile dequantization prefill uses before its GEMM.
//
// One Highway source, compiled for every target (x86: SSE4, AVX2, AVX3...;
// aarch64: NEON, SVE...; EMU128/SCALAR) and dispatched at run time
// (HWY_DYNAMIC_DISPATCH; base/cpu_info.h ForceSimdTarget restricts it).
//
// Arithmetic ("float widening"): codes are widened to fp32 in registers and
// multiplied with the fp32 activations; each block's partial dot product is
// scaled by the block's fp16 scale (q4: plus minimum * sum of the block's
// activations). The activations are NOT quantized, so the only differences to
// a float64 reference over the dequantized weights are fp32 rounding in the
// sums: |y - ref| <= 1e-5 * sum_c |w[r,c] * x[c]| (tests use this bound).
// Results do not depend on the thread split; they may differ in the last bits
// between targets (vector width changes the summation order).
//
// Thread safety: reentrant; callers give each thread a disjoint row range.
#ifndef QKVSHARE_AGENTS_KERNELS_MATVEC_QUANT_H_
#define QKVSHARE_AGENTS_KERNELS_MATVEC_QUANT_H_

#include <cstdint>

#include "agents/weights/block_formats.h"

namespace qkvshare::agents::kernels {

// y[r] = sum_c W[r, c] * x[c] for r in [row_begin, row_end). w: rows *
// BlocksPerRow(cols) blocks, row-major; x: [cols] fp32; y indexed by
// absolute row.
void MatVecQ8Rows(const weights::BlockQ8* w, int64_t cols, const float* x, float* y,
                  int64_t row_begin, int64_t row_end);
void MatVecQ4Rows(const weights::BlockQ4* w, int64_t cols, const float* x, float* y,
                  int64_t row_begin, int64_t row_end);

// out[(r - row_begin) * cols + c] = W[r, c] (fp32) for r in [row_begin,
// row_end), c < cols: exactly the values of the scalar reference
// (weights::DequantizeRowQ8 / Q4).
void DequantizeQ8Rows(const weights::BlockQ8* w, int64_t cols, int64_t row_begin, int64_t row_end,
                      float* out);
void DequantizeQ4Rows(const weights::BlockQ4* w, int64_t cols, int64_t row_begin, int64_t row_end,
                      float* out);

}  // namespace qkvshare::agents::kernels

#endif  // QKVSHARE_AGENTS_KERNELS_MATVEC_QUANT_H_
