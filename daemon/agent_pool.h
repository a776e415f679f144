// File: daemon/agent_pool.h
// -----------------------------------------------------------------------------
// AgentPool: the agents a daemon hosts (daemon.yaml `agents:`), each a named
// Sequence (its own KV cache) on a Model shared through agents::ModelRegistry
// (agents naming the same model share one weight set).
//
// An agent runs one sequence at a time: a hop takes an exclusive AgentLease
// and gives it back when done; other agents run concurrently.
//
// Lifecycle: Create() loads every model and creates every agent (failing
// start-up on the first error, naming the model and file); leases must be
// released before the pool is destroyed.
//
// Thread safety: thread-safe. An AgentLease is used by one thread.
#ifndef QKVSHARE_DAEMON_AGENT_POOL_H_
#define QKVSHARE_DAEMON_AGENT_POOL_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "agents/model.h"
#include "agents/model_registry.h"
#include "agents/sequence.h"
#include "daemon/config/config.h"
#include "qkvshare/v1/catalog.pb.h"

namespace qkvshare::daemon {

// One hosted agent. Fields other than the sequence are immutable.
struct Agent {
  AgentEntry entry;
  std::string model_name;
  agents::ModelHandle model;
  // Context limit in tokens (the model's, capped by limits.max_context_tokens).
  int64_t context_limit = 0;
  // The model's models.NAME.min_card_bits.
  double min_card_bits = 2.0;
  // Only the lease holder touches the sequence.
  std::unique_ptr<agents::Sequence> sequence;
};

class AgentPool;

// Exclusive use of one agent; releases it when destroyed. Movable.
class AgentLease {
 public:
  AgentLease() = default;
  AgentLease(AgentLease&& o) noexcept : pool_(o.pool_), agent_(o.agent_) { o.agent_ = nullptr; }
  AgentLease& operator=(AgentLease&& o) noexcept;
  AgentLease(const AgentLease&) = delete;
  AgentLease& operator=(const AgentLease&) = delete;
  ~AgentLease() { Release(); }

  Agent* operator->() const { return agent_; }
  Agent& operator*() const { return *agent_; }
  void Release();

 private:
  friend class AgentPool;
  AgentLease(AgentPool* pool, Agent* agent) : pool_(pool), agent_(agent) {}
  AgentPool* pool_ = nullptr;
  Agent* agent_ = nullptr;
};

class AgentPool {
 public:
  // Loads the models and creates the agents of `config`. Errors: those of
  // agents::Model::Load, prefixed with "model '<name>' (<path>): ".
  static absl::StatusOr<std::unique_ptr<AgentPool>> Create(const DaemonConfig& config);

  // Waits until agent `name` is free and leases it. `check_stop` is polled
  // every 50 ms while waiting; its error is returned. Errors: NotFound for an
  // unknown agent.
  absl::StatusOr<AgentLease> Acquire(const std::string& name,
                                     const std::function<absl::Status()>& check_stop);

  // The agent (for read-only fields); nullptr if unknown.
  const Agent* Find(const std::string& name) const;

  std::vector<v1::AgentInfo> List() const;
  int busy() const;
  int size() const { return static_cast<int>(agents_.size()); }

 private:
  friend class AgentLease;
  AgentPool() = default;
  void Return(Agent* agent);

  agents::ModelRegistry registry_;
  // Fixed after Create().
  std::map<std::string, std::unique_ptr<Agent>> agents_;
  mutable absl::Mutex mu_;
  std::map<const Agent*, bool> busy_ ABSL_GUARDED_BY(mu_);
  std::map<const Agent*, int64_t> hops_run_ ABSL_GUARDED_BY(mu_);
  // KV cache allocation as of the last release (the cache is only resized
  // under a lease).
  std::map<const Agent*, int64_t> kv_bytes_ ABSL_GUARDED_BY(mu_);
};

}  // namespace qkvshare::daemon

#endif  // QKVSHARE_DAEMON_AGENT_POOL_H_
