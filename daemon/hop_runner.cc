#include "daemon/hop_runner.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <functional>
#include <optional>
#include <utility>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "agents/generator.h"
#include "base/status_macros.h"
#include "cachecard/build.h"
#include "cachecard/inject.h"
#include "cachecard/io.h"
#include "daemon/prompt.h"
#include "quant/controller.h"
#include "quant/importance.h"

namespace qkvshare::daemon {

namespace {

using cachecard::shm::CardHandle;

double MsSince(absl::Time t) { return absl::ToDoubleMilliseconds(absl::Now() - t); }

v1::HandoffMode ToProto(HandoffMode m) {
  switch (m) {
    case HandoffMode::kCard:
      return v1::HANDOFF_MODE_CARD;
    case HandoffMode::kFull:
      return v1::HANDOFF_MODE_FULL;
    case HandoffMode::kReprefill:
      return v1::HANDOFF_MODE_REPREFILL;
  }
  return v1::HANDOFF_MODE_UNSPECIFIED;
}

// What hop k hands to hop k+1.
struct Carry {
  HandoffConfig handoff;
  CardHandle card;  // card/full (unless the card fell back)
  double card_build_ms = 0;
  std::string card_fallback_reason;  // why no card was built
  std::vector<int32_t> ids;          // the whole context
  std::string text;                  // its text (for another model's re-prefill)
  agents::ModelFingerprint fingerprint;
};

// Bytes of an fp16 KV cache holding `tokens` tokens of `shape`.
int64_t Fp16Bytes(const agents::KvShape& shape, int64_t tokens) {
  return tokens * shape.num_layers * 2 * shape.channels() * 2;
}

// Card bytes of `card` and all its ancestors.
int64_t ChainBytes(const cachecard::Card& card, const cachecard::CardResolver& store) {
  int64_t bytes = 0;
  for (const cachecard::Card* c = &card; c != nullptr;) {
    bytes += static_cast<int64_t>(c->metadata().card_bytes);
    const cachecard::CardId& parent = c->metadata().parent_id;
    c = parent.IsZero() ? nullptr : store.Find(parent);
  }
  return bytes;
}

// Encodes at most about `max_tokens` tokens' worth of `text` (EncodeBounded:
// the work for an over-long text is bounded and `check_stop` is honoured
// between prefixes); more is OutOfRange naming `what`.
absl::StatusOr<std::vector<int32_t>> Encode(const agents::Model& model, const std::string& text,
                                            bool add_special, const std::string& what,
                                            int64_t max_tokens,
                                            const std::function<absl::Status()>& check_stop) {
  if (model.tokenizer() == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("model ", model.dir(), " has no tokenizer.json; cannot encode ", what));
  }
  absl::StatusOr<std::vector<int32_t>> ids =
      EncodeBounded(*model.tokenizer(), text, add_special, max_tokens, check_stop);
  if (ids.status().code() == absl::StatusCode::kOutOfRange) {
    return absl::OutOfRangeError(
        absl::StrCat(what, " is ", ids.status().message(), ", over the context limit"));
  }
  return ids;
}

class TaskRun {
 public:
  TaskRun(TaskContext& ctx, const HopRunnerDeps& deps) : ctx_(ctx), deps_(deps) {}

  absl::StatusOr<std::string> Run() {
    const TaskSpec& spec = ctx_.spec();
    const int num_hops = static_cast<int>(spec.hops.size());
    std::optional<Carry> carry;
    std::string previous_output;
    for (int k = 0; k < num_hops; ++k) {
      QKV_RETURN_IF_ERROR(ctx_.CheckStop());
      absl::StatusOr<Carry> next = RunHop(k, carry ? &*carry : nullptr, previous_output);
      if (!next.ok()) {
        // A hop that failed while the task was being cancelled (or ran out
        // of time) ends the task CANCELLED / DEADLINE_EXCEEDED, not FAILED.
        if (absl::Status stop = ctx_.CheckStop(); !stop.ok()) return stop;
        const absl::Status& s = next.status();
        if (s.code() == absl::StatusCode::kCancelled ||
            s.code() == absl::StatusCode::kDeadlineExceeded) {
          return s;
        }
        return absl::Status(s.code(), absl::StrCat("hop ", k + 1, "/", spec.hops.size(), " (",
                                                   spec.hops[k].agent, "): ", s.message()));
      }
      previous_output = last_output_;
      carry = std::move(*next);
    }
    return previous_output;
  }

