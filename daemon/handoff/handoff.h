// File: daemon/handoff/handoff.h
// -----------------------------------------------------------------------------
// Handoff: the mechanics of passing one step's whole context to the next
// step's agent. The workflow executor (daemon/workflow/executor.h) decides
// WHICH step runs next; this component decides HOW the context gets there:
//
//   Send     after a step generated: captures the sender's context (token
//            ids, text, model fingerprint) and, for `card`/`full`, builds a
//            CacheCard of it into the shared-memory store: per-token bits
//            from the bit-allocation controller (quant/controller.h) on the
//            attention importance the sequence captured, incremental on the
//            card the sender itself received (each token is quantized once).
//            A card that cannot be built (allocation, size over
//            limits.max_card_bytes, store error) is not an error: the
//            context carries the reason and receivers re-prefill.
//   Receive  before a step generates: injects the card into the receiving
//            agent's KV cache and returns the instruction tokens to append,
//            or falls back to re-prefill (no card, another model's
//            fingerprint, inject failed) and returns context + instruction.
//            A foreign card is never injected; the stats say why not.
//
//   Resume   a stored card (a task's context_card) as the first step's
//            received context.
//   Keep     keep_context: the last step's context as a pinned card.
//   Prefix   a fresh sequence of an agent with a `system` text: injects the
//            agent's prefix card (BOS + system tokens, a full card pinned
//            until removed, one per (model fingerprint, tokens)) instead of
//            prefilling them; the first time, prefills them and builds it.
//
// A HandedContext may be received any number of times (fan-out: the card is
// built once and injected into N agents); it holds a reference on its card.
//
//   task -> step (executor) -> handoff (here) -> card (cachecard/) -> inject
//
// Thread safety: Handoff is thread-safe (the store and stats are; the
// prefix-card index has its own lock); Receive/Send/Prefix on different
// agents may run concurrently. A HandedContext may be read by several threads at once.
#ifndef QKVSHARE_DAEMON_HANDOFF_HANDOFF_H_
#define QKVSHARE_DAEMON_HANDOFF_HANDOFF_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "agents/model.h"
#include "agents/sequence.h"
#include "cachecard/shm/card_store.h"
#include "daemon/agent_pool.h"
#include "daemon/config/config.h"
#include "daemon/stats.h"
#include "qkvshare/v1/tasks.pb.h"

namespace qkvshare::daemon {

// One step's whole context as handed on. Move-only (holds a card reference).
struct HandedContext {
  HandoffConfig handoff;             // how it is handed (mode, bits, policy)
  cachecard::shm::CardHandle card;   // card/full, unless the build fell back
  double card_build_ms = 0;          // wall time of the card build
  std::string card_fallback_reason;  // why `card` is empty (card/full modes)
  std::string budget_reason;         // why the card's bits differ from handoff.bits
  std::vector<int32_t> ids;          // the whole context, BOS included
  std::string text;                  // its decoded text (another model re-prefills it)
  agents::ModelFingerprint fingerprint;
};

// Where in the task the card is built: provenance and the controller's
// per-hop schedule (quant::AllocationRequest::hop / num_hops).
struct CardPosition {
  int hop = 0;       // 0-based index of the sending step in run order
  int num_hops = 1;  // handoffs the task plans (>= 1)
};

// What Receive did.
struct Received {
  // Tokens to prefill before generating: the instruction after an inject,
  // context + instruction after a re-prefill.
  std::vector<int32_t> prompt;
  // The context arrived as an injected card (the receiver's own card, if it
  // builds one, is then incremental on it).
  bool injected = false;
  v1::HandoffStats stats;
};

// What Prefix did: the system-text tokens are in the agent's sequence.
struct Prefixed {
  cachecard::shm::CardHandle card;  // the prefix card; empty if none could be built
  int64_t tokens = 0;               // system-text tokens, BOS included
  bool injected = false;            // from the card (else prefilled)
  double inject_ms = 0;             // injected: wall time of the inject
  double prefill_ms = 0;            // prefilled: wall time of the prefill
};

// An agent's prefix card as `qkvctl agents` shows it.
struct PrefixCardInfo {
  std::string card_id;  // hex; empty: none built yet
  int64_t tokens = 0;   // BOS + system text
};

class Handoff {
 public:
  // `store` and `stats` must outlive this object.
  Handoff(cachecard::shm::CardStore* store, Stats* stats, LimitsConfig limits)
      : store_(store), stats_(stats), limits_(limits) {}

