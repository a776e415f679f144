// File: agents/model_fingerprint.h
// -----------------------------------------------------------------------------
// ModelFingerprint: a 32-byte SHA-256 identity of a model, stamped into every
// CacheCard so a card is only injected into a model whose KV cache means the
// same thing. Torch-free.
//
// The digest covers, in this order (docs/kv_cache.md):
//   1. a version tag ("qkvshare-model-fingerprint-v1");
//   2. the config.json fields that decide what a KV cache holds: model_type,
//      num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim,
//      rope_theta and rope_scaling (type and parameters), as normalized text;
//   3. the bytes of tokenizer.json (empty when the model has none);
//   4. for every tensor, by name: name, dtype and shape (not the offsets or
//      __metadata__, which do not change the model);
//   5. a deterministic sample of every tensor's data: up to 4 windows of 64
//      bytes at evenly spaced offsets (start and end included).
// Identical files give identical fingerprints; the same weights stored in
// another dtype, or another tokenizer, give a different one. The compute
// dtype is NOT part of it (cards carry their own dtype).
//
// Cost: one pass over the headers and ~256 bytes per tensor; computed once
// per loaded model. Thread safety: pure function.
#ifndef QKVSHARE_AGENTS_MODEL_FINGERPRINT_H_
#define QKVSHARE_AGENTS_MODEL_FINGERPRINT_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "agents/gguf/gguf_file.h"
#include "agents/model_config.h"
#include "agents/safetensors.h"

namespace qkvshare::agents {

struct ModelFingerprint {
  std::array<uint8_t, 32> bytes{};

  // 64 lowercase hex digits (for logs and JSON).
  std::string Hex() const;
  bool operator==(const ModelFingerprint& o) const { return bytes == o.bytes; }
  bool operator!=(const ModelFingerprint& o) const { return bytes != o.bytes; }
};

// The normalized config text of item 2 above (exposed for tests and logs),
// e.g. "model_type=llama;layers=5;heads=8;kv_heads=4;head_dim=8;
// rope_theta=10000;rope_scaling=none".
std::string FingerprintConfigText(const ModelConfig& config);

// Computes the fingerprint. Errors: Internal if libcrypto fails.
absl::StatusOr<ModelFingerprint> ComputeModelFingerprint(const ModelConfig& config,
                                                         std::string_view tokenizer_json,
                                                         const WeightFiles& weights);

// The fingerprint of a GGUF model (agents/gguf): the same digest over the
// file itself instead of a safetensors checkpoint: a version tag of its own
// ("qkvshare-model-fingerprint-gguf-v1"), the config text of item 2, the
// tokenizer.json built from the file's metadata (agents/gguf/
// gguf_tokenizer.h), every tensor's GGUF name, ggml type and dims in file
// order, and the data windows of item 5 over each tensor's stored bytes (its
// blocks, for quantized types). So it covers the weights in the file's own
// encoding: a Q8_0 and a Q4_0 file of one checkpoint differ, and so do a
// GGUF file and the HF checkpoint it was converted from, even when the
// weights are equal (a card between the two re-prefills: conservative).
// What the runtime then does with the tensors (run as q8 / q4 / dense) is
// added by FingerprintWithWeightFormat, as for HF checkpoints.
// Errors: Internal if libcrypto fails.
absl::StatusOr<ModelFingerprint> ComputeGgufModelFingerprint(const ModelConfig& config,
                                                             std::string_view tokenizer_json,
                                                             const gguf::GgufFile& file);

// The fingerprint of a model whose weights were quantized at load with the
// policy `format` (weights::WeightPolicyTag: "q8+embed:16bit", "q4+embed:q6"): SHA-256 of
// `base`'s bytes, a tag and the format, so a q4 agent and an f32 agent of one
// checkpoint are different models for cards (a card of one is refused by the
// other; the daemon re-prefills, with the reason), and so are q4 agents under
// two tensor policies (the q4 of before q6 embeddings tagged "q4", the q8
// of before 16-bit embeddings "q8").
// Errors: Internal if libcrypto fails.
absl::StatusOr<ModelFingerprint> FingerprintWithWeightFormat(const ModelFingerprint& base,
                                                             std::string_view format);

}  // namespace qkvshare::agents

#endif  // QKVSHARE_AGENTS_MODEL_FINGERPRINT_H_
