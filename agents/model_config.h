// File: agents/model_config.h
// -----------------------------------------------------------------------------
// ModelConfig: the architecture of a Hugging Face Llama-family checkpoint
// (model_type "llama", "mistral" or "qwen2"), parsed from the model
// directory's config.json and, when present, generation_config.json.
// Torch-free: the daemon, cachecard/ and eval code read it directly.
//
// Supported (anything else is rejected with InvalidArgument naming the file
// and key): hidden_act "silu" (SwiGLU MLP), RMSNorm, rotary embeddings in the
// rotate_half convention with rope_scaling null / "linear" / "llama3"
// ("default" is accepted as null), GQA (num_key_value_heads), an optional
// head_dim override, tied or untied output projection, biases on q/k/v
// (qwen2 always; llama with attention_bias, which also adds an o_proj bias)
// and on the MLP (llama mlp_bias).
//
// Lifecycle: a plain value; parse once per model load. Thread safety: a
// const ModelConfig may be read from any thread.
//
// Example:
//   QKV_ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromDirectory(dir));
//   KvShape shape = config.kv_shape();
#ifndef QKVSHARE_AGENTS_MODEL_CONFIG_H_
#define QKVSHARE_AGENTS_MODEL_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "agents/kv_cache.h"

namespace qkvshare::agents {

enum class ModelArch { kLlama, kMistral, kQwen2 };

// "llama", "mistral", "qwen2".
std::string_view ModelArchName(ModelArch arch);

// config.json "rope_scaling". Frequencies are those of HF transformers'
// modeling_rope_utils (_compute_linear_scaling / _compute_llama3_parameters).
struct RopeScaling {
  enum class Type { kNone, kLinear, kLlama3 };
  Type type = Type::kNone;
  // kLinear: positions are divided by `factor`. kLlama3: low frequencies
  // (wavelength > original_max_position_embeddings / low_freq_factor) are
  // divided by `factor`, high ones (wavelength < original / high_freq_factor)
  // kept, and the band between interpolated smoothly.
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

// Defaults from generation_config.json (all optional there).
struct GenerationDefaults {
  // Ids that end generation: generation_config.json "eos_token_id" (int or
  // list) when present, else config.json's.
  std::vector<int32_t> eos_token_ids;
  bool do_sample = false;
  std::optional<float> temperature;
  std::optional<int> top_k;
  std::optional<float> top_p;
  // "max_length": prompt + completion tokens, if given.
  std::optional<int64_t> max_length;
};

struct ModelConfig {
  ModelArch arch = ModelArch::kLlama;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;    // num_hidden_layers
  int num_heads = 0;     // num_attention_heads (query heads)
  int num_kv_heads = 0;  // num_key_value_heads (defaults to num_heads)
  int head_dim = 0;      // "head_dim" if given, else hidden_size / num_heads
  int vocab_size = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  int64_t max_position_embeddings = 0;
  // Sliding-window attention (mistral "sliding_window", qwen2 when
  // "use_sliding_window"); nullopt when off. The runtime caps the context at
  // the window, so attention never needs to slide (see context_limit()).
  std::optional<int64_t> sliding_window;
  bool tie_word_embeddings = false;  // no lm_head.weight: reuse embed_tokens
  bool qkv_bias = false;             // q_proj/k_proj/v_proj have .bias
  bool o_bias = false;               // o_proj has .bias (llama attention_bias)
  bool mlp_bias = false;             // gate/up/down_proj have .bias
  std::optional<int32_t> bos_token_id;
  std::vector<int32_t> eos_token_ids;  // config.json "eos_token_id"
  GenerationDefaults generation;

  // Query heads per kv head (GQA group size).
  int group_size() const { return num_heads / num_kv_heads; }
  // Geometry of this model's KV cache.
  KvShape kv_shape() const { return {num_layers, num_kv_heads, head_dim}; }
  // Longest sequence (tokens) the runtime accepts: max_position_embeddings,
  // capped by the sliding window when there is one.
  int64_t context_limit() const;

  // Reads `dir`/config.json and, if it exists, `dir`/generation_config.json.
  // Errors: NotFound when config.json is missing; InvalidArgument naming the
  // file and key for malformed JSON, a missing or out-of-range field, an
  // unsupported model_type, hidden_act or rope_scaling.
  static absl::StatusOr<ModelConfig> FromDirectory(const std::string& dir);

  // Same from JSON text. `generation_json` may be empty (no file). The
  // `*_origin` strings name the sources in error messages.
  static absl::StatusOr<ModelConfig> FromJson(std::string_view config_json,
                                              std::string_view config_origin,
                                              std::string_view generation_json = {},
                                              std::string_view generation_origin = {});
};

}  // namespace qkvshare::agents

#endif  // QKVSHARE_AGENTS_MODEL_CONFIG_H_
