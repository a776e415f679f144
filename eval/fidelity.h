// File: eval/fidelity.h
// -----------------------------------------------------------------------------
// Fidelity of a multi-hop KV handoff on a real model: how much the consumer
// of a handed-off (quantized) KV cache deviates from the same model with a
// full-precision cache and no handoff.
//
// For one golden case (eval/golden_cases.h) the context is its first
// `context_tokens` ids (prompt + golden continuation). After the last hop
// the consumer injects the card chain and
//   - teacher-forced: appends the next `eval_tokens` golden ids (fewer when
//     the golden run is shorter) and compares its next-token distribution at
//     each of those positions with the reference: mean and max KL(P_ref||Q),
//     top-1 agreement (argmax equal);
//   - free-running: greedy-decodes `greedy_tokens` tokens from the end of the
//     context (stop tokens ignored; agents::Generate re-runs the last context
//     token for the first logits, as after any injection) and counts the
//     tokens until the first one that differs from the reference's greedy
//     tokens (greedy_tokens when none does).
// The reference runs the same calls on a Sequence that prefilled the context.
//
// Thread safety: pure functions over a shared read-only Model.
//
// Example:
//   QKV_ASSIGN_OR_RETURN(Reference ref, ComputeReference(model, golden_case, {}));
//   QKV_ASSIGN_OR_RETURN(FidelityResult r,
//                        MeasureHandoff(model, golden_case, ref, /*num_hops=*/4,
//                                       DaemonPlanner(settings), {}));
#ifndef QKVSHARE_EVAL_FIDELITY_H_
#define QKVSHARE_EVAL_FIDELITY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agents/model.h"
#include "eval/golden_cases.h"
#include "eval/handoff_chain.h"
#include "quant/importance.h"

namespace qkvshare::eval {

struct FidelityOptions {
  // Tokens of the handed-off context (prompt + golden continuation).
  int64_t context_tokens = 128;
  // Golden tokens teacher-forced after the context (at most; fewer when the
  // golden run ends earlier).
  int64_t eval_tokens = 64;
  // Greedy tokens decoded from the end of the context (the divergence cap).
  int greedy_tokens = 200;
  // Attention rows each hop's agent records (>= the planner's window).
  int capture_window = 4;
  // ChainOptions::full_precision_prefix (a diagnostic).
  bool full_precision_prefix = false;
};

// The full-precision model's outputs for one case.
struct Reference {
  int64_t rows = 0;  // teacher-forced positions
  int64_t vocab = 0;
  std::vector<float> logits;    // [rows][vocab]
  std::vector<int32_t> greedy;  // [greedy_tokens]
};

// A case that is not in a golden file: `prompt` encoded with the model's
// tokenizer (BOS first), continued by the full-precision model's greedy
// decoding (stop tokens ignored) up to `total_tokens` ids. Used as a
// development set separate from the golden prompts. `index` is stored as the
// case index. Errors: FailedPrecondition without a tokenizer; those of
// Tokenizer::Encode, Sequence and Generate.
absl::StatusOr<GoldenCase> MakeGreedyCase(const agents::ModelHandle& model,
                                          const std::string& prompt, int64_t total_tokens,
                                          int index);

// Diagnostic "oracle" importance: the attention the full-precision model's
// next (at most eval_tokens) golden positions pay to the context, reduced
// by quant::TokenImportance over all of those rows with `importance`'s head
// reduction ([context_tokens + rows] scores; only the context part is used).
// No real hop can compute it (it needs the consumer's queries): it bounds
// what better attention-based importance could achieve. Errors: as
// ComputeReference.
absl::StatusOr<std::vector<float>> ConsumerImportance(const agents::ModelHandle& model,
                                                      const GoldenCase& golden_case,
                                                      const FidelityOptions& options,
                                                      const quant::ImportanceOptions& importance);

// Errors: InvalidArgument when the case has no more than context_tokens ids
// (nothing to teacher-force); the errors of Sequence and Generate.
absl::StatusOr<Reference> ComputeReference(const agents::ModelHandle& model,
                                           const GoldenCase& golden_case,
                                           const FidelityOptions& options);

struct FidelityResult {
  double mean_kl = 0;        // nats, mean over the teacher-forced positions
  double max_kl = 0;         // nats, worst position
  double top1 = 0;           // fraction of positions with equal argmax, [0, 1]
  int64_t rows = 0;          // teacher-forced positions
  int64_t greedy_match = 0;  // tokens until the first greedy divergence
  double avg_bits = 0;       // mean code bits per element over the context, K and V
  uint64_t card_bytes = 0;   // bytes of all cards of the chain
};

// Runs the handoff (RunHandoffChain with `planner`), then measures the
// consumer against `reference` (computed with the same options). Errors:
// those of RunHandoffChain, InjectInto, Sequence and Generate.
absl::StatusOr<FidelityResult> MeasureHandoff(const agents::ModelHandle& model,
                                              const GoldenCase& golden_case,
                                              const Reference& reference, int num_hops,
                                              const BitPlanner& planner,
                                              const FidelityOptions& options);

}  // namespace qkvshare::eval

#endif  // QKVSHARE_EVAL_FIDELITY_H_
