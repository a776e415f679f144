// File: agents/weights/quantized_matrix.h
// -----------------------------------------------------------------------------
// QuantizedMatrix: one weight matrix [rows, cols] (nn.Linear layout) held in
// a block format of block_formats.h, quantized at load straight from the
// checkpoint's f32 / bf16 / f16 data one row at a time (no f32 copy of the
// matrix is ever made). Owns its blocks (64-byte aligned).
//
// WeightFormat is the user-facing choice (daemon.yaml models.NAME.weights,
// --weights): "auto" / "f32" / "bf16" / "f16" keep dense weights (the runtime's
// dtype logic), "q8" / "q4" quantize the projections at load; the tensor
// policy (EmbeddingFormat; docs/results.md "Quantized weights"): q8:
// embedding and lm_head dense 16-bit (as stored, bf16 from an f32
// checkpoint); q4: embedding and lm_head in q6; norms and biases always f32.
//
// Thread safety: immutable after Quantize(); QuantizeRows may be called on
// disjoint row ranges of one matrix from several threads.
#ifndef QKVSHARE_AGENTS_WEIGHTS_QUANTIZED_MATRIX_H_
#define QKVSHARE_AGENTS_WEIGHTS_QUANTIZED_MATRIX_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agents/weights/block_formats.h"
#include "base/dtype.h"

namespace qkvshare::agents::weights {

enum class WeightFormat : uint8_t { kAuto, kF32, kBF16, kF16, kQ8, kQ4 };

// "auto", "f32", "bf16", "f16", "q8", "q4".
std::string_view WeightFormatName(WeightFormat f);

// Parses a WeightFormatName. Errors: InvalidArgument naming the value and
// the accepted names.
absl::StatusOr<WeightFormat> ParseWeightFormat(std::string_view name);

// The block format of a quantized matrix. kQ8 and kQ4 are also the
// projections' format of a quantized model (ModelOptions::quantized_weights);
// kQ6 is only used for the embedding and lm_head of q4 models.
enum class BlockFormat : uint8_t { kQ8, kQ4, kQ6 };

// "q8", "q4", "q6".
std::string_view BlockFormatName(BlockFormat f);

// Bytes of one block of `f` (34, 20 or 26).
constexpr size_t BlockBytes(BlockFormat f) {
  return f == BlockFormat::kQ8 ? sizeof(BlockQ8)
                               : (f == BlockFormat::kQ4 ? sizeof(BlockQ4) : sizeof(BlockQ6));
}

// The tensor policy of a model whose projections are quantized to `layers`
// (kQ8 or kQ4): the format of its token embedding and lm_head, nullopt when
// they stay dense 16-bit (kQ8 -> nullopt: as stored, bf16 from an f32
// checkpoint; kQ4 -> kQ6; why: docs/results.md "Quantized weights").
std::optional<BlockFormat> EmbeddingFormat(BlockFormat layers);

// What a quantized model's fingerprint covers beyond the checkpoint
// (agents/model_fingerprint.h FingerprintWithWeightFormat): the projections'
// format, plus "+embed:" and the embedding's format ("16bit" when
// EmbeddingFormat keeps it dense): "q8+embed:16bit", "q4+embed:q6". Derived
// from EmbeddingFormat, so a change of the policy changes the fingerprint of
// the models it affects.
std::string WeightPolicyTag(BlockFormat layers);

class QuantizedMatrix {
 public:
  // An allocated, not yet filled matrix; fill it with QuantizeRows.
  // REQUIRES: rows >= 0, cols >= 1.
  QuantizedMatrix(BlockFormat format, int64_t rows, int64_t cols);

  // Quantizes rows [row_begin, row_end) of `src` ([rows, cols] of `dtype`,
  // row-major) with the reference quantizer. Errors: InvalidArgument naming
  // the row and column of the first value that is not finite or exceeds
  // 65504 (CheckQuantizableRow); that row and the later ones of the range
  // are left unfilled (the caller drops the matrix).
  absl::Status QuantizeRows(const void* src, DType dtype, int64_t row_begin, int64_t row_end);

  // Copies row `row`'s blocks_per_row() blocks of format() (BlockQ8 /
  // BlockQ4 / BlockQ6, the layouts of block_formats.h; e.g. read from a GGUF
  // file) into the matrix, in whatever layout the kernels read.
  // REQUIRES: 0 <= row < rows().
  void SetRowBlocks(int64_t row, const void* blocks);

  // The inverse of SetRowBlocks: row `row`'s blocks_per_row() blocks of
  // format() into `out`. REQUIRES: 0 <= row < rows().
  void GetRowBlocks(int64_t row, void* out) const;

  BlockFormat format() const { return format_; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int64_t blocks_per_row() const { return BlocksPerRow(cols_); }
  // The kernels' storage: q8: rows * blocks_per_row blocks, row-major;
  // q4 / q6: Q4Groups(rows) * blocks_per_row BlockQ4x8s / BlockQ6x8s,
  // group-major (group g's block column b at g * blocks_per_row + b;
  // block_formats.h).
  const void* blocks() const { return data_.get(); }
  size_t bytes() const { return bytes_; }

 private:
  struct Free {
    void operator()(void* p) const;
  };
  BlockFormat format_;
  int64_t rows_, cols_;
  size_t bytes_;
  std::unique_ptr<void, Free> data_;
};

}  // namespace qkvshare::agents::weights

#endif  // QKVSHARE_AGENTS_WEIGHTS_QUANTIZED_MATRIX_H_
