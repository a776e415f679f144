// File: daemon/workflow/executor.h
// -----------------------------------------------------------------------------
// The workflow executor: runs one task (TaskSpec) step by step; the daemon's
// TaskRunner. It decides which step runs next and on which agent; how a
// step's context reaches the next step is the handoff component's job
// (daemon/handoff/handoff.h):
//
//   task -> step (here) -> handoff (daemon/handoff) -> card (cachecard/) -> inject
//
// A step:
//   1. leases its agent (waiting while it is busy; the task's cancellation
//      and deadline are checked meanwhile);
//   2. first step: prefills [system text + instruction] (with BOS); with
//      prefix cards (ExecutorDeps::prefix_cards, an agent with a system
//      text) the system text (BOS + its tokens) comes from the agent's
//      prefix card (Handoff::Prefix) and only the instruction (encoded on
//      its own) is prefilled;
//      later steps: Handoff::Receive of the previous step's context (inject
//      the card, or re-prefill), then the instruction;
//   3. generates (every token is an event);
//   4. unless it is the last: Handoff::Send of its whole context (input +
//      output, the last output token fed to the KV cache) for the next step.
//
// Sessions: a task with spec.context_card starts its first step from that
// card (Handoff::Resume: injected, no system text prefilled; the card's
// context has it). A task with keep_context feeds its last output token and
// keeps the final context (Handoff::Keep: built as the last step's handoff
// says, incremental on the card it started from) pinned for
// ExecutorDeps::kept_ttl; the id is in the last HopResult's kept_card. In a
// graph the first step receives the card (kept across a pause when that step
// is an await_input), and the agent step whose route ends the task keeps its
// context; a graph that ends at a parallel or await_input step keeps none.
//
// Events (TaskEvent): hop_started, token, handoff, card_built, hop_finished.
// Each finished step is added to the task's result (GetTask) in run order.
//
// Thread safety: one RunTask call per task; concurrent calls share the
// pool, handoff component and stats (all thread-safe).
#ifndef QKVSHARE_DAEMON_WORKFLOW_EXECUTOR_H_
#define QKVSHARE_DAEMON_WORKFLOW_EXECUTOR_H_

#include <string>

#include "absl/status/statusor.h"
#include "daemon/agent_pool.h"
#include "daemon/handoff/handoff.h"
#include "daemon/stats.h"
#include "daemon/task.h"

namespace qkvshare::daemon {

// What the executor runs on; all must outlive the RunTask calls.
struct ExecutorDeps {
  AgentPool* agents = nullptr;
  const Handoff* handoff = nullptr;
  Stats* stats = nullptr;
  // limits.max_input_bytes: bound on the {input}/{previous} text a step's
  // prompt may hold after expansion (daemon/prompt.h).
  int64_t max_input_bytes = int64_t{1} << 20;
  // How long a card kept by a keep_context task stays pinned.
  absl::Duration kept_ttl = absl::Hours(1);
  // card_store.prefix_cards: fresh sequences of agents with a system text
  // inject its prefix card instead of prefilling it.
  bool prefix_cards = false;
};

// Runs `ctx.spec()` to completion and returns the last step's output.
// Errors: CheckStop()'s status (Cancelled / DeadlineExceeded) when stopped;
// NotFound for an agent that disappeared; the runtime's errors (e.g.
// OutOfRange when a step's prompt does not fit its agent's context limit),
// prefixed with "hop <k>/<n> (<agent>): ".
absl::StatusOr<std::string> RunTask(TaskContext& ctx, const ExecutorDeps& deps);

// Expands {input}, {previous} and {hop} in `instruction`.
std::string ExpandInstruction(const std::string& instruction, const std::string& input,
                              const std::string& previous, int hop_number);

}  // namespace qkvshare::daemon

#endif  // QKVSHARE_DAEMON_WORKFLOW_EXECUTOR_H_