 private:
  void EmitHopStarted(int k) {
    v1::TaskEvent ev;
    auto* e = ev.mutable_hop_started();
    e->set_hop(k);
    e->set_num_hops(static_cast<int>(ctx_.spec().hops.size()));
    e->set_agent(ctx_.spec().hops[k].agent);
    ctx_.Emit(std::move(ev));
  }

  // Receives `carry` into the leased agent's sequence; returns the prompt
  // ids to append (context for re-prefill, then the instruction).
  absl::StatusOr<std::vector<int32_t>> ReceiveHandoff(int k, Agent& agent, const Carry& carry,
                                                      const std::vector<int32_t>& instruction,
                                                      v1::HandoffStats* stats) {
    agents::Sequence& seq = *agent.sequence;
    const agents::Model& model = *agent.model;
    const bool wants_card = carry.handoff.mode != HandoffMode::kReprefill;
    stats->set_requested_mode(ToProto(carry.handoff.mode));
    stats->set_context_tokens(static_cast<int64_t>(carry.ids.size()));
    stats->set_fp16_bytes(Fp16Bytes(seq.kv_cache().shape(), carry.ids.size()));
    std::string fallback;
    if (wants_card && !carry.card) {
      fallback = carry.card_fallback_reason;
    } else if (wants_card && carry.fingerprint != model.fingerprint()) {
      fallback = absl::StrCat("fingerprint mismatch: agent '", agent.entry.name, "' runs model '",
                              agent.model_name, "' (", model.fingerprint().Hex().substr(0, 12),
                              "), the card is for ", carry.fingerprint.Hex().substr(0, 12));
    }
    if (wants_card && fallback.empty()) {
      const cachecard::Card& card = *carry.card;
      stats->set_card_id(card.id().ToHex());
      stats->set_card_bytes(static_cast<int64_t>(card.metadata().card_bytes));
      stats->set_chain_bytes(ChainBytes(card, *deps_.store));
      stats->set_card_tokens(card.metadata().num_tokens);
      stats->set_avg_bits(card.metadata().avg_bits);
      stats->set_build_ms(carry.card_build_ms);
      absl::Time t = absl::Now();
      absl::Status s =
          cachecard::InjectCard(card, deps_.store, model.fingerprint().bytes, &seq.kv_cache());
      if (s.ok()) s = seq.SetTokensAfterInjection(carry.ids);
      stats->set_inject_ms(MsSince(t));
      if (s.ok()) {
        stats->set_mode(ToProto(carry.handoff.mode));
        deps_.stats->Add(Stats::kCardsInjected);
        deps_.stats->Observe(Stats::kInjectMs, stats->inject_ms());
        injected_card_ = true;
        return instruction;
      }
      seq.Reset();
      fallback = absl::StrCat("inject failed: ", s.ToString());
    }
    // Re-prefill, requested or as a fallback.
    stats->set_mode(v1::HANDOFF_MODE_REPREFILL);
    if (!fallback.empty()) {
      stats->set_fallback_reason(fallback);
      deps_.stats->Add(Stats::kReprefillFallbacks);
      spdlog::warn("task {} hop {}: card handoff fell back to re-prefill: {}", ctx_.id(), k + 1,
                   fallback);
    }
    std::vector<int32_t> prompt;
    if (carry.fingerprint == model.fingerprint()) {
      prompt = carry.ids;
    } else {
      QKV_ASSIGN_OR_RETURN(prompt, Encode(model, carry.text, /*add_special=*/true, "the context",
                                          agent.context_limit, StopCheck()));
    }
    stats->set_reprefill_tokens(static_cast<int64_t>(prompt.size()));
    prompt.insert(prompt.end(), instruction.begin(), instruction.end());
    return prompt;
  }

