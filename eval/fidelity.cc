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

absl::StatusOr<GoldenCase> MakeGreedyCase(const agents::ModelHandle& model,
                                          const std::string& prompt, int64_t total_tokens,
                                          int index) {
  if (model->tokenizer() == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("MakeGreedyCase: model ", model->dir(), " has no tokenizer"));
  }
  GoldenCase c;
  c.index = index;
  c.prompt = prompt;
  QKV_ASSIGN_OR_RETURN(c.ids, model->tokenizer()->Encode(prompt));
  c.prompt_tokens = static_cast<int64_t>(c.ids.size());
  agents::SequenceOptions so;
  so.initial_capacity = total_tokens;
  QKV_ASSIGN_OR_RETURN(std::unique_ptr<agents::Sequence> seq, agents::Sequence::Create(model, so));
  agents::GenerateOptions g;
  g.max_new_tokens = static_cast<int>(std::max<int64_t>(0, total_tokens - c.prompt_tokens));
  g.stop_token_ids = std::vector<int32_t>{};
  QKV_ASSIGN_OR_RETURN(agents::GenerateResult r, agents::Generate(*seq, c.ids, g));
  c.ids.insert(c.ids.end(), r.ids.begin(), r.ids.end());
  return c;
}

absl::StatusOr<std::vector<float>> ConsumerImportance(const agents::ModelHandle& model,
                                                      const GoldenCase& golden_case,
                                                      const FidelityOptions& options,
                                                      const quant::ImportanceOptions& importance) {
  QKV_RETURN_IF_ERROR(CheckCase(golden_case, options));
  QKV_ASSIGN_OR_RETURN(std::unique_ptr<agents::Sequence> seq, NewSequence(model, options));
  const absl::Span<const int32_t> eval_ids = EvalIds(golden_case, options);
  seq->EnableAttentionCapture(static_cast<int>(eval_ids.size()));
  QKV_RETURN_IF_ERROR(
      seq->Append(
             absl::MakeConstSpan(golden_case.ids).first(options.context_tokens + eval_ids.size()),
             agents::LogitsMode::kNone)
          .status());
  QKV_ASSIGN_OR_RETURN(agents::AttentionCapture cap, seq->GetAttentionCapture());
  quant::ImportanceOptions all_rows = importance;
  all_rows.window = static_cast<int>(cap.rows);
  return quant::TokenImportance(
      {cap.probs.data(), cap.num_layers, cap.num_kv_heads, static_cast<int>(cap.rows), cap.context},
      all_rows);
}

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
  chain_options.full_precision_prefix = options.full_precision_prefix;
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
