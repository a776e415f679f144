#include "qkvctl/format.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/json_util.h"
#include "qkvctl/table.h"

namespace qkvshare::qkvctl {

namespace {

// Lowercase enum value name without its prefix: TASK_STATE_FINISHED -> finished.
template <typename Enum>
std::string EnumName(const std::string& full, const char* prefix, Enum value) {
  if (static_cast<int>(value) == 0) return "-";
  std::string name = full;
  if (name.rfind(prefix, 0) == 0) name = name.substr(strlen(prefix));
  if (name.empty()) return absl::StrCat(static_cast<int>(value));
  return absl::AsciiStrToLower(name);
}

std::string ShortId(const std::string& id) { return id.size() > 12 ? id.substr(0, 12) : id; }

std::string Ms(double ms) { return FormatFixed(ms, 1); }

std::string OrDash(const std::string& s) { return s.empty() ? "-" : s; }

std::string Percent(int64_t part, int64_t whole) {
  if (whole <= 0) return "";
  return absl::StrFormat(" (%.1f%%)", 100.0 * part / whole);
}

}  // namespace

std::string MessageJson(const google::protobuf::Message& message, bool pretty) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = pretty;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(message, &out, options).ok()) {
    // Only invalid UTF-8 in a string field can fail; keep the output JSON.
    out = absl::StrCat("{\"error\": \"", message.GetTypeName(), " is not valid UTF-8\"}");
  }
  if (out.empty() || out.back() != '\n') out.push_back('\n');
  return out;
}

std::string TaskStateName(v1::TaskState state) {
  return EnumName(v1::TaskState_Name(state), "TASK_STATE_", state);
}

std::string HandoffModeName(v1::HandoffMode mode) {
  return EnumName(v1::HandoffMode_Name(mode), "HANDOFF_MODE_", mode);
}

std::string BitPolicyName(v1::BitPolicy policy) {
  return EnumName(v1::BitPolicy_Name(policy), "BIT_POLICY_", policy);
}

std::string StopReasonName(const v1::HopResult& hop) {
  if (hop.stop() == v1::STOP_REASON_UNSPECIFIED) return hop.stop_reason();  // an older daemon
  return EnumName(v1::StopReason_Name(hop.stop()), "STOP_REASON_", hop.stop());
}

std::string FormatStatus(const v1::Status& s) {
  return KeyValueLines({
      {"version", s.version()},
      {"state", absl::StrCat(OrDash(s.state()), " (pid ", s.pid(), ")")},
      {"listen", s.listen()},
      {"tcp", OrDash(s.tcp_listen())},
      {"metrics", s.metrics_listen().empty() ? "-" : "http://" + s.metrics_listen() + "/metrics"},
      {"instance", OrDash(s.instance())},
      {"uptime", FormatDuration(s.uptime_ms())},
      {"agents", absl::StrCat(s.agents(), " (", s.agents_busy(), " busy)")},
      {"workflows", absl::StrCat(s.workflows())},
      {"tasks", absl::StrCat(s.running_tasks(), " running, ", s.queued_tasks(), " queued of ",
                             s.queue_capacity())},
      {"store", absl::StrCat(s.store_cards(), " cards, ", FormatBytes(s.store_bytes()), " of ",
                             FormatBytes(s.store_quota_bytes()),
                             Percent(s.store_bytes(), s.store_quota_bytes()))},
  });
}

