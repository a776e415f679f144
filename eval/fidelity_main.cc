// //eval:fidelity — the fidelity grid of docs/results.md: for each prompt,
// hop count, budget and policy, a simulated multi-hop card handoff
// (eval/handoff_chain.h) measured against the full-precision model
// (eval/fidelity.h). Prints the settings, the machine, a table of means over
// the prompts, and CSV (per cell and per case; also to --summary_csv / --csv).
//
//   bazel run //eval:fidelity -- --hops=1,10 --bits=4,3 --policies=uniform,adaptive
//
// The controller flags default to quant's defaults (what the daemon uses);
// --hop_transform, --novisible_rows_mean and --key_weight reproduce the
// earlier rules for comparison, --importance=consumer and
// --full_precision_prefix are diagnostics (docs/results.md); --chain_schedule
// and --chain_strength move budget between the hops of a chain (an evaluation
// option, not the daemon's behaviour; docs/results.md, "Chain-level budget
// schedule").
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "agents/compute_threads.h"
#include "agents/model.h"
#include "base/status_macros.h"
#include "eval/fidelity.h"
#include "eval/golden_cases.h"
#include "eval/planners.h"
#include "quant/controller.h"
#include "quant/importance.h"

ABSL_FLAG(std::string, model, "models/stories260K", "HF model directory.");
ABSL_FLAG(std::string, weights, "auto",
          "Weight format of the model: auto, f32, bf16, q8, q4 (agents::ApplyWeightFormat; q8/q4 "
          "quantize at load, and cards are then built by that model).");
ABSL_FLAG(std::string, golden, "", "greedy.json (default: <model>/golden/greedy.json).");
ABSL_FLAG(std::string, prompt_set, "golden",
          "golden: the cases of --golden (selected by --cases); dev: the development prompts "
          "(kDevPrompts) continued by the model's own greedy decoding.");
ABSL_FLAG(std::string, cases, "nonempty",
          "golden cases: indices (comma list), 'all', or 'nonempty' (non-empty prompts).");
ABSL_FLAG(std::string, hops, "1,2,4,10", "Hop counts (handoffs in the chain).");
ABSL_FLAG(std::string, bits, "16,8,4,3,2.5,2", "Budgets, average code bits per element.");
ABSL_FLAG(std::string, policies, "uniform,adaptive", "Policies: full, uniform, adaptive.");
ABSL_FLAG(int64_t, context_tokens, 128, "Context tokens handed off.");
ABSL_FLAG(int64_t, eval_tokens, 64, "Golden tokens teacher-forced after the context.");
ABSL_FLAG(int, greedy_tokens, 200, "Greedy tokens decoded after the context (divergence cap).");
ABSL_FLAG(int, window, qkvshare::quant::ImportanceOptions{}.window,
          "Importance window (last query positions of each hop's agent).");
ABSL_FLAG(std::string, reduction, "max", "Importance head reduction: max or mean.");
ABSL_FLAG(bool, visible_rows_mean, qkvshare::quant::ImportanceOptions{}.visible_rows_mean,
          "Importance: average each token over the window rows that can see it.");
ABSL_FLAG(std::string, hop_transform, "shrink",
          "shrink (quant::ShrinkTowardUniform) or blend (quant::BlendTowardUniformByHop).");
ABSL_FLAG(double, shrink, -1,
          "Sensitivity: with --hop_transform=shrink, the shrink weight in [0, 1], a multiple of "
          "0.05 (default: quant::kImportanceShrink, i.e. quant::ShrinkTowardUniform).");
ABSL_FLAG(double, key_weight, qkvshare::quant::AllocationRequest{}.key_weight,
          "w_K of the gain model.");
ABSL_FLAG(std::string, importance, "attention",
          "attention: each hop agent's capture (the daemon's); consumer: diagnostic oracle, the "
          "attention of the full-precision model's next positions (eval/fidelity.h).");
ABSL_FLAG(int, group_size, 32, "KIVI group size (keys per-channel, values per-token).");
ABSL_FLAG(bool, full_precision_prefix, false,
          "Diagnostic: hop agents prefill the context so far at full precision instead of "
          "injecting the upstream cards (isolates the drift of computing on a dequantized cache).");
ABSL_FLAG(std::string, chain_schedule, "flat",
          "Chain-level budget schedule (eval/planners.h ChainHopBits): flat (every hop the "
          "budget, the daemon's), ramp (early hops less, later more, linear) or bank (hops before "
          "the last spend --chain_strength less, the last hop the saved bits). The chain's average "
          "over all its tokens stays <= the budget. Not applied to budget 16.");