  // Call before the sender generates: turns attention capture on when its
  // outgoing handoff is an adaptive card (the importance signal), off
  // otherwise. `outgoing` nullptr: the step hands nothing on.
  static void PrepareSender(agents::Sequence& seq, const HandoffConfig* outgoing);

  // Captures `agent`'s whole context and builds its card for `h` (see the
  // file comment). `parent` is the card the agent's context came from by
  // inject (nullptr: none); it must outlive the call. `log_prefix` names
  // the task and step in warnings. Never fails: see card_fallback_reason.
  HandedContext Send(Agent& agent, const HandoffConfig& h, const cachecard::Card* parent,
                     CardPosition position, const std::string& log_prefix) const;

  // Receives `context` into `agent`'s (reset) sequence and returns the
  // prompt to prefill with `instruction` (already encoded, no BOS) appended.
  // Errors: FailedPrecondition when re-prefilling another model's text needs
  // a tokenizer the agent's model lacks; the tokenizer's errors.
  absl::StatusOr<Received> Receive(Agent& agent, const HandedContext& context,
                                   const std::vector<int32_t>& instruction,
                                   const std::string& log_prefix) const;

  // A stored card (SubmitTaskRequest.context_card: imported, or kept by an
  // earlier task) as the context the first step receives: a `full` handoff
  // of it, injected as it is. Errors: NotFound if it left the store.
  absl::StatusOr<HandedContext> Resume(const cachecard::Card& card) const;

  // keep_context: builds `agent`'s whole context as a card (as Send with
  // `h`; `reprefill` is kept as `full`), incremental on `parent`, pins it
  // until `pinned_until` and returns its id. Errors: FailedPrecondition
  // "keep_context: no card: <why>" when no card could be built.
  absl::StatusOr<std::string> Keep(Agent& agent, const HandoffConfig& h,
                                   const cachecard::Card* parent, CardPosition position,
                                   absl::Time pinned_until, const std::string& log_prefix) const;

  // Puts `system_ids` (BOS + the agent's encoded system text, non-empty)
  // into `agent`'s empty sequence: injects the prefix card stored for
  // (agent's model fingerprint, system_ids) when there is one (checked
  // against both on lookup), else prefills them and builds that card (full
  // precision, so an injected prefix is bit-identical to the prefill), pinned
  // until removed. A card that cannot be built or injected is not an error:
  // the tokens are prefilled and the log says why. Errors: the sequence's
  // (Append) errors.
  absl::StatusOr<Prefixed> Prefix(Agent& agent, const std::vector<int32_t>& system_ids,
                                  const std::string& log_prefix) const;

  // The prefix card `agent_name` last used (empty card_id: none).
  PrefixCardInfo PrefixOf(const std::string& agent_name) const;
  // Whether `card_id` (hex) is an agent's prefix card.
  bool IsPrefixCard(const std::string& card_id) const;

 private:
  cachecard::shm::CardStore* store_;
  Stats* stats_;
  LimitsConfig limits_;
  mutable absl::Mutex prefix_mu_;
  // Hex of (model fingerprint, token digest) -> prefix card id.
  mutable std::map<std::string, cachecard::CardId> prefix_cards_ ABSL_GUARDED_BY(prefix_mu_);
  mutable std::map<std::string, PrefixCardInfo> agent_prefix_ ABSL_GUARDED_BY(prefix_mu_);
};

// The wire enum of a handoff mode.
v1::HandoffMode ToProto(HandoffMode m);

// Encodes `text` with `model`'s tokenizer. With `max_tokens` > 0 the work
// is bounded (daemon/prompt.h EncodeBounded: a text known to need more is
// OutOfRange "<what> is more than N tokens ..." after encoding a prefix) and
// `check_stop` (may be empty) is honoured between prefixes. Errors:
// FailedPrecondition when the model has none (`what` names the text).
absl::StatusOr<std::vector<int32_t>> EncodeText(
    const agents::Model& model, const std::string& text, bool add_special, const std::string& what,
    int64_t max_tokens = 0, const std::function<absl::Status()>& check_stop = nullptr);

}  // namespace qkvshare::daemon

#endif  // QKVSHARE_DAEMON_HANDOFF_HANDOFF_H_
