// File: agents/torch/llama_impl.h
// -----------------------------------------------------------------------------
// INTERNAL (torch): the weights and tables behind LlamaEngine. Included only
// by llama_weights.cc and llama_forward.cc.
#ifndef QKVSHARE_AGENTS_TORCH_LLAMA_IMPL_H_
#define QKVSHARE_AGENTS_TORCH_LLAMA_IMPL_H_

#include <torch/torch.h>

#include <memory>
#include <vector>

#include "agents/kernels/decode_step.h"
#include "agents/model_config.h"
#include "agents/torch/llama_engine.h"
#include "agents/weights/quantized_matrix.h"

namespace qkvshare::agents::internal {

// One decoder layer. Matrices are [out_features, in_features] in the weight
// dtype (nn.Linear layout); biases (undefined when absent) in the compute
// dtype; norm weights fp32.
struct LayerWeights {
  torch::Tensor input_norm;                      // [hidden]
  torch::Tensor q, k, v, o;                      // [H*hd, D], [KV*hd, D] x2, [D, H*hd]
  torch::Tensor q_bias, k_bias, v_bias, o_bias;  // [H*hd], [KV*hd] x2, [D]
  torch::Tensor post_norm;                       // [hidden]
  torch::Tensor gate, up, down;                  // [I, D], [I, D], [D, I]
  torch::Tensor gate_bias, up_bias, down_bias;   // [I], [I], [D]
  // Quantized models: the projections (then q .. down above are undefined).
  const weights::QuantizedMatrix *q_q = nullptr, *k_q = nullptr, *v_q = nullptr, *o_q = nullptr;
  const weights::QuantizedMatrix *gate_q = nullptr, *up_q = nullptr, *down_q = nullptr;
};

// Owner of memory that weight tensors view (torch::from_blob without deleter).
class WeightArena {
 public:
  virtual ~WeightArena() = default;
};

struct LlamaEngine::Impl {
  ModelConfig config;
  DType dtype = DType::kF32;  // compute (and KV cache)
  torch::ScalarType scalar = torch::kFloat;
  DType weight_dtype = DType::kF32;  // matrices and embedding in memory
  torch::ScalarType weight_scalar = torch::kFloat;
  torch::Tensor embed;       // [vocab, hidden], weight dtype
  torch::Tensor lm_head;     // [vocab, hidden], weight dtype (embed when tied)
  torch::Tensor final_norm;  // [hidden] fp32
  std::vector<LayerWeights> layers;
  // Quantized models: every QuantizedMatrix (owned), and the embedding and
  // lm_head when quantized (then embed / lm_head above are undefined).
  std::vector<std::unique_ptr<weights::QuantizedMatrix>> quantized;
  const weights::QuantizedMatrix* embed_q = nullptr;
  const weights::QuantizedMatrix* lm_head_q = nullptr;
  // EngineOptions::quantized_gemm_dtype.
  torch::ScalarType quantized_gemm_scalar = torch::kFloat;
  // RoPE tables over positions [0, context_limit): [positions, head_dim / 2]
  // fp32, column i for frequency inv_freq[i] (HF rotate_half layout: the
  // pair is (i, i + head_dim / 2)).
  torch::Tensor rope_cos, rope_sin;
  // Single-token steps through kernels::DecodeStep (views of the tensors
  // above, plus fp32 copies of the biases held in decode_biases).
  bool decode_kernels = true;
  kernels::DecodeWeights decode;
  std::vector<torch::Tensor> decode_biases;
  // Converted (or forced) weight copies live here; tensors view it.
  std::unique_ptr<WeightArena> arena;
  size_t mapped_bytes = 0;
  size_t copied_bytes = 0;
};

torch::ScalarType ToScalarType(DType dtype);

// The per-pair inverse frequencies of `config` (head_dim / 2 values) with
// rope_scaling applied, computed in fp32 as HF transformers does.
std::vector<float> RopeInverseFrequencies(const ModelConfig& config);

}  // namespace qkvshare::agents::internal

#endif  // QKVSHARE_AGENTS_TORCH_LLAMA_IMPL_H_