ABSL_FLAG(double, chain_strength, 0,
          "The schedule's strength s in bits per element: ramp from B - s/2 (first hop) to "
          "B + s/2 (last), bank -s per early hop; re-centred so that clamping to [2, 8] and "
          "unequal hop sizes keep the chain's average.");
ABSL_FLAG(std::string, label, "default", "Name of this configuration (first CSV column).");
ABSL_FLAG(int, threads, 1, "Compute threads (the model is tiny: 1 is fastest).");
ABSL_FLAG(std::string, csv, "", "Also write the per-case CSV here.");
ABSL_FLAG(std::string, summary_csv, "", "Also write the per-cell CSV (means) here.");

namespace qkvshare::eval {
namespace {

// Development prompts (TinyStories style), disjoint from the golden ones:
// controller rules are chosen on these and reported on the golden prompts.
constexpr const char* kDevPrompts[] = {
    "Once there was a big dog",
    "Tim and Sue went to the park",
    "The little car",
    "Anna had a red ball",
    "One morning, the sun",
    "The bird flew",
    "Ben liked to eat",
    "Mom said",
    "There was a tree",
    "The girl found a box",
    "A cat and a mouse",
    "The boy was happy because",
    "It was a rainy day",
    "The duck swam",
    "Sara wanted a toy",
    "In the garden",
    "Lucy saw a big fish",
    "The old man",
    "Jack and his friend",
    "The sky was blue",
    "A little frog",
    "Dad made a cake",
    "The fox was hungry",
    "Mia had a new dress",
    "The sun was hot",
    "Tom found a shiny rock",
    "The teddy bear",
    "Once upon a time, in a small town",
    "The dog barked at",
    "Sally was scared of",
    "The train went fast",
    "A big red truck",
    "Ben and Lily played",
    "The princess",
    "The fish in the pond",
    "One day, Timmy",
    "The flowers were",
    "Sue liked to draw",
    "The wind blew",
    "A small boy named Sam",
    "The cat was very lazy",
    "Lily went to the store",
    "The moon was bright",
    "Max had a ball",
    "The little girl cried",
    "A bunny hopped",
    "The kids went to school",
    "Grandma gave",
};
constexpr int kDevCaseBase = 100;  // dev case k has index kDevCaseBase + k

// ShrinkTowardUniform with weight kTwentieths / 20 instead of
// quant::kImportanceShrink (HopTransform is a plain function pointer).
template <int kTwentieths>
std::vector<double> ShrinkBy(absl::Span<const float> importance, int, int) {
  return quant::ShrinkImportance(importance, kTwentieths / 20.0);
}

template <int... k>
constexpr std::array<quant::HopTransform, sizeof...(k)> ShrinkTable(
    std::integer_sequence<int, k...>) {
  return {&ShrinkBy<k>...};
}
constexpr auto kShrinkBy = ShrinkTable(std::make_integer_sequence<int, 21>{});

template <typename T>
absl::StatusOr<std::vector<T>> ParseList(const std::string& s, const char* flag) {
  std::vector<T> out;
  for (absl::string_view part : absl::StrSplit(s, ',', absl::SkipEmpty())) {
    T v;
    bool ok;
    if constexpr (std::is_same_v<T, double>) {
      ok = absl::SimpleAtod(part, &v);
    } else {
      ok = absl::SimpleAtoi(part, &v);
    }
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag, ": bad value '", part, "'"));
    }
    out.push_back(v);
  }
  return out;
}

// "<cpu model>, <n> logical CPUs, <m> GiB RAM, <os>", from /proc and /etc.
std::string Machine() {
  std::ifstream cpu("/proc/cpuinfo");
  std::string line, model, os;
  int cpus = 0;
  while (std::getline(cpu, line)) {
    if (absl::StartsWith(line, "model name") && model.empty()) {
      model = line.substr(line.find(':') + 2);
    }
    if (absl::StartsWith(line, "processor")) ++cpus;
  }
  std::ifstream mem("/proc/meminfo");
  std::getline(mem, line);
  int64_t kb = 0;
  for (absl::string_view p : absl::StrSplit(line, ' ', absl::SkipEmpty())) {
    if (absl::SimpleAtoi(p, &kb)) break;
  }
  std::ifstream rel("/etc/os-release");
  while (std::getline(rel, line)) {
    if (absl::StartsWith(line, "PRETTY_NAME=")) os = line.substr(12);
  }
  os.erase(std::remove(os.begin(), os.end(), '"'), os.end());
  return absl::StrFormat("%s, %d logical CPUs, %.0f GiB RAM, %s", model, cpus, kb / 1048576.0, os);
}

