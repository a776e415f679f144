// File: daemon/task.h
// -----------------------------------------------------------------------------
// TaskSpec: a fully resolved multi-hop task (workflow + per-task overrides
// applied, agents checked), and TaskContext: what a running task's code sees
// (event emission, cancellation and deadline checks). Used by TaskManager
// (daemon/task_manager.h) and the workflow executor (daemon/workflow/executor.h).
#ifndef QKVSHARE_DAEMON_TASK_H_
#define QKVSHARE_DAEMON_TASK_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "cachecard/shm/card_store.h"
#include "daemon/config/config.h"
#include "qkvshare/v1/tasks.pb.h"

namespace qkvshare::daemon {

// One hop with everything resolved.
struct ResolvedHop {
  std::string agent;
  std::string instruction;      // template; {input}/{previous}/{hop} expanded at run time
  GenerationConfig generation;  // every field set (agent defaults + overrides)
  HandoffConfig handoff;        // to the next hop
};

// One step of a graph workflow with everything resolved.
struct ResolvedStep {
  StepConfig config;                  // name, kind, edges and bounds as loaded
  ResolvedHop hop;                    // agent steps
  std::vector<ResolvedHop> branches;  // parallel steps: one per config.parallel entry
};

struct TaskSpec {
  std::string workflow;  // empty for inline pipelines
  std::string label;
  std::string input;
  // A line of hops, or (when `steps` is not empty) a graph whose first step
  // starts; `hops` is then empty.
  std::vector<ResolvedHop> hops;
  std::vector<ResolvedStep> steps;
  int max_steps = 0;  // graph: most step runs (parallel: 1 + its branches)
  absl::Time deadline = absl::InfiniteFuture();
  // SubmitTaskRequest.context_card: the stored card hop 0 starts from,
  // checked at submit against hop 0's model; the handle keeps it stored
  // while the task is queued. Null: hop 0 prefills its system text.
  std::shared_ptr<const cachecard::shm::CardHandle> context_card;
  // SubmitTaskRequest.keep_context.
  bool keep_context = false;
};

// What a paused task keeps to continue from (the executor's own state, e.g.
// its context card); opaque to TaskManager, destroyed when the task ends.
class TaskCheckpoint {
 public:
  virtual ~TaskCheckpoint() = default;
};

// The running task's handle on itself. Thread-compatible: used by the one
// thread running the task (events may be read concurrently by watchers,
// which TaskManager synchronizes).
class TaskContext {
 public:
  virtual ~TaskContext() = default;
  virtual const std::string& id() const = 0;
  virtual const TaskSpec& spec() const = 0;
  // Non-OK once the task must stop: Cancelled (client or shutdown, with the
  // reason) or DeadlineExceeded. Cheap; call between tokens.
  virtual absl::Status CheckStop() const = 0;
  // Appends an event (seq, time and task id are filled in) and wakes watchers.
  virtual void Emit(v1::TaskEvent event) = 0;
  // Records a finished hop in the task's result (GetTask).
  virtual void AddHopResult(const v1::HopResult& result) = 0;

  // Pause and resume (graph await_input steps). The runner calls Pause()
  // and then returns (any OK value): the task becomes PAUSED with
  // `checkpoint` kept, its worker and agents free. Errors:
  // ResourceExhausted when limits.max_paused_tasks tasks are paused.
  virtual absl::Status Pause(std::unique_ptr<TaskCheckpoint> checkpoint, const std::string& step,
                             const std::string& prompt) = 0;
  // When the runner is called for a resumed task: the checkpoint it left
  // (once; later calls return nullptr) and the ResumeTask input.
  virtual std::unique_ptr<TaskCheckpoint> TakeCheckpoint() = 0;
  virtual std::string resume_input() const = 0;
};

}  // namespace qkvshare::daemon

#endif  // QKVSHARE_DAEMON_TASK_H_
