#include "daemon/server_core.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "base/logging.h"
#include "base/status_macros.h"
#include "cachecard/card.h"
#include "cachecard/flatten.h"
#include "cachecard/inspect.h"
#include "daemon/handoff/handoff.h"
#include "daemon/prompt.h"
#include "daemon/unix_socket.h"
#include "daemon/version.h"
#include "daemon/workflow/executor.h"

namespace qkvshare::daemon {

namespace {

HandoffMode FromProto(v1::HandoffMode m, HandoffMode fallback) {
  switch (m) {
    case v1::HANDOFF_MODE_CARD:
      return HandoffMode::kCard;
    case v1::HANDOFF_MODE_FULL:
      return HandoffMode::kFull;
    case v1::HANDOFF_MODE_REPREFILL:
      return HandoffMode::kReprefill;
    default:
      return fallback;
  }
}

BitPolicy FromProto(v1::BitPolicy p, BitPolicy fallback) {
  switch (p) {
    case v1::BIT_POLICY_ADAPTIVE:
      return BitPolicy::kAdaptive;
    case v1::BIT_POLICY_UNIFORM:
      return BitPolicy::kUniform;
    default:
      return fallback;
  }
}

// Rejects enum values the daemon does not know (a newer or hostile client
// sends them as plain integers): they must not silently mean "unset".
// `where` names the message, e.g. "handoff_override" or "hop 2 handoff".
absl::Status CheckHandoffEnums(const v1::Handoff& h, const std::string& where) {
  if (!v1::HandoffMode_IsValid(h.mode())) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ".mode: unknown HandoffMode value ", static_cast<int>(h.mode())));
  }
  if (!v1::BitPolicy_IsValid(h.policy())) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ".policy: unknown BitPolicy value ", static_cast<int>(h.policy())));
  }
  return absl::OkStatus();
}

// Applies the set fields of `h` over `base`.
HandoffConfig Overlay(HandoffConfig base, const v1::Handoff& h) {
  base.mode = FromProto(h.mode(), base.mode);
  if (h.has_bits()) base.bits = h.bits();
  base.policy = FromProto(h.policy(), base.policy);
  return base;
}

GenerationConfig FromProto(const v1::GenerationParams& p) {
  GenerationConfig g;
  if (p.has_max_new_tokens()) g.max_new_tokens = p.max_new_tokens();
  if (p.has_temperature()) g.temperature = p.temperature();
  if (p.has_top_k()) g.top_k = p.top_k();
  if (p.has_top_p()) g.top_p = p.top_p();
  if (p.has_seed()) g.seed = p.seed();
  if (p.stop_size() > 0) g.stop = std::vector<std::string>(p.stop().begin(), p.stop().end());
  return g;
}

absl::Status ValidateGeneration(const GenerationConfig& g, const std::string& where) {
  if (g.max_new_tokens && *g.max_new_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": max_new_tokens must be >= 0"));
  }
  if (g.temperature && !(*g.temperature >= 0)) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": temperature must be >= 0"));
  }
  if (g.top_k && *g.top_k < 0) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": top_k must be >= 0"));
  }
  if (g.top_p && !(*g.top_p > 0 && *g.top_p <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": top_p must be in (0, 1]"));
  }
  if (g.stop) {
    for (const std::string& s : *g.stop) {
      if (s.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": stop strings must not be empty"));
      }
    }
  }
  return absl::OkStatus();
}

// The directory of the Unix socket (created 0750 when missing): the runtime
// directory that holds the instance lock, out of other users' reach.
absl::StatusOr<std::string> RuntimeDirectory(const std::string& listen) {
  QKV_ASSIGN_OR_RETURN(std::string socket, UnixSocketPath(listen));
  QKV_RETURN_IF_ERROR(CreateSocketDirectory(socket));
  const std::string dir = std::filesystem::path(socket).parent_path().string();
  return dir.empty() ? std::string(".") : dir;
}

