// File: agents/model.h
// -----------------------------------------------------------------------------
// Model: one loaded Llama-family checkpoint (HF directory: config.json,
// generation_config.json, model.safetensors or sharded, tokenizer.json):
// config, weights, tokenizer and fingerprint. The weights are memory-mapped;
// a Model is immutable and shared by every Sequence (agent) that runs it,
// through a reference-counted ModelHandle (see agents/model_registry.h for
// sharing by directory).
//
// Torch-free header: the forward pass lives in agents/torch/ behind
// internal::LlamaEngine.
//
// Lifecycle: Load() -> share as ModelHandle -> destroyed (unmapped) when the
// last handle goes. Thread safety: all methods are const and safe to call
// concurrently; sequences on different threads may share one Model.
//
// Example:
//   QKV_ASSIGN_OR_RETURN(std::unique_ptr<Model> model,
//                        Model::Load("models/stories260K", {DType::kF32}));
//   ModelHandle handle = std::move(model);
//   QKV_ASSIGN_OR_RETURN(auto seq, Sequence::Create(handle));
#ifndef QKVSHARE_AGENTS_MODEL_H_
#define QKVSHARE_AGENTS_MODEL_H_

#include <cstddef>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "agents/model_config.h"
#include "agents/model_fingerprint.h"
#include "agents/tokenizer/tokenizer.h"
#include "agents/weights/quantized_matrix.h"
#include "base/dtype.h"

namespace qkvshare::agents {

namespace internal {
class LlamaEngine;
}  // namespace internal

class WeightFiles;

struct ModelOptions {
  // Dtype of the matrix products and of the KV cache: kF32 or kBF16, or
  // nullopt ("auto", the default). What actually runs (RuntimeDTypes) also
  // depends on the CPU: bf16 products only where it multiplies bf16 natively
  // (CpuHasNativeBf16(): AVX512_BF16, AMX, Arm BF16); elsewhere a 16-bit
  // checkpoint keeps its 16-bit weights in memory (decode widens them in the
  // kernels, half the bytes to stream) and computes in f32 (prefill converts
  // each matrix to f32 when it uses it). See ResolveRuntimeDTypes().
  std::optional<DType> compute_dtype;
  // Single-token decode through the runtime's own Highway kernels
  // (agents/kernels). false: the plain libtorch path, kept as the baseline
  // for benchmarks and tests.
  bool decode_kernels = true;
  // Copy all weights into anonymous memory backed by transparent huge pages
  // (madvise MADV_HUGEPAGE) instead of using the file mapping in place, when
  // the kernel offers them (/sys/kernel/mm/transparent_hugepage/enabled is
  // `always` or `madvise`; with `never` the mapping is used). Decode streams
  // every weight once per token; with 4 KiB pages that costs a TLB miss per
  // 4 KiB: on a 2-core Zen 3 VM, small-100m decode at depth 512 ran 1.15-1.2x
  // faster (docs/performance.md). The file's pages are dropped from the
  // process after the copy (they stay in the page cache as clean, reclaimable
  // memory), so the resident size does not double; the cost is that the
  // copy is private to this process and cannot be reclaimed under memory
  // pressure like mapped file pages. false: use the mapping (shared page
  // cache, instant load). Weights that need a dtype conversion always go to
  // such memory.
  bool copy_weights_to_huge_pages = true;
  // Quantize the projections at load from the checkpoint (no f32 copy kept):
  // kQ8 (embedding and lm_head dense 16-bit: as stored, bf16 from an f32
  // checkpoint) or kQ4 (embedding and lm_head q6, weights::EmbeddingFormat);
  // norms and biases stay dense (docs/results.md "Quantized weights").
  // Decode reads the blocks directly; prefill dequantizes tile by tile. A
  // quantized model is a different model for cards: its fingerprint covers
  // the format. nullopt: dense weights.
  std::optional<weights::BlockFormat> quantized_weights;
  // Dense weights asked for explicitly (weights f32 / bf16, set by
  // ApplyWeightFormat). Only matters for a GGUF file: without it, and with
  // no quantized_weights and a compute dtype unset or f32, the file's
  // projections run in their own format (Q8_0 -> q8, Q4_0 -> q4); with it,
  // they are decoded to dense weights. HF checkpoints ignore it.
  bool dense_weights = false;
  // The dtype of prefill's GEMMs over quantized projections (tiles
  // dequantized into it, activations rounded to it for the product): kF32 or
  // kBF16. nullopt: kBF16 for q4 where the CPU has native bf16 products
  // (CpuHasNativeBf16(): q4 prefill 512 of small-100m on Zen 5, 1506-1966 ->
  // 3095-3189 tokens/s), else kF32. Not for q8: on stories260K bf16 GEMMs
  // raise q8's mean KL from 0.00026 to 0.00034 (past its 0.0003 goal) and
  // leave q4's nearly unchanged (0.03987 -> 0.04009); docs/results.md
  // "Quantized weights". Activations stay f32 between the GEMMs; decode (the kernels)
  // is not affected.
  std::optional<DType> quantized_gemm_dtype;
};

// What a model runs with, resolved from the request, the stored dtype and
// the CPU.
struct RuntimeDTypes {
  DType compute = DType::kF32;  // matrix products and KV cache: kF32 or kBF16
  DType weights = DType::kF32;  // the matrices in memory: kF32, kBF16 or kF16
  // Why this differs from the request ("" when it does not), for logs.
  std::string note;
};

// The rules of ModelOptions::compute_dtype, for weights stored as `stored`
// on a CPU with (`native_bf16`) or without native bf16 products:
//   auto, stored f32                -> compute f32, weights f32;
//   auto, stored bf16/f16, native   -> compute bf16, weights bf16;
//   auto, stored bf16/f16, no native-> compute f32, weights as stored;
//   f32                             -> compute f32, weights f32;
//   bf16, native                    -> compute bf16, weights bf16;
//   bf16, no native                 -> compute f32, weights bf16 (as stored
//                                      when f16), with a note: bf16 GEMMs
//                                      without bf16 instructions run ~50x
//                                      slower than f32 ones.
RuntimeDTypes ResolveRuntimeDTypes(std::optional<DType> requested, DType stored, bool native_bf16);

// The compute dtype "auto" picks on this CPU for weights stored as `stored`.
DType DefaultComputeDType(DType stored);

// Applies a user-facing weights choice (daemon.yaml models.NAME.weights,
// --weights) to `options`: auto keeps them; f32 / bf16 set compute_dtype
// and dense_weights;
// q8 / q4 set quantized_weights (and compute_dtype f32 when unset). Errors:
// InvalidArgument for f16 (no f16 compute path; the stored f16 weights are
// used by "auto").
absl::Status ApplyWeightFormat(weights::WeightFormat format, ModelOptions* options);

class Model {
 public:
  // Loads `dir`: an HF directory, or a GGUF file (a regular file: llama.cpp
  // / Ollama model files; agents/gguf/gguf_model.h says what loads). For a
  // GGUF file with `options` asking nothing (weights "auto": no
  // quantized_weights, no dense_weights, compute_dtype unset or f32), the
  // projections run in the format
  // closest to the file's (Q8_0 -> q8, Q4_0/Q4_1/K-quants -> q4, F16/F32 ->
  // dense), also under compute_dtype f32 unless dense_weights; options()
  // then shows that choice. tokenizer.json (or the GGUF
  // tokenizer metadata) is optional (see tokenizer()). Errors (each
  // message names the file, and the key or tensor):
  //   NotFound: config.json or the safetensors file(s) missing, a tensor
  //     missing ("tensor 'model.layers.3.mlp.up_proj.weight' not found");
  //   InvalidArgument: malformed or unsupported config (model_type,
  //     rope_scaling, ...), malformed/truncated safetensors, wrong tensor
  //     shape, unsupported dtype, unsupported compute dtype, a malformed
  //     tokenizer.json;
  //   Internal: libtorch failures.
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::string& dir,
                                                     const ModelOptions& requested = {});

  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;
  ~Model();

