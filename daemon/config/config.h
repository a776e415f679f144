// File: daemon/config/config.h
// -----------------------------------------------------------------------------
// The daemon's typed configuration: configs/daemon.yaml (DaemonConfig) and
// configs/workflows/*.yaml (WorkflowConfig). YAML is parsed once, here; no
// YAML node leaves this package. Every key is documented in
// docs/configuration.md. Parsing is strict: unknown keys, wrong types and
// out-of-range values are InvalidArgument errors naming file, line, column and
// key path.
//
// Reload: only workflows can change at run time (ReloadWorkflows / SIGHUP);
// everything in DaemonConfig needs a restart.
//
// Relative paths (models.*.path, workflows_dir) are resolved against the
// directory of the daemon.yaml that names them.
#ifndef QKVSHARE_DAEMON_CONFIG_CONFIG_H_
#define QKVSHARE_DAEMON_CONFIG_CONFIG_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "agents/weights/quantized_matrix.h"
#include "base/dtype.h"

namespace qkvshare::daemon {

enum class HandoffMode { kCard, kFull, kReprefill };
enum class BitPolicy { kAdaptive, kUniform };

std::string_view HandoffModeName(HandoffMode m);  // "card", "full", "reprefill"
std::string_view BitPolicyName(BitPolicy p);      // "adaptive", "uniform"

// How a hop's context goes to the next hop.
struct HandoffConfig {
  HandoffMode mode = HandoffMode::kCard;
  // Average code bits per element for kCard: 2..8 (fractional allowed) or 16.
  double bits = 4.0;
  BitPolicy policy = BitPolicy::kAdaptive;
  // Quantization group size G (keys: G tokens of a channel; values: G
  // channels of a token).
  int group_size = 32;
  // Query positions whose attention scores token importance (adaptive).
  int importance_window = 4;
};

// Decoding parameters. In agent defaults every field is set; in hop/task
// overrides unset fields keep the lower layer's value.
struct GenerationConfig {
  std::optional<int> max_new_tokens;
  std::optional<float> temperature;  // 0: greedy
  std::optional<int> top_k;          // 0: off
  std::optional<float> top_p;        // 1: off
  std::optional<uint64_t> seed;
  std::optional<std::vector<std::string>> stop;
  // Fields set in `over` replace those here.
  void MergeFrom(const GenerationConfig& over);
};

struct ModelEntry {
  std::string name;
  std::string path;  // absolute after loading
  DType dtype = DType::kF32;
  // models.NAME.weights: the weight matrices in memory. kAuto: as `dtype`
  // says (dense); kF32 / kBF16: dense, and the compute dtype (same as
  // `dtype`); kQ8 / kQ4: quantized at load (agents::ApplyWeightFormat), f32
  // compute. kF16 is refused at parse time (no f16 compute path).
  agents::weights::WeightFormat weights = agents::weights::WeightFormat::kAuto;
  int threads = 0;          // intra-op threads; 0: all cores
  int prefill_chunk = 512;  // tokens per prefill chunk
  // Floor of the bit budget of quantized cards this model's agents build
  // (2..8 or 16): a lower `bits` is raised to it (daemon/card_budget.h).
  double min_card_bits = 2.0;
  std::string where;  // "file:line:col: models.NAME.path", for errors
};

struct AgentEntry {
  std::string name;
  std::string model;  // a ModelEntry name
  // Role/system text prefilled when the agent starts a fresh sequence (hop 0
  // or re-prefill); empty: none.
  std::string system;
  // Wraps each hop instruction; must contain {instruction}.
  std::string prompt_template = "{instruction}";
  GenerationConfig generation;  // all fields set after loading
};

struct CardStoreConfig {
  int64_t quota_bytes = 256ll << 20;
  int64_t ttl_seconds = 0;  // 0: no TTL
  // Pin of a card kept by a task (SubmitTaskRequest.keep_context).
  int64_t kept_ttl_seconds = 3600;
  // Prefix cards: an agent's `system` text is prefilled once per (model,
  // text), kept as a pinned full card and injected into every fresh
  // sequence of that agent instead of prefilled (daemon/handoff/handoff.h).
  bool prefix_cards = true;
};

struct LimitsConfig {
  int64_t max_context_tokens = 0;  // 0: each model's own limit
  int max_concurrent_tasks = 2;
  int queue_length = 16;
  int64_t max_card_bytes = 1ll << 30;
  // ImportCard streams in progress at once; more are RESOURCE_EXHAUSTED.
  int max_concurrent_imports = 2;
  int64_t max_input_bytes = 1 << 20;
  int keep_finished_tasks = 256;           // ended tasks kept for GetTask
  int64_t max_message_bytes = 64ll << 20;  // gRPC receive limit
  int max_paused_tasks = 16;               // tasks waiting in await_input at once
  int64_t paused_ttl_seconds = 3600;       // a paused task fails after this long
  // gRPC server threads (one per call in progress, streams included):
  // calls beyond it are RESOURCE_EXHAUSTED.
  int max_rpc_threads = 256;
  // Concurrent WatchTask streams in total and on one task.
  int max_watchers = 128;
  int max_watchers_per_task = 16;
};

struct DaemonConfig {
  std::string file;  // the daemon.yaml this came from
  // gRPC listen address: unix:///path or unix:relative (socket mode 0660).
  std::string listen = "unix:///run/qkvshare/qkvshared.sock";
  // Optional TCP address (host:port); empty: none. A non-loopback host needs
  // allow_remote: true.
  std::string tcp_listen;
  bool allow_remote = false;
  // Bearer token every TCP call must carry ("authorization: Bearer <token>"):
  // a file only the service user may read (mode 0600 or 0400, owned by it).
  // Required with tcp_listen; absolute after loading.
  std::string tcp_auth_token_file;
  // PEM certificate chain and key for TLS on tcp_listen; both or neither.
  // Required for a non-loopback tcp_listen (the token must not cross a
  // network in clear). Without them the TCP port accepts loopback peers only.
  std::string tcp_tls_cert_file;
  std::string tcp_tls_key_file;
  // Names shared-memory segments (/qkvshare.<instance>.*); one daemon per
  // instance name.
  std::string instance = "default";
  std::string workflows_dir;  // absolute after loading; empty: none
  std::string log_level = "info";
  double shutdown_grace_seconds = 10;
  // Prometheus metrics on host:port (loopback unless allow_remote); empty: off.
  std::string metrics_listen;
  std::vector<ModelEntry> models;
  std::vector<AgentEntry> agents;
  CardStoreConfig card_store;
  HandoffConfig handoff;
  LimitsConfig limits;

