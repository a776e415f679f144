// File: agents/weights/block_formats.h
// -----------------------------------------------------------------------------
// Block formats of quantized weight matrices and their scalar reference
// quantizers / dequantizers. Torch-free; the SIMD kernels that read these
// blocks (agents/kernels/matvec_quant.h) are tested against this file.
//
// A matrix [rows, cols] (nn.Linear layout, rows = outputs) is stored row by
// row; each row is ceil(cols / 32) blocks of 32 consecutive input columns.
// When cols is not a multiple of 32 the last block of every row covers the
// remaining columns and its padding lanes hold code 0 / value ~0; kernels
// multiply them with zero-padded activations, so they never matter.
//
//   q8 (BlockQ8): GGUF Q8_0's block byte layout: fp16 scale d, 32 int8 codes;
//      value = d * q, q in [-127, 127], d = amax / 127 (rounded to fp16 and
//      the codes computed with the rounded d). 34 bytes per 32 weights
//      (8.5 bits per weight).
//   q4 (BlockQ4): GGUF Q4_1's block byte layout: fp16 scale d, fp16 minimum
//      m, 16 bytes of 4-bit codes; value = d * q + m, q in [0, 15]; byte j
//      holds element j in its low nibble and element j + 16 in its high
//      nibble. The quantizer searches (d, m) per block to minimize the
//      squared error (least squares over candidate code assignments, as
//      llama.cpp's K-quant quantizers do), instead of Q4_1's plain
//      (max - min) / 15. 20 bytes per 32 weights (5 bits per weight).
//      Why this one: docs/results.md "Quantized weights" (measured against
//      Q4_0, Q4_1, Q4_0 with a scale search and a Q4_K-like layout).
//   q6 (BlockQ6): 6-bit symmetric blocks for the embedding and lm_head of q4
//      models (as llama.cpp keeps them at Q6_K under its Q4 mixes): fp16
//      scale d, 16 bytes of low nibbles, 8 bytes of high 2-bit pairs;
//      value = d * (q - 32), q in [0, 63]. Code q of element i is
//      (low nibble) | (high pair << 4): the low nibble is in byte i of ql for
//      i < 16 (low half of the byte) and in byte i - 16 for i >= 16 (high
//      half), as in q4; the high pair is bits 2 * (i / 2) .. + 1 of the
//      little-endian 32-bit word W[i % 2] of qh (W[0] = qh[0..3], W[1] =
//      qh[4..7]), i.e. bits 2 * ((i / 2) % 4) .. + 1 of byte
//      4 * (i % 2) + i / 8. (So a SIMD lane holding element i shifts its
//      word right by 2 * (i / 2) and finds element i + 16's pair 16 bits up:
//      one broadcast of qh and one variable shift serve 16 lanes.) The
//      quantizer searches d (least squares over candidate code assignments
//      within +-10% of d = max / -32, max = the value of largest magnitude),
//      as q4 does for (d, m). 26 bytes per 32 weights (6.5 bits per weight).
//      Why this one: docs/results.md "Choice of q6" (measured against plain
//      d = max / -32, a 7-bit variant with a minimum and a Q6_K-like layout).
//
// In memory (weights::QuantizedMatrix, what the decode kernels read) q8
// matrices are these blocks row by row; q4 and q6 matrices are repacked at
// load into groups of 8 rows (BlockQ4x8 / BlockQ6x8, below): the decode
// kernels then compute
// 8 rows at once in 8 SIMD lanes from one weight stream, with no horizontal
// sums and one fp16 conversion per 8 scales (docs/performance.md "q4 decode
// in row groups").
//
// Thread safety: pure functions.
#ifndef QKVSHARE_AGENTS_WEIGHTS_BLOCK_FORMATS_H_
#define QKVSHARE_AGENTS_WEIGHTS_BLOCK_FORMATS_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace qkvshare::agents::weights {

// Weights per block in every quantized format.
inline constexpr int64_t kBlockSize = 32;

struct BlockQ8 {
  uint16_t d;  // fp16 scale
  int8_t qs[kBlockSize];
};
static_assert(sizeof(BlockQ8) == 34, "GGUF Q8_0 block layout");

struct BlockQ4 {
  uint16_t d;  // fp16 scale
  uint16_t m;  // fp16 minimum (value of code 0)
  uint8_t qs[kBlockSize / 2];
};
static_assert(sizeof(BlockQ4) == 20, "GGUF Q4_1 block layout");

struct BlockQ6 {
  uint16_t d;                  // fp16 scale
  uint8_t ql[kBlockSize / 2];  // low nibbles (elements j and j + 16)
  uint8_t qh[kBlockSize / 4];  // high pairs (two 32-bit words, see above)
};
static_assert(sizeof(BlockQ6) == 26, "6.5 bits per weight, no padding");

// Block column b of a group of 8 consecutive rows (8g .. 8g + 7) of a q4
// matrix: the rows' BlockQ4s b, interleaved. d[j] / m[j]: row 8g + j's scale
// and minimum. qs: 4 chunks of 32 bytes; chunk u holds elements 8u .. 8u + 7
// of every row: bytes 32u + 4j .. 32u + 4j + 3 are row j's, and read as
// row j's little-endian 32-bit word W, element 8u + k is the nibble at bit
// Q4x8Shift(k) = {0, 16, 8, 24, 4, 20, 12, 28}[k]. So read as 16-bit lanes,
// (W & 0xF), (W >> 4 & 0xF), (W >> 8 & 0xF), (W >> 12) give element pairs
// (8u, 8u + 1), (8u + 4, 8u + 5), (8u + 2, 8u + 3), (8u + 6, 8u + 7) in the
// two 16-bit lanes of row j: the pairs a pairwise-adding int16 multiply
// (pmaddwd, smlal + addp) sums, with the activation pair broadcast.
// 160 bytes = 8 BlockQ4s: the same 5 bits per weight.
inline constexpr int64_t kQ4GroupRows = 8;
struct BlockQ4x8 {
  uint16_t d[kQ4GroupRows];
  uint16_t m[kQ4GroupRows];
  uint8_t qs[kQ4GroupRows * kBlockSize / 2];
};
static_assert(sizeof(BlockQ4x8) == kQ4GroupRows * sizeof(BlockQ4), "no padding");

