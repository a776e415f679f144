// File: daemon/server_core.h
// -----------------------------------------------------------------------------
// ServerCore: everything qkvshared does, without gRPC transport: the hosted
// agents (AgentPool), the shared-memory card store, the workflows, the task
// scheduler (TaskManager running the workflow executor, daemon/workflow/) and the statistics.
// The gRPC services (daemon/grpc_services.h) are thin, stateless adapters
// over it; it speaks absl::Status and the qkvshare.v1 message types.
//
// Lifecycle: Create() (loads models, opens the card store, reads workflows,
// starts the task workers) -> serve -> Shutdown(grace) -> destroy.
//
// Thread safety: thread-safe.
#ifndef QKVSHARE_DAEMON_SERVER_CORE_H_
#define QKVSHARE_DAEMON_SERVER_CORE_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cachecard/shm/card_store.h"
#include "daemon/agent_pool.h"
#include "daemon/card_import.h"
#include "daemon/card_listing.h"
#include "daemon/config/config.h"
#include "daemon/handoff/handoff.h"
#include "daemon/stats.h"
#include "daemon/task_manager.h"
#include "qkvshare/v1/admin.pb.h"
#include "qkvshare/v1/cards.pb.h"
#include "qkvshare/v1/catalog.pb.h"
#include "qkvshare/v1/tasks.pb.h"

namespace qkvshare::daemon {

class ServerCore {
 public:
  // Errors: those of AgentPool::Create (model loading), CardStore::Create
  // (FailedPrecondition when another daemon of the same instance runs) and
  // LoadWorkflowDir (file:line:col: key: message).
  static absl::StatusOr<std::unique_ptr<ServerCore>> Create(DaemonConfig config);
  ~ServerCore();

  const DaemonConfig& config() const { return config_; }

  // --- Tasks
  // Resolves the pipeline (workflow or inline hops, with the overrides),
  // checks it, and queues it. Errors: NotFound (workflow, agent),
  // InvalidArgument (empty pipeline, bad handoff, input over
  // limits.max_input_bytes or the first agent's context limit),
  // ResourceExhausted (queue full), Unavailable (shutting down).
  absl::StatusOr<std::string> SubmitTask(const v1::SubmitTaskRequest& request);
  TaskManager& tasks() { return *tasks_; }
  // Continues a PAUSED task with `input`. Errors: InvalidArgument (input
  // empty or over limits.max_input_bytes), those of TaskManager::Resume.
  absl::StatusOr<v1::Task> ResumeTask(const std::string& id, const std::string& input);

  // --- Catalog
  // The hosted agents, with each one's prefix card (if built).
  std::vector<v1::AgentInfo> ListAgents() const;
  std::vector<v1::WorkflowInfo> ListWorkflows() const;
  // Re-reads the workflows directory; all-or-nothing. Returns the names.
  absl::StatusOr<std::vector<std::string>> ReloadWorkflows();

  // --- Cards
  v1::ListCardsResponse ListCards() const;
  // Errors: InvalidArgument (malformed id), NotFound.
  absl::StatusOr<v1::CardInfo> GetCard(const std::string& id) const;
  // Calls `write` with consecutive chunks of the card as a self-contained
  // (flattened) .qkvcard; stops early when `write` returns false (Cancelled).
  absl::Status ExportCard(const std::string& id,
                          const std::function<bool(absl::Span<const uint8_t>)>& write) const;
  // Validates and stores a card file arriving in chunks from `next`
  // (daemon/card_import.h: checked from its first chunk, written straight
  // into shared memory); an equal stored card is returned, not copied. A card
  // no hosted model can use is stored too, with a warning in the result (and
  // the log). Errors: InvalidArgument (not a valid card: magic, truncated,
  // too long, checksum, version, an id that is not its content's, ...),
  // ResourceExhausted (limits.max_card_bytes, limits.max_concurrent_imports,
  // quota), AlreadyExists (the id is stored with other content),
  // FailedPrecondition (its parent is not stored).
  absl::StatusOr<v1::CardInfo> ImportCard(const cachecard::shm::CardStore::ChunkReader& next);
  // Errors: NotFound, FailedPrecondition (in use).
  absl::Status DeleteCard(const std::string& id);

  // --- Admin
  v1::Status GetStatus() const;
  v1::Stats GetStats() const;
  Stats& stats() { return stats_; }

  // Stops accepting tasks, lets running ones finish within `grace`, cancels
  // the rest, and stops the workers. Idempotent.
  void Shutdown(absl::Duration grace);
  bool draining() const;

 private:
  explicit ServerCore(DaemonConfig config) : config_(std::move(config)) {}
  absl::StatusOr<TaskSpec> Resolve(const v1::SubmitTaskRequest& request) const;
  // One hop (or graph step, or branch) with agent defaults and the task's
  // overrides applied and checked, its expanded prompt size bounded for an
  // input of `input_bytes` (hop_number: 1-based, for {hop}); `where`
  // prefixes errors.
  absl::StatusOr<ResolvedHop> ResolveHop(const HopConfig& hop, const GenerationConfig& task_gen,
                                         const v1::Handoff& handoff_override, int hop_number,
                                         int64_t input_bytes, const std::string& where) const;
  v1::WorkflowInfo::Hop HopInfo(const HopConfig& h) const;
  // Checks request.context_card against the first hop (or graph step) and its
  // agent (stored, same model, fits the context with the first prompt) and
  // takes a handle to it into spec->context_card. Errors: NotFound;
  // InvalidArgument.
  absl::Status ResolveContextCard(const v1::SubmitTaskRequest& request,
                                  const ResolvedHop& first_hop, const Agent& first,
                                  TaskSpec* spec) const;
  v1::CardInfo CardInfoOf(const CardListing& card) const;
  // Whether an agent here runs the model with this fingerprint (64 hex).
  bool HostsModel(const std::string& fingerprint_hex) const;

  const DaemonConfig config_;
  const absl::Time started_ = absl::Now();
  Stats stats_;
  std::unique_ptr<AgentPool> pool_;
  std::unique_ptr<cachecard::shm::CardStore> store_;
  std::unique_ptr<CardImporter> importer_;  // over store_
  std::unique_ptr<Handoff> handoff_;
  std::unique_ptr<TaskManager> tasks_;

  mutable absl::Mutex mu_;
  std::vector<WorkflowConfig> workflows_ ABSL_GUARDED_BY(mu_);
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace qkvshare::daemon

#endif  // QKVSHARE_DAEMON_SERVER_CORE_H_