  const ModelEntry* FindModel(const std::string& name) const;
  const AgentEntry* FindAgent(const std::string& name) const;
};

struct HopConfig {
  std::string agent;
  // May use {input}, {previous} and {hop}.
  std::string instruction;
  GenerationConfig generation;  // overrides of the agent's defaults
  // Handoff to the next hop; unset: the daemon's default.
  std::optional<HandoffConfig> handoff;
};

// Where a route or edge leads: a step name, or kEndStep (the task ends with
// the current step's output).
inline constexpr char kEndStep[] = "end";

// One conditional edge: tested on the step's output (for an await_input
// step: on the resume input), in order; the first match is taken.
struct RouteConfig {
  enum class Test { kContains, kRegex, kEquals };
  Test test = Test::kContains;
  // kContains: a substring; kRegex: an RE2 pattern that must match part of
  // the output (RE2::PartialMatch); kEquals: the output with leading and
  // trailing whitespace removed equals it.
  std::string pattern;
  std::string to;     // a step name or kEndStep
  std::string where;  // "file:line:col: steps.NAME.routes[i]"
};

// "contains", "regex", "equals".
std::string_view RouteTestName(RouteConfig::Test t);

// Whether `route` matches `text`. A regex route with an invalid pattern
// never matches (patterns are checked at load).
bool RouteMatches(const RouteConfig& route, absl::string_view text);

// One branch of a parallel (fan-out) step.
struct BranchConfig {
  std::string name;
  std::string agent;
  std::string instruction;  // may use the step placeholders
  GenerationConfig generation;
};

// One named step of a graph workflow. Exactly one of: an agent step
// (`agent`), a fan-out (`parallel` + `join`), a pause (`await_input`).
struct StepConfig {
  std::string name;
  std::string agent;
  std::string instruction;
  GenerationConfig generation;
  std::optional<HandoffConfig> handoff;    // to the next step
  std::vector<BranchConfig> parallel;      // branches, in file order
  std::string join;                        // parallel: the step that gets the branches
  std::optional<std::string> await_input;  // the prompt text shown while paused
  // Successor: `next` (a step or kEndStep), or `routes` + `default_to`.
  // None: the task ends after this step.
  std::string next;
  std::vector<RouteConfig> routes;
  std::string default_to;
  int max_visits = 0;    // 0: unbounded (only outside cycles)
  std::string on_limit;  // taken instead when the step is at max_visits; empty: fail
  std::string where;     // "file:line:col: steps.NAME"
};

struct WorkflowConfig {
  std::string name;
  std::string description;
  std::string file;
  // A line (`hops:`), or a graph (`steps:`, first step first); one is empty.
  std::vector<HopConfig> hops;
  std::vector<StepConfig> steps;
  int max_steps = 0;  // graph: most step runs per task (parallel: 1 + branches)