absl::StatusOr<std::vector<GoldenCase>> SelectCases(const agents::ModelHandle& model,
                                                    const std::string& golden_path,
                                                    int64_t total_tokens) {
  std::vector<GoldenCase> cases;
  const std::string set = absl::GetFlag(FLAGS_prompt_set);
  if (set == "dev") {
    int i = 0;
    for (const char* p : kDevPrompts) {
      QKV_ASSIGN_OR_RETURN(GoldenCase c,
                           MakeGreedyCase(model, p, total_tokens, kDevCaseBase + i++));
      cases.push_back(std::move(c));
    }
    return cases;
  }
  if (set != "golden") return absl::InvalidArgumentError("--prompt_set: golden or dev");
  QKV_ASSIGN_OR_RETURN(std::vector<GoldenCase> all, LoadGoldenCases(golden_path));
  const std::string which = absl::GetFlag(FLAGS_cases);
  if (which == "all" || which == "nonempty") {
    for (const GoldenCase& c : all) {
      if (which == "all" || !c.prompt.empty()) cases.push_back(c);
    }
    return cases;
  }
  QKV_ASSIGN_OR_RETURN(std::vector<int> idx, ParseList<int>(which, "cases"));
  for (int i : idx) {
    if (i < 0 || i >= static_cast<int>(all.size())) {
      return absl::InvalidArgumentError(absl::StrCat("--cases: no case ", i));
    }
    cases.push_back(all[i]);
  }
  return cases;
}

absl::StatusOr<PlannerSettings> BaseSettings() {
  PlannerSettings s;
  s.importance.window = absl::GetFlag(FLAGS_window);
  s.importance.visible_rows_mean = absl::GetFlag(FLAGS_visible_rows_mean);
  const std::string red = absl::GetFlag(FLAGS_reduction);
  if (red != "max" && red != "mean") return absl::InvalidArgumentError("--reduction: max or mean");
  s.importance.reduction = red == "max" ? quant::HeadReduction::kMax : quant::HeadReduction::kMean;
  const std::string ht = absl::GetFlag(FLAGS_hop_transform);
  const double shrink = absl::GetFlag(FLAGS_shrink);
  if (ht == "shrink" && shrink >= 0) {
    const double twentieths = shrink * 20;
    if (shrink > 1 || std::fabs(twentieths - std::round(twentieths)) > 1e-9) {
      return absl::InvalidArgumentError("--shrink: a multiple of 0.05 in [0, 1]");
    }
    s.hop_transform = kShrinkBy[static_cast<int>(std::lround(twentieths))];
  } else if (ht == "shrink") {
    s.hop_transform = &quant::ShrinkTowardUniform;
  } else if (ht == "blend") {
    s.hop_transform = &quant::BlendTowardUniformByHop;
  } else {
    return absl::InvalidArgumentError("--hop_transform: shrink or blend");
  }
  s.key_weight = absl::GetFlag(FLAGS_key_weight);
  s.k_group.group_size = s.v_group.group_size = absl::GetFlag(FLAGS_group_size);
  QKV_ASSIGN_OR_RETURN(s.chain_schedule, ParseChainSchedule(absl::GetFlag(FLAGS_chain_schedule)));
  s.chain_strength = absl::GetFlag(FLAGS_chain_strength);
  if (!(s.chain_strength >= 0 && std::isfinite(s.chain_strength))) {
    return absl::InvalidArgumentError("--chain_strength: finite and >= 0");
  }
  return s;
}

struct Cell {
  std::string policy;
  int hops;
  double bits;
  bool operator<(const Cell& o) const {
    return std::tie(policy, hops, bits) < std::tie(o.policy, o.hops, o.bits);
  }
};

struct Sum {
  int n = 0;
  double kl = 0, max_kl = 0, top1 = 0, greedy = 0, avg_bits = 0, bytes = 0;
  int64_t min_greedy = int64_t{1} << 40;
  void Add(const FidelityResult& r) {
    ++n;
    kl += r.mean_kl;
    max_kl = std::max(max_kl, r.max_kl);
    top1 += r.top1;
    greedy += static_cast<double>(r.greedy_match);
    min_greedy = std::min(min_greedy, r.greedy_match);
    avg_bits += r.avg_bits;
    bytes += static_cast<double>(r.card_bytes);
  }
};

