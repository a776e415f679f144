#include "daemon/config/config.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "daemon/config/yaml_reader.h"

namespace qkvshare::daemon {

using config_internal::ParseYaml;
using config_internal::YamlMap;
namespace fs = std::filesystem;

std::string_view HandoffModeName(HandoffMode m) {
  switch (m) {
    case HandoffMode::kCard:
      return "card";
    case HandoffMode::kFull:
      return "full";
    case HandoffMode::kReprefill:
      return "reprefill";
  }
  return "?";
}

std::string_view BitPolicyName(BitPolicy p) {
  return p == BitPolicy::kAdaptive ? "adaptive" : "uniform";
}

void GenerationConfig::MergeFrom(const GenerationConfig& over) {
  if (over.max_new_tokens) max_new_tokens = over.max_new_tokens;
  if (over.temperature) temperature = over.temperature;
  if (over.top_k) top_k = over.top_k;
  if (over.top_p) top_p = over.top_p;
  if (over.seed) seed = over.seed;
  if (over.stop) stop = over.stop;
}

const ModelEntry* DaemonConfig::FindModel(const std::string& name) const {
  for (const ModelEntry& m : models)
    if (m.name == name) return &m;
  return nullptr;
}

const AgentEntry* DaemonConfig::FindAgent(const std::string& name) const {
  for (const AgentEntry& a : agents)
    if (a.name == name) return &a;
  return nullptr;
}

absl::Status CheckName(absl::string_view name) {
  constexpr size_t kMaxName = 64;
  const bool ok =
      !name.empty() && name.size() <= kMaxName && std::all_of(name.begin(), name.end(), [](char c) {
        return absl::ascii_isalnum(c) || c == '_' || c == '-' || c == '.';
      });
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("name '", name, "' is not 1-", kMaxName,
                                                 " characters of letters, digits, '_', '-', '.'"));
}

absl::Status CheckPlaceholders(absl::string_view text, absl::Span<const absl::string_view> known) {
  for (size_t open = text.find('{'); open != absl::string_view::npos;
       open = text.find('{', open + 1)) {
    size_t end = open + 1;
    while (end < text.size() && (absl::ascii_islower(text[end]) || text[end] == '_')) ++end;
    if (end == open + 1 || end >= text.size() || text[end] != '}') continue;  // not {word}
    const absl::string_view word = text.substr(open + 1, end - open - 1);
    if (std::find(known.begin(), known.end(), word) != known.end()) continue;
    std::vector<std::string> names;
    for (absl::string_view k : known) names.push_back(absl::StrCat("{", k, "}"));
    return absl::InvalidArgumentError(
        absl::StrCat("unknown placeholder {", word, "} (known: ", absl::StrJoin(names, ", "), ")"));
  }
  return absl::OkStatus();
}

absl::Status CheckModelDirectories(const DaemonConfig& config) {
  for (const ModelEntry& m : config.models) {
    std::error_code ec;
    if (!fs::is_directory(m.path, ec)) {
      return absl::NotFoundError(absl::StrCat(m.where, ": model directory not found: ", m.path));
    }
    if (!fs::is_regular_file(fs::path(m.path) / "config.json", ec)) {
      return absl::NotFoundError(
          absl::StrCat(m.where, ": no config.json in model directory ", m.path));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateHandoff(const HandoffConfig& h, const std::string& where) {
  if (h.mode == HandoffMode::kCard && !((h.bits >= 2 && h.bits <= 8) || h.bits == 16)) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": bits ", h.bits, " must be in [2, 8] or exactly 16"));
  }
  if (h.group_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": group_size must be >= 1"));
  }
  if (h.importance_window < 1) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": importance_window must be >= 1"));
  }
  return absl::OkStatus();
}

namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open (does it exist?)"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string ResolvePath(const std::string& file, const std::string& p) {
  if (p.empty() || fs::path(p).is_absolute()) return p;
  fs::path base = fs::path(file).parent_path();
  return fs::absolute(base / p).lexically_normal().string();
}