  bool is_graph() const { return !steps.empty(); }
  // nullptr if there is no such step.
  const StepConfig* FindStep(absl::string_view name) const;
};

// Model, agent and workflow names: 1-64 characters of [A-Za-z0-9_.-] (they
// appear in CLI arguments, logs and metric labels). Errors: InvalidArgument
// "name '...' is not ...".
absl::Status CheckName(absl::string_view name);

// Most hops in one workflow or inline pipeline, and the longest task label
// (bytes). A pipeline is run hop by hop, so a runaway file or request would
// otherwise occupy a task slot for as long as it lasts.
inline constexpr int kMaxHops = 256;
inline constexpr size_t kMaxLabelBytes = 256;

// Placeholders a hop instruction may use: {input}, {previous}, {hop}.
inline constexpr std::array<absl::string_view, 3> kInstructionPlaceholders = {"input", "previous",
                                                                              "hop"};
// A graph step's instruction may also use {visit} (1-based visit of this
// step); the step a parallel block joins into may use {branches} (every
// branch output, "NAME: output" lines in branch order) and {branch.NAME}.
inline constexpr std::array<absl::string_view, 4> kStepPlaceholders = {"input", "previous", "hop",
                                                                       "visit"};
inline constexpr std::array<absl::string_view, 5> kJoinPlaceholders = {"input", "previous", "hop",
                                                                       "visit", "branches"};

// Finds `{word}` (lowercase letters and '_' between braces) in `text` that is
// not one of `known` (names without braces): a misspelled placeholder would
// otherwise be sent to the model verbatim. Other braces are text. Errors:
// InvalidArgument "unknown placeholder {word} (known: {a}, {b})".
absl::Status CheckPlaceholders(absl::string_view text, absl::Span<const absl::string_view> known);

// Checks that every model's path is a directory holding config.json, or a
// regular file (a GGUF model, agents/gguf/gguf_model.h; its contents are
// checked when it loads) (what
// --check_config and start-up need; parsing alone does not touch the disk).
// Errors: NotFound naming the config location and the directory.
absl::Status CheckModelDirectories(const DaemonConfig& config);

// Loads and validates daemon.yaml. Errors: NotFound (no file),
// InvalidArgument (syntax, unknown key, bad value, an agent naming an unknown
// model, duplicate names), each naming file:line:col and the key.
absl::StatusOr<DaemonConfig> LoadDaemonConfig(const std::string& path);
// Same from text; `file` names it in errors and anchors relative paths.
absl::StatusOr<DaemonConfig> ParseDaemonConfig(const std::string& text, const std::string& file);

// Parses one workflow file; hops must name agents of `daemon`. The workflow
// name is the `name` key, else the file's base name without extension.
absl::StatusOr<WorkflowConfig> ParseWorkflow(const std::string& text, const std::string& file,
                                             const DaemonConfig& daemon);

// Loads every *.yaml / *.yml in `dir` (sorted by name). All-or-nothing: the
// first error is returned. Duplicate workflow names are InvalidArgument.
absl::StatusOr<std::vector<WorkflowConfig>> LoadWorkflowDir(const std::string& dir,
                                                            const DaemonConfig& daemon);

// Validates a handoff (bits in [2, 8] or 16, group size >= 1, window >= 1);
// `where` prefixes the message.
absl::Status ValidateHandoff(const HandoffConfig& h, const std::string& where);

}  // namespace qkvshare::daemon

#endif  // QKVSHARE_DAEMON_CONFIG_CONFIG_H_