std::string FormatAgents(const v1::ListAgentsResponse& agents) {
  Table t({{"NAME"},
           {"MODEL"},
           {"DTYPE"},
           {"STATE"},
           {"KV CACHE", Table::kRight},
           {"WEIGHTS", Table::kRight},
           {"CONTEXT", Table::kRight},
           {"HOPS", Table::kRight},
           {"FINGERPRINT"},
           {"PREFIX CARD"}});
  for (const v1::AgentInfo& a : agents.agents()) {
    // "f32 (bf16 weights, AVX2)" when the weights are narrower than the compute.
    std::string dtype = a.dtype();
    if (!a.weights_dtype().empty() && a.weights_dtype() != a.dtype()) {
      absl::StrAppend(&dtype, " (", a.weights_dtype(), " weights",
                      a.simd_target().empty() ? "" : ", ", a.simd_target(), ")");
    }
    t.AddRow({a.name(), a.model(), dtype, a.state(), FormatBytes(a.kv_cache_bytes()),
              FormatBytes(a.weight_bytes()), absl::StrCat(a.context_limit()),
              absl::StrCat(a.hops_run()), ShortId(a.fingerprint()),
              a.prefix_card().empty()
                  ? "-"
                  : absl::StrCat(ShortId(a.prefix_card()), " (", a.prefix_tokens(), " tok)")});
  }
  return t.Render();
}

std::string FormatWorkflows(const v1::ListWorkflowsResponse& workflows) {
  Table t({{"NAME"}, {"HOPS", Table::kRight}, {"AGENTS"}, {"HANDOFF"}, {"DESCRIPTION"}});
  for (const v1::WorkflowInfo& w : workflows.workflows()) {
    std::vector<std::string> agents, handoffs;
    for (int i = 0; i < w.hops_size(); ++i) {
      const v1::WorkflowInfo::Hop& h = w.hops(i);
      agents.push_back(h.agent());
      if (i + 1 == w.hops_size()) continue;  // the last hop hands off nothing
      std::string mode = HandoffModeName(h.handoff_mode());
      if (mode == "-") {
        handoffs.push_back("default");
      } else if (h.handoff_mode() == v1::HANDOFF_MODE_CARD) {
        handoffs.push_back(absl::StrCat("card/", h.handoff_bits(), "b/",
                                        h.handoff_policy() == v1::BIT_POLICY_UNSPECIFIED
                                            ? "default"
                                            : BitPolicyName(h.handoff_policy())));
      } else {
        handoffs.push_back(mode);
      }
    }
    if (w.steps_size() > 0) {
      std::vector<std::string> steps;
      for (const v1::WorkflowInfo::Step& st : w.steps()) steps.push_back(st.name());
      t.AddRow({w.name(), absl::StrCat(w.steps_size()), "graph: " + absl::StrJoin(steps, ","), "-",
                w.description()});
      continue;
    }
    t.AddRow({w.name(), absl::StrCat(w.hops_size()), absl::StrJoin(agents, ">"),
              OrDash(absl::StrJoin(handoffs, ",")), w.description()});
  }
  return t.Render();
}

std::string FormatWorkflowGraph(const v1::WorkflowInfo& w) {
  std::string out = absl::StrCat("workflow ", w.name(), w.description().empty() ? "" : ": ",
                                 w.description(), "\n", "file: ", w.file(), "\n");
  auto hop_text = [](const v1::WorkflowInfo::Hop& h) {
    return absl::StrCat("agent ", h.agent(), ", instruction \"", h.instruction(),
                        "\", max_new_tokens ", h.max_new_tokens());
  };
  if (w.steps_size() == 0) {
    for (int i = 0; i < w.hops_size(); ++i) {
      absl::StrAppend(&out, "hop ", i + 1, ": ", hop_text(w.hops(i)),
                      i + 1 < w.hops_size()
                          ? absl::StrCat(" -> hop ", i + 2, " (",
                                         HandoffModeName(w.hops(i).handoff_mode()), ")")
                          : "",
                      "\n");
    }
    return out;
  }
  absl::StrAppend(&out, "max_steps: ", w.max_steps(), "\n");
  for (const v1::WorkflowInfo::Step& s : w.steps()) {
    absl::StrAppend(&out, "step ", s.name(), " (", s.kind(), ")");
    if (s.max_visits() > 0) absl::StrAppend(&out, ", max_visits ", s.max_visits());
    if (!s.on_limit().empty()) absl::StrAppend(&out, ", on_limit -> ", s.on_limit());
    absl::StrAppend(&out, "\n");
    if (s.kind() == "agent") {
      absl::StrAppend(&out, "  ", hop_text(s.hop()), ", handoff ",
                      HandoffModeName(s.hop().handoff_mode()), "\n");
    }
    for (int b = 0; b < s.branches_size(); ++b) {
      absl::StrAppend(&out, "  branch ", s.branch_names(b), ": ", hop_text(s.branches(b)), "\n");
    }
    if (s.kind() == "await_input") {
      absl::StrAppend(&out, "  waits for input: \"", s.await_prompt(), "\"\n");
    }
    if (!s.join().empty()) absl::StrAppend(&out, "  join -> ", s.join(), "\n");
    if (!s.next().empty()) absl::StrAppend(&out, "  next -> ", s.next(), "\n");
    for (int r = 0; r < s.routes_size(); ++r) {
      absl::StrAppend(&out, "  routes[", r, "] ", s.routes(r).test(), " \"", s.routes(r).pattern(),
                      "\" -> ", s.routes(r).to(), "\n");
    }
    if (!s.default_to().empty()) absl::StrAppend(&out, "  default -> ", s.default_to(), "\n");
    if (s.next().empty() && s.routes_size() == 0 && s.join().empty()) {
      absl::StrAppend(&out, "  (ends the task)\n");
    }
  }
  return out;
}

