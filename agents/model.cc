#include "agents/model.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agents/file_util.h"
#include "agents/gguf/gguf_file.h"
#include "agents/gguf/gguf_model.h"
#include "agents/gguf/gguf_tokenizer.h"
#include "agents/safetensors.h"
#include "agents/torch/llama_engine.h"
#include "base/cpu_info.h"
#include "base/status_macros.h"

namespace qkvshare::agents {

RuntimeDTypes ResolveRuntimeDTypes(std::optional<DType> requested, DType stored, bool native_bf16) {
  RuntimeDTypes r;
  const bool stored16 = stored != DType::kF32;
  if (requested == DType::kF32 || (!requested.has_value() && !stored16)) return r;
  if (native_bf16) {
    r.compute = r.weights = DType::kBF16;
    return r;
  }
  // No bf16 products on this CPU: f32 compute over 16-bit weights.
  r.weights = stored16 ? stored : DType::kBF16;
  if (requested == DType::kBF16) {
    r.note =
        absl::StrCat("bf16 requested, but this CPU has no bf16 dot products: computing f32 over ",
                     std::string(DTypeName(r.weights)), " weights");
  }
  return r;
}

DType DefaultComputeDType(DType stored) {
  return ResolveRuntimeDTypes(std::nullopt, stored, CpuHasNativeBf16()).compute;
}

Model::~Model() = default;

std::string Model::weights_summary() const {
  if (!options_.quantized_weights.has_value()) {
    return std::string(DTypeName(memory_weights_dtype_));
  }
  return *options_.quantized_weights == weights::BlockFormat::kQ8 ? "q8" : "q4";
}

std::string Model::runtime_summary() const {
  std::string weights = weights_summary();
  if (options_.quantized_weights.has_value()) {
    const std::optional<weights::BlockFormat> embedding =
        weights::EmbeddingFormat(*options_.quantized_weights);
    absl::StrAppend(&weights, " (embedding ",
                    embedding.has_value() ? std::string(weights::BlockFormatName(*embedding))
                                          : std::string(DTypeName(memory_weights_dtype_)),
                    ")");
  }
  std::string s = absl::StrCat("compute ", std::string(DTypeName(compute_dtype_)), ", weights ",
                               weights, ", kernels ", BestSimdTargetName());
  if (!runtime_note_.empty()) absl::StrAppend(&s, " (", runtime_note_, ")");
  return s;
}

absl::Status ApplyWeightFormat(weights::WeightFormat format, ModelOptions* options) {
  switch (format) {
    case weights::WeightFormat::kAuto:
      return absl::OkStatus();
    case weights::WeightFormat::kF32:
      options->compute_dtype = DType::kF32;
      options->dense_weights = true;
      return absl::OkStatus();
    case weights::WeightFormat::kBF16:
      options->compute_dtype = DType::kBF16;
      options->dense_weights = true;
      return absl::OkStatus();
    case weights::WeightFormat::kF16:
      return absl::InvalidArgumentError(
          "weights f16: no f16 compute path (use auto to run stored f16 weights)");
    case weights::WeightFormat::kQ8:
    case weights::WeightFormat::kQ4:
      options->quantized_weights = format == weights::WeightFormat::kQ8 ? weights::BlockFormat::kQ8
                                                                        : weights::BlockFormat::kQ4;
      if (!options->compute_dtype.has_value()) options->compute_dtype = DType::kF32;
      return absl::OkStatus();
  }
  return absl::OkStatus();
}

size_t Model::mapped_weight_bytes() const { return engine_->mapped_weight_bytes(); }
size_t Model::copied_weight_bytes() const { return engine_->copied_weight_bytes(); }

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const std::string& dir,
                                                   const ModelOptions& requested) {
  std::unique_ptr<Model> model(new Model());
  model->dir_ = dir;
  model->options_ = requested;
  ModelOptions& options = model->options_;
  std::string tokenizer_json;
  std::shared_ptr<const gguf::GgufFile> gguf_file;
  if (IsRegularFile(dir) || absl::EndsWith(dir, ".gguf")) {
    // A GGUF file (agents/gguf/gguf_model.h).
    QKV_ASSIGN_OR_RETURN(std::unique_ptr<gguf::GgufFile> opened, gguf::GgufFile::Open(dir));
    gguf_file = std::move(opened);
    QKV_ASSIGN_OR_RETURN(model->config_, gguf::ConfigFromGguf(*gguf_file));
    QKV_ASSIGN_OR_RETURN(tokenizer_json, gguf::TokenizerJsonFromGguf(*gguf_file));
    if (!tokenizer_json.empty()) {
      QKV_ASSIGN_OR_RETURN(model->tokenizer_,
                           Tokenizer::FromJson(tokenizer_json, dir + " (tokenizer.ggml.*)"));
    }
    // weights "auto" runs the projections in the runtime format closest to
    // the file's (Q8_0 -> q8, Q4_0 / Q4_1 -> q4, F16 -> dense); so does the
    // daemon's default dtype f32 (quantized models compute in f32).
    if (!options.quantized_weights.has_value() && !options.dense_weights &&
        options.compute_dtype.value_or(DType::kF32) == DType::kF32) {
      options.quantized_weights = gguf::NativeLayerFormat(*gguf_file);
      if (options.quantized_weights.has_value()) options.compute_dtype = DType::kF32;
    }
    // Before the weights: their conversion drops the file's pages, which
    // sampling them afterwards would fault in again.
    QKV_ASSIGN_OR_RETURN(model->fingerprint_,
                         ComputeGgufModelFingerprint(model->config_, tokenizer_json, *gguf_file));
    QKV_ASSIGN_OR_RETURN(model->weights_, gguf::WeightsFromGguf(gguf_file, model->config_,
                                                                options.quantized_weights));
  } else {
    QKV_ASSIGN_OR_RETURN(model->config_, ModelConfig::FromDirectory(dir));
    const std::string tokenizer_path = JoinPath(dir, "tokenizer.json");
    if (PathExists(tokenizer_path)) {
      QKV_ASSIGN_OR_RETURN(tokenizer_json, ReadFileToString(tokenizer_path));
      QKV_ASSIGN_OR_RETURN(model->tokenizer_, Tokenizer::FromJson(tokenizer_json, tokenizer_path));
    }
    QKV_ASSIGN_OR_RETURN(model->weights_, WeightFiles::Open(dir));
  }
  const int64_t vocab = model->config_.vocab_size, hidden = model->config_.hidden_size;
  QKV_ASSIGN_OR_RETURN(const TensorInfo* embed,
                       model->weights_->Get("model.embed_tokens.weight", {vocab, hidden}));
  model->weights_dtype_ = *embed->dtype;
  if (options.compute_dtype.has_value() && *options.compute_dtype != DType::kF32 &&
      *options.compute_dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat("compute dtype ",
                                                   std::string(DTypeName(*options.compute_dtype)),
                                                   " is not supported (f32, bf16)"));
  }
  RuntimeDTypes dtypes =
      ResolveRuntimeDTypes(options.compute_dtype, *embed->dtype, CpuHasNativeBf16());
  // Quantized models compute in f32; what stays dense (the embedding and
  // lm_head of q8) is held 16-bit: a 16-bit checkpoint's dtype, bf16 for an
  // f32 one (the decode kernels widen it). On llama-1b (tied 128256 x 2048)
  // an f32 lm_head was half the bytes q8 decode streams per token (0.74x
  // llama.cpp Q8_0); bf16 costs q8 KL 0.00024 -> 0.00026 on stories260K
  // (docs/results.md "Quantized weights").
  if (options.quantized_weights.has_value() && dtypes.compute == DType::kF32) {
    dtypes.weights = *embed->dtype != DType::kF32 ? *embed->dtype : DType::kBF16;
  }
  model->compute_dtype_ = dtypes.compute;
  model->memory_weights_dtype_ = dtypes.weights;
  model->runtime_note_ = dtypes.note;
  if (gguf_file == nullptr) {
    QKV_ASSIGN_OR_RETURN(model->fingerprint_,
                         ComputeModelFingerprint(model->config_, tokenizer_json, *model->weights_));
  }
  if (options.quantized_weights.has_value()) {
    QKV_ASSIGN_OR_RETURN(
        model->fingerprint_,
        FingerprintWithWeightFormat(model->fingerprint_,
                                    weights::WeightPolicyTag(*options.quantized_weights)));
  }
  internal::EngineOptions engine_options;
  engine_options.compute_dtype = model->compute_dtype_;
  engine_options.weight_dtype = model->memory_weights_dtype_;
  engine_options.decode_kernels = options.decode_kernels;
  engine_options.copy_weights_to_huge_pages = options.copy_weights_to_huge_pages;
  engine_options.quantize = options.quantized_weights;
  const bool q4_bf16_gemm =
      options.quantized_weights == weights::BlockFormat::kQ4 && CpuHasNativeBf16();
  engine_options.quantized_gemm_dtype =
      options.quantized_gemm_dtype.value_or(q4_bf16_gemm ? DType::kBF16 : DType::kF32);
  QKV_ASSIGN_OR_RETURN(model->engine_, internal::LlamaEngine::Create(
                                           model->config_, *model->weights_, engine_options));
  return model;
}

}  // namespace qkvshare::agents