void LogStaleSegments(const std::string& instance, const cachecard::shm::StaleSegments& stale) {
  if (stale.removed > 0) {
    spdlog::warn(
        "card store: removed {} stale segment(s), {} bytes, left by a previous run of "
        "instance '{}'",
        stale.removed, stale.bytes, instance);
  }
  if (stale.foreign > 0) {
    spdlog::warn(
        "card store: left {} name(s) of instance '{}' that this user does not own in "
        "place, e.g. {}",
        stale.foreign, instance, stale.foreign_example);
  }
}

v1::Summary ToProto(const Stats::Summary& s) {
  v1::Summary out;
  out.set_count(s.count);
  out.set_mean(s.mean);
  out.set_p50(s.p50);
  out.set_p90(s.p90);
  out.set_p99(s.p99);
  out.set_max(s.max);
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ServerCore>> ServerCore::Create(DaemonConfig config) {
  std::unique_ptr<ServerCore> core(new ServerCore(std::move(config)));
  const DaemonConfig& cfg = core->config_;
  QKV_ASSIGN_OR_RETURN(std::vector<WorkflowConfig> workflows,
                       LoadWorkflowDir(cfg.workflows_dir, cfg));
  QKV_ASSIGN_OR_RETURN(core->pool_, AgentPool::Create(cfg));
  cachecard::shm::CardStoreOptions so;
  so.instance = cfg.instance;
  QKV_ASSIGN_OR_RETURN(so.lock_dir, RuntimeDirectory(cfg.listen));
  so.quota_bytes = static_cast<uint64_t>(cfg.card_store.quota_bytes);
  so.ttl = absl::Seconds(cfg.card_store.ttl_seconds);
  Stats* stats_ptr = &core->stats_;
  so.on_evict = [stats_ptr](const cachecard::CardId&) { stats_ptr->Add(Stats::kCardsEvicted); };
  QKV_ASSIGN_OR_RETURN(core->store_, cachecard::shm::CardStore::Create(so));
  LogStaleSegments(cfg.instance, core->store_->stale_at_start());
  core->importer_ = std::make_unique<CardImporter>(core->store_.get(), cfg.limits.max_card_bytes,
                                                   cfg.limits.max_concurrent_imports);
  {
    absl::MutexLock lock(&core->mu_);
    core->workflows_ = std::move(workflows);
  }
  core->handoff_ = std::make_unique<Handoff>(core->store_.get(), &core->stats_, cfg.limits);
  ExecutorDeps deps{core->pool_.get(),
                    core->handoff_.get(),
                    &core->stats_,
                    cfg.limits.max_input_bytes,
                    absl::Seconds(cfg.card_store.kept_ttl_seconds),
                    cfg.card_store.prefix_cards};
  Stats* stats = &core->stats_;
  TaskManager::Options to{cfg.limits.max_concurrent_tasks, cfg.limits.queue_length,
                          cfg.limits.keep_finished_tasks, cfg.limits.max_paused_tasks,
                          absl::Seconds(cfg.limits.paused_ttl_seconds)};
  to.max_watchers = cfg.limits.max_watchers;
  to.max_watchers_per_task = cfg.limits.max_watchers_per_task;
  core->tasks_ = std::make_unique<TaskManager>(
      to, [deps](TaskContext& ctx) { return RunTask(ctx, deps); },
      [stats](const v1::Task& t) {
        stats->Add(t.state() == v1::TASK_STATE_FINISHED ? Stats::kTasksFinished
                   : t.state() == v1::TASK_STATE_FAILED ? Stats::kTasksFailed
                                                        : Stats::kTasksCancelled);
        if (t.started_unix_ms() > 0) {
          stats->Observe(Stats::kTaskTotalMs,
                         static_cast<double>(t.ended_unix_ms() - t.started_unix_ms()));
        }
        spdlog::info("task {} {} {}: {} hop(s), {} ms{}{}", t.id(),
                     t.workflow().empty() ? "(inline)" : LogSafe(t.workflow()),
                     v1::TaskState_Name(t.state()).substr(11), t.hops_size(),
                     t.started_unix_ms() > 0 ? t.ended_unix_ms() - t.started_unix_ms() : 0,
                     t.reason().empty() ? "" : ", reason: ", LogSafe(t.reason(), 1024));
      });
  core->tasks_->Start();
  return core;
}

ServerCore::~ServerCore() { Shutdown(absl::ZeroDuration()); }

absl::StatusOr<TaskSpec> ServerCore::Resolve(const v1::SubmitTaskRequest& req) const {
  TaskSpec spec;
  spec.label = req.label();
  if (req.label().size() > kMaxLabelBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("label is ", req.label().size(), " bytes; at most ", kMaxLabelBytes));
  }
  if (req.inline_().hops_size() > kMaxHops) {
    return absl::InvalidArgumentError(absl::StrCat(
        "inline pipeline has ", req.inline_().hops_size(), " hops; at most ", kMaxHops));
  }
  spec.input = req.input();
  if (req.input().empty()) {
    return absl::InvalidArgumentError("input is empty: give the text the first hop starts from");
  }
  if (static_cast<int64_t>(req.input().size()) > config_.limits.max_input_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("input is ", req.input().size(),
                                                   " bytes; limits.max_input_bytes is ",
                                                   config_.limits.max_input_bytes));
  }
  QKV_RETURN_IF_ERROR(CheckHandoffEnums(req.handoff_override(), "handoff_override"));
  std::vector<HopConfig> hops;
  std::vector<StepConfig> graph;
  if (req.has_inline_()) {
    for (int i = 0; i < req.inline_().hops_size(); ++i) {
      const v1::HopSpec& h = req.inline_().hops(i);
      HopConfig hop;
      hop.agent = h.agent();
      hop.instruction = h.instruction();
      if (absl::Status p = CheckPlaceholders(hop.instruction, kInstructionPlaceholders); !p.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("hop ", i + 1, " instruction: ", p.message()));
      }
      hop.generation = FromProto(h.generation());
      QKV_RETURN_IF_ERROR(
          CheckHandoffEnums(h.handoff(), absl::StrCat("inline.hops[", i + 1, "].handoff")));
      hop.handoff = Overlay(config_.handoff, h.handoff());
      hops.push_back(std::move(hop));
    }
  } else {
    if (req.workflow().empty()) {
      return absl::InvalidArgumentError("give a workflow name or inline hops");
    }
    absl::MutexLock lock(&mu_);
    auto it = std::find_if(workflows_.begin(), workflows_.end(),
                           [&](const WorkflowConfig& w) { return w.name == req.workflow(); });
    if (it == workflows_.end()) {
      std::vector<std::string> names;
      for (const WorkflowConfig& w : workflows_) names.push_back(w.name);
      return absl::NotFoundError(absl::StrCat("unknown workflow '", req.workflow(),
                                              "' (known: ", absl::StrJoin(names, ", "), ")"));
    }
    spec.workflow = it->name;
    hops = it->hops;
    graph = it->steps;
    spec.max_steps = it->max_steps;
  }
  const GenerationConfig task_gen = FromProto(req.generation_override());
  QKV_RETURN_IF_ERROR(ValidateGeneration(task_gen, "generation_override"));
  // A graph's agent steps and parallel branches are hops to resolve.
  const int64_t input_bytes = static_cast<int64_t>(spec.input.size());
  int step_number = 0;
  for (const StepConfig& step : graph) {
    ++step_number;
    ResolvedStep r;
    r.config = step;
    if (!step.agent.empty()) {
      HopConfig h{step.agent, step.instruction, step.generation, step.handoff};
      QKV_ASSIGN_OR_RETURN(r.hop, ResolveHop(h, task_gen, req.handoff_override(), step_number,
                                             input_bytes, absl::StrCat("step ", step.name)));
    }
    for (const BranchConfig& b : step.parallel) {
      HopConfig h{b.agent, b.instruction, b.generation, std::nullopt};
      QKV_ASSIGN_OR_RETURN(ResolvedHop branch,
                           ResolveHop(h, task_gen, req.handoff_override(), step_number, input_bytes,
                                      absl::StrCat("step ", step.name, " branch ", b.name)));
      r.branches.push_back(std::move(branch));
    }
    spec.steps.push_back(std::move(r));
  }
  if (hops.empty() && graph.empty()) {
    return absl::InvalidArgumentError("the pipeline has no hops");
  }
  for (size_t i = 0; i < hops.size(); ++i) {
    QKV_ASSIGN_OR_RETURN(ResolvedHop r, ResolveHop(hops[i], task_gen, req.handoff_override(),
                                                   static_cast<int>(i) + 1, input_bytes,
                                                   absl::StrCat("hop ", i + 1)));  // 1-based
    spec.hops.push_back(std::move(r));
  }
  // The first hop's prompt must fit its agent's context (checked before any
  // work is queued).
  const ResolvedHop& first_hop = spec.steps.empty() ? spec.hops[0] : spec.steps[0].hop;
  const Agent* first = pool_->Find(first_hop.agent);
  spec.keep_context = req.keep_context();
  if (!req.context_card().empty()) {
    QKV_RETURN_IF_ERROR(ResolveContextCard(req, first_hop, *first, &spec));
  } else if (first->model->tokenizer() != nullptr) {
    std::string prompt = absl::StrReplaceAll(
        first->entry.prompt_template,
        {{"{instruction}", ExpandInstruction(first_hop.instruction, spec.input, "", 1)}});
    absl::StatusOr<std::vector<int32_t>> ids = EncodeBounded(
        *first->model->tokenizer(), first->entry.system + prompt, true, first->context_limit);
    if (ids.status().code() == absl::StatusCode::kOutOfRange) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input is too long: the first prompt is ", ids.status().message(), "; agent '",
          first->entry.name, "' has a context limit of ", first->context_limit, " tokens"));
    }
    if (!ids.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("input: ", ids.status().message()));
    }
    if (static_cast<int64_t>(ids->size()) >= first->context_limit) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input is too long: the first prompt is ", ids->size(), " tokens; agent '",
          first->entry.name, "' has a context limit of ", first->context_limit, " tokens"));
    }
  }
  if (req.deadline_ms() < 0) return absl::InvalidArgumentError("deadline_ms must be >= 0");
  if (req.deadline_ms() > 0) spec.deadline = absl::Now() + absl::Milliseconds(req.deadline_ms());
  return spec;
}

