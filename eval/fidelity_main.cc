// //eval:fidelity — the fidelity grid of docs/results.md: for each golden
// prompt, hop count, budget and policy, a simulated multi-hop card handoff
// (eval/handoff_chain.h) measured against the full-precision model
// (eval/fidelity.h). Prints the settings, the machine, a table of means over
// the prompts, and CSV (per case and per cell; also to --csv / --summary_csv).
//
//   bazel run //eval:fidelity -- --hops=1,10 --bits=4,3 --policies=uniform,adaptive
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
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

ABSL_FLAG(std::string, model, "models/stories260K", "HF model directory.");
ABSL_FLAG(std::string, golden, "", "greedy.json (default: <model>/golden/greedy.json).");
ABSL_FLAG(
    std::string, cases, "nonempty",
    "Golden case indices (comma list), 'all', or 'nonempty' (cases with a non-empty prompt).");
ABSL_FLAG(std::string, hops, "1,2,4,10", "Hop counts (handoffs in the chain).");
ABSL_FLAG(std::string, bits, "16,8,4,3,2.5,2", "Budgets, average code bits per element.");
ABSL_FLAG(std::string, policies, "uniform,adaptive", "Policies: full, uniform, adaptive.");
ABSL_FLAG(int64_t, context_tokens, 128, "Context tokens handed off.");
ABSL_FLAG(int64_t, eval_tokens, 64, "Golden tokens teacher-forced after the context.");
ABSL_FLAG(int, greedy_tokens, 200, "Greedy tokens decoded after the context (divergence cap).");
ABSL_FLAG(int, window, 4, "Importance window (last query positions of each hop's agent).");
ABSL_FLAG(std::string, reduction, "max", "Importance head reduction: max or mean.");
ABSL_FLAG(int, group_size, 32, "KIVI group size (keys per-channel, values per-token).");
ABSL_FLAG(int, threads, 1, "Compute threads (the model is tiny: 1 is fastest).");
ABSL_FLAG(std::string, csv, "", "Also write the per-case CSV here.");
ABSL_FLAG(std::string, summary_csv, "", "Also write the per-cell CSV (means) here.");

