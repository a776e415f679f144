#include "daemon/config/config.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "daemon/config/yaml_reader.h"
#include "re2/re2.h"

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
    // A GGUF file (llama.cpp / Ollama) is a model too (agents/gguf).
    if (fs::is_regular_file(m.path, ec)) continue;
    if (absl::EndsWith(m.path, ".gguf")) {
      return absl::NotFoundError(absl::StrCat(m.where, ": model file not found: ", m.path));
    }
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

namespace {

// Card budgets (handoff bits, min_card_bits): 2..8 (fractional) or 16.
bool ValidCardBits(double bits) { return (bits >= 2 && bits <= 8) || bits == 16; }

}  // namespace

absl::Status ValidateHandoff(const HandoffConfig& h, const std::string& where) {
  if (h.mode == HandoffMode::kCard && !ValidCardBits(h.bits)) {
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

std::string_view RouteTestName(RouteConfig::Test t) {
  switch (t) {
    case RouteConfig::Test::kContains:
      return "contains";
    case RouteConfig::Test::kRegex:
      return "regex";
    case RouteConfig::Test::kEquals:
      return "equals";
  }
  return "?";
}

bool RouteMatches(const RouteConfig& route, absl::string_view text) {
  switch (route.test) {
    case RouteConfig::Test::kContains:
      return absl::StrContains(text, route.pattern);
    case RouteConfig::Test::kRegex: {
      RE2 re(route.pattern, RE2::Quiet);
      return re.ok() && RE2::PartialMatch(re2::StringPiece(text.data(), text.size()), re);
    }
    case RouteConfig::Test::kEquals:
      return absl::StripAsciiWhitespace(text) == route.pattern;
  }
  return false;
}

const StepConfig* WorkflowConfig::FindStep(absl::string_view name) const {
  for (const StepConfig& s : steps)
    if (s.name == name) return &s;
  return nullptr;
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
  if (!ValidCardBits(h->bits)) {
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

// A hop's or step's `handoff:` over the workflow's; unset when neither says.
absl::Status ParseStepHandoff(YamlMap& map, const HandoffConfig& wf_handoff,
                              bool has_default_handoff, std::optional<HandoffConfig>* out) {
  map.Raw("handoff");  // a known key here even when absent (error messages list it)
  if (map.Has("handoff") || has_default_handoff) {
    HandoffConfig hc = wf_handoff;
    QKV_RETURN_IF_ERROR(ParseHandoff(map.Child("handoff"), &hc));
    *out = hc;
  }
  return absl::OkStatus();
}

// Reads an agent name and checks it.
absl::Status ParseAgentName(YamlMap& map, const DaemonConfig& daemon, std::string* agent) {
  QKV_RETURN_IF_ERROR(map.GetString("agent", agent, /*required=*/true));
  if (daemon.FindAgent(*agent) == nullptr) {
    return map.Error("agent", absl::StrCat("unknown agent '", *agent, "'"));
  }
  return absl::OkStatus();
}

// One edge of the graph while loading: where it is written, for errors.
struct Edge {
  std::string to;
  std::string where;  // file:line:col: key path
};

absl::Status EdgeError(const std::string& where, const std::string& message) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", message));
}

absl::Status ParseRoutes(YamlMap& step, StepConfig* s, std::vector<Edge>* edges) {
  YAML::Node routes = step.Raw("routes");
  if (!routes.IsSequence() || routes.size() == 0) {
    return step.Error("routes",
                      "expected a non-empty list of {contains|regex|equals: ..., to: STEP}");
  }
  for (size_t i = 0; i < routes.size(); ++i) {
    YamlMap r(routes[i], step.file(), step.KeyPath(absl::StrCat("routes[", i, "]")));
    QKV_RETURN_IF_ERROR(r.Init());
    if (!routes[i].IsMap())
      return r.Error("", "expected a mapping {contains|regex|equals: ..., to: STEP}");
    RouteConfig route;
    int tests = 0;
    for (RouteConfig::Test t :
         {RouteConfig::Test::kContains, RouteConfig::Test::kRegex, RouteConfig::Test::kEquals}) {
      const std::string key(RouteTestName(t));
      if (!r.Has(key)) {
        r.Raw(key);
        continue;
      }
      ++tests;
      route.test = t;
      QKV_RETURN_IF_ERROR(r.GetString(key, &route.pattern));
      if (route.pattern.empty()) return r.Error(key, "must not be empty");
      if (t == RouteConfig::Test::kRegex) {
        RE2 re(route.pattern, RE2::Quiet);
        if (!re.ok()) return r.Error(key, absl::StrCat("invalid RE2 pattern: ", re.error()));
      }
    }
    if (tests != 1) return r.Error("", "give exactly one of contains:, regex:, equals:");
    QKV_RETURN_IF_ERROR(r.GetString("to", &route.to, /*required=*/true));
    route.where = r.Where("to");
    QKV_RETURN_IF_ERROR(r.Finish());
    edges->push_back({route.to, route.where});
    s->routes.push_back(std::move(route));
  }
  if (!step.Has("default")) {
    return step.Error("routes", "routes need a default: (the step taken when no route matches)");
  }
  QKV_RETURN_IF_ERROR(step.GetString("default", &s->default_to));
  edges->push_back({s->default_to, step.Where("default")});
  return absl::OkStatus();
}

absl::Status ParseParallel(YamlMap& step, const DaemonConfig& daemon, StepConfig* s) {
  YamlMap branches = step.Child("parallel");
  QKV_RETURN_IF_ERROR(branches.Init());
  const std::vector<std::string> names = branches.Keys();
  if (names.empty())
    return step.Error("parallel", "expected a mapping of branch names to {agent, instruction}");
  std::map<std::string, std::string> agent_branch;
  for (const std::string& name : names) {
    YamlMap b = branches.Child(name);
    QKV_RETURN_IF_ERROR(b.Init());
    if (absl::Status n = CheckName(name); !n.ok()) {
      return branches.Error(name, absl::StrCat("branch ", n.message()));
    }
    BranchConfig branch;
    branch.name = name;
    QKV_RETURN_IF_ERROR(ParseAgentName(b, daemon, &branch.agent));
    auto [it, fresh] = agent_branch.emplace(branch.agent, name);
    if (!fresh) {
      return b.Error("agent",
                     absl::StrCat("agent '", branch.agent, "' already runs branch '", it->second,
                                  "' of this parallel step; branches "
                                  "run at the same time, so each needs its own agent"));
    }
    QKV_RETURN_IF_ERROR(b.GetString("instruction", &branch.instruction));
    if (absl::Status p = CheckPlaceholders(branch.instruction, kStepPlaceholders); !p.ok()) {
      return b.Error("instruction", std::string(p.message()));
    }
    QKV_RETURN_IF_ERROR(ParseGeneration(b.Child("generation"), &branch.generation));
    QKV_RETURN_IF_ERROR(b.Finish());
    s->parallel.push_back(std::move(branch));
  }
  return absl::OkStatus();
}

// Steps of `wf` on a cycle of `edges` (Tarjan-free: a step is on a cycle
// when it can reach itself).
std::vector<std::vector<int>> Successors(const std::vector<StepConfig>& steps,
                                         const std::vector<std::vector<Edge>>& edges) {
  std::vector<std::vector<int>> out(steps.size());
  for (size_t i = 0; i < steps.size(); ++i) {
    for (const Edge& e : edges[i]) {
      for (size_t j = 0; j < steps.size(); ++j) {
        if (steps[j].name == e.to) out[i].push_back(static_cast<int>(j));
      }
    }
  }
  return out;
}

// Steps reachable from `from` (not counting `from` itself unless on a path back).
std::vector<bool> ReachableFrom(int from, const std::vector<std::vector<int>>& succ) {
  std::vector<bool> seen(succ.size(), false);
  std::vector<int> stack = succ[from];
  while (!stack.empty()) {
    const int k = stack.back();
    stack.pop_back();
    if (seen[k]) continue;
    seen[k] = true;
    stack.insert(stack.end(), succ[k].begin(), succ[k].end());
  }
  return seen;
}

absl::Status ParseGraph(YamlMap& top, const DaemonConfig& daemon, const HandoffConfig& wf_handoff,
                        bool has_default_handoff, WorkflowConfig* wf) {
  int64_t max_steps = kMaxHops;
  QKV_RETURN_IF_ERROR(top.GetInt("max_steps", &max_steps, 1, kMaxHops));
  wf->max_steps = static_cast<int>(max_steps);
  YamlMap steps = top.Child("steps");
  QKV_RETURN_IF_ERROR(steps.Init());
  const std::vector<std::string> names = steps.Keys();
  if (names.empty()) return top.Error("steps", "required: a mapping of step names to steps");
  if (names.size() > static_cast<size_t>(kMaxHops)) {
    return top.Error("steps", absl::StrCat(names.size(), " steps; at most ", kMaxHops));
  }
  std::vector<std::vector<Edge>> edges;
  std::vector<std::string> join_where;  // per step: where its instruction is (join checks)
  for (const std::string& name : names) {
    YamlMap m = steps.Child(name);
    QKV_RETURN_IF_ERROR(m.Init());
    if (absl::Status n = CheckName(name); !n.ok()) {
      return steps.Error(name, absl::StrCat("step ", n.message()));
    }
    if (name == kEndStep) {
      return steps.Error(name, "'end' is reserved (a route to end finishes the task)");
    }
    StepConfig s;
    s.name = name;
    s.where = steps.Where(name);
    std::vector<Edge> out;
    const int kinds = m.Has("agent") + m.Has("parallel") + m.Has("await_input");
    if (kinds != 1) {
      return steps.Error(name, "a step has exactly one of agent:, parallel:, await_input:");
    }
    if (m.Has("agent")) {
      QKV_RETURN_IF_ERROR(ParseAgentName(m, daemon, &s.agent));
      QKV_RETURN_IF_ERROR(m.GetString("instruction", &s.instruction));
      QKV_RETURN_IF_ERROR(ParseGeneration(m.Child("generation"), &s.generation));
      QKV_RETURN_IF_ERROR(ParseStepHandoff(m, wf_handoff, has_default_handoff, &s.handoff));
    } else if (m.Has("parallel")) {
      QKV_RETURN_IF_ERROR(ParseParallel(m, daemon, &s));
      QKV_RETURN_IF_ERROR(m.GetString("join", &s.join));
      if (s.join.empty() || s.join == kEndStep) {
        return m.Error(m.Has("join") ? "join" : "parallel",
                       "a parallel step needs join: STEP (the step that receives the branches)");
      }
      if (m.Has("next") || m.Has("routes")) {
        return m.Error(m.Has("next") ? "next" : "routes",
                       "a parallel step continues at its join: step");
      }
      out.push_back({s.join, m.Where("join")});
    } else {
      std::string prompt;
      QKV_RETURN_IF_ERROR(m.GetString("await_input", &prompt));
      s.await_input = prompt;
    }
    if (m.Has("next") && m.Has("routes")) {
      return m.Error("routes", "give either next: or routes: (with default:)");
    }
    if (m.Has("next")) {
      QKV_RETURN_IF_ERROR(m.GetString("next", &s.next));
      out.push_back({s.next, m.Where("next")});
    } else if (m.Has("routes")) {
      QKV_RETURN_IF_ERROR(ParseRoutes(m, &s, &out));
    } else if (m.Has("default")) {
      return m.Error("default", "default: belongs to routes:");
    }
    int64_t visits = 0;
    QKV_RETURN_IF_ERROR(m.GetInt("max_visits", &visits, 1, kMaxHops));
    s.max_visits = static_cast<int>(visits);
    QKV_RETURN_IF_ERROR(m.GetString("on_limit", &s.on_limit));
    if (m.Has("on_limit")) {
      if (s.max_visits == 0) return m.Error("on_limit", "on_limit needs max_visits");
      out.push_back({s.on_limit, m.Where("on_limit")});
    }
    join_where.push_back(m.Where("instruction"));
    QKV_RETURN_IF_ERROR(m.Finish());
    wf->steps.push_back(std::move(s));
    edges.push_back(std::move(out));
  }
  std::vector<StepConfig>& all = wf->steps;
  // Every edge names a step (or end).
  for (size_t i = 0; i < all.size(); ++i) {
    for (const Edge& e : edges[i]) {
      if (e.to == kEndStep || wf->FindStep(e.to) != nullptr) continue;
      return EdgeError(e.where, absl::StrCat("unknown step '", e.to, "' (steps: ",
                                             absl::StrJoin(names, ", "), ", or end)"));
    }
  }
  if (all[0].agent.empty()) {
    return EdgeError(all[0].where,
                     "the first step must run an agent (parallel and await_input steps "
                     "continue from a context)");
  }
  const std::vector<std::vector<int>> succ = Successors(all, edges);
  std::vector<bool> reach = ReachableFrom(0, succ);
  reach[0] = true;
  for (size_t i = 0; i < all.size(); ++i) {
    if (!reach[i]) {
      return EdgeError(all[i].where,
                       absl::StrCat("step '", all[i].name, "' is unreachable from the first step '",
                                    all[0].name, "'"));
    }
  }
  for (size_t i = 0; i < all.size(); ++i) {
    if (all[i].max_visits == 0 && ReachableFrom(static_cast<int>(i), succ)[i]) {
      return EdgeError(all[i].where,
                       absl::StrCat("step '", all[i].name,
                                    "' is on a cycle and needs max_visits: N (the loop's bound)"));
    }
  }
  // Join steps: {branches}/{branch.NAME} only where a parallel block joins.
  for (size_t i = 0; i < all.size(); ++i) {
    std::vector<const StepConfig*> feeders;
    for (const StepConfig& p : all) {
      if (p.join == all[i].name) feeders.push_back(&p);
    }
    if (!feeders.empty() && all[i].agent.empty()) {
      return EdgeError(all[i].where, "a join step must run an agent");
    }
    const std::string& text = all[i].instruction;
    absl::Status p =
        CheckPlaceholders(text, feeders.empty() ? absl::MakeConstSpan(kStepPlaceholders)
                                                : absl::MakeConstSpan(kJoinPlaceholders));
    if (!p.ok()) return EdgeError(join_where[i], std::string(p.message()));
    for (size_t open = text.find("{branch."); open != std::string::npos;
         open = text.find("{branch.", open + 1)) {
      const size_t close = text.find('}', open);
      const std::string branch =
          text.substr(open + 8, close == std::string::npos ? std::string::npos : close - open - 8);
      bool known = false;
      for (const StepConfig* f : feeders) {
        for (const BranchConfig& b : f->parallel) known = known || b.name == branch;
      }
      if (!known) {
        return EdgeError(join_where[i], absl::StrCat("{branch.", branch, "}: no branch '", branch,
                                                     "' of a parallel step joins here"));
      }
    }
  }
  return absl::OkStatus();
}

bool IsLoopbackHost(const std::string& hostport) {
  return absl::StartsWith(hostport, "127.") || absl::StartsWith(hostport, "localhost:") ||
         absl::StartsWith(hostport, "[::1]:");
}

// models.NAME.weights, after `dtype` is read into e->dtype.
absl::Status ParseModelWeights(YamlMap& m, ModelEntry* e) {
  using agents::weights::WeightFormat;
  std::string weights = "auto";
  QKV_RETURN_IF_ERROR(m.GetEnum("weights", {"auto", "f32", "bf16", "f16", "q8", "q4"}, &weights));
  e->weights = *agents::weights::ParseWeightFormat(weights);  // one of the names above
  switch (e->weights) {
    case WeightFormat::kAuto:
      return absl::OkStatus();
    case WeightFormat::kF16:
      return m.Error("weights",
                     "f16: there is no f16 compute path (use auto to run a checkpoint's stored "
                     "f16 weights: f32 compute over f16 weights in memory)");
    case WeightFormat::kF32:
    case WeightFormat::kBF16: {
      const DType want = e->weights == WeightFormat::kBF16 ? DType::kBF16 : DType::kF32;
      if (m.Has("dtype") && e->dtype != want) {
        return m.Error("weights", absl::StrCat(weights, " contradicts dtype ",
                                               std::string(DTypeName(e->dtype))));
      }
      e->dtype = want;
      return absl::OkStatus();
    }
    case WeightFormat::kQ8:
    case WeightFormat::kQ4:
      if (e->dtype != DType::kF32) {
        return m.Error("weights",
                       absl::StrCat(weights, " weights compute in f32; dtype must be f32, not ",
                                    std::string(DTypeName(e->dtype))));
      }
      return absl::OkStatus();
  }
  return absl::OkStatus();
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
    QKV_RETURN_IF_ERROR(ParseModelWeights(m, &e));
    int64_t threads = 0, chunk = e.prefill_chunk;
    QKV_RETURN_IF_ERROR(m.GetInt("threads", &threads, 0, 1024));
    QKV_RETURN_IF_ERROR(m.GetInt("prefill_chunk", &chunk, 1, 1 << 20));
    e.threads = static_cast<int>(threads);
    e.prefill_chunk = static_cast<int>(chunk);
    QKV_RETURN_IF_ERROR(m.GetDouble("min_card_bits", &e.min_card_bits, 2, 16));
    if (!ValidCardBits(e.min_card_bits)) {
      return m.Error("min_card_bits",
                     absl::StrCat(e.min_card_bits, " must be in [2, 8] or exactly 16"));
    }
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

// tcp_auth_token_file and TLS: TCP has no group permission to lean on, so
// it is only served with a token (and, off loopback, TLS).
absl::Status ParseTcpSecurity(YamlMap& top, DaemonConfig* cfg) {
  QKV_RETURN_IF_ERROR(top.GetString("tcp_auth_token_file", &cfg->tcp_auth_token_file));
  QKV_RETURN_IF_ERROR(top.GetString("tcp_tls_cert_file", &cfg->tcp_tls_cert_file));
  QKV_RETURN_IF_ERROR(top.GetString("tcp_tls_key_file", &cfg->tcp_tls_key_file));
  for (std::string* p :
       {&cfg->tcp_auth_token_file, &cfg->tcp_tls_cert_file, &cfg->tcp_tls_key_file}) {
    if (!p->empty()) *p = ResolvePath(cfg->file, *p);
  }
  if (cfg->tcp_listen.empty()) return absl::OkStatus();
  if (cfg->tcp_auth_token_file.empty()) {
    return top.Error("tcp_listen",
                     "TCP needs tcp_auth_token_file (a bearer token clients must present): "
                     "unlike the Unix socket, a TCP port is open to every local user");
  }
  if (cfg->tcp_tls_cert_file.empty() != cfg->tcp_tls_key_file.empty()) {
    return top.Error(cfg->tcp_tls_cert_file.empty() ? "tcp_tls_cert_file" : "tcp_tls_key_file",
                     "give both tcp_tls_cert_file and tcp_tls_key_file, or neither");
  }
  if (cfg->tcp_tls_cert_file.empty() && !IsLoopbackHost(cfg->tcp_listen)) {
    return top.Error("tcp_listen",
                     "a non-loopback address needs tcp_tls_cert_file and tcp_tls_key_file "
                     "(the token must not cross a network in clear)");
  }
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
  QKV_RETURN_IF_ERROR(ParseTcpSecurity(top, &cfg));
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
  QKV_RETURN_IF_ERROR(store.GetBool("prefix_cards", &cfg.card_store.prefix_cards));
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
  int64_t paused = l.max_paused_tasks;
  QKV_RETURN_IF_ERROR(limits.GetInt("max_paused_tasks", &paused, 0, 1 << 20));
  l.max_paused_tasks = static_cast<int>(paused);
  QKV_RETURN_IF_ERROR(
      limits.GetInt("paused_ttl_seconds", &l.paused_ttl_seconds, 1, int64_t{86400} * 365));
  int64_t rpc_threads = l.max_rpc_threads, watchers = l.max_watchers,
          per_task = l.max_watchers_per_task, imports = l.max_concurrent_imports;
  QKV_RETURN_IF_ERROR(limits.GetInt("max_concurrent_imports", &imports, 1, 1024));
  l.max_concurrent_imports = static_cast<int>(imports);
  QKV_RETURN_IF_ERROR(limits.GetInt("max_rpc_threads", &rpc_threads, 4, 65536));
  QKV_RETURN_IF_ERROR(limits.GetInt("max_watchers", &watchers, 1, 65536));
  QKV_RETURN_IF_ERROR(limits.GetInt("max_watchers_per_task", &per_task, 1, 65536));
  l.max_rpc_threads = static_cast<int>(rpc_threads);
  l.max_watchers = static_cast<int>(watchers);
  l.max_watchers_per_task = static_cast<int>(per_task);
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

  if (top.Has("steps") || top.Has("max_steps")) {
    if (top.Has("hops")) return top.Error("hops", "give either hops: (a line) or steps: (a graph)");
    QKV_RETURN_IF_ERROR(ParseGraph(top, daemon, wf_handoff, has_default_handoff, &wf));
    QKV_RETURN_IF_ERROR(top.Finish());
    return wf;
  }
  YAML::Node hops = top.Raw("hops");
  if (!hops.IsDefined() || !hops.IsSequence() || hops.size() == 0) {
    return top.Error("hops", "required: a non-empty list of hops (or steps: for a graph)");
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
    QKV_RETURN_IF_ERROR(ParseStepHandoff(h, wf_handoff, has_default_handoff, &hop.handoff));
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