absl::StatusOr<ResolvedHop> ServerCore::ResolveHop(const HopConfig& hop,
                                                   const GenerationConfig& task_gen,
                                                   const v1::Handoff& handoff_override,
                                                   int hop_number, int64_t input_bytes,
                                                   const std::string& where) const {
  const Agent* agent = pool_->Find(hop.agent);
  if (agent == nullptr) {
    return absl::NotFoundError(absl::StrCat(where, ": unknown agent '", hop.agent, "'"));
  }
  ResolvedHop r;
  r.agent = hop.agent;
  r.instruction = hop.instruction;
  r.generation = agent->entry.generation;
  r.generation.MergeFrom(hop.generation);
  r.generation.MergeFrom(task_gen);
  QKV_RETURN_IF_ERROR(ValidateGeneration(r.generation, where));
  r.handoff = Overlay(hop.handoff.value_or(config_.handoff), handoff_override);
  QKV_RETURN_IF_ERROR(ValidateHandoff(r.handoff, where + " handoff"));
  // Sized before anything is expanded ({previous} is not known yet: the
  // executor checks again with it).
  QKV_RETURN_IF_ERROR(CheckExpandedPromptBytes(agent->entry.prompt_template, r.instruction,
                                               input_bytes, 0, hop_number,
                                               config_.limits.max_input_bytes, where));
  return r;
}