  // Builds hop k's outgoing card (card/full) into the store.
  void BuildCard(int k, Agent& agent, const Carry* received, Carry* out) {
    agents::Sequence& seq = *agent.sequence;
    const HandoffConfig& h = out->handoff;
    const int64_t n = seq.length();
    const cachecard::Card* parent = injected_card_ ? received->card.get() : nullptr;
    const int64_t first = parent != nullptr ? parent->metadata().total_tokens() : 0;
    absl::Time t0 = absl::Now();

    cachecard::CardEncoding enc = cachecard::CardEncoding::Full();
    std::string policy = "full";
    if (h.mode == HandoffMode::kCard) {
      quant::AllocationRequest req;
      req.num_tokens = n - first;
      req.avg_bits = h.bits;
      req.hop = k;
      req.num_hops = std::max(1, static_cast<int>(ctx_.spec().hops.size()) - 1);
      std::vector<float> importance;
      if (h.policy == BitPolicy::kAdaptive && h.bits != 16) {
        absl::StatusOr<agents::AttentionCapture> cap = seq.GetAttentionCapture();
        absl::StatusOr<std::vector<float>> imp =
            cap.ok()
                ? quant::TokenImportance({cap->probs.data(), cap->num_layers, cap->num_kv_heads,
                                          static_cast<int>(cap->rows), cap->context},
                                         {h.importance_window, quant::HeadReduction::kMax})
                : absl::StatusOr<std::vector<float>>(cap.status());
        if (imp.ok() && static_cast<int64_t>(imp->size()) == n) {
          importance.assign(imp->begin() + first, imp->end());
          req.policy = quant::AllocationPolicy::kAdaptive;
          req.importance = importance;
          policy = "adaptive";
        } else {
          spdlog::warn("task {} hop {}: no attention importance ({}); using uniform bits",
                       ctx_.id(), k + 1, imp.ok() ? "size mismatch" : imp.status().ToString());
        }
      }
      if (policy != "adaptive") {
        req.policy = quant::AllocationPolicy::kUniform;
        policy = "uniform";
      }
      absl::StatusOr<quant::BitPlan> plan = quant::AllocateBits(req);
      if (!plan.ok()) {
        out->card_fallback_reason =
            absl::StrCat("bit allocation failed: ", plan.status().ToString());
        return;
      }
      enc = cachecard::CardEncoding::Quantized(std::move(*plan),
                                               {quant::GroupAxis::kPerChannel, h.group_size},
                                               {quant::GroupAxis::kPerToken, h.group_size});
    }
    static absl::BitGen* gen = new absl::BitGen();  // absl::BitGen is thread-compatible:
    static absl::Mutex gen_mu(absl::kConstInit);    // guard it.
    cachecard::Provenance prov;
    {
      absl::MutexLock lock(&gen_mu);
      prov.card_id = cachecard::CardId::Random(*gen);
    }
    prov.source_agent = agent.entry.name;
    prov.hop_index = static_cast<uint32_t>(k);
    prov.created_unix_ms = absl::ToUnixMillis(absl::Now());
    prov.quant_policy = policy;
    prov.budget_bits = h.mode == HandoffMode::kCard ? h.bits : 0;

    const agents::ModelFingerprint& fp = agent.model->fingerprint();
    // Size first (no encoding): refuse over-limit cards before any work.
    cachecard::CountingSink counter;
    absl::StatusOr<cachecard::CardMetadata> sized = cachecard::WriteCard(
        seq.kv_cache(), n, seq.token_ids(), enc, fp.bytes, prov, parent, counter);
    if (sized.ok() && static_cast<int64_t>(counter.card_bytes()) > deps_.limits.max_card_bytes) {
      out->card_fallback_reason =
          absl::StrCat("card would be ", counter.card_bytes(),
                       " bytes, over limits.max_card_bytes = ", deps_.limits.max_card_bytes);
      return;
    }
    absl::StatusOr<CardHandle> card =
        sized.ok()
            ? deps_.store->Build(seq.kv_cache(), n, seq.token_ids(), enc, fp.bytes, prov, parent)
            : absl::StatusOr<CardHandle>(sized.status());
    if (!card.ok()) {
      out->card_fallback_reason = absl::StrCat("card build failed: ", card.status().ToString());
      spdlog::warn("task {} hop {}: {}", ctx_.id(), k + 1, out->card_fallback_reason);
      return;
    }
    out->card_build_ms = MsSince(t0);
    const cachecard::CardMetadata& m = (*card)->metadata();
    deps_.stats->Add(Stats::kCardsBuilt);
    deps_.stats->Add(Stats::kCardBytesBuilt, static_cast<int64_t>(m.card_bytes));
    deps_.stats->Observe(Stats::kCardBuildMs, out->card_build_ms);
    deps_.stats->Observe(Stats::kCardBitsPerElement, m.avg_bits);
    v1::TaskEvent ev;
    auto* e = ev.mutable_card_built();
    e->set_hop(k);
    e->set_card_id(m.card_id().ToHex());
    if (!m.parent_id.IsZero()) e->set_parent_id(m.parent_id.ToHex());
    e->set_tokens(m.num_tokens);
    e->set_bytes(static_cast<int64_t>(m.card_bytes));
    e->set_avg_bits(m.avg_bits);
    e->set_build_ms(out->card_build_ms);
    ctx_.Emit(std::move(ev));
    out->card = std::move(*card);
  }