absl::Status ParseGeneration(YamlMap map, GenerationConfig* g) {
  QKV_RETURN_IF_ERROR(map.Init());
  int64_t i = 0;
  double d = 0;
  if (map.Has("max_new_tokens")) {
    QKV_RETURN_IF_ERROR(map.GetInt("max_new_tokens", &i, 1, 1 << 20));
    g->max_new_tokens = static_cast<int>(i);
  }
  if (map.Has("temperature")) {
    QKV_RETURN_IF_ERROR(map.GetDouble("temperature", &d, 0, 100));
    g->temperature = static_cast<float>(d);
  }
  if (map.Has("top_k")) {
    QKV_RETURN_IF_ERROR(map.GetInt("top_k", &i, 0, 1 << 24));
    g->top_k = static_cast<int>(i);
  }
  if (map.Has("top_p")) {
    QKV_RETURN_IF_ERROR(map.GetDouble("top_p", &d, 0, 1));
    if (d <= 0) return map.Error("top_p", "must be > 0");
    g->top_p = static_cast<float>(d);
  }
  if (map.Has("seed")) {
    QKV_RETURN_IF_ERROR(map.GetInt("seed", &i, 0, INT64_MAX));
    g->seed = static_cast<uint64_t>(i);
  }
  if (map.Has("stop")) {
    std::vector<std::string> stop;
    QKV_RETURN_IF_ERROR(map.GetStringList("stop", &stop));
    for (const std::string& s : stop)
      if (s.empty()) return map.Error("stop", "stop strings must not be empty");
    g->stop = std::move(stop);
  }
  return map.Finish();
}

absl::Status ParseHandoff(YamlMap map, HandoffConfig* h) {
  QKV_RETURN_IF_ERROR(map.Init());
  std::string mode(HandoffModeName(h->mode)), policy(BitPolicyName(h->policy));
  QKV_RETURN_IF_ERROR(map.GetEnum("mode", {"card", "full", "reprefill"}, &mode));
  h->mode = mode == "card" ? HandoffMode::kCard
                           : (mode == "full" ? HandoffMode::kFull : HandoffMode::kReprefill);
  QKV_RETURN_IF_ERROR(map.GetDouble("bits", &h->bits, 2, 16));
  if (!((h->bits >= 2 && h->bits <= 8) || h->bits == 16)) {
    return map.Error("bits", absl::StrCat(h->bits, " must be in [2, 8] or exactly 16"));
  }
  QKV_RETURN_IF_ERROR(map.GetEnum("policy", {"adaptive", "uniform"}, &policy));
  h->policy = policy == "adaptive" ? BitPolicy::kAdaptive : BitPolicy::kUniform;
  int64_t g = h->group_size, w = h->importance_window;
  QKV_RETURN_IF_ERROR(map.GetInt("group_size", &g, 1, 4096));
  QKV_RETURN_IF_ERROR(map.GetInt("importance_window", &w, 1, 1024));
  h->group_size = static_cast<int>(g);
  h->importance_window = static_cast<int>(w);
  return map.Finish();
}

bool IsLoopbackHost(const std::string& hostport) {
  return absl::StartsWith(hostport, "127.") || absl::StartsWith(hostport, "localhost:") ||
         absl::StartsWith(hostport, "[::1]:");
}