absl::StatusOr<v1::Task> ServerCore::ResumeTask(const std::string& id, const std::string& input) {
  if (input.empty()) {
    return absl::InvalidArgumentError("input is empty: give the text the task continues with");
  }
  if (static_cast<int64_t>(input.size()) > config_.limits.max_input_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("input is ", input.size(),
                                                   " bytes; limits.max_input_bytes is ",
                                                   config_.limits.max_input_bytes));
  }
  return tasks_->Resume(id, input);
}

absl::Status ServerCore::ResolveContextCard(const v1::SubmitTaskRequest& req,
                                            const ResolvedHop& first_hop, const Agent& first,
                                            TaskSpec* spec) const {
  absl::StatusOr<cachecard::CardId> id = cachecard::CardId::FromHex(req.context_card());
  if (!id.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("context_card: ", id.status().message()));
  }
  const cachecard::ModelFingerprint& fp = first.model->fingerprint().bytes;
  absl::StatusOr<cachecard::shm::CardHandle> card = store_->Get(*id, {&fp});
  if (!card.ok()) {
    if (card.status().code() == absl::StatusCode::kNotFound) return card.status();
    // Another model's card: there is no text to fall back to.
    return absl::InvalidArgumentError(absl::StrCat("context_card: ", card.status().message(),
                                                   " (agent '", first.entry.name, "' runs model '",
                                                   first.model_name, "')"));
  }
  int64_t tokens = (*card)->metadata().total_tokens();
  if (first.model->tokenizer() != nullptr) {
    std::string prompt = absl::StrReplaceAll(
        first.entry.prompt_template,
        {{"{instruction}", ExpandInstruction(first_hop.instruction, spec->input, "", 1)}});
    absl::StatusOr<std::vector<int32_t>> ids = first.model->tokenizer()->Encode(prompt, false);
    if (!ids.ok())
      return absl::InvalidArgumentError(absl::StrCat("input: ", ids.status().message()));
    tokens += static_cast<int64_t>(ids->size());
  }
  if (tokens >= first.context_limit) {
    return absl::InvalidArgumentError(absl::StrCat(
        "context_card ", req.context_card(), " holds ", (*card)->metadata().total_tokens(),
        " tokens; with the first prompt that is ", tokens, ", agent '", first.entry.name,
        "' has a context limit of ", first.context_limit, " tokens"));
  }
  spec->context_card = std::make_shared<const cachecard::shm::CardHandle>(*std::move(card));
  return absl::OkStatus();
}

