// File: eval/weight_quality.h
// -----------------------------------------------------------------------------
// Quality of quantized weights on a real model: the model with its linear
// layers quantized (and dequantized back to f32) against the unquantized
// model, teacher-forced over the golden greedy runs (eval/golden_cases.h):
// at every position that predicts a golden continuation token, KL(P_ref || Q)
// of the next-token distributions and top-1 (argmax) agreement.
//
// The weights are quantized by round-tripping each row through a scheme
// (the production formats "q8" and "q4" of agents/weights/block_formats.h,
// and the candidates they were chosen against) and written as an f32
// checkpoint copy, so the measured loss is exactly the weight format's: the
// runtime computes with the same dequantized values (up to fp32 summation
// order; agents/kernels/matvec_quant.h), except that its q4 decode kernel
// also rounds the activations to int8 (measured with ForwardPath below).
//
// CompareTeacherForced also measures the runtime's own quantized models (the
// checkpoint loaded with ModelOptions::quantized_weights) along the path a
// sequence runs: prefill (GEMMs over dequantized tiles), single-token decode
// steps or short chunks (the Highway kernels reading the blocks, e.g. q4's
// integer dot products over int8 activations): ForwardPath.
//
// Tensor policy (WeightPolicy): the projections q/k/v/o and gate/up/down of
// every layer are quantized; the token embedding, the lm_head and the norms
// stay in the checkpoint's dtype unless WeightPolicy::embeddings names a
// scheme for the embedding and lm_head.
//
// Thread safety: pure functions.
#ifndef QKVSHARE_EVAL_WEIGHT_QUALITY_H_
#define QKVSHARE_EVAL_WEIGHT_QUALITY_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "agents/kernels/decode_step.h"
#include "agents/model.h"
#include "eval/golden_cases.h"

namespace qkvshare::eval {

// Round-trips one row (x.size() columns) through a weight format into `out`.
using RowRoundTrip = std::function<void(absl::Span<const float> x, float* out)>;

struct WeightScheme {
  std::string name;
  double bits_per_weight = 0;
  std::string description;
  RowRoundTrip round_trip;
};

// The known schemes: "q8", "q4", "q6" (production; q6 only for q4 models'
// embedding and lm_head), the q4 candidates "q4_0" (GGUF Q4_0: symmetric,
// d = max / -8), "q4_0_search" (Q4_0 layout, least-squares scale search),
// "q4_1" (GGUF Q4_1: d = (max - min) / 15, m = min), "q4_k" (Q4_K-like:
// super-blocks of up to 256 columns, 8 sub-blocks of 32 with 6-bit scales
// and minima under fp16 super-scales), and the q6 candidates "q6_0"
// (symmetric, d = max / -32, no search), "q6_1" (6-bit codes with an fp16
// minimum, searched (d, m): 7 bits per weight), "q6_k" (Q6_K-like:
// super-blocks of 256, sub-blocks of 16 with int8 scales).
std::vector<WeightScheme> AllWeightSchemes();

// The scheme named `name`. Errors: InvalidArgument listing the known names.
absl::StatusOr<WeightScheme> FindWeightScheme(const std::string& name);

struct WeightPolicy {
  // Scheme of the token embedding and lm_head ("" = as stored).
  std::string embeddings;
};

// True for the tensors `policy` quantizes with the scheme (2-D weights of
// the attention and MLP projections; embeddings/lm_head per the policy).
bool QuantizedByPolicy(const std::string& tensor_name, const WeightPolicy& policy);

// Writes `dst_dir` (created if missing): config files and tokenizer of
// `src_dir` copied, model.safetensors with every tensor as F32 and the
// policy's tensors round-tripped through `scheme`. Errors: those of
// agents::WeightFiles::Open and file I/O (naming the path).
absl::Status WriteRoundTrippedCheckpoint(const std::string& src_dir, const std::string& dst_dir,
                                         const WeightScheme& scheme, const WeightPolicy& policy);

// How the candidate model runs the teacher-forced ids. The reference always
// runs kPrefill.
enum class ForwardPath {
  // One Sequence::Append of the whole case (logits of every position), in
  // Sequence's prefill chunks of 512 tokens: the runtime's prefill path
  // (libtorch GEMMs; quantized matrices dequantized tile by tile into
  // ModelOptions::quantized_gemm_dtype).
  kPrefill,
  // Every position one Sequence::Decode step, as generation decodes: the
  // decode kernels (agents/kernels DecodeChunk with one token: float
  // widening for dense / q8 / q6 rows, integer dot products over activations
  // quantized to int8 per block of 32 for q4 rows).
  kDecodeSteps,
  // Appends of kKernelChunkTokens tokens (logits of every position): the
  // kernels' short-chunk path (DecodeChunk with 16 tokens), which runs a
  // short prompt or a receiver's instruction after a card inject.
  kKernelChunks,
};

// Chunk length of ForwardPath::kKernelChunks: the longest chunk the engine
// runs through the kernels (longer chunks go to the GEMMs).
inline constexpr int kKernelChunkTokens = static_cast<int>(agents::kernels::kMaxKernelChunkTokens);

// "prefill", "decode steps", "kernel chunks of 16".
std::string ForwardPathName(ForwardPath path);

struct WeightQuality {
  double mean_kl = 0;  // nats, mean over positions
  double max_kl = 0;
  double top1 = 0;        // fraction of positions with equal argmax
  int64_t positions = 0;  // teacher-forced positions (golden continuation tokens)
};

// Teacher-forces every case's ids through both models (the reference by one
// prefill, logits of every position; the candidate along `path`) and
// compares the positions that predict the golden continuation. Errors:
// InvalidArgument when the vocabularies differ or a case has no
// continuation; Sequence errors.
absl::StatusOr<WeightQuality> CompareTeacherForced(const agents::ModelHandle& reference,
                                                   const agents::ModelHandle& candidate,
                                                   absl::Span<const GoldenCase> cases,
                                                   ForwardPath path = ForwardPath::kPrefill);

}  // namespace qkvshare::eval

#endif  // QKVSHARE_EVAL_WEIGHT_QUALITY_H_