absl::Status ParseModels(YamlMap models, DaemonConfig* cfg) {
  QKV_RETURN_IF_ERROR(models.Init());
  for (const std::string& name : models.Keys()) {
    YamlMap m = models.Child(name);
    QKV_RETURN_IF_ERROR(m.Init());
    if (absl::Status n = CheckName(name); !n.ok()) {
      return models.Error(name, absl::StrCat("model ", n.message()));
    }
    ModelEntry e;
    e.name = name;
    QKV_RETURN_IF_ERROR(m.GetString("path", &e.path, /*required=*/true));
    e.path = ResolvePath(cfg->file, e.path);
    e.where = m.Where("path");
    std::string dtype = "f32";
    QKV_RETURN_IF_ERROR(m.GetEnum("dtype", {"f32", "bf16"}, &dtype));
    e.dtype = dtype == "bf16" ? DType::kBF16 : DType::kF32;
    int64_t threads = 0, chunk = e.prefill_chunk;
    QKV_RETURN_IF_ERROR(m.GetInt("threads", &threads, 0, 1024));
    QKV_RETURN_IF_ERROR(m.GetInt("prefill_chunk", &chunk, 1, 1 << 20));
    e.threads = static_cast<int>(threads);
    e.prefill_chunk = static_cast<int>(chunk);
    QKV_RETURN_IF_ERROR(m.Finish());
    cfg->models.push_back(std::move(e));
  }
  if (cfg->models.empty()) return models.Error("", "at least one model is required");
  return absl::OkStatus();
}

