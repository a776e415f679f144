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
  // Dtype of the matrix products and of the KV cache: kF32 or kBF16.
  // Default (nullopt): kF32 when the embedding is stored as F32, else kBF16
  // (the fast path on CPUs with AVX512-BF16). Weights stored in the compute
  // dtype are used in place from the mapping; others are converted once.
  std::optional<DType> compute_dtype;
  // Single-token decode through the runtime's own matrix-vector kernels
  // (AVX-512 when the CPU has it, else scalar). false: the plain libtorch
  // path, kept as the baseline for benchmarks and tests.
  bool decode_kernels = true;
  // Copy all weights into anonymous memory backed by transparent huge pages
  // (madvise MADV_HUGEPAGE) instead of using the file mapping in place.
  // Decode streams every weight once per token; with 4 KiB pages that costs a
  // TLB miss per 4 KiB (measured here: huge pages stream 1.5x faster on this
  // VM). Costs one private copy of the weights (not shared page cache).
  // Weights that need a dtype conversion always go to such memory.
  bool copy_weights_to_huge_pages = false;
  // Quantize the projections at load from the checkpoint (no f32 copy kept):
  // kQ8 (embedding and lm_head as stored) or kQ4 (embedding and lm_head q8);
  // norms and biases stay dense (docs/results.md "Quantized weights").
  // Decode reads the blocks directly; prefill dequantizes tile by tile. A
  // quantized model is a different model for cards: its fingerprint covers
  // the format. nullopt: dense weights.
  std::optional<weights::BlockFormat> quantized_weights;
};

// Applies a user-facing weights choice (daemon.yaml models.NAME.weights,
// --weights) to `options`: auto keeps them; f32 / bf16 set compute_dtype;
// q8 / q4 set quantized_weights (and compute_dtype f32 when unset). Errors:
// InvalidArgument for f16 (no f16 compute path; the stored f16 weights are
// used by "auto").
absl::Status ApplyWeightFormat(weights::WeightFormat format, ModelOptions* options);

// The compute dtype chosen when ModelOptions::compute_dtype is unset, for
// weights stored as `stored`: kF32 for kF32, else kBF16.
constexpr DType DefaultComputeDType(DType stored) {
  return stored == DType::kF32 ? DType::kF32 : DType::kBF16;
}

class Model {
 public:
  // Loads `dir`. tokenizer.json is optional (see tokenizer()). Errors (each
  // message names the file, and the key or tensor):
  //   NotFound: config.json or the safetensors file(s) missing, a tensor
  //     missing ("tensor 'model.layers.3.mlp.up_proj.weight' not found");
  //   InvalidArgument: malformed or unsupported config (model_type,
  //     rope_scaling, ...), malformed/truncated safetensors, wrong tensor
  //     shape, unsupported dtype, unsupported compute dtype, a malformed
  //     tokenizer.json;
  //   Internal: libtorch failures.
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::string& dir,
                                                     const ModelOptions& options = {});

  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;
  ~Model();

  // The directory as given to Load().
  const std::string& dir() const { return dir_; }
  const ModelConfig& config() const { return config_; }
  DType compute_dtype() const { return compute_dtype_; }
  const ModelOptions& options() const { return options_; }
  // Dtype of model.embed_tokens.weight on disk.
  DType weights_dtype() const { return weights_dtype_; }
  const ModelFingerprint& fingerprint() const { return fingerprint_; }
  // The tokenizer of `dir`/tokenizer.json; nullptr when the directory has
  // none (a weights-only model: token ids in, token ids out).
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