std::string FormatTasks(const v1::ListTasksResponse& tasks, int64_t now_unix_ms) {
  Table t({{"ID"},
           {"STATE"},
           {"WORKFLOW"},
           {"LABEL"},
           {"HOPS", Table::kRight},
           {"CREATED", Table::kRight},
           {"TIME", Table::kRight},
           {"REASON"}});
  for (const v1::Task& task : tasks.tasks()) {
    std::string time = "-";
    if (task.started_unix_ms() > 0) {
      int64_t end = task.ended_unix_ms() > 0 ? task.ended_unix_ms() : now_unix_ms;
      time = FormatDuration(end - task.started_unix_ms());
    }
    t.AddRow({task.id(), TaskStateName(task.state()), OrDash(task.workflow()), task.label(),
              absl::StrCat(task.hops_size(), "/", task.num_hops()),
              FormatDuration(std::max<int64_t>(0, now_unix_ms - task.created_unix_ms())) + " ago",
              time, task.reason()});
  }
  return t.Render();
}

std::string FormatHopTable(const std::vector<v1::HopResult>& hops) {
  Table t({{"HOP", Table::kRight},
           {"AGENT"},
           {"HANDOFF"},
           {"CARD BYTES", Table::kRight},
           {"AVG BITS", Table::kRight},
           {"INJECT MS", Table::kRight},
           {"TTFT MS", Table::kRight},
           {"TOKENS", Table::kRight},
           {"TOK/S", Table::kRight},
           {"STOP"}});
  std::vector<std::string> notes;
  for (const v1::HopResult& h : hops) {
    std::string mode = "-", bytes = "-", bits = "-", inject = "-";
    if (h.has_handoff_in()) {
      const v1::HandoffStats& in = h.handoff_in();
      mode = HandoffModeName(in.mode());
      if (!in.fallback_reason().empty()) {
        mode += "*";
        notes.push_back(absl::StrCat("* hop ", h.index() + 1, ": ",
                                     HandoffModeName(in.requested_mode()),
                                     " requested, fell back: ", in.fallback_reason()));
      }
      if (!in.budget_reason().empty()) {
        notes.push_back(absl::StrCat("  hop ", h.index() + 1, ": card ", in.budget_reason()));
      }
      if (in.mode() != v1::HANDOFF_MODE_REPREFILL) {
        bytes = FormatBytes(in.card_bytes());
        bits = FormatFixed(in.avg_bits(), 2);
        inject = Ms(in.inject_ms());
      }
    }
    t.AddRow({absl::StrCat(h.index() + 1), h.agent(), mode, bytes, bits, inject, Ms(h.ttft_ms()),
              absl::StrCat(h.generated_tokens()), FormatFixed(h.decode_tokens_per_s(), 1),
              StopReasonName(h)});
  }
  std::string out = t.Render();
  for (const std::string& n : notes) absl::StrAppend(&out, n, "\n");
  return out;
}