absl::Status ParseAgents(YamlMap agents, DaemonConfig* cfg) {
  QKV_RETURN_IF_ERROR(agents.Init());
  for (const std::string& name : agents.Keys()) {
    YamlMap a = agents.Child(name);
    QKV_RETURN_IF_ERROR(a.Init());
    if (absl::Status n = CheckName(name); !n.ok()) {
      return agents.Error(name, absl::StrCat("agent ", n.message()));
    }
    AgentEntry e;
    e.name = name;
    QKV_RETURN_IF_ERROR(a.GetString("model", &e.model, /*required=*/true));
    if (cfg->FindModel(e.model) == nullptr) {
      return a.Error("model", absl::StrCat("unknown model '", e.model, "' (not under models:)"));
    }
    QKV_RETURN_IF_ERROR(a.GetString("system", &e.system));
    QKV_RETURN_IF_ERROR(a.GetString("prompt_template", &e.prompt_template));
    if (e.prompt_template.find("{instruction}") == std::string::npos) {
      return a.Error("prompt_template", "must contain {instruction}");
    }
    if (absl::Status p = CheckPlaceholders(e.prompt_template, {absl::string_view("instruction")});
        !p.ok()) {
      return a.Error("prompt_template", std::string(p.message()));
    }
    // Agent defaults: every field set.
    e.generation = {64, 0.0f, 0, 1.0f, 0, std::vector<std::string>{}};
    GenerationConfig over;
    QKV_RETURN_IF_ERROR(ParseGeneration(a.Child("generation"), &over));
    e.generation.MergeFrom(over);
    QKV_RETURN_IF_ERROR(a.Finish());
    cfg->agents.push_back(std::move(e));
  }
  if (cfg->agents.empty()) return agents.Error("", "at least one agent is required");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<DaemonConfig> ParseDaemonConfig(const std::string& text, const std::string& file) {
  QKV_ASSIGN_OR_RETURN(YAML::Node root, ParseYaml(text, file));
  DaemonConfig cfg;
  cfg.file = file;
  YamlMap top(root, file, "");
  QKV_RETURN_IF_ERROR(top.Init());
  QKV_RETURN_IF_ERROR(top.GetString("listen", &cfg.listen));
  if (!absl::StartsWith(cfg.listen, "unix:")) {
    return top.Error("listen", "must be a unix: socket address (use tcp_listen for TCP)");
  }
  QKV_RETURN_IF_ERROR(top.GetString("tcp_listen", &cfg.tcp_listen));
  QKV_RETURN_IF_ERROR(top.GetBool("allow_remote", &cfg.allow_remote));
  if (!cfg.tcp_listen.empty() && !cfg.allow_remote && !IsLoopbackHost(cfg.tcp_listen)) {
    return top.Error("tcp_listen", "a non-loopback address needs allow_remote: true");
  }
  QKV_RETURN_IF_ERROR(top.GetString("instance", &cfg.instance));
  if (cfg.instance.empty() ||
      cfg.instance.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                     "0123456789_-") != std::string::npos) {
    return top.Error("instance", "must be non-empty [A-Za-z0-9_-]");
  }
  QKV_RETURN_IF_ERROR(top.GetString("workflows_dir", &cfg.workflows_dir));
  cfg.workflows_dir = ResolvePath(file, cfg.workflows_dir);
  QKV_RETURN_IF_ERROR(top.GetEnum(
      "log_level", {"trace", "debug", "info", "warn", "error", "critical", "off"}, &cfg.log_level));
  QKV_RETURN_IF_ERROR(
      top.GetDouble("shutdown_grace_seconds", &cfg.shutdown_grace_seconds, 0, 3600));
  QKV_RETURN_IF_ERROR(top.GetString("metrics_listen", &cfg.metrics_listen));
  if (!cfg.metrics_listen.empty() && !cfg.allow_remote && !IsLoopbackHost(cfg.metrics_listen)) {
    return top.Error("metrics_listen", "a non-loopback address needs allow_remote: true");
  }

  QKV_RETURN_IF_ERROR(ParseModels(top.Child("models"), &cfg));
  QKV_RETURN_IF_ERROR(ParseAgents(top.Child("agents"), &cfg));

  YamlMap store = top.Child("card_store");
  QKV_RETURN_IF_ERROR(store.Init());
  QKV_RETURN_IF_ERROR(
      store.GetInt("quota_bytes", &cfg.card_store.quota_bytes, 1 << 16, int64_t{1} << 50));
  QKV_RETURN_IF_ERROR(store.GetInt("ttl_seconds", &cfg.card_store.ttl_seconds, 0, 86400 * 365));
  QKV_RETURN_IF_ERROR(
      store.GetInt("kept_ttl_seconds", &cfg.card_store.kept_ttl_seconds, 1, 86400 * 365));
  QKV_RETURN_IF_ERROR(store.Finish());

  QKV_RETURN_IF_ERROR(ParseHandoff(top.Child("handoff"), &cfg.handoff));

  YamlMap limits = top.Child("limits");
  QKV_RETURN_IF_ERROR(limits.Init());
  LimitsConfig& l = cfg.limits;
  int64_t conc = l.max_concurrent_tasks, queue = l.queue_length, keep = l.keep_finished_tasks;
  QKV_RETURN_IF_ERROR(limits.GetInt("max_context_tokens", &l.max_context_tokens, 0, 1 << 24));
  QKV_RETURN_IF_ERROR(limits.GetInt("max_concurrent_tasks", &conc, 1, 256));
  QKV_RETURN_IF_ERROR(limits.GetInt("queue_length", &queue, 0, 1 << 20));
  QKV_RETURN_IF_ERROR(limits.GetInt("max_card_bytes", &l.max_card_bytes, 1024, int64_t{1} << 50));
  QKV_RETURN_IF_ERROR(limits.GetInt("max_input_bytes", &l.max_input_bytes, 1, int64_t{1} << 30));
  QKV_RETURN_IF_ERROR(limits.GetInt("keep_finished_tasks", &keep, 1, 1 << 20));
  QKV_RETURN_IF_ERROR(
      limits.GetInt("max_message_bytes", &l.max_message_bytes, 4096, int64_t{1} << 31));
  l.max_concurrent_tasks = static_cast<int>(conc);
  l.queue_length = static_cast<int>(queue);
  l.keep_finished_tasks = static_cast<int>(keep);
  QKV_RETURN_IF_ERROR(limits.Finish());

  QKV_RETURN_IF_ERROR(top.Finish());
  return cfg;
}

absl::StatusOr<DaemonConfig> LoadDaemonConfig(const std::string& path) {
  QKV_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseDaemonConfig(text, fs::absolute(path).lexically_normal().string());
}

