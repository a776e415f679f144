// File: agents/kernels/decode_step.h
// -----------------------------------------------------------------------------
// The single-token decode step of a Llama-family model over raw weight
// pointers, without libtorch: the runtime's hot path (one step per generated
// token reads every weight once, so it is bound by memory bandwidth and by
// per-op overhead, which libtorch's small-tensor dispatch adds). Same math as
// agents/torch/llama_forward.cc (the prefill path), checked against it by
// the consistency tests (decode vs full forward):
//   RMSNorm, q/k/v = W x (+ b), RoPE (rotate_half, position = cache length),
//   K/V appended to the KvCache, GQA softmax attention over the cache, o_proj,
//   residual, RMSNorm, SwiGLU MLP, residual; final RMSNorm and lm_head.
// Activations are fp32 throughout; weights are F32, BF16 or F16 (or q8 / q4
// blocks, matvec_quant.h) and the KV cache F32, BF16 or F16, independently
// (widened exactly in registers by the Highway kernels of matvec.h); sums in
// fp32.
//
// Parallelism: each matrix-vector product (q/k/v fused into one pass, gate/up
// fused) and the attention heads are split across threads with the caller's
// ParallelFor (the runtime passes libtorch's at::parallel_for, so the
// process-wide thread count applies).
//
// Thread safety: DecodeWeights is read-only and shareable; DecodeScratch and
// the KvCache belong to one sequence.
#ifndef QKVSHARE_AGENTS_KERNELS_DECODE_STEP_H_
#define QKVSHARE_AGENTS_KERNELS_DECODE_STEP_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "agents/attention_capture.h"
#include "agents/kv_cache.h"
#include "base/dtype.h"

namespace qkvshare::agents::kernels {

// The longest chunk the engine runs through these kernels (DecodeChunk):
// single-token decode and short prefill chunks such as a receiver's
// instruction after a card inject, every weight row read once for the
// chunk; longer chunks go to libtorch's GEMMs (agents/torch/llama_forward.cc).
inline constexpr int64_t kMaxKernelChunkTokens = 16;

// Non-owning views of one decoder layer. Matrices are [out, in] row-major in
// DecodeWeights::weight_dtype; biases fp32 (nullptr when absent); norms fp32.
struct DecodeLayerWeights {
  const void* q = nullptr;     // [H*hd, D]
  const void* k = nullptr;     // [KV*hd, D]
  const void* v = nullptr;     // [KV*hd, D]
  const void* o = nullptr;     // [D, H*hd]
  const void* gate = nullptr;  // [I, D]
  const void* up = nullptr;    // [I, D]
  const void* down = nullptr;  // [D, I]
  const float* q_bias = nullptr;
  const float* k_bias = nullptr;
  const float* v_bias = nullptr;
  const float* o_bias = nullptr;
  const float* gate_bias = nullptr;
  const float* up_bias = nullptr;
  const float* down_bias = nullptr;
  const float* input_norm = nullptr;  // [D]
  const float* post_norm = nullptr;   // [D]
};

// How matrices are stored: dense in DecodeWeights::weight_dtype, or in the
// q8 / q4 / q6 blocks of agents/weights/block_formats.h (BlocksPerRow(cols)
// blocks per row, row-major).
enum class MatrixEncoding : uint8_t { kDense, kQ8, kQ4, kQ6 };

struct DecodeWeights {
  DType weight_dtype = DType::kF32;  // of every dense matrix and the embedding
  // Encoding of the layers' projections, and of the embedding and lm_head.
  MatrixEncoding layer_encoding = MatrixEncoding::kDense;
  MatrixEncoding embed_encoding = MatrixEncoding::kDense;
  DType kv_dtype = DType::kF32;  // of the KV cache
  int hidden = 0;
  int intermediate = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int vocab = 0;
  double rms_norm_eps = 1e-6;
  const void* embed = nullptr;        // [vocab, D]
  const void* lm_head = nullptr;      // [vocab, D]
  const float* final_norm = nullptr;  // [D]
  // RoPE tables [rope_positions, head_dim / 2] fp32 (rotate_half pairs).
  const float* rope_cos = nullptr;
  const float* rope_sin = nullptr;
  int64_t rope_positions = 0;
  std::vector<DecodeLayerWeights> layers;
};

// Per-sequence work buffers, grown on first use and reused.
struct DecodeScratch {
  std::vector<float> x, h, qkv, attn, tmp, mlp, probs, avg;
};

// Runs fn(begin, end) over disjoint chunks covering [0, n), each at least
// `grain` long (except maybe the last), possibly on several threads; returns
// when all are done.
using ParallelFor =
    std::function<void(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn)>;

// Runs `token` at position cache.length(): writes its K/V at that position
// (cache.length() is NOT advanced: the caller commits), writes vocab logits
// to `logits` unless it is null, feeds `recorder` unless it is null.
// REQUIRES: cache.capacity() > cache.length(), cache.length() <
// w.rope_positions, cache dtype == w.kv_dtype, 0 <= token < w.vocab.
void DecodeStep(const DecodeWeights& w, int32_t token, KvCache& cache, DecodeScratch& scratch,
                float* logits, AttentionRecorder* recorder, const ParallelFor& parallel_for);

// MatMulRows (matvec.h) over a matrix of any encoding: Y[t, r] = W[r] . X[t]
// (+ bias[r]) for the n fp32 vectors X[t] of [cols] (stride x_stride), rows
// r in [row_begin, row_end) of Y (stride y_stride, indexed by absolute row).
// w: dense [rows, cols] in `dtype`, or q8 / q4 / q6 blocks (`dtype` unused; the
// block kernels of matvec_quant.h run once per vector over the same rows).
void MatMulEncodedRows(const void* w, DType dtype, MatrixEncoding encoding, int64_t cols,
                       const float* x, int64_t x_stride, int64_t n, const float* bias, float* y,
                       int64_t y_stride, int64_t row_begin, int64_t row_end);

// A short chunk (a few to a few dozen tokens, e.g. a receiver's instruction
// after a card inject) through the same kernels: tokens[0 .. n) at positions
// cache.length() .. + n - 1, causal; every dense weight row is read once for
// all n tokens (MatMulRows; q8 / q4 rows once per token, while in cache). Logits: none when
// `logits` is null, else of the last token ([vocab]) or, with all_logits, of every token ([n,
// vocab]). Same contract as DecodeStep otherwise (which is n == 1). REQUIRES: n >= 1,
// cache.capacity() >= cache.length() + n, cache.length() + n <= w.rope_positions.
void DecodeChunk(const DecodeWeights& w, const int32_t* tokens, int64_t n, KvCache& cache,
                 DecodeScratch& scratch, float* logits, bool all_logits,
                 AttentionRecorder* recorder, const ParallelFor& parallel_for);

}  // namespace qkvshare::agents::kernels

#endif  // QKVSHARE_AGENTS_KERNELS_DECODE_STEP_H_
