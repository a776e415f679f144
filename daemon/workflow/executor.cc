#include "daemon/workflow/executor.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "agents/generator.h"
#include "base/status_macros.h"

namespace qkvshare::daemon {

namespace {

double MsSince(absl::Time t) { return absl::ToDoubleMilliseconds(absl::Now() - t); }

class TaskRun {
 public:
  TaskRun(TaskContext& ctx, const ExecutorDeps& deps) : ctx_(ctx), deps_(deps) {}

  absl::StatusOr<std::string> Run() {
    const TaskSpec& spec = ctx_.spec();
    const int num_hops = static_cast<int>(spec.hops.size());
    std::optional<HandedContext> carry;
    if (spec.context_card) {
      absl::StatusOr<HandedContext> start = deps_.handoff->Resume(**spec.context_card);
      if (!start.ok()) {
        return absl::Status(start.status().code(),
                            absl::StrCat("context card: ", start.status().message()));
      }
      carry = *std::move(start);
    }
    std::string previous_output;
    for (int k = 0; k < num_hops; ++k) {
      QKV_RETURN_IF_ERROR(ctx_.CheckStop());
      absl::StatusOr<HandedContext> next = RunHop(k, carry ? &*carry : nullptr, previous_output);
      if (!next.ok()) {
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

  void EmitCardBuilt(int k, const HandedContext& out) {
    const cachecard::CardMetadata& m = out.card->metadata();
    v1::TaskEvent ev;
    auto* e = ev.mutable_card_built();
    e->set_hop(k);
    e->set_card_id(m.card_id().ToHex());
    if (!m.parent_id.IsZero()) e->set_parent_id(m.parent_id.ToHex());
    e->set_tokens(m.num_tokens);
    e->set_bytes(static_cast<int64_t>(m.card_bytes));
    e->set_avg_bits(m.avg_bits);
    e->set_build_ms(out.card_build_ms);
    ctx_.Emit(std::move(ev));
  }

  absl::StatusOr<HandedContext> RunHop(int k, const HandedContext* received,
                                       const std::string& previous) {
    const TaskSpec& spec = ctx_.spec();
    const ResolvedHop& hop = spec.hops[k];
    const bool last = k + 1 == static_cast<int>(spec.hops.size());
    const bool keep = last && spec.keep_context;  // the final context becomes a kept card
    const std::string log_prefix = absl::StrCat("task ", ctx_.id(), " hop ", k + 1);
    EmitHopStarted(k);
    QKV_ASSIGN_OR_RETURN(AgentLease lease,
                         deps_.agents->Acquire(hop.agent, [this] { return ctx_.CheckStop(); }));
    Agent& agent = *lease;
    agents::Sequence& seq = *agent.sequence;
    const agents::Model& model = *agent.model;
    seq.Reset();
    Handoff::PrepareSender(seq, last && !keep ? nullptr : &hop.handoff);
    const absl::Time hop_start = absl::Now();

    std::string instruction = absl::StrReplaceAll(
        agent.entry.prompt_template,
        {{"{instruction}", ExpandInstruction(hop.instruction, spec.input, previous, k + 1)}});
    Received in;
    if (received == nullptr) {
      QKV_ASSIGN_OR_RETURN(in.prompt, EncodeText(model, agent.entry.system + instruction,
                                                 /*add_special=*/true, "the prompt"));
    } else {
      std::vector<int32_t> inst;
      if (!instruction.empty()) {
        QKV_ASSIGN_OR_RETURN(
            inst, EncodeText(model, instruction, /*add_special=*/false, "the instruction"));
      }
      QKV_ASSIGN_OR_RETURN(in, deps_.handoff->Receive(agent, *received, inst, log_prefix));
      v1::TaskEvent ev;
      ev.mutable_handoff()->set_hop(k);
      *ev.mutable_handoff()->mutable_stats() = in.stats;
      ctx_.Emit(std::move(ev));
    }
    const std::vector<int32_t>& prompt = in.prompt;
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
    // The next hop (or a kept card) continues from the whole context: feed
    // the last token.
    opts.feed_final_token = !last || keep;
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
    if (received != nullptr) *r.mutable_handoff_in() = in.stats;
    r.set_prefill_tokens(result.timings.tokens_in);
    r.set_generated_tokens(result.timings.tokens_out);
    r.set_ttft_ms(absl::ToDoubleMilliseconds(gen_start - hop_start) + result.timings.ttft_ms);
    r.set_prefill_ms(result.timings.prefill_ms);
    r.set_decode_tokens_per_s(result.timings.decode_tokens_per_s);
    r.set_stop_reason(std::string(agents::StopReasonName(result.stop_reason)));

    HandedContext out;
    const cachecard::Card* parent = in.injected ? received->card.get() : nullptr;
    const int num_hops = static_cast<int>(spec.hops.size());
    if (!last) {
      out = deps_.handoff->Send(agent, hop.handoff, parent, {k, num_hops - 1}, log_prefix);
      if (out.card) EmitCardBuilt(k, out);
    } else if (keep) {
      QKV_ASSIGN_OR_RETURN(
          std::string kept,
          deps_.handoff->Keep(agent, hop.handoff, parent, {k, std::max(1, num_hops - 1)},
                              absl::Now() + deps_.kept_ttl, log_prefix));
      r.set_kept_card(kept);
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
        in.stats.fallback_reason().empty() ? "" : "->reprefill", in.stats.inject_ms(),
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

  TaskContext& ctx_;
  const ExecutorDeps& deps_;
  std::string last_output_;
};

}  // namespace

std::string ExpandInstruction(const std::string& instruction, const std::string& input,
                              const std::string& previous, int hop_number) {
  return absl::StrReplaceAll(
      instruction,
      {{"{input}", input}, {"{previous}", previous}, {"{hop}", absl::StrCat(hop_number)}});
}

absl::StatusOr<std::string> RunTask(TaskContext& ctx, const ExecutorDeps& deps) {
  return TaskRun(ctx, deps).Run();
}

}  // namespace qkvshare::daemon
