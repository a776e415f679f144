// File: agents/torch/llama_engine.h
// -----------------------------------------------------------------------------
// INTERNAL to agents/: the libtorch-backed Llama-family forward pass behind
// Model and Sequence. This header is torch-free (pimpl); the implementation
// lives in llama_weights.cc (loading) and llama_forward.cc (forward), the
// only translation units of the runtime that include <torch/torch.h>.
//
// Computation (HF transformers LlamaForCausalLM / Qwen2 / Mistral semantics):
//   x = embed[ids] (fp32 residual stream)
//   per layer: h = RMSNorm(x); q,k,v = h W{q,k,v}^T (+ bias);
//              RoPE (rotate_half) on q, k; K/V -> KvCache (post-RoPE K);
//              GQA attention over cache positions [0, start + n) with a causal
//              mask inside the new chunk only; x += attn W_o^T (+ bias);
//              h = RMSNorm(x); x += (silu(h W_gate^T) * h W_up^T) W_down^T
//   logits = RMSNorm(x) W_lm^T (W_lm = embed when tied)
// Matrix products run in the compute dtype (fp32, or bf16 with fp32
// accumulation); norms, RoPE, softmax and the residual stream in fp32.
// Weights may be stored in a narrower dtype than the compute dtype (bf16 or
// f16 weights, f32 compute: CPUs without bf16 products).
//
// Thread safety: a LlamaEngine is immutable after Create() and may be used
// by many sequences on many threads at once; each State and KvCache belongs
// to one sequence, used by one thread at a time.
#ifndef QKVSHARE_AGENTS_TORCH_LLAMA_ENGINE_H_
#define QKVSHARE_AGENTS_TORCH_LLAMA_ENGINE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "agents/attention_capture.h"
#include "agents/kv_cache.h"
#include "agents/logits.h"
#include "agents/model_config.h"
#include "agents/safetensors.h"
#include "agents/weights/quantized_matrix.h"
#include "base/dtype.h"

namespace qkvshare::agents::internal {

struct EngineOptions {
  // Matrix products and KV cache: kF32 or kBF16.
  DType compute_dtype = DType::kF32;
  // The weight matrices (and embedding) in memory: the compute dtype, or
  // kBF16 / kF16 under f32 compute (decode widens them in the kernels;
  // prefill converts each matrix to f32 when it uses it).
  DType weight_dtype = DType::kF32;
  // Single-token steps through the runtime's matrix-vector kernels (else the
  // plain libtorch path).
  bool decode_kernels = true;
  // Copy every weight into anonymous memory backed by transparent huge pages
  // instead of viewing the file mapping (see ModelOptions; ignored when the
  // kernel's transparent huge pages are `never`).
  bool copy_weights_to_huge_pages = true;
  // Quantize at load (agents/weights/block_formats.h): kQ8 = every projection
  // q8, embedding and lm_head dense in weight_dtype; kQ4 = every projection q4,
  // embedding and lm_head q6 (weights::EmbeddingFormat). Norms and biases
  // stay dense. Prefill dequantizes one tile of rows at a time for its GEMMs
  // (in quantized_gemm_dtype).
  std::optional<weights::BlockFormat> quantize;
  // The dtype of prefill's GEMMs over quantized matrices (tiles dequantized
  // into it, activations converted to it, products back to the compute
  // dtype): kF32, or kBF16 on CPUs with native bf16 products.
  DType quantized_gemm_dtype = DType::kF32;
};

class LlamaEngine {
 public:
  // Per-sequence scratch (tensor views of the cache, decode buffers).
  class State {
   public:
    virtual ~State() = default;
  };

  // Builds tensors over `weights` (which must outlive the engine): weights
  // stored in the compute dtype are used in place (torch::from_blob over the
  // mapping), others are converted once into huge-page-backed memory (all of
  // them with copy_weights_to_huge_pages). Errors: NotFound / InvalidArgument
  // from WeightFiles::Get naming the file and tensor (missing tensor, wrong
  // shape, unsupported dtype); InvalidArgument for an unsupported compute
  // dtype; ResourceExhausted when the copies cannot be mapped.
  static absl::StatusOr<std::unique_ptr<LlamaEngine>> Create(const ModelConfig& config,
                                                             const WeightFiles& weights,
                                                             const EngineOptions& options);
  ~LlamaEngine();

  std::unique_ptr<State> NewState() const;

  // Runs one chunk: `ids` at positions cache.length() .. cache.length() +
  // ids.size() - 1. Writes their K/V into the cache but does not change
  // cache.length() (the caller commits with SetLength on success). Writes
  // logits per `mode` to `logits` (kLast: vocab floats, kAll: ids.size() *
  // vocab, kNone: untouched, may be null). Feeds `recorder` when non-null.
  // REQUIRES: ids non-empty, every id < vocab_size, cache.capacity() >=
  // cache.length() + ids.size(), cache of this model's KvShape and compute
  // dtype. Errors: Internal for a libtorch failure (c10::Error text).
  absl::Status Forward(State& state, KvCache& cache, absl::Span<const int32_t> ids, LogitsMode mode,
                       float* logits, AttentionRecorder* recorder) const;

  DType compute_dtype() const;
  // Weight bytes used in place from the mapping / converted into new memory.
  size_t mapped_weight_bytes() const;
  size_t copied_weight_bytes() const;

  struct Impl;

 private:
  explicit LlamaEngine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Sets the intra-op thread count of libtorch (at::set_num_threads, which is
// PROCESS-GLOBAL: it affects every model and sequence). n <= 0: all cores.
void SetComputeThreads(int n);
// The current intra-op thread count.
int ComputeThreads();

}  // namespace qkvshare::agents::internal

#endif  // QKVSHARE_AGENTS_TORCH_LLAMA_ENGINE_H_
