#include "daemon/workflow/executor.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/mutex.h"
#include "agents/generator.h"
#include "base/status_macros.h"
#include "daemon/prompt.h"
#include "daemon/stop_reason.h"

namespace qkvshare::daemon {

namespace {

double MsSince(absl::Time t) { return absl::ToDoubleMilliseconds(absl::Now() - t); }

bool IsStop(const absl::Status& s) {
  return s.code() == absl::StatusCode::kCancelled ||
         s.code() == absl::StatusCode::kDeadlineExceeded;
}

// Where the walk goes after a step: a step index, or -1 (the task ends).
struct Route {
  int to = -1;
  std::string reason;
};

// Everything the walk needs to continue; what a paused task keeps.
struct WalkState {
  int step = 0;                        // the step to run (or, paused: the await step)
  std::optional<HandedContext> carry;  // the context the step receives
  std::string input;                   // {input}
  std::string previous;                // {previous}
  std::vector<std::pair<std::string, std::string>> branches;  // last parallel block's outputs
  std::vector<int> visits;                                    // per step
  int steps_run = 0;                                          // against max_steps
  int run_index = 0;  // next agent run's 0-based index (events' `hop`)
};

class WalkCheckpoint : public TaskCheckpoint {
 public:
  explicit WalkCheckpoint(WalkState state) : state(std::move(state)) {}
  WalkState state;
};

// A line of hops as a graph: hop i's successor is hop i + 1.
std::vector<ResolvedStep> LineSteps(const std::vector<ResolvedHop>& hops) {
  std::vector<ResolvedStep> steps(hops.size());
  for (size_t i = 0; i < hops.size(); ++i) {
    steps[i].hop = hops[i];
    steps[i].config.agent = hops[i].agent;
  }
  return steps;
}

// One agent run: a step's, or one branch of a parallel step.
struct AgentRun {
  const ResolvedHop* hop = nullptr;
  int index = 0;     // run index (events' `hop`)
  std::string step;  // graph step name ("" for a line)
  int visit = 0;     // 1-based; 0 for a line
  int max_visits = 0;
  std::string branch;        // parallel branch name
  std::string instruction;   // expanded
  bool may_hand_on = false;  // feed the last token, capture importance
};

class TaskRun {
 public:
  TaskRun(TaskContext& ctx, const ExecutorDeps& deps)
      : ctx_(ctx),
        deps_(deps),
        graph_(!ctx.spec().steps.empty()),
        line_steps_(graph_ ? std::vector<ResolvedStep>{} : LineSteps(ctx.spec().hops)),
        steps_(graph_ ? ctx.spec().steps : line_steps_) {}

  absl::StatusOr<std::string> Run() {
    WalkState st;
    if (std::unique_ptr<TaskCheckpoint> cp = ctx_.TakeCheckpoint(); cp != nullptr) {
      st = std::move(static_cast<WalkCheckpoint&>(*cp).state);
      st.input = ctx_.resume_input();
      return Walk(std::move(st), /*resuming=*/true);
    }
    if (const TaskSpec& spec = ctx_.spec(); spec.context_card) {
      // Start from a stored card: the first step receives it.
      absl::StatusOr<HandedContext> start = deps_.handoff->Resume(**spec.context_card);
      if (!start.ok()) {
        return absl::Status(start.status().code(),
                            absl::StrCat("context card: ", start.status().message()));
      }
      st.carry = *std::move(start);
    }
    st.input = ctx_.spec().input;
    st.visits.assign(steps_.size(), 0);
    return Walk(std::move(st), /*resuming=*/false);
  }

 private:
  int max_steps() const { return graph_ ? ctx_.spec().max_steps : static_cast<int>(steps_.size()); }

  int IndexOf(const std::string& name) const {
    for (size_t i = 0; i < steps_.size(); ++i)
      if (steps_[i].config.name == name) return static_cast<int>(i);
    return -1;  // kEndStep
  }

  std::string Label(int i, int visit) const {
    const StepConfig& c = steps_[i].config;
    if (!graph_) return absl::StrCat("hop ", i + 1, "/", steps_.size(), " (", c.agent, ")");
    std::string s = absl::StrCat("step ", c.name, ", visit ", visit);
    if (c.max_visits > 0) absl::StrAppend(&s, "/", c.max_visits);
    return s;
  }

