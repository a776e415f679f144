// File: agents/sampler.h
// -----------------------------------------------------------------------------
// Next-token selection from fp32 logits: greedy (argmax, ties -> the first
// index, as llama2.c run.c), or temperature sampling with optional top-k and
// top-p (nucleus) filtering, from a seeded generator: the same seed and the
// same logits give the same tokens on every run. Torch-free.
//
// Order of operations (as HF transformers' logits processors): logits /
// temperature -> keep the top_k largest -> keep the smallest prefix (by
// descending probability) whose probability mass reaches top_p -> sample
// from the renormalized distribution. Ranking ties break by lower id, so
// top_k == 1 is exactly greedy.
//
// Thread safety: a Sampler is used by one sequence at a time.
//
// Example:
//   QKV_ASSIGN_OR_RETURN(Sampler sampler, Sampler::Create({.temperature = 0.8f,
//                                                          .top_p = 0.95f, .seed = 7}));
//   int32_t next = sampler.Sample(logits);
#ifndef QKVSHARE_AGENTS_SAMPLER_H_
#define QKVSHARE_AGENTS_SAMPLER_H_

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace qkvshare::agents {

struct SamplingParams {
  // <= 0: greedy (top_k / top_p / seed ignored).
  float temperature = 0.0f;
  // Keep only the k most likely tokens; 0: no limit.
  int top_k = 0;
  // Nucleus mass in (0, 1]; 1: no filtering.
  float top_p = 1.0f;
  // Seed of the std::mt19937_64 stream.
  uint64_t seed = 0;

  bool greedy() const { return temperature <= 0.0f; }
};

// Index of the largest value; the first one on ties. REQUIRES: non-empty.
int32_t ArgMax(absl::Span<const float> logits);

class Sampler {
 public:
  // Errors: InvalidArgument for a NaN/negative temperature, top_k < 0 or
  // top_p outside (0, 1].
  static absl::StatusOr<Sampler> Create(const SamplingParams& params);

  // The next token id. REQUIRES: logits non-empty and finite (or -inf).
  int32_t Sample(absl::Span<const float> logits);

  const SamplingParams& params() const { return params_; }

 private:
  explicit Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}
  // Uniform double in [0, 1) from 53 bits of the generator (portable).
  double Uniform();

  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> candidates_;  // scratch, reused
};

}  // namespace qkvshare::agents

#endif  // QKVSHARE_AGENTS_SAMPLER_H_