absl::StatusOr<std::string> ServerCore::SubmitTask(const v1::SubmitTaskRequest& request) {
  absl::StatusOr<TaskSpec> spec = Resolve(request);
  absl::StatusOr<std::string> id =
      spec.ok() ? tasks_->Submit(*std::move(spec)) : absl::StatusOr<std::string>(spec.status());
  if (!id.ok()) {
    stats_.Add(Stats::kTasksRejected);
    spdlog::info("task rejected ({}): {}",
                 request.workflow().empty() ? "inline" : LogSafe(request.workflow()),
                 LogSafe(id.status().ToString(), 1024));
    return id.status();
  }
  stats_.Add(Stats::kTasksSubmitted);
  return id;
}

v1::WorkflowInfo::Hop ServerCore::HopInfo(const HopConfig& h) const {
  v1::WorkflowInfo::Hop hop;
  hop.set_agent(h.agent);
  hop.set_instruction(h.instruction);
  const HandoffConfig hc = h.handoff.value_or(config_.handoff);
  hop.set_handoff_mode(ToProto(hc.mode));
  hop.set_handoff_bits(hc.bits);
  hop.set_handoff_policy(hc.policy == BitPolicy::kAdaptive ? v1::BIT_POLICY_ADAPTIVE
                                                           : v1::BIT_POLICY_UNIFORM);
  const Agent* agent = pool_->Find(h.agent);
  GenerationConfig g = agent ? agent->entry.generation : GenerationConfig{};
  g.MergeFrom(h.generation);
  hop.set_max_new_tokens(g.max_new_tokens.value_or(0));
  return hop;
}