absl::Status WriteFile(const std::string& path, const std::string& text) {
  if (path.empty()) return absl::OkStatus();
  std::ofstream out(path);
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::Status Run() {
  agents::SetComputeThreads(absl::GetFlag(FLAGS_threads));
  const std::string dir = absl::GetFlag(FLAGS_model);
  std::string golden_path = absl::GetFlag(FLAGS_golden);
  if (golden_path.empty()) golden_path = dir + "/golden/greedy.json";
  agents::ModelOptions model_options;
  QKV_ASSIGN_OR_RETURN(agents::weights::WeightFormat weights,
                       agents::weights::ParseWeightFormat(absl::GetFlag(FLAGS_weights)));
  QKV_RETURN_IF_ERROR(agents::ApplyWeightFormat(weights, &model_options));
  QKV_ASSIGN_OR_RETURN(std::unique_ptr<agents::Model> loaded,
                       agents::Model::Load(dir, model_options));
  const agents::ModelHandle model = std::move(loaded);

  FidelityOptions fo;
  fo.context_tokens = absl::GetFlag(FLAGS_context_tokens);
  fo.eval_tokens = absl::GetFlag(FLAGS_eval_tokens);
  fo.greedy_tokens = absl::GetFlag(FLAGS_greedy_tokens);
  fo.capture_window = absl::GetFlag(FLAGS_window);
  fo.full_precision_prefix = absl::GetFlag(FLAGS_full_precision_prefix);
  QKV_ASSIGN_OR_RETURN(std::vector<GoldenCase> cases,
                       SelectCases(model, golden_path, fo.context_tokens + fo.eval_tokens));
  QKV_ASSIGN_OR_RETURN(std::vector<int> hops, ParseList<int>(absl::GetFlag(FLAGS_hops), "hops"));
  QKV_ASSIGN_OR_RETURN(std::vector<double> bits,
                       ParseList<double>(absl::GetFlag(FLAGS_bits), "bits"));
  std::vector<HandoffPolicy> policies;
  for (absl::string_view p :
       absl::StrSplit(absl::GetFlag(FLAGS_policies), ',', absl::SkipEmpty())) {
    QKV_ASSIGN_OR_RETURN(HandoffPolicy hp,
                         ParseHandoffPolicy(std::string_view(p.data(), p.size())));
    policies.push_back(hp);
  }
  QKV_ASSIGN_OR_RETURN(const PlannerSettings base, BaseSettings());
  const std::string importance_source = absl::GetFlag(FLAGS_importance);
  if (importance_source != "attention" && importance_source != "consumer") {
    return absl::InvalidArgumentError("--importance: attention or consumer");
  }
  const std::string label = absl::GetFlag(FLAGS_label);

  std::printf("# qkvshare fidelity evaluation (//eval:fidelity), configuration '%s'\n",
              label.c_str());
  std::printf("# model: %s, compute %s, KV cache fp32\n", dir.c_str(),
              model->compute_dtype() == DType::kF32 ? "fp32" : "bf16");
  std::printf("# machine: %s; compute threads %d\n", Machine().c_str(), agents::ComputeThreads());
  std::vector<std::string> names;
  for (const GoldenCase& c : cases) names.push_back(absl::StrCat(c.index, ":\"", c.prompt, "\""));
  std::printf("# prompts (%s, %zu): %s\n", absl::GetFlag(FLAGS_prompt_set).c_str(), cases.size(),
              absl::StrJoin(names, ", ").c_str());
  std::printf(
      "# context: %lld tokens (prompt + golden continuation) split into H equal hops; hop h's "
      "agent injects the card chain of hops < h%s, appends its tokens teacher-forced, and builds "
      "an incremental card of only those tokens\n",
      static_cast<long long>(fo.context_tokens),
      fo.full_precision_prefix ? " [DIAGNOSTIC: prefills the prefix at full precision instead]"
                               : "");
  std::printf(
      "# metrics after the last hop vs the model without handoff: KL(ref||card) and top-1 over "
      "the next %lld golden tokens (teacher-forced), greedy tokens until the first divergence "
      "(cap %d)\n",
      static_cast<long long>(fo.eval_tokens), fo.greedy_tokens);
  const std::string shrink_note =
      absl::GetFlag(FLAGS_shrink) >= 0 ? absl::StrCat(" ", absl::GetFlag(FLAGS_shrink)) : "";
  std::printf(
      "# controller: importance %s (window %d, reduction %s, visible_rows_mean %d), hop "
      "transform %s%s, w_K %g, w_V %g; groups: K per-channel G=%d, V per-token G=%d; chain "
      "schedule %s (strength %g)\n",
      importance_source == "consumer" ? "= CONSUMER ATTENTION [DIAGNOSTIC ORACLE]"
                                      : "from each hop agent's attention capture",
      base.importance.window, absl::GetFlag(FLAGS_reduction).c_str(),
      base.importance.visible_rows_mean ? 1 : 0, absl::GetFlag(FLAGS_hop_transform).c_str(),
      shrink_note.c_str(), base.key_weight, base.value_weight, base.k_group.group_size,
      base.v_group.group_size, std::string(ChainScheduleName(base.chain_schedule)).c_str(),
      base.chain_strength);
  std::fflush(stdout);

  const auto t0 = std::chrono::steady_clock::now();
  std::vector<Reference> refs;
  std::vector<std::vector<float>> consumer;
  for (const GoldenCase& c : cases) {
    QKV_ASSIGN_OR_RETURN(Reference r, ComputeReference(model, c, fo));
    refs.push_back(std::move(r));
    if (importance_source == "consumer") {
      QKV_ASSIGN_OR_RETURN(std::vector<float> imp,
                           ConsumerImportance(model, c, fo, base.importance));
      consumer.push_back(std::move(imp));
    }
  }
  std::ostringstream csv;
  csv << "label,case,policy,hops,bits,mean_kl,max_kl,top1,rows,greedy_match,avg_bits,card_bytes\n";
  std::map<Cell, Sum> sums;
  for (HandoffPolicy policy : policies) {
    for (int h : hops) {
      for (double b : bits) {
        if (policy == HandoffPolicy::kFull && b != bits.front()) continue;  // one full row
        const Cell cell{std::string(HandoffPolicyName(policy)), h,
                        policy == HandoffPolicy::kFull ? 32.0 : b};
        for (size_t i = 0; i < cases.size(); ++i) {
          PlannerSettings s = base;
          s.policy = policy;
          s.avg_bits = b;
          if (!consumer.empty()) s.context_importance = consumer[i];
          QKV_ASSIGN_OR_RETURN(FidelityResult r,
                               MeasureHandoff(model, cases[i], refs[i], h, DaemonPlanner(s), fo));
          csv << absl::StrFormat("%s,%d,%s,%d,%g,%.6g,%.6g,%.6f,%d,%d,%.4f,%d\n", label,
                                 cases[i].index, cell.policy, h, cell.bits, r.mean_kl, r.max_kl,
                                 r.top1, r.rows, r.greedy_match, r.avg_bits, r.card_bytes);
          sums[cell].Add(r);
        }
      }
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  std::ostringstream summary;
  summary << "label,policy,hops,bits,mean_kl,max_kl,top1,greedy_mean,greedy_min,avg_bits,"
             "card_bytes\n";
  std::printf(
      "\n| policy | hops | bits | mean KL | max KL | top-1 | greedy match (mean / min) | avg bits "
      "| card bytes |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const auto& [cell, s] : sums) {
    const double n = s.n;
    std::printf("| %s | %d | %g | %.3g | %.3g | %.1f%% | %.0f / %lld | %.3f | %.0f |\n",
                cell.policy.c_str(), cell.hops, cell.bits, s.kl / n, s.max_kl, 100 * s.top1 / n,
                s.greedy / n, static_cast<long long>(s.min_greedy), s.avg_bits / n, s.bytes / n);
    summary << absl::StrFormat("%s,%s,%d,%g,%.6g,%.6g,%.6f,%.2f,%d,%.4f,%.0f\n", label, cell.policy,
                               cell.hops, cell.bits, s.kl / n, s.max_kl, s.top1 / n, s.greedy / n,
                               s.min_greedy, s.avg_bits / n, s.bytes / n);
  }
  std::printf("\n# grid time: %.1f s\n", secs);
  std::printf("\n# CSV per cell (means over the prompts)\n%s", summary.str().c_str());
  std::printf("\n# CSV per prompt\n%s", csv.str().c_str());
  QKV_RETURN_IF_ERROR(WriteFile(absl::GetFlag(FLAGS_csv), csv.str()));
  return WriteFile(absl::GetFlag(FLAGS_summary_csv), summary.str());
}

}  // namespace
}  // namespace qkvshare::eval

int main(int argc, char** argv) {
  qkvshare::agents::ReexecWithShortOpenMpSpin(argv);
  // --help lists this file's flags (absl matches files named after the binary).
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view f) {
    return absl::EndsWith(f, "eval/fidelity_main.cc");
  };
  absl::SetFlagsUsageConfig(usage);
  absl::SetProgramUsageMessage("Fidelity of multi-hop KV card handoffs (docs/results.md).");
  absl::ParseCommandLine(argc, argv);
  const absl::Status s = qkvshare::eval::Run();
  if (!s.ok()) {
    std::fprintf(stderr, "fidelity: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