  // The directory (or GGUF file) as given to Load().
  const std::string& dir() const { return dir_; }
  const ModelConfig& config() const { return config_; }
  // Dtype of the matrix products and of the KV cache (what runs, after the
  // CPU rules of ModelOptions::compute_dtype).
  DType compute_dtype() const { return compute_dtype_; }
  // Dtype of the weight matrices in memory (bf16/f16 with f32 compute: widened
  // in the decode kernels, converted per matrix in prefill).
  DType memory_weights_dtype() const { return memory_weights_dtype_; }
  // The weight matrices in memory, for logs and AgentInfo.weights_dtype:
  // "q8" / "q4" when quantized at load (ModelOptions::quantized_weights),
  // else the name of memory_weights_dtype() ("f32", "bf16", "f16").
  std::string weights_summary() const;
  // One line for logs and `qkvctl agents`, e.g. "compute f32, weights bf16,
  // kernels AVX2" (weights "q4 (embedding q6)" when quantized) plus the note
  // of RuntimeDTypes when the request was changed.
  std::string runtime_summary() const;
  // The options the model runs with: as requested, with a GGUF file's
  // native format filled in under "auto".
  const ModelOptions& options() const { return options_; }
  // Dtype of model.embed_tokens.weight on disk.
  DType weights_dtype() const { return weights_dtype_; }
  const ModelFingerprint& fingerprint() const { return fingerprint_; }
  // The tokenizer of `dir`/tokenizer.json (a GGUF file: its tokenizer.ggml.*
  // metadata); nullptr when there is none (a weights-only model: token ids
  // in, token ids out).
  const Tokenizer* tokenizer() const { return tokenizer_.get(); }
  // Weight bytes used in place from the mapping, and converted copies.
  size_t mapped_weight_bytes() const;
  size_t copied_weight_bytes() const;

  // INTERNAL: the forward pass, for Sequence.
  const internal::LlamaEngine& engine() const { return *engine_; }

 private:
  Model() = default;

  std::string dir_;
  ModelConfig config_;
  DType compute_dtype_ = DType::kF32;
  DType memory_weights_dtype_ = DType::kF32;
  std::string runtime_note_;
  ModelOptions options_;
  DType weights_dtype_ = DType::kF32;
  ModelFingerprint fingerprint_;
  std::unique_ptr<Tokenizer> tokenizer_;
  // Declaration order matters: the engine views the mapped files.
  std::unique_ptr<WeightFiles> weights_;
  std::unique_ptr<internal::LlamaEngine> engine_;
};

// A shared, read-only reference to a loaded Model; the Model is destroyed
// when the last handle goes. Sequences hold one.
using ModelHandle = std::shared_ptr<const Model>;

}  // namespace qkvshare::agents

#endif  // QKVSHARE_AGENTS_MODEL_H_