namespace qkvshare::eval {
namespace {

template <typename T>
absl::StatusOr<std::vector<T>> ParseList(const std::string& s, const char* what) {
  std::vector<T> out;
  for (absl::string_view part : absl::StrSplit(s, ',', absl::SkipEmpty())) {
    T v;
    bool ok;
    if constexpr (std::is_same_v<T, double>) {
      ok = absl::SimpleAtod(part, &v);
    } else {
      ok = absl::SimpleAtoi(part, &v);
    }
    if (!ok)
      return absl::InvalidArgumentError(absl::StrCat("--", what, ": bad value '", part, "'"));
    out.push_back(v);
  }
  return out;
}

std::string Machine() {
  std::ifstream cpu("/proc/cpuinfo");
  std::string line, model;
  int cores = 0;
  while (std::getline(cpu, line)) {
    if (absl::StartsWith(line, "model name") && model.empty()) {
      model = line.substr(line.find(':') + 2);
    }
    if (absl::StartsWith(line, "processor")) ++cores;
  }
  std::ifstream mem("/proc/meminfo");
  std::string memline;
  std::getline(mem, memline);
  int64_t kb = 0;
  for (absl::string_view p : absl::StrSplit(memline, ' ', absl::SkipEmpty())) {
    if (absl::SimpleAtoi(p, &kb)) break;
  }
  return absl::StrFormat("%s, %d logical CPUs, %.0f GiB RAM", model, cores, kb / 1048576.0);
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
  int64_t min_greedy = 1 << 30;
};

absl::Status Run() {
  agents::SetComputeThreads(absl::GetFlag(FLAGS_threads));
  const std::string dir = absl::GetFlag(FLAGS_model);
  std::string golden_path = absl::GetFlag(FLAGS_golden);
  if (golden_path.empty()) golden_path = dir + "/golden/greedy.json";
  QKV_ASSIGN_OR_RETURN(std::unique_ptr<agents::Model> loaded, agents::Model::Load(dir));
  agents::ModelHandle model = std::move(loaded);
  QKV_ASSIGN_OR_RETURN(std::vector<GoldenCase> all, LoadGoldenCases(golden_path));
  std::vector<GoldenCase> cases;
  const std::string which = absl::GetFlag(FLAGS_cases);
  if (which == "all" || which == "nonempty") {
    for (const GoldenCase& c : all) {
      if (which == "all" || !c.prompt.empty()) cases.push_back(c);
    }
  } else {
    QKV_ASSIGN_OR_RETURN(std::vector<int> idx, ParseList<int>(which, "cases"));
    for (int i : idx) {
      if (i < 0 || i >= static_cast<int>(all.size())) {
        return absl::InvalidArgumentError(absl::StrCat("--cases: no case ", i));
      }
      cases.push_back(all[i]);
    }
  }
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
  FidelityOptions fo;
  fo.context_tokens = absl::GetFlag(FLAGS_context_tokens);
  fo.eval_tokens = absl::GetFlag(FLAGS_eval_tokens);
  fo.greedy_tokens = absl::GetFlag(FLAGS_greedy_tokens);
  fo.capture_window = absl::GetFlag(FLAGS_window);
  PlannerSettings base;
  base.importance.window = absl::GetFlag(FLAGS_window);
  const std::string red = absl::GetFlag(FLAGS_reduction);
  if (red != "max" && red != "mean") return absl::InvalidArgumentError("--reduction: max or mean");
  base.importance.reduction =
      red == "max" ? quant::HeadReduction::kMax : quant::HeadReduction::kMean;
  base.k_group.group_size = base.v_group.group_size = absl::GetFlag(FLAGS_group_size);

  std::printf("# qkvshare fidelity evaluation (//eval:fidelity)\n");
  std::printf("# model: %s (%s, compute %s)\n", dir.c_str(), golden_path.c_str(),
              model->compute_dtype() == DType::kF32 ? "fp32" : "bf16");
  std::printf("# machine: %s; compute threads %d\n", Machine().c_str(), agents::ComputeThreads());
  std::vector<std::string> names;
  for (const GoldenCase& c : cases) names.push_back(absl::StrCat(c.index, ":\"", c.prompt, "\""));
  std::printf("# cases (%zu): %s\n", cases.size(), absl::StrJoin(names, ", ").c_str());
  std::printf(
      "# context %lld tokens (prompt + golden continuation), split into H equal hops; each hop "
      "injects the chain, appends its tokens, builds an incremental card of them\n",
      static_cast<long long>(fo.context_tokens));
  std::printf(
      "# metrics after the last hop: KL(ref||card) and top-1 over the next %lld golden tokens "
      "(teacher-forced), greedy tokens until first divergence (cap %d)\n",
      static_cast<long long>(fo.eval_tokens), fo.greedy_tokens);
  std::printf(
      "# groups: K per-channel G=%d, V per-token G=%d; importance window %d, reduction %s; "
      "w_K=%g w_V=%g; hop transform BlendTowardUniformByHop\n",
      base.k_group.group_size, base.v_group.group_size, base.importance.window, red.c_str(),
      base.key_weight, base.value_weight);
  std::fflush(stdout);

  const auto t0 = std::chrono::steady_clock::now();
  std::vector<Reference> refs;
  for (const GoldenCase& c : cases) {
    QKV_ASSIGN_OR_RETURN(Reference r, ComputeReference(model, c, fo));
    refs.push_back(std::move(r));
  }
  std::ostringstream csv;
  csv << "case,policy,hops,bits,mean_kl,max_kl,top1,rows,greedy_match,avg_bits,card_bytes\n";
  std::map<Cell, Sum> sums;
  for (HandoffPolicy policy : policies) {
    for (int h : hops) {
      for (double b : bits) {
        if (policy == HandoffPolicy::kFull && b != bits.front()) continue;
        PlannerSettings s = base;
        s.policy = policy;
        s.avg_bits = b;
        const BitPlanner planner = DaemonPlanner(s);
        const Cell cell{std::string(HandoffPolicyName(policy)), h,
                        policy == HandoffPolicy::kFull ? 32.0 : b};
        Sum& sum = sums[cell];
        for (size_t i = 0; i < cases.size(); ++i) {
          QKV_ASSIGN_OR_RETURN(FidelityResult r,
                               MeasureHandoff(model, cases[i], refs[i], h, planner, fo));
          csv << absl::StrFormat("%d,%s,%d,%g,%.6g,%.6g,%.6f,%d,%d,%.4f,%d\n", cases[i].index,
                                 cell.policy, h, cell.bits, r.mean_kl, r.max_kl, r.top1, r.rows,
                                 r.greedy_match, r.avg_bits, r.card_bytes);
          ++sum.n;
          sum.kl += r.mean_kl;
          sum.max_kl = std::max(sum.max_kl, r.max_kl);
          sum.top1 += r.top1;
          sum.greedy += r.greedy_match;
          sum.min_greedy = std::min(sum.min_greedy, r.greedy_match);
          sum.avg_bits += r.avg_bits;
          sum.bytes += r.card_bytes;
        }
      }
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  std::ostringstream summary;
  summary << "policy,hops,bits,mean_kl,max_kl,top1,greedy_mean,greedy_min,avg_bits,card_bytes\n";
  std::printf(
      "\n| policy | hops | bits | mean KL | max KL | top-1 | greedy match (mean / min) | "
      "avg bits | card bytes |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const auto& [cell, s] : sums) {
    const double n = s.n;
    std::printf("| %s | %d | %g | %.3g | %.3g | %.1f%% | %.0f / %lld | %.3f | %.0f |\n",
                cell.policy.c_str(), cell.hops, cell.bits, s.kl / n, s.max_kl, 100 * s.top1 / n,
                s.greedy / n, static_cast<long long>(s.min_greedy), s.avg_bits / n, s.bytes / n);
    summary << absl::StrFormat("%s,%d,%g,%.6g,%.6g,%.6f,%.2f,%d,%.4f,%.0f\n", cell.policy,
                               cell.hops, cell.bits, s.kl / n, s.max_kl, s.top1 / n, s.greedy / n,
                               s.min_greedy, s.avg_bits / n, s.bytes / n);
  }
  std::printf("\n# grid time: %.1f s\n", secs);
  std::printf("\n# CSV per cell (means over the cases)\n%s", summary.str().c_str());
  std::printf("\n# CSV per case\n%s", csv.str().c_str());
  for (const auto& [path, text] : {std::pair{absl::GetFlag(FLAGS_csv), csv.str()},
                                   std::pair{absl::GetFlag(FLAGS_summary_csv), summary.str()}}) {
    if (path.empty()) continue;
    std::ofstream out(path);
    out << text;
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace qkvshare::eval

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Fidelity of multi-hop KV card handoffs (docs/results.md).");
  absl::ParseCommandLine(argc, argv);
  absl::Status s = qkvshare::eval::Run();
  if (!s.ok()) {
    std::fprintf(stderr, "fidelity: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
