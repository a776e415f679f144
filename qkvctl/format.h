// File: qkvctl/format.h
// -----------------------------------------------------------------------------
// qkvctl's output of daemon replies: aligned human tables (the default) and
// JSON (--json). JSON of a proto message uses protobuf's canonical mapping
// (proto3 JSON) with the .proto field names (snake_case), every field
// printed, enums as names and 64-bit integers as strings.
//
// Every function returns text ending in '\n'. Thread safety: pure functions.
#ifndef QKVSHARE_QKVCTL_FORMAT_H_
#define QKVSHARE_QKVCTL_FORMAT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "google/protobuf/message.h"
#include "qkvshare/v1/admin.pb.h"
#include "qkvshare/v1/cards.pb.h"
#include "qkvshare/v1/catalog.pb.h"
#include "qkvshare/v1/tasks.pb.h"

namespace qkvshare::qkvctl {

namespace v1 = ::qkvshare::v1;

// Proto3 JSON of `message`: indented (pretty) or on one line (for JSON Lines
// streams), followed by '\n'.
std::string MessageJson(const google::protobuf::Message& message, bool pretty = true);

// Short lowercase names: "finished", "card", "adaptive"; "-" for UNSPECIFIED.
std::string TaskStateName(v1::TaskState state);
std::string HandoffModeName(v1::HandoffMode mode);
std::string BitPolicyName(v1::BitPolicy policy);
// Why the hop stopped: its `stop` value's name ("stop_token", "stop_string",
// "max_new_tokens", "context_full"), or the text `stop_reason` of a daemon
// that predates `stop` ("" when neither is set).
std::string StopReasonName(const v1::HopResult& hop);

// `status`: version, pid, state, uptime, agents, workflows, tasks, store.
std::string FormatStatus(const v1::Status& status);

// One row per agent: NAME MODEL DTYPE STATE KV CACHE WEIGHTS CONTEXT HOPS FINGERPRINT.
std::string FormatAgents(const v1::ListAgentsResponse& agents);

// One row per workflow: NAME HOPS AGENTS HANDOFF DESCRIPTION (HANDOFF is the
// per-hop handoff of all but the last hop, "default" when unset).
std::string FormatWorkflows(const v1::ListWorkflowsResponse& workflows);

// One row per task: ID STATE WORKFLOW LABEL HOPS CREATED TIME REASON, where
// CREATED is the age relative to `now_unix_ms`.
std::string FormatTasks(const v1::ListTasksResponse& tasks, int64_t now_unix_ms);

// Per-hop results: HOP AGENT HANDOFF CARD BYTES AVG BITS INJECT MS TTFT MS
// TOKENS TOK/S STOP; a hop whose requested handoff fell back is marked "*"
// and its reason listed below the table, as is a card budget raised to the
// model's min_card_bits.
std::string FormatHopTable(const std::vector<v1::HopResult>& hops);

// `get`: task fields, the hop table and the final output.
std::string FormatTask(const v1::Task& task);

// `cards ls`: one row per card plus a store usage line; a card for a model no
// agent here runs (foreign_model) has its id marked "*", explained below.
std::string FormatCards(const v1::ListCardsResponse& cards);

// `cards inspect ID`: card fields, per-layer bytes and the K/V bit histograms.
std::string FormatCard(const v1::CardInfo& card);

// `stats`: counters, then one row per latency summary.
std::string FormatStats(const v1::Stats& stats);

}  // namespace qkvshare::qkvctl

#endif  // QKVSHARE_QKVCTL_FORMAT_H_