std::string FormatTask(const v1::Task& task) {
  std::vector<std::pair<std::string, std::string>> rows = {
      {"id", task.id()},
      {"state", TaskStateName(task.state())},
      {"workflow", OrDash(task.workflow())},
  };
  if (!task.label().empty()) rows.push_back({"label", task.label()});
  if (!task.reason().empty()) rows.push_back({"reason", task.reason()});
  rows.push_back({"hops", absl::StrCat(task.hops_size(), "/", task.num_hops(), " done")});
  if (task.started_unix_ms() > 0 && task.ended_unix_ms() > 0) {
    rows.push_back({"time", FormatDuration(task.ended_unix_ms() - task.started_unix_ms())});
  }
  rows.push_back({"input", task.input()});
  std::string out = KeyValueLines(rows);
  if (task.hops_size() > 0) {
    std::vector<v1::HopResult> hops(task.hops().begin(), task.hops().end());
    absl::StrAppend(&out, "\n", FormatHopTable(hops));
  }
  if (!task.output().empty()) absl::StrAppend(&out, "\noutput:\n", task.output(), "\n");
  return out;
}

std::string FormatCards(const v1::ListCardsResponse& cards) {
  Table t({{"ID"},
           {"PARENT"},
           {"HOP", Table::kRight},
           {"AGENT"},
           {"TOKENS", Table::kRight},
           {"CONTEXT", Table::kRight},
           {"BYTES", Table::kRight},
           {"CHAIN", Table::kRight},
           {"BITS", Table::kRight},
           {"MODE"},
           {"POLICY"},
           {"REFS", Table::kRight},
           {"PIN"},
           {"AGE", Table::kRight}});
  bool any_foreign = false;
  for (const v1::CardInfo& c : cards.cards()) {
    any_foreign |= c.foreign_model();
    t.AddRow({c.foreign_model() ? c.id() + "*" : c.id(), OrDash(ShortId(c.parent_id())),
              absl::StrCat(c.hop() + 1), c.source_agent(), absl::StrCat(c.tokens()),
              absl::StrCat(c.context_tokens()), FormatBytes(c.bytes()),
              FormatBytes(c.chain_bytes()), FormatFixed(c.avg_bits(), 2), c.mode(),
              OrDash(c.policy()), absl::StrCat(c.refs()), OrDash(c.pin()),
              FormatDuration(c.age_ms())});
  }
  return absl::StrCat(
      t.Render(), cards.cards_size(), " cards, ", FormatBytes(cards.store_bytes()), " of ",
      FormatBytes(cards.quota_bytes()), Percent(cards.store_bytes(), cards.quota_bytes()), "\n",
      any_foreign ? "* for a model no agent here runs (foreign fingerprint)\n" : "");
}