  absl::StatusOr<Carry> RunHop(int k, const Carry* received, const std::string& previous) {
    const TaskSpec& spec = ctx_.spec();
    const ResolvedHop& hop = spec.hops[k];
    const bool last = k + 1 == static_cast<int>(spec.hops.size());
    EmitHopStarted(k);
    QKV_ASSIGN_OR_RETURN(AgentLease lease,
                         deps_.agents->Acquire(hop.agent, [this] { return ctx_.CheckStop(); }));
    Agent& agent = *lease;
    agents::Sequence& seq = *agent.sequence;
    const agents::Model& model = *agent.model;
    seq.Reset();
    injected_card_ = false;
    const bool adaptive_card = !last && hop.handoff.mode == HandoffMode::kCard &&
                               hop.handoff.policy == BitPolicy::kAdaptive;
    if (adaptive_card) {
      seq.EnableAttentionCapture(hop.handoff.importance_window);
    } else {
      seq.DisableAttentionCapture();
    }
    const absl::Time hop_start = absl::Now();

    QKV_RETURN_IF_ERROR(CheckExpandedPromptBytes(
        agent.entry.prompt_template, hop.instruction, static_cast<int64_t>(spec.input.size()),
        static_cast<int64_t>(previous.size()), k + 1, deps_.limits.max_input_bytes, "instruction"));
    std::string instruction = absl::StrReplaceAll(
        agent.entry.prompt_template,
        {{"{instruction}", ExpandInstruction(hop.instruction, spec.input, previous, k + 1)}});
    v1::HandoffStats handoff;
    std::vector<int32_t> prompt;
    if (received == nullptr) {
      QKV_ASSIGN_OR_RETURN(
          prompt, Encode(model, agent.entry.system + instruction,
                         /*add_special=*/true, "the prompt", agent.context_limit, StopCheck()));
    } else {
      std::vector<int32_t> inst;
      if (!instruction.empty()) {
        QKV_ASSIGN_OR_RETURN(inst, Encode(model, instruction, /*add_special=*/false,
                                          "the instruction", agent.context_limit, StopCheck()));
      }
      QKV_ASSIGN_OR_RETURN(prompt, ReceiveHandoff(k, agent, *received, inst, &handoff));
      v1::TaskEvent ev;
      ev.mutable_handoff()->set_hop(k);
      *ev.mutable_handoff()->mutable_stats() = handoff;
      ctx_.Emit(std::move(ev));
    }
    if (static_cast<int64_t>(prompt.size()) + seq.length() > agent.context_limit) {
      return absl::OutOfRangeError(
          absl::StrCat("context of ", prompt.size() + seq.length(), " tokens exceeds agent '",
                       agent.entry.name, "' context limit of ", agent.context_limit, " tokens"));
    }

    agents::GenerateOptions opts;
    const GenerationConfig& g = hop.generation;
    opts.sampling.temperature = g.temperature.value_or(0.0f);
    opts.sampling.top_k = g.top_k.value_or(0);
    opts.sampling.top_p = g.top_p.value_or(1.0f);
    opts.sampling.seed = g.seed.value_or(0);
    opts.max_new_tokens = g.max_new_tokens.value_or(64);
    opts.stop_strings = g.stop.value_or(std::vector<std::string>{});
    // The next hop continues from the whole context: feed the last token.
    opts.feed_final_token = !last;
    int64_t index = 0;
    absl::Status stop;
    opts.on_token = [&](int32_t id, std::string_view text) {
      if (id != agents::kFlushId || !text.empty()) {
        v1::TaskEvent ev;
        auto* t = ev.mutable_token();
        t->set_hop(k);
        t->set_id(id);
        t->set_text(std::string(text));
        t->set_index(index++);
        ctx_.Emit(std::move(ev));
      }
      stop = ctx_.CheckStop();
      return stop.ok();
    };
    const absl::Time gen_start = absl::Now();
    QKV_ASSIGN_OR_RETURN(agents::GenerateResult result, agents::Generate(seq, prompt, opts));
    if (!stop.ok()) return stop;

    v1::HopResult r;
    r.set_index(k);
    r.set_agent(hop.agent);
    r.set_model(agent.model_name);
    r.set_output(result.text);
    if (received != nullptr) *r.mutable_handoff_in() = handoff;
    r.set_prefill_tokens(result.timings.tokens_in);
    r.set_generated_tokens(result.timings.tokens_out);
    r.set_ttft_ms(absl::ToDoubleMilliseconds(gen_start - hop_start) + result.timings.ttft_ms);
    r.set_prefill_ms(result.timings.prefill_ms);
    r.set_decode_tokens_per_s(result.timings.decode_tokens_per_s);
    r.set_stop_reason(std::string(agents::StopReasonName(result.stop_reason)));

    Carry out;
    if (!last) {
      out.handoff = hop.handoff;
      out.ids = seq.token_ids();
      out.fingerprint = model.fingerprint();
      if (model.tokenizer() != nullptr) out.text = model.tokenizer()->Decode(out.ids);
      if (hop.handoff.mode != HandoffMode::kReprefill) BuildCard(k, agent, received, &out);
    }
    r.set_total_ms(MsSince(hop_start));
    last_output_ = result.text;

    deps_.stats->Add(Stats::kHopsRun);
    deps_.stats->Add(Stats::kTokensGenerated, result.timings.tokens_out);
    deps_.stats->Add(Stats::kTokensPrefilled, result.timings.tokens_in);
    if (result.timings.tokens_out > 0) deps_.stats->Observe(Stats::kHopTtftMs, r.ttft_ms());
    if (result.timings.tokens_out > 1) {
      deps_.stats->Observe(Stats::kDecodeTokensPerS, r.decode_tokens_per_s());
    }
    spdlog::info(
        "task {} hop {}/{} {}: handoff={}{} inject={:.2f}ms prefill={} tokens {:.1f}ms "
        "ttft={:.1f}ms out={} tokens {:.1f} tok/s stop={}{}",
        ctx_.id(), k + 1, spec.hops.size(), hop.agent,
        received ? HandoffModeName(received->handoff.mode) : "none",
        handoff.fallback_reason().empty() ? "" : "->reprefill", handoff.inject_ms(),
        r.prefill_tokens(), r.prefill_ms(), r.ttft_ms(), r.generated_tokens(),
        r.decode_tokens_per_s(), r.stop_reason(),
        out.card ? absl::StrCat(" card=", out.card->metadata().card_bytes, "B/",
                                out.card->metadata().num_tokens, "tok/",
                                absl::StrFormat("%.2f", out.card->metadata().avg_bits), "bits/",
                                absl::StrFormat("%.1f", out.card_build_ms), "ms")
                 : "");

    v1::TaskEvent ev;
    ev.mutable_hop_finished()->set_hop(k);
    *ev.mutable_hop_finished()->mutable_result() = r;
    ctx_.Emit(std::move(ev));
    ctx_.AddHopResult(r);
    return out;
  }

  // Cancellation/deadline check for long tokenizations.
  std::function<absl::Status()> StopCheck() {
    return [this] { return ctx_.CheckStop(); };
  }

  TaskContext& ctx_;
  const HopRunnerDeps& deps_;
  bool injected_card_ = false;  // the current hop's context came from a card
  std::string last_output_;
};

}  // namespace

std::string ExpandInstruction(const std::string& instruction, const std::string& input,
                              const std::string& previous, int hop_number) {
  return absl::StrReplaceAll(
      instruction,
      {{"{input}", input}, {"{previous}", previous}, {"{hop}", absl::StrCat(hop_number)}});
}

absl::StatusOr<std::string> RunTask(TaskContext& ctx, const HopRunnerDeps& deps) {
  return TaskRun(ctx, deps).Run();
}

}  // namespace qkvshare::daemon
