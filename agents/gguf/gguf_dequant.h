// File: agents/gguf/gguf_dequant.h
// -----------------------------------------------------------------------------
// Scalar decoders of GGUF tensor rows to f32, for the tensors the runtime
// cannot use as they are (ggml's reference dequantize_row_* of ggml-quants.c,
// same arithmetic order, so values are bit-identical to llama.cpp's gguf-py
// and to ggml's reference): F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
// Q4_K, Q5_K, Q6_K. Torch-free; cost: one pass over the row.
//
// Thread safety: pure functions.
#ifndef QKVSHARE_AGENTS_GGUF_GGUF_DEQUANT_H_
#define QKVSHARE_AGENTS_GGUF_GGUF_DEQUANT_H_

#include <cstdint>
#include <string>

#include "agents/gguf/gguf_file.h"

namespace qkvshare::agents::gguf {

// True when DequantizeRow decodes `type`.
bool CanDequantize(GgmlType type);

// The decodable types, for error messages: "f32, f16, bf16, q8_0, ...".
std::string DequantizableTypeNames();

// Decodes row `row` of `t` (t.row_length() values) into `out`.
// REQUIRES: CanDequantize(t.type), 0 <= row < t.rows().
void DequantizeRow(const GgufTensor& t, int64_t row, float* out);

}  // namespace qkvshare::agents::gguf

#endif  // QKVSHARE_AGENTS_GGUF_GGUF_DEQUANT_H_
