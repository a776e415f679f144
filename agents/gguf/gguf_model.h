// File: agents/gguf/gguf_model.h
// -----------------------------------------------------------------------------
// A llama-family GGUF file (llama.cpp / Ollama) as the runtime's model parts:
// the ModelConfig from the `llama.*` metadata and the weights under their HF
// names (a WeightFiles), so agents/model.cc runs a .gguf file like an HF
// directory. The tokenizer is in gguf_tokenizer.h. Torch-free.
//
// Config (ConfigFromGguf): general.architecture "llama" (Llama, Mistral,
// TinyLlama files all say "llama") or "qwen2" (q/k/v biases required; keys
// under "qwen2." instead of "llama."); llama.block_count, embedding_length,
// feed_forward_length, attention.head_count, attention.head_count_kv
// (default: head_count), attention.key_length (default embedding_length /
// head_count), rope.dimension_count (must be the head size: no partial
// rotary), rope.freq_base (default 10000), attention.layer_norm_rms_epsilon
// (default 1e-5), context_length, vocab_size (default: rows of
// token_embd.weight), rope.scaling.type none/linear (+ rope.scaling.factor);
// tied output when output.weight is absent; q/k/o/MLP biases when their
// tensors are present; bos/eos from tokenizer.ggml.bos_token_id /
// eos_token_id (+ eot_token_id as a second stop id); rope_freqs.weight
// (Llama 3.1+) when its factors are Llama 3's rope_scaling (factor = their
// maximum, low 1, high 4, original context 8192; read as rope_scaling
// "llama3").
// Not supported (InvalidArgument naming the key or tensor): other
// architectures, per-layer head counts (arrays), yarn / longrope scaling,
// other rope_freqs.weight factors, tensors the llama graph does not have.
//
// Weights (WeightsFromGguf), tensor policy for `layer_format` (the format
// the projections run in: nullopt = dense, kQ8 or kQ4; NativeLayerFormat
// picks the one closest to the file):
//   - a projection (q/k/v/o, gate/up/down) whose blocks ARE that format is
//     used as it is, no requantization: Q8_0 -> q8 (identical layout); Q4_1
//     -> q4 (identical layout); Q4_0 -> q4 with m = -8 d (exact in fp16; a
//     tensor with |d| > 8188, where -8 d overflows fp16, is requantized
//     instead);
//   - any other projection, with `layer_format` set, is decoded row by row
//     (gguf_dequant.h: F16, BF16, F32, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K,
//     Q5_K, Q6_K) and quantized with the runtime's own quantizer (e.g. a
//     Q4_0 file's F16 ffn_down -> q4): the blocks QuantizeRows would make,
//     without a dense copy of the tensor. So a K-quant file (Q4_K_M) runs as
//     q4 requantized from its decoded values (a second rounding);
//   - every other tensor is handed over dense: F32 / F16 / BF16 in place
//     (memory-mapped; q/k copied in their dtype to undo the permutation),
//     other types decoded to f32 into anonymous memory (the runtime drops
//     those pages once it has converted them). The runtime then applies its
//     own policy: the embedding and lm_head as for an HF checkpoint (dense
//     16-bit for q8, q6 for q4, as stored for dense models), norms f32;
//   - llama only: q_proj / k_proj rows (and biases) are put back from
//     llama.cpp's rotary layout (convert_hf_to_gguf.py LlamaModel.permute:
//     pairs (2j, 2j+1) of each head) into HF's rotate_half layout (j, j + d/2).
// IQ* / Q2_K / Q3_K / TQ* / MXFP4 tensors are rejected (tensor and type
// named). Once a tensor is converted (blocks copied, requantized or decoded),
// its pages of the file mapping are dropped from the process (MADV_DONTNEED;
// they stay in the page cache): read anything else from the file's tensor
// data (e.g. the fingerprint's samples) before calling WeightsFromGguf.
//
// Thread safety: pure functions; the WeightFiles keeps the GgufFile alive.
#ifndef QKVSHARE_AGENTS_GGUF_GGUF_MODEL_H_
#define QKVSHARE_AGENTS_GGUF_GGUF_MODEL_H_

#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "agents/gguf/gguf_file.h"
#include "agents/model_config.h"
#include "agents/safetensors.h"
#include "agents/weights/quantized_matrix.h"

namespace qkvshare::agents::gguf {

// The projections' run format closest to the file, by the element count of
// its projection tensors: F32/F16/BF16 -> nullopt (dense); 5 bits and more
// (Q8_0, Q6_K, Q5_*) -> kQ8; fewer (Q4_0, Q4_1, Q4_K and below) -> kQ4. The
// majority wins; a tie goes to the wider format.
std::optional<weights::BlockFormat> NativeLayerFormat(const GgufFile& file);

// The model config from the metadata (see the file comment). Errors:
// InvalidArgument naming the file and key (missing, wrong type, out of
// range, unsupported).
absl::StatusOr<ModelConfig> ConfigFromGguf(const GgufFile& file);

// The model's tensors under HF names (see the file comment); `config` from
// ConfigFromGguf. The result keeps `file` alive. Errors: InvalidArgument
// naming the file and tensor: a missing tensor ("tensor 'blk.3.ffn_up.weight'
// not found"), a wrong shape, an undecodable type, an unknown tensor;
// ResourceExhausted when memory for decoded tensors cannot be mapped.
absl::StatusOr<std::unique_ptr<WeightFiles>> WeightsFromGguf(
    std::shared_ptr<const GgufFile> file, const ModelConfig& config,
    std::optional<weights::BlockFormat> layer_format);

}  // namespace qkvshare::agents::gguf

#endif  // QKVSHARE_AGENTS_GGUF_GGUF_MODEL_H_
