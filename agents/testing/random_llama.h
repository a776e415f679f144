// File: agents/testing/random_llama.h
// -----------------------------------------------------------------------------
// Test utilities: write safetensors files and complete random Llama-family
// model directories (config.json, generation_config.json, safetensors
// weights, optionally a tokenizer.json copy) from C++, so tests need neither
// python nor /work/shared.
//
// Weights are deterministic functions of the seed: a splitmix64 stream turned
// into uniform values by exact float arithmetic, so the same spec gives the
// same bytes on every machine (the numpy cross-check golden relies on that).
//
// Thread safety: the functions are reentrant.
#ifndef QKVSHARE_AGENTS_TESTING_RANDOM_LLAMA_H_
#define QKVSHARE_AGENTS_TESTING_RANDOM_LLAMA_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qkvshare::agents::testing {

// One tensor to write. `values` are converted to `dtype` ("F32", "F16",
// "BF16"; round to nearest even); any other dtype name is written as zero
// bytes (1, 2, 4 or 8 per element by its name; 2 for unknown names).
struct TensorData {
  std::string name;
  std::string dtype = "F32";
  std::vector<int64_t> shape;
  std::vector<float> values;
};

// The bytes of a safetensors file holding `tensors` in the given order.
std::string EncodeSafetensors(const std::vector<TensorData>& tensors);

// Writes `bytes` to `path`. Errors: Internal naming the path.
absl::Status WriteFile(const std::string& path, const std::string& bytes);

// The shape of a random model. Defaults: a tiny GQA Llama.
struct RandomLlamaSpec {
  std::string model_type = "llama";  // llama | mistral | qwen2
  int hidden = 32;
  int layers = 2;
  int heads = 4;
  int kv_heads = 2;
  int intermediate = 48;
  int vocab = 96;
  int head_dim = 0;  // 0: hidden / heads, and no "head_dim" key is written
  int64_t max_pos = 256;
  double rope_theta = 10000.0;
  // JSON text for "rope_scaling" ("null", or an object).
  std::string rope_scaling_json = "null";
  bool tie = false;
  bool attention_bias = false;       // llama: q/k/v/o biases; qwen2 always has q/k/v biases
  std::string weight_dtype = "F32";  // F32 | F16 | BF16
  int shards = 1;                    // > 1: model.safetensors.index.json + shards
  uint64_t seed = 1;
  // Matrices ~ U(-a, a), a = weight_scale * sqrt(3 / fan_in): std weight_scale / sqrt(fan_in).
  float weight_scale = 1.0f;
  std::vector<int32_t> eos_ids = {2};
  // Copied to tokenizer.json when non-empty.
  std::string tokenizer_json_path;
};

// The tensors of a random model with `spec`, in HF order.
std::vector<TensorData> RandomLlamaTensors(const RandomLlamaSpec& spec);

// config.json text for `spec`.
std::string RandomLlamaConfigJson(const RandomLlamaSpec& spec);

// Writes the model directory `dir` (created if needed). Errors: Internal
// for I/O failures.
absl::Status WriteRandomLlama(const std::string& dir, const RandomLlamaSpec& spec);

// A spec from JSON: an object with any of the RandomLlamaSpec field names
// ("model_type", "hidden", "layers", ..., "rope_scaling" as an object or
// null); absent keys keep their defaults. Errors: InvalidArgument.
absl::StatusOr<RandomLlamaSpec> RandomLlamaSpecFromJson(const std::string& json);

// A fresh directory under $TEST_TMPDIR (or /tmp) named after `name`.
std::string TempDir(const std::string& name);

}  // namespace qkvshare::agents::testing

#endif  // QKVSHARE_AGENTS_TESTING_RANDOM_LLAMA_H_