// Bit position of element 8u + k (k = 0..7) in a row's 32-bit word of chunk
// u of a BlockQ4x8.
constexpr int Q4x8Shift(int k) { return (k % 2) * 16 + ((k / 2) % 2) * 8 + (k / 4) * 4; }

// Groups of 8 rows of a q4 or q6 matrix of `rows` rows: ceil(rows / 8) (the
// last one padded with zero blocks).
constexpr int64_t Q4Groups(int64_t rows) { return (rows + kQ4GroupRows - 1) / kQ4GroupRows; }

// Row j (0..7) of a group as a BlockQ4, and the inverse (writes only row
// j's bytes of g, so threads may fill different rows of one group).
BlockQ4 GetQ4x8Row(const BlockQ4x8& g, int j);
void SetQ4x8Row(const BlockQ4& b, int j, BlockQ4x8& g);

// Block column b of a group of 8 rows of a q6 matrix: d[j] row j's scale;
// ql: the codes' low nibbles exactly as BlockQ4x8's qs; qh: their high
// pairs, 2 chunks per 32 bytes: bytes 32p + 4j .. + 3 are row j's 32-bit
// word H for chunks u = 2p, 2p + 1, element 8u + k's pair at bit
// Q6x8HighShift(u, k): in the same 16-bit half as its nibble in ql (k odd:
// the upper one), at 2 * (nibble's shift within the half / 4) + 8 * (u % 2).
// So each of a kernel's 4 nibble extractions per chunk (shift 0, 4, 8, 12)
// finds both lanes' pairs with one more shift and mask. 208 bytes = 8
// BlockQ6s.
struct BlockQ6x8 {
  uint16_t d[kQ4GroupRows];
  uint8_t ql[kQ4GroupRows * kBlockSize / 2];
  uint8_t qh[kQ4GroupRows * kBlockSize / 4];
};
static_assert(sizeof(BlockQ6x8) == kQ4GroupRows * sizeof(BlockQ6), "no padding");

// Bit position of element 8u + k's high pair in row j's word H of qh.
constexpr int Q6x8HighShift(int u, int k) {
  return (Q4x8Shift(k) / 16) * 16 + (Q4x8Shift(k) % 16) / 2 + 8 * (u % 2);
}

// As GetQ4x8Row / SetQ4x8Row for q6.
BlockQ6 GetQ6x8Row(const BlockQ6x8& g, int j);
void SetQ6x8Row(const BlockQ6& b, int j, BlockQ6x8& g);

// The same, overloaded on the group type (for code written once for q4 and
// q6 groups).
inline BlockQ4 GetGroupRow(const BlockQ4x8& g, int j) { return GetQ4x8Row(g, j); }
inline BlockQ6 GetGroupRow(const BlockQ6x8& g, int j) { return GetQ6x8Row(g, j); }
inline void SetGroupRow(const BlockQ4& b, int j, BlockQ4x8& g) { SetQ4x8Row(b, j, g); }
inline void SetGroupRow(const BlockQ6& b, int j, BlockQ6x8& g) { SetQ6x8Row(b, j, g); }

// Number of blocks of one row of `cols` columns: ceil(cols / 32).
constexpr int64_t BlocksPerRow(int64_t cols) { return (cols + kBlockSize - 1) / kBlockSize; }

// OK when every value of x is finite with |x| <= 65504 (so every block's
// fp16 scale and minimum are finite): what the row quantizers require.
// Errors: InvalidArgument naming the first bad column and its value.
absl::Status CheckQuantizableRow(absl::Span<const float> x);

// Quantizes one row: x has x.size() = cols values (CheckQuantizableRow OK:
// finite; |x| <= 65504 so the fp16 scales are finite), out has
// BlocksPerRow(cols) blocks.
void QuantizeRowQ8(absl::Span<const float> x, BlockQ8* out);
void QuantizeRowQ4(absl::Span<const float> x, BlockQ4* out);
void QuantizeRowQ6(absl::Span<const float> x, BlockQ6* out);

// Decodes one row of `cols` values (padding lanes are not written).
void DequantizeRowQ8(const BlockQ8* blocks, int64_t cols, float* out);
void DequantizeRowQ4(const BlockQ4* blocks, int64_t cols, float* out);
void DequantizeRowQ6(const BlockQ6* blocks, int64_t cols, float* out);

// The 4-bit code of element i (0..31) of a BlockQ4.
inline int Q4Code(const BlockQ4& b, int i) {
  return i < kBlockSize / 2 ? (b.qs[i] & 0x0F) : (b.qs[i - kBlockSize / 2] >> 4);
}

// The 6-bit code (0..63; value d * (code - 32)) of element i (0..31) of a
// BlockQ6.
inline int Q6Code(const BlockQ6& b, int i) {
  const int low = i < kBlockSize / 2 ? (b.ql[i] & 0x0F) : (b.ql[i - kBlockSize / 2] >> 4);
  const int high = (b.qh[4 * (i % 2) + i / 8] >> (2 * ((i / 2) % 4))) & 3;
  return low | (high << 4);
}

}  // namespace qkvshare::agents::weights

#endif  // QKVSHARE_AGENTS_WEIGHTS_BLOCK_FORMATS_H_
