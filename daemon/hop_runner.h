// File: daemon/hop_runner.h
// -----------------------------------------------------------------------------
// RunTask: executes one multi-hop task (TaskSpec) hop by hop; the daemon's
// TaskRunner. This is where handoffs happen:
//
//   hop 0     leases its agent, prefills [system text + instruction] (with
//             BOS) and generates.
//   hop k>0   receives hop k-1's context as hop k-1's `handoff` says:
//     card    hop k-1 built a CacheCard of its whole context (input + output,
//             the last output token fed to the KV cache) into the shared-memory
//             store: quantized per token by the bit-allocation controller
//             (quant/controller.h) to `bits` average, incremental on the card
//             it received itself (each token is quantized once). Hop k injects
//             the chain into its own KV cache, appends its instruction and
//             generates.
//     full    the same with the cache's own dtype, unquantized.
//     reprefill  hop k prefills the context tokens itself (the re-read
//             baseline): the same ids for the same model, the decoded text
//             re-tokenized for another model.
//   A card cannot serve another model: when the fingerprints differ (or the
//   card cannot be injected, or would exceed limits.max_card_bytes), the hop
//   falls back to re-prefill and the handoff event says why. A foreign card
//   is never injected.
//
// Events (TaskEvent): hop_started, token (every generated token), card_built,
// handoff, hop_finished. Cancellation and deadlines are checked between
// tokens and while waiting for an agent.
//
// Thread safety: one call per task; concurrent calls share the pool, store
// and stats (all thread-safe).
#ifndef QKVSHARE_DAEMON_HOP_RUNNER_H_
#define QKVSHARE_DAEMON_HOP_RUNNER_H_

#include <string>

#include "absl/status/statusor.h"
#include "cachecard/shm/card_store.h"
#include "daemon/agent_pool.h"
#include "daemon/config/config.h"
#include "daemon/stats.h"
#include "daemon/task.h"

namespace qkvshare::daemon {

struct HopRunnerDeps {
  AgentPool* agents = nullptr;
  cachecard::shm::CardStore* store = nullptr;
  Stats* stats = nullptr;
  LimitsConfig limits;
};

// Runs `ctx.spec()` to completion and returns the last hop's output.
// Errors: CheckStop()'s status (Cancelled / DeadlineExceeded) when stopped;
// NotFound for an agent that disappeared; the runtime's errors (e.g.
// OutOfRange when a hop's instruction does not fit the context limit),
// prefixed with "hop <k> (<agent>): ".
absl::StatusOr<std::string> RunTask(TaskContext& ctx, const HopRunnerDeps& deps);

// Expands {input}, {previous} and {hop} in `instruction`.
std::string ExpandInstruction(const std::string& instruction, const std::string& input,
                              const std::string& previous, int hop_number);

}  // namespace qkvshare::daemon

#endif  // QKVSHARE_DAEMON_HOP_RUNNER_H_
