// File: agents/kernels/matvec_quant.h
// -----------------------------------------------------------------------------
// Single-token decode matrix-vector products straight from quantized weight
// blocks (agents/weights/block_formats.h: q8 = GGUF Q8_0 blocks, q4 = GGUF
// Q4_1 blocks, q6 = 6-bit symmetric blocks of q4 models' embedding/lm_head),
// and the per-tile dequantization prefill uses before its GEMM (and the
// embedding gather, one row).
//
// One Highway source, compiled for every target (x86: SSE4, AVX2, AVX3...;
// aarch64: NEON, SVE...; EMU128/SCALAR) and dispatched at run time
// (HWY_DYNAMIC_DISPATCH; base/cpu_info.h ForceSimdTarget restricts it).
//
// Arithmetic (both measured, the faster kept per format; docs/performance.md
// "Quantized weights"):
//   q8, float widening: codes are widened to fp32 in registers and multiplied
//     with the fp32 activations; each block's partial sum is scaled by d.
//     The activations are not quantized: against a float64 reference over
//     the dequantized weights |y - ref| <= 1e-5 * sum_c |w[r,c] * x[c]|.
//     (Integer dot products measured no faster here: q8 decode is bound by
//     the bytes streamed.)
//   q4, integer dot products (as llama.cpp's Q4_1 x Q8_1), 8 rows at once:
//     x is quantized once per call to int8 per block of 32
//     (QuantizeActivationsQ8: dx = amax / 127, codes round(x / dx)); the
//     weights are in groups of 8 rows (weights::BlockQ4x8, repacked at load),
//     one row per 32-bit lane, an element pair per row in its two 16-bit
//     lanes, so each block's codes times the activation codes are summed
//     exactly in int32 for 4 or 8 rows by one pairwise-adding multiply per
//     pair (ReorderWidenMulAccumulate: pmaddwd, smlal ...; no hand-written
//     intrinsics), with no horizontal sums, then scaled by d * dx, plus m *
//     the block's exact fp32 sum of x. Against the float64 value of the same
//     integer terms the error is fp32 rounding (1e-5 relative to the sum of
//     the terms' magnitudes); against the exact product of the dequantized
//     weights and x add the activation rounding, at most
//     sum_b dx_b / 2 * sum_{c in b} |w[r,c] - m_b| (<= 1/254 of the block's
//     amax per element).
//   q6, integer dot products as q4, in groups of 8 rows
//     (weights::BlockQ6x8): each code's high pair is or-ed onto its nibble
//     (one more shift and mask per pair of elements), codes 0..63 multiplied
//     as they are and the -32 applied once per block as an offset,
//     -32 d * sum(x) (q4's m * sum(x)). The same error bounds as q4 (with
//     -32 d as m). The lm_head (and embedding) of q4 models: measured
//     against the float widening it replaced in docs/performance.md
//     "Quantized weights".
// q8 rows are processed one at a time with a software prefetch (q4, q6: one
// group of 8 at a time). Results do not
// depend on the thread split; they may differ in the last bits between
// targets (summation order).
//
// Thread safety: reentrant; callers give each thread a disjoint row range.
#ifndef QKVSHARE_AGENTS_KERNELS_MATVEC_QUANT_H_
#define QKVSHARE_AGENTS_KERNELS_MATVEC_QUANT_H_

#include <cstdint>

#include "agents/weights/block_formats.h"

namespace qkvshare::agents::kernels {

// y[r] = sum_c W[r, c] * x[c] for r in [row_begin, row_end). w: q8:
// rows * BlocksPerRow(cols) blocks, row-major; q4 / q6: the groups of 8 rows
// of weights::QuantizedMatrix (group g's block column b at g * BlocksPerRow(cols)
// + b; any row range, aligned to 8 rows or not); x: [cols] fp32; y indexed
// by absolute row.
void MatVecQ8Rows(const weights::BlockQ8* w, int64_t cols, const float* x, float* y,
                  int64_t row_begin, int64_t row_end);
void MatVecQ4Rows(const weights::BlockQ4x8* w, int64_t cols, const float* x, float* y,
                  int64_t row_begin, int64_t row_end);
void MatVecQ6Rows(const weights::BlockQ6x8* w, int64_t cols, const float* x, float* y,
                  int64_t row_begin, int64_t row_end);

// The activation quantizer of MatVecQ4Rows and MatVecQ6Rows (scalar, the same on every
// target): for each block b of 32 columns of x [cols] (the last one padded
// with code 0), dx[b] = amax_b / 127, xq[b * 32 + k] = round(x / dx[b])
// (0 when amax_b == 0), sums[b] = the fp32 sum of the block's x. xq has
// BlocksPerRow(cols) * 32 entries, dx and sums BlocksPerRow(cols).
void QuantizeActivationsQ8(const float* x, int64_t cols, int8_t* xq, float* dx, float* sums);

// out[(r - row_begin) * cols + c] = W[r, c] (fp32) for r in [row_begin,
// row_end), c < cols: exactly the values of the scalar reference
// (weights::DequantizeRowQ8 / Q4 / Q6). q4 and q6 dequantize whole groups
// of 8 rows (SIMD lanes = rows, transposed in registers on x86) and copy
// out the rows in range.
void DequantizeQ8Rows(const weights::BlockQ8* w, int64_t cols, int64_t row_begin, int64_t row_end,
                      float* out);
void DequantizeQ4Rows(const weights::BlockQ4x8* w, int64_t cols, int64_t row_begin, int64_t row_end,
                      float* out);
void DequantizeQ6Rows(const weights::BlockQ6x8* w, int64_t cols, int64_t row_begin, int64_t row_end,
                      float* out);

}  // namespace qkvshare::agents::kernels

#endif  // QKVSHARE_AGENTS_KERNELS_MATVEC_QUANT_H_
