#include "daemon/agent_pool.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agents/compute_threads.h"
#include "base/cpu_info.h"
#include "base/status_macros.h"

namespace qkvshare::daemon {

AgentLease& AgentLease::operator=(AgentLease&& o) noexcept {
  if (this != &o) {
    Release();
    pool_ = o.pool_;
    agent_ = o.agent_;
    o.agent_ = nullptr;
  }
  return *this;
}

void AgentLease::Release() {
  if (agent_ != nullptr) pool_->Return(agent_);
  agent_ = nullptr;
}

absl::StatusOr<std::unique_ptr<AgentPool>> AgentPool::Create(const DaemonConfig& config) {
  std::unique_ptr<AgentPool> pool(new AgentPool());
  // libtorch's intra-op pool is process-wide: the largest request wins.
  int threads = 0;
  bool all_cores = false;
  for (const ModelEntry& m : config.models) {
    if (m.threads == 0) all_cores = true;
    threads = std::max(threads, m.threads);
  }
  agents::SetComputeThreads(all_cores ? 0 : threads);

  std::map<std::string, agents::ModelHandle> models;
  for (const ModelEntry& m : config.models) {
    agents::ModelOptions options;
    options.compute_dtype = m.dtype;
    absl::Status applied = agents::ApplyWeightFormat(m.weights, &options);
    const absl::Time start = absl::Now();
    absl::StatusOr<agents::ModelHandle> handle =
        applied.ok() ? pool->registry_.Acquire(m.path, options) : applied;
    if (!handle.ok()) {
      return absl::Status(handle.status().code(), absl::StrCat("model '", m.name, "' (", m.path,
                                                               "): ", handle.status().message()));
    }
    const agents::Model& model = **handle;
    spdlog::info(
        "model '{}': {} ({} layers, {} kv heads, head_dim {}; {}), fingerprint {}; loaded in "
        "{:.2f} "
        "s, weights {:.1f} MiB ({:.1f} MiB mapped from the checkpoint, {:.1f} MiB copied or "
        "quantized)",
        m.name, m.path, model.config().num_layers, model.config().num_kv_heads,
        model.config().head_dim, model.runtime_summary(), model.fingerprint().Hex().substr(0, 16),
        absl::ToDoubleSeconds(absl::Now() - start),
        (model.mapped_weight_bytes() + model.copied_weight_bytes()) / 1048576.0,
        model.mapped_weight_bytes() / 1048576.0, model.copied_weight_bytes() / 1048576.0);
    models[m.name] = *handle;
  }
  for (const AgentEntry& e : config.agents) {
    const ModelEntry* m = config.FindModel(e.model);
    auto agent = std::make_unique<Agent>();
    agent->entry = e;
    agent->model_name = m->name;
    agent->model = models[m->name];
    agent->min_card_bits = m->min_card_bits;
    int64_t limit = agent->model->config().context_limit();
    if (config.limits.max_context_tokens > limit) {
      spdlog::warn(
          "agent '{}': limits.max_context_tokens {} exceeds model '{}' max_position_embeddings "
          "{}; using {}",
          e.name, config.limits.max_context_tokens, m->name, limit, limit);
    } else if (config.limits.max_context_tokens > 0) {
      limit = config.limits.max_context_tokens;
    }
    agent->context_limit = limit;
    agents::SequenceOptions so;
    so.max_tokens = limit;
    so.prefill_chunk_tokens = m->prefill_chunk;
    absl::StatusOr<std::unique_ptr<agents::Sequence>> seq =
        agents::Sequence::Create(agent->model, so);
    if (!seq.ok()) {
      return absl::Status(seq.status().code(),
                          absl::StrCat("agent '", e.name, "': ", seq.status().message()));
    }
    agent->sequence = std::move(*seq);
    pool->busy_[agent.get()] = false;
    pool->hops_run_[agent.get()] = 0;
    pool->kv_bytes_[agent.get()] =
        static_cast<int64_t>(agent->sequence->kv_cache().allocated_bytes());
    pool->agents_[e.name] = std::move(agent);
  }
  return pool;
}

absl::StatusOr<AgentLease> AgentPool::Acquire(const std::string& name,
                                              const std::function<absl::Status()>& check_stop) {
  auto it = agents_.find(name);
  if (it == agents_.end()) return absl::NotFoundError(absl::StrCat("no agent '", name, "'"));
  Agent* agent = it->second.get();
  absl::MutexLock lock(&mu_);
  auto free = [this, agent]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !busy_[agent]; };
  while (!mu_.AwaitWithTimeout(absl::Condition(&free), absl::Milliseconds(50))) {
    mu_.Unlock();
    absl::Status stop = check_stop();
    mu_.Lock();
    if (!stop.ok()) return stop;
  }
  busy_[agent] = true;
  ++hops_run_[agent];
  return AgentLease(this, agent);
}

void AgentPool::Return(Agent* agent) {
  const int64_t kv_bytes = static_cast<int64_t>(agent->sequence->kv_cache().allocated_bytes());
  absl::MutexLock lock(&mu_);
  busy_[agent] = false;
  kv_bytes_[agent] = kv_bytes;
}

const Agent* AgentPool::Find(const std::string& name) const {
  auto it = agents_.find(name);
  return it == agents_.end() ? nullptr : it->second.get();
}

int AgentPool::busy() const {
  absl::MutexLock lock(&mu_);
  int n = 0;
  for (const auto& [agent, b] : busy_) n += b ? 1 : 0;
  return n;
}

std::vector<v1::AgentInfo> AgentPool::List() const {
  std::vector<v1::AgentInfo> out;
  absl::MutexLock lock(&mu_);
  for (const auto& [name, agent] : agents_) {
    v1::AgentInfo info;
    info.set_name(name);
    info.set_model(agent->model_name);
    info.set_model_dir(agent->model->dir());
    info.set_dtype(std::string(DTypeName(agent->model->compute_dtype())));
    info.set_weights_dtype(agent->model->weights_summary());
    info.set_simd_target(BestSimdTargetName());
    info.set_state(busy_.at(agent.get()) ? "busy" : "idle");
    info.set_kv_cache_bytes(kv_bytes_.at(agent.get()));
    info.set_weight_bytes(static_cast<int64_t>(agent->model->mapped_weight_bytes() +
                                               agent->model->copied_weight_bytes()));
    info.set_fingerprint(agent->model->fingerprint().Hex());
    info.set_role(agent->entry.system);
    info.set_context_limit(agent->context_limit);
    info.set_hops_run(hops_run_.at(agent.get()));
    out.push_back(std::move(info));
  }
  return out;
}

}  // namespace qkvshare::daemon