absl::StatusOr<WorkflowConfig> ParseWorkflow(const std::string& text, const std::string& file,
                                             const DaemonConfig& daemon) {
  QKV_ASSIGN_OR_RETURN(YAML::Node root, ParseYaml(text, file));
  WorkflowConfig wf;
  wf.file = file;
  wf.name = fs::path(file).stem().string();
  YamlMap top(root, file, "");
  QKV_RETURN_IF_ERROR(top.Init());
  QKV_RETURN_IF_ERROR(top.GetString("name", &wf.name));
  if (absl::Status n = CheckName(wf.name); !n.ok()) {
    return top.Error(top.Has("name") ? "name" : "", absl::StrCat("workflow ", n.message()));
  }
  QKV_RETURN_IF_ERROR(top.GetString("description", &wf.description));
  HandoffConfig wf_handoff = daemon.handoff;
  const bool has_default_handoff = top.Has("handoff");
  QKV_RETURN_IF_ERROR(ParseHandoff(top.Child("handoff"), &wf_handoff));

  YAML::Node hops = top.Raw("hops");
  if (!hops.IsDefined() || !hops.IsSequence() || hops.size() == 0) {
    return top.Error("hops", "required: a non-empty list of hops");
  }
  if (hops.size() > static_cast<size_t>(kMaxHops)) {
    return top.Error("hops", absl::StrCat(hops.size(), " hops; at most ", kMaxHops));
  }
  for (size_t i = 0; i < hops.size(); ++i) {
    YamlMap h(hops[i], file, absl::StrCat("hops[", i, "]"));
    QKV_RETURN_IF_ERROR(h.Init());
    if (!hops[i].IsMap()) return h.Error("", "expected a mapping");
    HopConfig hop;
    QKV_RETURN_IF_ERROR(h.GetString("agent", &hop.agent, /*required=*/true));
    if (daemon.FindAgent(hop.agent) == nullptr) {
      return h.Error("agent", absl::StrCat("unknown agent '", hop.agent, "'"));
    }
    QKV_RETURN_IF_ERROR(h.GetString("instruction", &hop.instruction));
    if (absl::Status p = CheckPlaceholders(hop.instruction, kInstructionPlaceholders); !p.ok()) {
      return h.Error("instruction", std::string(p.message()));
    }
    h.Raw("handoff");  // a known key here even when absent (error messages list it)
    QKV_RETURN_IF_ERROR(ParseGeneration(h.Child("generation"), &hop.generation));
    if (h.Has("handoff") || has_default_handoff) {
      HandoffConfig hc = wf_handoff;
      QKV_RETURN_IF_ERROR(ParseHandoff(h.Child("handoff"), &hc));
      hop.handoff = hc;
    }
    QKV_RETURN_IF_ERROR(h.Finish());
    wf.hops.push_back(std::move(hop));
  }
  QKV_RETURN_IF_ERROR(top.Finish());
  return wf;
}

absl::StatusOr<std::vector<WorkflowConfig>> LoadWorkflowDir(const std::string& dir,
                                                            const DaemonConfig& daemon) {
  std::vector<WorkflowConfig> out;
  if (dir.empty()) return out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat(dir, ": workflows_dir is not a directory"));
  }
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string ext = entry.path().extension().string();
    if (entry.is_regular_file() && (ext == ".yaml" || ext == ".yml")) {
      files.push_back(entry.path().string());
    }
  }
  if (ec) return absl::InternalError(absl::StrCat(dir, ": ", ec.message()));
  std::sort(files.begin(), files.end());
  std::set<std::string> names;
  for (const std::string& f : files) {
    QKV_ASSIGN_OR_RETURN(std::string text, ReadFile(f));
    QKV_ASSIGN_OR_RETURN(WorkflowConfig wf, ParseWorkflow(text, f, daemon));
    if (!names.insert(wf.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(f, ": workflow name '", wf.name, "' is already used by another file"));
    }
    out.push_back(std::move(wf));
  }
  return out;
}

}  // namespace qkvshare::daemon