std::vector<v1::WorkflowInfo> ServerCore::ListWorkflows() const {
  absl::MutexLock lock(&mu_);
  std::vector<v1::WorkflowInfo> out;
  for (const WorkflowConfig& w : workflows_) {
    v1::WorkflowInfo info;
    info.set_name(w.name);
    info.set_description(w.description);
    info.set_file(w.file);
    for (const HopConfig& h : w.hops) *info.add_hops() = HopInfo(h);
    info.set_max_steps(w.max_steps);
    for (const StepConfig& s : w.steps) {
      v1::WorkflowInfo::Step* step = info.add_steps();
      step->set_name(s.name);
      step->set_kind(!s.agent.empty() ? "agent" : s.await_input ? "await_input" : "parallel");
      if (!s.agent.empty()) {
        *step->mutable_hop() = HopInfo({s.agent, s.instruction, s.generation, s.handoff});
      }
      for (const BranchConfig& b : s.parallel) {
        *step->add_branches() = HopInfo({b.agent, b.instruction, b.generation, std::nullopt});
        step->add_branch_names(b.name);
      }
      step->set_join(s.join);
      step->set_await_prompt(s.await_input.value_or(""));
      step->set_next(s.next);
      for (const RouteConfig& r : s.routes) {
        v1::WorkflowInfo::Route* route = step->add_routes();
        route->set_test(std::string(RouteTestName(r.test)));
        route->set_pattern(r.pattern);
        route->set_to(r.to);
      }
      step->set_default_to(s.default_to);
      step->set_max_visits(s.max_visits);
      step->set_on_limit(s.on_limit);
    }
    out.push_back(std::move(info));
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> ServerCore::ReloadWorkflows() {
  absl::StatusOr<std::vector<WorkflowConfig>> loaded =
      LoadWorkflowDir(config_.workflows_dir, config_);
  if (!loaded.ok()) {
    spdlog::error("reload: keeping the current workflows: {}", loaded.status().ToString());
    return absl::InvalidArgumentError(loaded.status().message());
  }
  std::vector<std::string> names;
  for (const WorkflowConfig& w : *loaded) names.push_back(w.name);
  absl::MutexLock lock(&mu_);
  workflows_ = std::move(*loaded);
  spdlog::info("reload: {} workflow(s): {}", names.size(), absl::StrJoin(names, ", "));
  return names;
}

v1::CardInfo ServerCore::CardInfoOf(const CardListing& c) const {
  const cachecard::shm::StoredCardInfo& s = c.stored;
  const cachecard::CardSummary& sum = c.summary;
  v1::CardInfo info;
  info.set_id(s.id.ToHex());
  if (!s.parent_id.IsZero()) info.set_parent_id(s.parent_id.ToHex());
  info.set_bytes(static_cast<int64_t>(s.bytes));
  info.set_tokens(s.total_tokens - s.first_token);
  info.set_context_tokens(s.total_tokens);
  info.set_avg_bits(s.avg_bits);
  info.set_refs(s.handles + s.children);
  info.set_age_ms(absl::ToInt64Milliseconds(s.age));
  info.set_shm_name(s.segment);
  if (handoff_->IsPrefixCard(info.id())) {
    info.set_pin("prefix");
  } else if (s.pinned_until > absl::Now()) {
    info.set_pin("kept");
  }
  if (s.pinned_until > absl::Now() && s.pinned_until != absl::InfiniteFuture()) {
    info.set_pinned_until_unix_ms(absl::ToUnixMillis(s.pinned_until));
  }
  info.set_chain_bytes(c.chain_bytes);
  bool quantized = false;
  for (const cachecard::SegmentSummary& seg : sum.segments) {
    quantized |= seg.mode == cachecard::CardMode::kQuantized;
  }
  info.set_mode(quantized ? "quantized" : "full");
  info.set_policy(sum.provenance.quant_policy);
  info.set_budget_bits(sum.provenance.budget_bits);
  info.set_source_agent(sum.provenance.source_agent);
  info.set_hop(static_cast<int>(sum.provenance.hop_index));
  info.set_fingerprint(sum.fingerprint);
  info.set_foreign_model(!HostsModel(sum.fingerprint));
  info.set_created_unix_ms(sum.provenance.created_unix_ms);
  info.set_format_version(static_cast<int>(c.format_version));
  info.set_num_layers(sum.shape.num_layers);
  info.set_num_kv_heads(sum.shape.num_kv_heads);
  info.set_head_dim(sum.shape.head_dim);
  info.set_source_dtype(std::string(DTypeName(sum.source_dtype)));
  for (int64_t b : c.layer_k_bytes) info.add_layer_k_bytes(b);
  for (int64_t b : c.layer_v_bytes) info.add_layer_v_bytes(b);
  for (int b = 0; b <= 16; ++b) {
    auto k = sum.k_bits_histogram.find(b);
    auto v = sum.v_bits_histogram.find(b);
    info.add_k_bits_histogram(k == sum.k_bits_histogram.end() ? 0 : k->second);
    info.add_v_bits_histogram(v == sum.v_bits_histogram.end() ? 0 : v->second);
  }
  return info;
}

std::vector<v1::AgentInfo> ServerCore::ListAgents() const {
  std::vector<v1::AgentInfo> agents = pool_->List();
  for (v1::AgentInfo& a : agents) {
    const PrefixCardInfo p = handoff_->PrefixOf(a.name());
    a.set_prefix_card(p.card_id);
    a.set_prefix_tokens(p.tokens);
  }
  return agents;
}

v1::ListCardsResponse ServerCore::ListCards() const {
  v1::ListCardsResponse out;
  // Each card is held while read (CardStore::Peek): the expiry timer and
  // other RPCs drop cards concurrently.
  for (const CardListing& c : ListStoredCards(*store_)) *out.add_cards() = CardInfoOf(c);
  out.set_store_bytes(static_cast<int64_t>(store_->used_bytes()));
  out.set_quota_bytes(static_cast<int64_t>(store_->quota_bytes()));
  return out;
}

absl::StatusOr<v1::CardInfo> ServerCore::GetCard(const std::string& id) const {
  QKV_ASSIGN_OR_RETURN(cachecard::CardId cid, cachecard::CardId::FromHex(id));
  absl::StatusOr<CardListing> c = DescribeStoredCard(*store_, cid);
  if (!c.ok()) return absl::NotFoundError(absl::StrCat("no card '", id, "'"));
  return CardInfoOf(*c);
}

absl::Status ServerCore::ExportCard(
    const std::string& id, const std::function<bool(absl::Span<const uint8_t>)>& write) const {
  QKV_ASSIGN_OR_RETURN(cachecard::CardId cid, cachecard::CardId::FromHex(id));
  QKV_ASSIGN_OR_RETURN(cachecard::shm::CardHandle handle, store_->Get(cid));
  cachecard::CardPtr flat;
  absl::Span<const uint8_t> bytes = handle->bytes();
  if (!handle->metadata().parent_id.IsZero()) {
    // A chain: export one self-contained card (codes copied, not re-quantized).
    cachecard::FlattenOptions fo;
    fo.created_unix_ms = absl::ToUnixMillis(absl::Now());
    QKV_ASSIGN_OR_RETURN(flat, cachecard::Flatten(*handle, store_.get(), fo));
    bytes = flat->bytes();
  }
  constexpr size_t kChunk = 1 << 20;
  for (size_t off = 0; off < bytes.size(); off += kChunk) {
    if (!write(bytes.subspan(off, kChunk))) return absl::CancelledError("client went away");
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::CardInfo> ServerCore::ImportCard(
    const cachecard::shm::CardStore::ChunkReader& next) {
  cachecard::CardId id;
  {
    QKV_ASSIGN_OR_RETURN(cachecard::shm::CardHandle handle, importer_->Import(next));
    id = handle->id();
  }  // the handle goes: the card stays stored, unreferenced
  QKV_ASSIGN_OR_RETURN(v1::CardInfo info, GetCard(id.ToHex()));
  if (info.foreign_model()) {
    std::vector<std::string> hosted;
    for (const v1::AgentInfo& a : pool_->List()) {
      hosted.push_back(absl::StrCat(a.model(), " ", a.fingerprint().substr(0, 12)));
    }
    std::sort(hosted.begin(), hosted.end());
    hosted.erase(std::unique(hosted.begin(), hosted.end()), hosted.end());
    std::string warning =
        absl::StrCat("card ", info.id(), " is for model fingerprint ", info.fingerprint(),
                     "; no hosted model matches (hosted: ", absl::StrJoin(hosted, ", "),
                     "): it is stored, but no agent here can use it");
    spdlog::warn("import: {}", warning);
    info.add_warnings(std::move(warning));
  }
  return info;
}

bool ServerCore::HostsModel(const std::string& fingerprint_hex) const {
  for (const v1::AgentInfo& a : pool_->List()) {
    if (a.fingerprint() == fingerprint_hex) return true;
  }
  return false;
}

absl::Status ServerCore::DeleteCard(const std::string& id) {
  QKV_ASSIGN_OR_RETURN(cachecard::CardId cid, cachecard::CardId::FromHex(id));
  return store_->Remove(cid);
}

v1::Status ServerCore::GetStatus() const {
  v1::Status s;
  s.set_version(kVersion);
  s.set_uptime_ms(absl::ToInt64Milliseconds(absl::Now() - started_));
  s.set_listen(config_.listen);
  s.set_agents(pool_->size());
  s.set_agents_busy(pool_->busy());
  TaskManager::Counts c = tasks_->counts();
  s.set_queued_tasks(c.queued);
  s.set_running_tasks(c.running);
  s.set_queue_capacity(c.capacity);
  s.set_store_bytes(static_cast<int64_t>(store_->used_bytes()));
  s.set_store_quota_bytes(static_cast<int64_t>(store_->quota_bytes()));
  s.set_store_cards(static_cast<int>(store_->List().size()));
  {
    absl::MutexLock lock(&mu_);
    s.set_workflows(static_cast<int>(workflows_.size()));
    s.set_state(draining_ ? "draining" : "serving");
  }
  s.set_pid(getpid());
  s.set_tcp_listen(config_.tcp_listen);
  s.set_metrics_listen(config_.metrics_listen);
  s.set_instance(config_.instance);
  return s;
}

v1::Stats ServerCore::GetStats() const {
  v1::Stats s;
  s.set_tasks_submitted(stats_.Get(Stats::kTasksSubmitted));
  s.set_tasks_finished(stats_.Get(Stats::kTasksFinished));
  s.set_tasks_failed(stats_.Get(Stats::kTasksFailed));
  s.set_tasks_cancelled(stats_.Get(Stats::kTasksCancelled));
  s.set_tasks_rejected(stats_.Get(Stats::kTasksRejected));
  s.set_hops_run(stats_.Get(Stats::kHopsRun));
  s.set_tokens_generated(stats_.Get(Stats::kTokensGenerated));
  s.set_tokens_prefilled(stats_.Get(Stats::kTokensPrefilled));
  s.set_cards_built(stats_.Get(Stats::kCardsBuilt));
  s.set_card_bytes_built(stats_.Get(Stats::kCardBytesBuilt));
  s.set_cards_injected(stats_.Get(Stats::kCardsInjected));
  s.set_reprefill_fallbacks(stats_.Get(Stats::kReprefillFallbacks));
  s.set_cards_evicted(stats_.Get(Stats::kCardsEvicted));
  *s.mutable_hop_ttft_ms() = ToProto(stats_.Summarize(Stats::kHopTtftMs));
  *s.mutable_decode_tokens_per_s() = ToProto(stats_.Summarize(Stats::kDecodeTokensPerS));
  *s.mutable_card_build_ms() = ToProto(stats_.Summarize(Stats::kCardBuildMs));
  *s.mutable_inject_ms() = ToProto(stats_.Summarize(Stats::kInjectMs));
  *s.mutable_task_total_ms() = ToProto(stats_.Summarize(Stats::kTaskTotalMs));
  return s;
}

void ServerCore::Shutdown(absl::Duration grace) {
  {
    absl::MutexLock lock(&mu_);
    draining_ = true;
  }
  if (tasks_) tasks_->Shutdown(grace);
}

bool ServerCore::draining() const {
  absl::MutexLock lock(&mu_);
  return draining_;
}

}  // namespace qkvshare::daemon
