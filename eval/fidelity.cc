#include "eval/fidelity.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "agents/generator.h"
#include "agents/sequence.h"
#include "base/status_macros.h"
#include "eval/metrics.h"

namespace qkvshare::eval {
namespace {

absl::Span<const int32_t> EvalIds(const GoldenCase& c, const FidelityOptions& o) {
  const int64_t n = std::min<int64_t>(o.eval_tokens, c.ids.size() - o.context_tokens);
  return absl::MakeConstSpan(c.ids).subspan(o.context_tokens, n);
}

// Greedy tokens from the end of `seq`'s contents, stop tokens ignored.
absl::StatusOr<std::vector<int32_t>> Greedy(agents::Sequence& seq, int tokens) {
  agents::GenerateOptions g;
  g.max_new_tokens = tokens;
  g.stop_token_ids = std::vector<int32_t>{};
  QKV_ASSIGN_OR_RETURN(agents::GenerateResult r, agents::Generate(seq, {}, g));
  return std::move(r.ids);
}

absl::StatusOr<std::unique_ptr<agents::Sequence>> NewSequence(const agents::ModelHandle& model,
                                                              const FidelityOptions& o) {
  agents::SequenceOptions so;
  so.initial_capacity = o.context_tokens + std::max<int64_t>(o.eval_tokens, o.greedy_tokens);
  return agents::Sequence::Create(model, so);
}

absl::Status CheckCase(const GoldenCase& c, const FidelityOptions& o) {
  if (o.context_tokens < 1 || static_cast<int64_t>(c.ids.size()) <= o.context_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("golden case ", c.index, " has ", c.ids.size(),
                     " ids: need more than context_tokens = ", o.context_tokens));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Reference> ComputeReference(const agents::ModelHandle& model,
                                           const GoldenCase& golden_case,
                                           const FidelityOptions& options) {
  QKV_RETURN_IF_ERROR(CheckCase(golden_case, options));
  QKV_ASSIGN_OR_RETURN(std::unique_ptr<agents::Sequence> seq, NewSequence(model, options));
  const absl::Span<const int32_t> ids = golden_case.ids;
  QKV_RETURN_IF_ERROR(
      seq->Append(ids.first(options.context_tokens), agents::LogitsMode::kNone).status());
  Reference ref;
  QKV_ASSIGN_OR_RETURN(agents::LogitsView lv,
                       seq->Append(EvalIds(golden_case, options), agents::LogitsMode::kAll));
  ref.rows = lv.rows;
  ref.vocab = lv.vocab;
  ref.logits.assign(lv.data, lv.data + lv.rows * lv.vocab);
  seq->Truncate(options.context_tokens);
  QKV_ASSIGN_OR_RETURN(ref.greedy, Greedy(*seq, options.greedy_tokens));
  return ref;
}

absl::StatusOr<FidelityResult> MeasureHandoff(const agents::ModelHandle& model,
                                              const GoldenCase& golden_case,
                                              const Reference& reference, int num_hops,
                                              const BitPlanner& planner,
                                              const FidelityOptions& options) {
  QKV_RETURN_IF_ERROR(CheckCase(golden_case, options));
  const absl::Span<const int32_t> context =
      absl::MakeConstSpan(golden_case.ids).first(options.context_tokens);
  ChainOptions chain_options;
  chain_options.capture_window = options.capture_window;
  QKV_ASSIGN_OR_RETURN(HandoffChain chain,
                       RunHandoffChain(model, context, num_hops, chain_options, planner));
  QKV_ASSIGN_OR_RETURN(std::unique_ptr<agents::Sequence> seq, NewSequence(model, options));
  QKV_RETURN_IF_ERROR(chain.InjectInto(*seq));

  FidelityResult r;
  r.avg_bits = chain.avg_bits();
  r.card_bytes = chain.card_bytes();
  QKV_ASSIGN_OR_RETURN(agents::LogitsView lv,
                       seq->Append(EvalIds(golden_case, options), agents::LogitsMode::kAll));
  if (lv.rows != reference.rows || lv.vocab != reference.vocab) {
    return absl::FailedPreconditionError(
        absl::StrCat("reference has ", reference.rows, " x ", reference.vocab, " logits, run has ",
                     lv.rows, " x ", lv.vocab, ": computed with other options?"));
  }
  r.rows = lv.rows;
  int64_t agree = 0;
  for (int64_t i = 0; i < lv.rows; ++i) {
    const absl::Span<const float> want(reference.logits.data() + i * lv.vocab, lv.vocab);
    const double kl = KlDivergence(want, lv.row(i));
    r.mean_kl += kl;
    r.max_kl = std::max(r.max_kl, kl);
    agree += ArgMax(want) == ArgMax(lv.row(i)) ? 1 : 0;
  }
  r.mean_kl /= static_cast<double>(std::max<int64_t>(1, lv.rows));
  r.top1 = static_cast<double>(agree) / static_cast<double>(std::max<int64_t>(1, lv.rows));

  seq->Truncate(options.context_tokens);
  QKV_ASSIGN_OR_RETURN(std::vector<int32_t> greedy, Greedy(*seq, options.greedy_tokens));
  r.greedy_match = CommonPrefixLength(greedy, reference.greedy);
  return r;
}

}  // namespace qkvshare::eval