std::string FormatCard(const v1::CardInfo& c) {
  std::string out = KeyValueLines({
      {"id", c.id()},
      {"parent", OrDash(c.parent_id())},
      {"fingerprint", c.foreign_model() ? c.fingerprint() + " (foreign: no hosted model matches)"
                                        : c.fingerprint()},
      {"format", absl::StrCat("v", c.format_version(), ", ", c.num_layers(), " layers x ",
                              c.num_kv_heads(), " kv heads x head_dim ", c.head_dim(), ", ",
                              OrDash(c.source_dtype()), " cache")},
      {"source", absl::StrCat(OrDash(c.source_agent()), ", hop ", c.hop())},
      {"tokens", absl::StrCat(c.tokens(), " (context ", c.context_tokens(), ")")},
      {"bytes",
       absl::StrCat(FormatBytes(c.bytes()), " (chain ", FormatBytes(c.chain_bytes()), ")")},
      {"mode",
       absl::StrCat(
           c.mode(), c.policy().empty() ? "" : ", " + c.policy(),
           c.budget_bits() > 0 ? ", budget " + FormatFixed(c.budget_bits(), 2) + " bits" : "")},
      {"avg bits", FormatFixed(c.avg_bits(), 3)},
      {"refs", absl::StrCat(c.refs())},
      {"pinned", c.pin().empty() ? "no"
                 : c.pinned_until_unix_ms() > 0
                     ? absl::StrCat(c.pin(), " (until unix ms ", c.pinned_until_unix_ms(), ")")
                     : c.pin()},
      {"age", FormatDuration(c.age_ms())},
      {"shm", OrDash(c.shm_name())},
  });
  int layers = std::max(c.layer_k_bytes_size(), c.layer_v_bytes_size());
  if (layers > 0) {
    Table t({{"LAYER", Table::kRight}, {"K BYTES", Table::kRight}, {"V BYTES", Table::kRight}});
    for (int l = 0; l < layers; ++l) {
      t.AddRow({absl::StrCat(l),
                l < c.layer_k_bytes_size() ? absl::StrCat(c.layer_k_bytes(l)) : "-",
                l < c.layer_v_bytes_size() ? absl::StrCat(c.layer_v_bytes(l)) : "-"});
    }
    absl::StrAppend(&out, "\n", t.Render());
  }
  int widths = std::max(c.k_bits_histogram_size(), c.v_bits_histogram_size());
  Table h({{"BITS", Table::kRight}, {"K TOKENS", Table::kRight}, {"V TOKENS", Table::kRight}});
  for (int b = 0; b < widths; ++b) {
    int64_t k = b < c.k_bits_histogram_size() ? c.k_bits_histogram(b) : 0;
    int64_t v = b < c.v_bits_histogram_size() ? c.v_bits_histogram(b) : 0;
    if (k == 0 && v == 0) continue;
    h.AddRow({absl::StrCat(b), absl::StrCat(k), absl::StrCat(v)});
  }
  if (h.num_rows() > 0) absl::StrAppend(&out, "\n", h.Render());
  return out;
}

std::string FormatStats(const v1::Stats& s) {
  Table counters({{"COUNTER"}, {"VALUE", Table::kRight}});
  const std::pair<const char*, int64_t> rows[] = {
      {"tasks_submitted", s.tasks_submitted()},   {"tasks_finished", s.tasks_finished()},
      {"tasks_failed", s.tasks_failed()},         {"tasks_cancelled", s.tasks_cancelled()},
      {"tasks_rejected", s.tasks_rejected()},     {"hops_run", s.hops_run()},
      {"tokens_generated", s.tokens_generated()}, {"tokens_prefilled", s.tokens_prefilled()},
      {"cards_built", s.cards_built()},           {"card_bytes_built", s.card_bytes_built()},
      {"cards_injected", s.cards_injected()},     {"reprefill_fallbacks", s.reprefill_fallbacks()},
      {"cards_evicted", s.cards_evicted()},
  };
  for (const auto& [name, value] : rows) counters.AddRow({name, absl::StrCat(value)});
  Table summaries({{"DISTRIBUTION"},
                   {"COUNT", Table::kRight},
                   {"MEAN", Table::kRight},
                   {"P50", Table::kRight},
                   {"P90", Table::kRight},
                   {"P99", Table::kRight},
                   {"MAX", Table::kRight}});
  const std::pair<const char*, const v1::Summary*> dists[] = {
      {"hop_ttft_ms", &s.hop_ttft_ms()},     {"decode_tokens_per_s", &s.decode_tokens_per_s()},
      {"card_build_ms", &s.card_build_ms()}, {"inject_ms", &s.inject_ms()},
      {"task_total_ms", &s.task_total_ms()},
  };
  for (const auto& [name, d] : dists) {
    summaries.AddRow({name, absl::StrCat(d->count()), FormatFixed(d->mean(), 1),
                      FormatFixed(d->p50(), 1), FormatFixed(d->p90(), 1), FormatFixed(d->p99(), 1),
                      FormatFixed(d->max(), 1)});
  }
  return absl::StrCat(counters.Render(), "\n", summaries.Render());
}

}  // namespace qkvshare::qkvctl