  // The successor of step `i` given its output (`text`), before bounds.
  Route Choose(int i, const std::string& text) const {
    if (!graph_) return {i + 1 < static_cast<int>(steps_.size()) ? i + 1 : -1, "next"};
    const StepConfig& c = steps_[i].config;
    if (!c.join.empty()) return {IndexOf(c.join), "join"};
    for (size_t r = 0; r < c.routes.size(); ++r) {
      const RouteConfig& route = c.routes[r];
      if (RouteMatches(route, text)) {
        return {IndexOf(route.to),
                absl::StrCat("routes[", r, "]: ", c.await_input ? "input " : "output ",
                             std::string(RouteTestName(route.test)), " '", route.pattern, "'")};
      }
    }
    if (!c.routes.empty()) return {IndexOf(c.default_to), "default (no route matched)"};
    if (!c.next.empty()) return {IndexOf(c.next), "next"};
    return {-1, "no next step"};
  }

  // Applies the bounds to `route` (the target's max_visits, max_steps).
  // Errors: ResourceExhausted naming the bound when the task must fail.
  absl::StatusOr<Route> Bound(Route route, const WalkState& st) const {
    for (size_t hops = 0; route.to >= 0; ++hops) {
      const StepConfig& t = steps_[route.to].config;
      if (t.max_visits == 0 || st.visits[route.to] < t.max_visits) break;
      if (t.on_limit.empty() || hops > steps_.size()) {
        return absl::ResourceExhaustedError(
            absl::StrCat("step ", t.name, " reached max_visits ", t.max_visits,
                         t.on_limit.empty() ? " (no on_limit)" : " (on_limit cycle)"));
      }
      absl::StrAppend(&route.reason, "; step ", t.name, " is at max_visits ", t.max_visits,
                      ": on_limit -> ", t.on_limit);
      route.to = IndexOf(t.on_limit);
    }
    if (route.to >= 0 && st.steps_run >= max_steps()) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "max_steps ", max_steps(), " reached before step ", steps_[route.to].config.name));
    }
    return route;
  }

  void EmitRoute(int i, int visit, const Route& r) {
    if (!graph_) return;
    v1::TaskEvent ev;
    auto* e = ev.mutable_route();
    e->set_step(steps_[i].config.name);
    e->set_visit(visit);
    e->set_to(r.to < 0 ? kEndStep : steps_[r.to].config.name);
    e->set_reason(r.reason);
    ctx_.Emit(std::move(ev));
  }

  // `instruction` with {input}, {previous}, {hop}, {visit}, {branches} and
  // {branch.NAME} substituted. The substituted size is computed before
  // anything is built ({input} x 8000 must not build 8 GiB): more than
  // limits.max_input_bytes is InvalidArgument.
  absl::StatusOr<std::string> Expand(const std::string& instruction, const WalkState& st,
                                     int visit) const {
    std::vector<std::pair<std::string, std::string>> subs = {
        {"{input}", st.input},
        {"{previous}", st.previous},
        {"{hop}", absl::StrCat(st.run_index + 1)},
        {"{visit}", absl::StrCat(visit)}};
    std::vector<std::string> lines;
    for (const auto& [name, text] : st.branches) {
      lines.push_back(absl::StrCat(name, ": ", text));
      subs.push_back({absl::StrCat("{branch.", name, "}"), text});
    }
    subs.push_back({"{branches}", absl::StrJoin(lines, "\n")});
    int64_t substituted = 0;
    for (const auto& [name, text] : subs) {
      for (size_t pos = instruction.find(name); pos != std::string::npos;
           pos = instruction.find(name, pos + name.size())) {
        substituted += static_cast<int64_t>(text.size());
      }
    }
    if (substituted > deps_.max_input_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the instruction would hold ", substituted,
          " bytes of substituted text; limits.max_input_bytes is ", deps_.max_input_bytes));
    }
    return absl::StrReplaceAll(instruction, subs);
  }

  absl::StatusOr<std::string> Walk(WalkState st, bool resuming) {
    std::string output;
    while (true) {
      const int i = st.step;
      const ResolvedStep& step = steps_[i];
      const StepConfig& c = step.config;
      QKV_RETURN_IF_ERROR(ctx_.CheckStop());
      int visit = st.visits[i];
      if (!(resuming && c.await_input)) {
        visit = ++st.visits[i];
        st.steps_run += c.parallel.empty() ? 1 : 1 + static_cast<int>(c.parallel.size());
      }
      Route route;
      if (c.await_input) {
        if (!resuming) {
          const std::string prompt = *c.await_input;
          const std::string name = c.name;
          QKV_RETURN_IF_ERROR(
              ctx_.Pause(std::make_unique<WalkCheckpoint>(std::move(st)), name, prompt));
          return std::string();
        }
        resuming = false;
        output = st.input;
        QKV_ASSIGN_OR_RETURN(route, Bound(Choose(i, output), st));
        EmitRoute(i, visit, route);
      } else if (!c.parallel.empty()) {
        QKV_ASSIGN_OR_RETURN(st.branches, RunBranches(i, visit, st));
        std::vector<std::string> texts;
        for (const auto& b : st.branches) texts.push_back(b.second);
        output = absl::StrJoin(texts, "\n");
        QKV_ASSIGN_OR_RETURN(route, Bound(Choose(i, output), st));
        EmitRoute(i, visit, route);
      } else {
        AgentRun run;
        run.hop = &step.hop;
        run.index = st.run_index++;
        run.step = c.name;
        run.visit = graph_ ? visit : 0;
        run.max_visits = c.max_visits;
        QKV_ASSIGN_OR_RETURN(run.instruction, Expand(step.hop.instruction, st, visit));
        // keep_context: whichever step ends the task keeps its whole context.
        run.may_hand_on = MayHandOn(i) || ctx_.spec().keep_context;
        absl::StatusOr<std::optional<HandedContext>> sent = RunAgent(
            run, st.carry ? &*st.carry : nullptr,
            [&](const std::string& text) -> absl::StatusOr<Route> {
              QKV_ASSIGN_OR_RETURN(Route r, Bound(Choose(i, text), st));
              EmitRoute(i, visit, r);
              route = r;
              return r;
            },
            &output);
        if (!sent.ok()) {
          // A step that failed while the task was being cancelled (or ran
          // out of time) ends the task CANCELLED / DEADLINE_EXCEEDED.
          if (absl::Status stop = ctx_.CheckStop(); !stop.ok()) return stop;
          if (IsStop(sent.status())) return sent.status();
          return absl::Status(sent.status().code(),
                              absl::StrCat(Label(i, visit), ": ", sent.status().message()));
        }
        st.carry = std::move(*sent);
        st.branches.clear();
      }
      st.previous = output;
      if (route.to < 0) return output;
      st.step = route.to;
    }
  }

  // Whether step `i` can have a successor (then it feeds its last token and
  // captures importance for its card).
  bool MayHandOn(int i) const {
    if (!graph_) return i + 1 < static_cast<int>(steps_.size());
    const StepConfig& c = steps_[i].config;
    if (!c.next.empty() && c.next != kEndStep) return true;
    if (!c.routes.empty()) {
      if (c.default_to != kEndStep) return true;
      for (const RouteConfig& r : c.routes)
        if (r.to != kEndStep) return true;
    }
    return false;
  }

  // Runs every branch of parallel step `i` at once, each on its own agent
  // from the same received context; returns (name, output) in branch order
  // and records the results in that order.
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> RunBranches(int i, int visit,
                                                                               WalkState& st) {
    const ResolvedStep& step = steps_[i];
    const StepConfig& c = step.config;
    const size_t n = step.branches.size();
    std::vector<AgentRun> runs(n);
    std::vector<absl::Status> status(n);
    std::vector<std::string> outputs(n);
    for (size_t b = 0; b < n; ++b) {
      runs[b].hop = &step.branches[b];
      runs[b].index = st.run_index++;
      runs[b].step = c.name;
      runs[b].visit = visit;
      runs[b].max_visits = c.max_visits;
      runs[b].branch = c.parallel[b].name;
      QKV_ASSIGN_OR_RETURN(runs[b].instruction, Expand(step.branches[b].instruction, st, visit));
    }
    const HandedContext* carry = st.carry ? &*st.carry : nullptr;
    auto run_branch = [&](size_t b) {
      absl::StatusOr<std::optional<HandedContext>> r = RunAgent(
          runs[b], carry, [](const std::string&) -> absl::StatusOr<Route> { return Route{}; },
          &outputs[b]);
      status[b] = r.status();
    };
    std::vector<std::thread> threads;
    for (size_t b = 1; b < n; ++b) threads.emplace_back(run_branch, b);
    run_branch(0);
    for (std::thread& t : threads) t.join();
    for (size_t b = 0; b < n; ++b) {
      if (status[b].ok()) continue;
      if (absl::Status stop = ctx_.CheckStop(); !stop.ok()) return stop;
      if (IsStop(status[b])) return status[b];
      return absl::Status(status[b].code(),
                          absl::StrCat(Label(i, visit), ", branch ", runs[b].branch, " (",
                                       runs[b].hop->agent, "): ", status[b].message()));
    }
    for (size_t b = 0; b < n; ++b) ctx_.AddHopResult(results_[runs[b].index]);
    std::vector<std::pair<std::string, std::string>> out;
    for (size_t b = 0; b < n; ++b) out.emplace_back(runs[b].branch, outputs[b]);
    return out;
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

  // One agent run: lease, receive `received` (nullptr: fresh prompt),
  // generate, `choose` the route on the output, and when it leads to a step,
  // hand the context on (returned). Branch runs (run.branch set) record
  // their result in results_ for the caller; others add it to the task.
  absl::StatusOr<std::optional<HandedContext>> RunAgent(
      const AgentRun& run, const HandedContext* received,
      const std::function<absl::StatusOr<Route>(const std::string&)>& choose, std::string* output) {
    const ResolvedHop& hop = *run.hop;
    const int k = run.index;
    const std::string log_prefix =
        absl::StrCat("task ", ctx_.id(), " hop ", k + 1, run.step.empty() ? "" : " step ", run.step,
                     run.branch.empty() ? "" : " branch ", run.branch);
    {
      v1::TaskEvent ev;
      auto* e = ev.mutable_hop_started();
      e->set_hop(k);
      e->set_num_hops(max_steps());
      e->set_agent(hop.agent);
      e->set_step(run.step);
      e->set_visit(run.visit);
      e->set_max_visits(run.max_visits);
      e->set_branch(run.branch);
      ctx_.Emit(std::move(ev));
    }
    QKV_ASSIGN_OR_RETURN(AgentLease lease,
                         deps_.agents->Acquire(hop.agent, [this] { return ctx_.CheckStop(); }));
    Agent& agent = *lease;
    agents::Sequence& seq = *agent.sequence;
    const agents::Model& model = *agent.model;
    seq.Reset();
    Handoff::PrepareSender(seq, run.may_hand_on ? &hop.handoff : nullptr);
    const absl::Time hop_start = absl::Now();

    const auto check_stop = [this] { return ctx_.CheckStop(); };
    std::string instruction =
        absl::StrReplaceAll(agent.entry.prompt_template, {{"{instruction}", run.instruction}});
    Received in;
    Prefixed prefix;  // the system text, when it came from a prefix card
    if (received == nullptr && deps_.prefix_cards && !agent.entry.system.empty()) {
      // Prefix card: BOS + system tokens injected (or prefilled once and
      // kept), then the instruction encoded on its own.
      QKV_ASSIGN_OR_RETURN(std::vector<int32_t> system_ids,
                           EncodeText(model, agent.entry.system, /*add_special=*/true,
                                      "the system text", agent.context_limit, check_stop));
      QKV_ASSIGN_OR_RETURN(in.prompt,
                           EncodeText(model, instruction, /*add_special=*/false, "the instruction",
                                      agent.context_limit, check_stop));
      if (in.prompt.empty() ||
          static_cast<int64_t>(system_ids.size() + in.prompt.size()) > agent.context_limit) {
        in.prompt.insert(in.prompt.begin(), system_ids.begin(), system_ids.end());
      } else {
        QKV_ASSIGN_OR_RETURN(prefix, deps_.handoff->Prefix(agent, system_ids, log_prefix));
      }
    } else if (received == nullptr) {
      QKV_ASSIGN_OR_RETURN(in.prompt, EncodeText(model, agent.entry.system + instruction,
                                                 /*add_special=*/true, "the prompt",
                                                 agent.context_limit, check_stop));
    } else {
      std::vector<int32_t> inst;
      if (!instruction.empty()) {
        QKV_ASSIGN_OR_RETURN(inst, EncodeText(model, instruction, /*add_special=*/false,
                                              "the instruction", agent.context_limit, check_stop));
      }
      QKV_ASSIGN_OR_RETURN(in, deps_.handoff->Receive(agent, *received, inst, log_prefix));
      v1::TaskEvent ev;
      ev.mutable_handoff()->set_hop(k);
      *ev.mutable_handoff()->mutable_stats() = in.stats;
      ev.mutable_handoff()->set_step(run.step);
      ev.mutable_handoff()->set_branch(run.branch);
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
    // A next step (or a kept card) continues from the whole context: feed
    // the last token.
    opts.feed_final_token = run.may_hand_on;
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
        t->set_branch(run.branch);
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
    // Tokens the prefix card's prefill (first use) added count as prefill.
    const int64_t prefix_prefilled = prefix.injected ? 0 : prefix.tokens;
    r.set_prefill_tokens(result.timings.tokens_in + prefix_prefilled);
    r.set_generated_tokens(result.timings.tokens_out);
    r.set_ttft_ms(absl::ToDoubleMilliseconds(gen_start - hop_start) + result.timings.ttft_ms);
    r.set_prefill_ms(result.timings.prefill_ms + prefix.prefill_ms);
    if (prefix.card) r.set_prefix_card(prefix.card->id().ToHex());
    if (prefix.injected) {
      r.set_prefix_tokens(prefix.tokens);
      r.set_prefix_inject_ms(prefix.inject_ms);
    }
    r.set_decode_tokens_per_s(result.timings.decode_tokens_per_s);
    SetStopReason(result.stop_reason, &r);
    r.set_step(run.step);
    r.set_visit(run.visit);
    r.set_max_visits(run.max_visits);
    r.set_branch(run.branch);

    QKV_ASSIGN_OR_RETURN(Route route, choose(result.text));
    std::optional<HandedContext> out;
    if (run.branch.empty() && graph_) {
      r.set_route(route.to < 0 ? kEndStep : steps_[route.to].config.name);
      r.set_route_reason(route.reason);
    }
    // A card of this context is incremental on the card it started from:
    // the received one, or the agent's prefix card.
    const cachecard::Card* parent = in.injected ? received->card.get() : prefix.card.get();
    const CardPosition position{k, std::max(1, max_steps() - 1)};
    if (route.to >= 0 && run.may_hand_on) {
      out = deps_.handoff->Send(agent, hop.handoff, parent, position, log_prefix);
      if (out->card) EmitCardBuilt(k, *out);
    } else if (route.to < 0 && run.branch.empty() && ctx_.spec().keep_context) {
      // The task ends here: its final context becomes a kept card.
      QKV_ASSIGN_OR_RETURN(std::string kept,
                           deps_.handoff->Keep(agent, hop.handoff, parent, position,
                                               absl::Now() + deps_.kept_ttl, log_prefix));
      r.set_kept_card(kept);
    }
    r.set_total_ms(MsSince(hop_start));
    *output = result.text;

    deps_.stats->Add(Stats::kHopsRun);
    deps_.stats->Add(Stats::kTokensGenerated, result.timings.tokens_out);
    deps_.stats->Add(Stats::kTokensPrefilled, r.prefill_tokens());
    if (result.timings.tokens_out > 0) deps_.stats->Observe(Stats::kHopTtftMs, r.ttft_ms());
    if (result.timings.tokens_out > 1) {
      deps_.stats->Observe(Stats::kDecodeTokensPerS, r.decode_tokens_per_s());
    }
    spdlog::info(
        "{}: handoff={}{} inject={:.2f}ms prefill={} tokens {:.1f}ms "
        "ttft={:.1f}ms out={} tokens {:.1f} tok/s stop={}{}{}",
        log_prefix, received ? HandoffModeName(received->handoff.mode) : "none",
        in.stats.fallback_reason().empty() ? "" : "->reprefill", in.stats.inject_ms(),
        r.prefill_tokens(), r.prefill_ms(), r.ttft_ms(), r.generated_tokens(),
        r.decode_tokens_per_s(), r.stop_reason(),
        out && out->card ? absl::StrCat(" card=", out->card->metadata().card_bytes, "B/",
                                        out->card->metadata().num_tokens, "tok/",
                                        absl::StrFormat("%.2f", out->card->metadata().avg_bits),
                                        "bits/", absl::StrFormat("%.1f", out->card_build_ms), "ms")
                         : "",
        r.route().empty() ? "" : absl::StrCat(" -> ", r.route(), " (", r.route_reason(), ")"));

    v1::TaskEvent ev;
    ev.mutable_hop_finished()->set_hop(k);
    *ev.mutable_hop_finished()->mutable_result() = r;
    ctx_.Emit(std::move(ev));
    if (run.branch.empty()) {
      ctx_.AddHopResult(r);
    } else {
      absl::MutexLock lock(&results_mu_);
      results_[k] = r;
    }
    return out;
  }

  TaskContext& ctx_;
  const ExecutorDeps& deps_;
  const bool graph_;
  const std::vector<ResolvedStep> line_steps_;
  const std::vector<ResolvedStep>& steps_;
  absl::Mutex results_mu_;
  std::map<int, v1::HopResult> results_;  // branch results by run index
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
