// handoff_bench: the receiving agent's time to first token (TTFT) after a
// handoff of a context, CacheCard vs re-prefill of the text, side by side in
// one run (docs/performance.md "Handoff TTFT").
//
// Setup per model (--models, HF directories, e.g. random smollm-135m made by
// scripts/make_random_llama.py) and context length (--contexts):
//   - one Model (compute dtype: bf16 for bf16 weights, fp32 for fp32), shared
//     by two Sequences: the sender and the receiver, as the daemon runs agents;
//   - context ids: BOS, then a deterministic pseudo-random sequence of ids in
//     [3, min(vocab, 512)) (SplitMix64 of --seed + position; ids 0..2 are the
//     stories260K tokenizer's unk/bos/eos), fed as ids: no tokenizer in the
//     timed path;
//   - instruction: --instruction encoded with the model's tokenizer (no BOS);
//   - the sender prefills the context with attention capture on (window
//     --importance_window) before any timing.
// Each handoff (bench/handoff_bench_run.h) runs from handoff start to the
// receiver's first generated token (greedy): re-prefill of context +
// instruction, or a card (full / quantized at 16, 4, 3 bits with adaptive
// widths) built into a shared-memory CardStore, mapped read-only by the
// receiver, injected, then the instruction prefilled; or `session` (not in
// the default --modes): a follow-up task continuing from a kept full card
// that exists before the clock starts (map + inject + instruction). --warmup untimed
// rounds, then --reps rounds; within a round every mode runs once, the order
// rotated per round so that drift in machine load hits every mode alike.
//
// Output: a header naming the CPU, the SIMD target and the statistic (the
// median of --reps rounds), a Markdown table on stdout (TTFT median and min-max, ratio of
// medians vs re-prefill, stage medians), --csv (the TTFT table) and
// --stages_csv (stage medians), and the load average around every context.
//
// Usage (scripts/bench_handoff.sh makes the models and the plot):
//   bazel build //bench:handoff_bench
//   bazel-bin/bench/handoff_bench --models=/tmp/smollm-135m-bf16,/tmp/smollm-135m-f32
//       --threads=2 --reps=7 [--simd=avx2]
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agents/compute_threads.h"
#include "agents/model.h"
#include "agents/sequence.h"
#include "base/cpu_info.h"
#include "bench/handoff_bench_run.h"
#include "cachecard/shm/card_store.h"

ABSL_FLAG(std::string, models, "", "comma-separated model directories (required)");
ABSL_FLAG(std::string, contexts, "256,1024,2048,4096", "comma-separated context lengths (tokens)");
ABSL_FLAG(std::string, modes, "reprefill,full,card16,card4,card3",
          "comma-separated: reprefill, full, card<bits> (2..8 or 16)");
ABSL_FLAG(int, reps, 7, "timed rounds (every mode once per round)");
ABSL_FLAG(int, warmup, 1, "untimed rounds per context before the timed ones");
ABSL_FLAG(int, threads, 2, "runtime intra-op threads (SetComputeThreads)");
ABSL_FLAG(std::string, weights, "auto",
          "weight format of the models: auto, f32, bf16, q8, q4 (agents::ApplyWeightFormat); "
          "the dtype column then reads e.g. fp32+q8");
ABSL_FLAG(int, group_size, 32, "card quantization group size (K per-channel, V per-token)");
ABSL_FLAG(int, importance_window, 4, "attention capture / importance window (query rows)");
ABSL_FLAG(std::string, instruction, " What next?",
          "the receiver's instruction text (tokenized, appended after the context)");
ABSL_FLAG(uint64_t, seed, 2605, "seed of the pseudo-random context ids");
ABSL_FLAG(std::string, csv, "", "write the TTFT table here (CSV)");
ABSL_FLAG(std::string, stages_csv, "", "write the stage medians here (CSV)");
ABSL_FLAG(std::string, simd, "",
          "force the kernels' SIMD target (Highway name: avx3, avx2, sse4, neon...; empty: the "
          "best this CPU supports); dtype auto then also answers as on such a CPU");

namespace qkvshare::bench {
namespace {

void Die(const absl::Status& s, const std::string& what) {
  std::fprintf(stderr, "handoff_bench: %s: %s\n", what.c_str(), s.ToString().c_str());
  std::exit(1);
}

// CLOCK_MONOTONIC seconds, for stderr progress lines: a profile recorded
// with `perf record -k CLOCK_MONOTONIC` can be cut to the handoff rounds
// (perf report --time START,END), leaving out model load and sender prefill.
double MonotonicSeconds() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

std::string LoadAverage() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return absl::StrCat(a, " ", b, " ", c);
}

std::vector<int64_t> ParseInts(const std::string& flag, const char* name) {
  std::vector<int64_t> out;
  for (absl::string_view part : absl::StrSplit(flag, ',', absl::SkipEmpty())) {
    int64_t v;
    if (!absl::SimpleAtoi(part, &v) || v < 2) {
      Die(absl::InvalidArgumentError(absl::StrCat("'", part, "'")), name);
    }
    out.push_back(v);
  }
  return out;
}

struct Stat {
  double median = 0, min = 0, max = 0;
};

Stat Summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return {n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]), v.front(), v.back()};
}

double Median(const std::vector<HandoffSample>& samples, double (*field)(const HandoffSample&)) {
  std::vector<double> v;
  for (const HandoffSample& s : samples) v.push_back(field(s));
  return Summarize(v).median;
}

// One (model, context, mode) cell.
struct Cell {
  std::string dtype;
  int64_t context = 0;
  HandoffMode mode;
  std::vector<HandoffSample> samples;
  std::vector<int32_t> reprefill_tokens;  // same-round re-prefill first tokens
  std::string load;                       // load average after the context
};

// The CSV's bits column: the card's budget, the cache dtype's bits for
// `full`, empty for re-prefill.
std::string BitsColumn(const Cell& c) {
  if (c.mode.kind == HandoffMode::Kind::kCard) return absl::StrCat(c.mode.bits);
  if (c.mode.kind == HandoffMode::Kind::kFull || c.mode.kind == HandoffMode::Kind::kSession) {
    return absl::StartsWith(c.dtype, "fp32") ? "32" : "16";
  }
  return "";
}

Stat TtftStat(const Cell& c) {
  std::vector<double> t;
  for (const HandoffSample& s : c.samples) t.push_back(s.ttft_ms);
  return Summarize(t);
}

// Median TTFT of the re-prefill cell of the same dtype and context, or 0.
double ReprefillMedian(const std::vector<Cell>& cells, const Cell& c) {
  for (const Cell& r : cells) {
    if (r.dtype == c.dtype && r.context == c.context &&
        r.mode.kind == HandoffMode::Kind::kReprefill) {
      return TtftStat(r).median;
    }
  }
  return 0;
}

std::string FirstTokenAgreement(const Cell& c) {
  if (c.mode.kind == HandoffMode::Kind::kReprefill || c.reprefill_tokens.empty()) return "-";
  int same = 0;
  for (size_t i = 0; i < c.samples.size(); ++i) {
    same += c.samples[i].first_token == c.reprefill_tokens[i];
  }
  return absl::StrCat(same, "/", c.samples.size());
}

// A median stage column of the stage tables.
struct StageColumn {
  const char* csv;    // CSV header
  const char* table;  // stdout header
  double (*field)(const HandoffSample&);
  bool cpu;  // shown in the CPU table, else in the wall table
};

const std::vector<StageColumn>& StageColumns() {
  static const auto* columns = new std::vector<StageColumn>{
      {"importance_ms", "importance", [](const HandoffSample& s) { return s.importance_ms; }},
      {"alloc_ms", "alloc", [](const HandoffSample& s) { return s.alloc_ms; }},
      {"size_ms", "size", [](const HandoffSample& s) { return s.size_ms; }},
      {"encode_ms", "encode", [](const HandoffSample& s) { return s.encode_ms; }},
      {"build_ms", "build", [](const HandoffSample& s) { return s.build_ms(); }},
      {"map_ms", "map", [](const HandoffSample& s) { return s.map_ms; }},
      {"inject_ms", "inject", [](const HandoffSample& s) { return s.inject_ms; }},
      {"first_ms", "first", [](const HandoffSample& s) { return s.first_ms; }},
      {"ttft_ms", "TTFT", [](const HandoffSample& s) { return s.ttft_ms; }},
      {"importance_cpu_ms", "importance",
       [](const HandoffSample& s) { return s.importance_cpu_ms; }, true},
      {"alloc_cpu_ms", "alloc", [](const HandoffSample& s) { return s.alloc_cpu_ms; }, true},
      {"size_cpu_ms", "size", [](const HandoffSample& s) { return s.size_cpu_ms; }, true},
      {"encode_cpu_ms", "encode", [](const HandoffSample& s) { return s.encode_cpu_ms; }, true},
      {"build_cpu_ms", "build", [](const HandoffSample& s) { return s.build_cpu_ms(); }, true},
      {"map_cpu_ms", "map", [](const HandoffSample& s) { return s.map_cpu_ms; }, true},
      {"inject_cpu_ms", "inject", [](const HandoffSample& s) { return s.inject_cpu_ms; }, true},
      {"first_cpu_ms", "first (main thread)", [](const HandoffSample& s) { return s.first_cpu_ms; },
       true},
      {"ttft_cpu_ms", "TTFT (all threads)", [](const HandoffSample& s) { return s.ttft_cpu_ms; },
       true},
  };
  return *columns;
}

std::string CellKey(const Cell& c) {
  return absl::StrFormat("| %d | %s | %s | %s |", c.context, c.dtype, c.mode.Name(), BitsColumn(c));
}

void PrintStageTable(const std::vector<Cell>& cells, bool cpu) {
  std::string header = "| context | dtype | mode | bits |";
  std::string rule = "|---:|---|---|---:|";
  if (!cpu) {
    header += " card MB | avg bits |";
    rule += "---:|---:|";
  }
  for (const StageColumn& col : StageColumns()) {
    if (col.cpu != cpu) continue;
    absl::StrAppend(&header, " ", col.table, " |");
    rule += "---:|";
  }
  if (cpu) {
    header += " minor faults | first token |";
    rule += "---:|---|";
  }
  std::printf("%s\n%s\n", header.c_str(), rule.c_str());
  for (const Cell& c : cells) {
    std::string row = CellKey(c);
    if (!cpu) {
      absl::StrAppendFormat(&row, " %.2f | %.2f |", c.samples.front().card_bytes / 1e6,
                            c.samples.front().avg_bits);
    }
    for (const StageColumn& col : StageColumns()) {
      if (col.cpu == cpu) absl::StrAppendFormat(&row, " %.2f |", Median(c.samples, col.field));
    }
    if (cpu) {
      absl::StrAppendFormat(
          &row, " %.0f | %s |",
          Median(c.samples, [](const HandoffSample& s) { return double(s.minor_faults); }),
          FirstTokenAgreement(c));
    }
    std::printf("%s\n", row.c_str());
  }
}

void Report(const std::vector<Cell>& cells) {
  std::printf(
      "\n| context | dtype | mode | bits | TTFT ms median | min | max | ratio vs re-prefill |\n");
  std::printf("|---:|---|---|---:|---:|---:|---:|---:|\n");
  for (const Cell& c : cells) {
    const Stat st = TtftStat(c);
    const double base = ReprefillMedian(cells, c);
    std::printf("%s %.2f | %.2f | %.2f | %s |\n", CellKey(c).c_str(), st.median, st.min, st.max,
                base > 0 ? absl::StrFormat("%.4f", st.median / base).c_str() : "-");
  }
  std::printf(
      "\nStage medians, wall ms (build = importance + alloc + size + encode; for re-prefill "
      "`first` is the whole prefill):\n\n");
  PrintStageTable(cells, /*cpu=*/false);
  std::printf(
      "\nStage medians, CPU ms of the handoff thread (encode and inject of cards above 4 MiB "
      "also use helper threads); "
      "TTFT (all threads) is process CPU time; first token = rounds whose first token equals "
      "the same round's re-prefill's:\n\n");
  PrintStageTable(cells, /*cpu=*/true);
}

void WriteCsvs(const std::vector<Cell>& cells, const std::string& csv, const std::string& stages) {
  if (!csv.empty()) {
    std::ofstream f(csv);
    f << "context,dtype,mode,bits,ttft_ms_median,ttft_ms_min,ttft_ms_max,ratio_vs_reprefill\n";
    for (const Cell& c : cells) {
      const Stat st = TtftStat(c);
      const double base = ReprefillMedian(cells, c);
      f << absl::StrFormat("%d,%s,%s,%s,%.3f,%.3f,%.3f,%s\n", c.context, c.dtype, c.mode.Name(),
                           BitsColumn(c), st.median, st.min, st.max,
                           base > 0 ? absl::StrFormat("%.5f", st.median / base) : "");
    }
    if (!f) Die(absl::InternalError("write failed"), csv);
  }
  if (!stages.empty()) {
    std::ofstream f(stages);
    f << "context,dtype,mode,bits,reps,card_bytes,avg_bits";
    for (const StageColumn& col : StageColumns()) f << "," << col.csv;
    f << ",minor_faults,first_token_agreement,load_average\n";
    for (const Cell& c : cells) {
      const auto& v = c.samples;
      f << absl::StrFormat("%d,%s,%s,%s,%d,%d,%.4f", c.context, c.dtype, c.mode.Name(),
                           BitsColumn(c), v.size(), v.front().card_bytes, v.front().avg_bits);
      for (const StageColumn& col : StageColumns()) {
        f << absl::StrFormat(",%.3f", Median(v, col.field));
      }
      f << absl::StrFormat(",%.0f,%s,%s\n",
                           Median(v, [](const HandoffSample& s) { return double(s.minor_faults); }),
                           FirstTokenAgreement(c), c.load);
    }
    if (!f) Die(absl::InternalError("write failed"), stages);
  }
}

// All modes of one model and context; appends their cells.
void RunContext(const agents::ModelHandle& model, const std::string& dtype, int64_t context,
                const std::vector<HandoffMode>& modes, const std::vector<int32_t>& instruction,
                agents::Sequence& receiver, cachecard::shm::CardStore& store,
                std::vector<Cell>& cells) {
  const CardParams params{absl::GetFlag(FLAGS_group_size), absl::GetFlag(FLAGS_importance_window)};
  agents::SequenceOptions opts;
  opts.initial_capacity = context + static_cast<int64_t>(instruction.size());
  absl::StatusOr<std::unique_ptr<agents::Sequence>> sender = agents::Sequence::Create(model, opts);
  if (!sender.ok()) Die(sender.status(), "sender");
  (*sender)->EnableAttentionCapture(params.importance_window);
  const std::vector<int32_t> ids = ContextIds(model->config(), context, absl::GetFlag(FLAGS_seed));
  const absl::Time t0 = absl::Now();
  absl::Status st = (*sender)->Append(ids, agents::LogitsMode::kNone).status();
  if (!st.ok()) Die(st, "sender prefill");
  std::fprintf(stderr, "handoff_bench: %s context %lld: sender prefill %.0f ms (done at %.3f s)\n",
               dtype.c_str(), static_cast<long long>(context),
               absl::ToDoubleMilliseconds(absl::Now() - t0), MonotonicSeconds());

  const size_t first = cells.size();
  for (const HandoffMode& m : modes) cells.push_back({dtype, context, m, {}, {}, ""});
  absl::BitGen gen;
  const int warmup = absl::GetFlag(FLAGS_warmup);
  const int reps = absl::GetFlag(FLAGS_reps);
  for (int round = -warmup; round < reps; ++round) {
    int32_t reprefill_token = -1;
    std::vector<std::pair<size_t, int32_t>> round_tokens;
    for (size_t j = 0; j < modes.size(); ++j) {
      const size_t k = (j + static_cast<size_t>(round + warmup)) % modes.size();
      absl::StatusOr<HandoffSample> s =
          RunHandoff(modes[k], params, **sender, receiver, instruction, store, gen);
      if (!s.ok()) Die(s.status(), absl::StrCat(dtype, " ", context, " ", modes[k].Label()));
      if (round < 0) continue;
      if (modes[k].kind == HandoffMode::Kind::kReprefill) reprefill_token = s->first_token;
      cells[first + k].samples.push_back(*s);
      round_tokens.push_back({k, s->first_token});
    }
    if (round >= 0 && reprefill_token >= 0) {
      for (auto& [k, tok] : round_tokens)
        cells[first + k].reprefill_tokens.push_back(reprefill_token);
    }
  }
  const std::string load = LoadAverage();
  for (size_t k = first; k < cells.size(); ++k) cells[k].load = load;
  std::fprintf(stderr, "handoff_bench: %s context %lld done at %.3f s, load average %s\n",
               dtype.c_str(), static_cast<long long>(context), MonotonicSeconds(), load.c_str());
}

int Main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (absl::Status s = ForceSimdTarget(absl::GetFlag(FLAGS_simd)); !s.ok()) Die(s, "--simd");
  std::vector<std::string> dirs =
      absl::StrSplit(absl::GetFlag(FLAGS_models), ',', absl::SkipEmpty());
  if (dirs.empty()) Die(absl::InvalidArgumentError("required"), "--models");
  const std::vector<int64_t> contexts = ParseInts(absl::GetFlag(FLAGS_contexts), "--contexts");
  std::vector<HandoffMode> modes;
  for (absl::string_view label :
       absl::StrSplit(absl::GetFlag(FLAGS_modes), ',', absl::SkipEmpty())) {
    absl::StatusOr<HandoffMode> m = HandoffMode::Parse(std::string(label));
    if (!m.ok()) Die(m.status(), "--modes");
    modes.push_back(*m);
  }
  if (absl::GetFlag(FLAGS_reps) < 1 || absl::GetFlag(FLAGS_warmup) < 0) {
    Die(absl::InvalidArgumentError("need reps >= 1, warmup >= 0"), "flags");
  }
  agents::SetComputeThreads(absl::GetFlag(FLAGS_threads));
  std::printf("handoff_bench: %s, %u hardware threads, %d compute threads; load average %s\n",
              CpuSummary().c_str(), std::thread::hardware_concurrency(), agents::ComputeThreads(),
              LoadAverage().c_str());
  std::printf(
      "reported: median of %d timed rounds (with min and max), after %d warm-up; group size "
      "%d, importance window %d\n",
      absl::GetFlag(FLAGS_reps), absl::GetFlag(FLAGS_warmup), absl::GetFlag(FLAGS_group_size),
      absl::GetFlag(FLAGS_importance_window));

  cachecard::shm::CardStoreOptions store_opts;
  store_opts.instance = absl::StrCat("hbench", getpid());
  store_opts.quota_bytes = uint64_t{4} << 30;
  absl::StatusOr<std::unique_ptr<cachecard::shm::CardStore>> store =
      cachecard::shm::CardStore::Create(store_opts);
  if (!store.ok()) Die(store.status(), "card store");

  agents::ModelOptions model_options;
  absl::StatusOr<agents::weights::WeightFormat> weights =
      agents::weights::ParseWeightFormat(absl::GetFlag(FLAGS_weights));
  if (!weights.ok()) Die(weights.status(), "--weights");
  if (absl::Status s = agents::ApplyWeightFormat(*weights, &model_options); !s.ok()) {
    Die(s, "--weights");
  }
  std::vector<Cell> cells;
  for (const std::string& dir : dirs) {
    absl::StatusOr<std::unique_ptr<agents::Model>> loaded = agents::Model::Load(dir, model_options);
    if (!loaded.ok()) Die(loaded.status(), dir);
    agents::ModelHandle model = std::move(*loaded);
    std::string dtype = model->compute_dtype() == DType::kF32 ? "fp32" : "bf16";
    if (model->options().quantized_weights.has_value()) {
      absl::StrAppend(&dtype, "+", model->weights_summary());
    }
    if (model->tokenizer() == nullptr) Die(absl::NotFoundError("no tokenizer.json"), dir);
    absl::StatusOr<std::vector<int32_t>> instruction =
        model->tokenizer()->Encode(absl::GetFlag(FLAGS_instruction), /*add_special=*/false);
    if (!instruction.ok() || instruction->empty()) Die(instruction.status(), "--instruction");
    std::printf("model %s: %d layers, compute %s, instruction %zu tokens\n", dir.c_str(),
                model->config().num_layers, dtype.c_str(), instruction->size());
    const int64_t max_context = *std::max_element(contexts.begin(), contexts.end());
    agents::SequenceOptions opts;
    opts.initial_capacity = max_context + static_cast<int64_t>(instruction->size());
    absl::StatusOr<std::unique_ptr<agents::Sequence>> receiver =
        agents::Sequence::Create(model, opts);
    if (!receiver.ok()) Die(receiver.status(), "receiver");
    for (int64_t context : contexts) {
      RunContext(model, dtype, context, modes, *instruction, **receiver, **store, cells);
    }
  }
  std::printf("load average at the end: %s\n", LoadAverage().c_str());
  Report(cells);
  WriteCsvs(cells, absl::GetFlag(FLAGS_csv), absl::GetFlag(FLAGS_stages_csv));
  return 0;
}

}  // namespace
}  // namespace qkvshare::bench

int main(int argc, char** argv) {
  qkvshare::agents::ReexecWithShortOpenMpSpin(argv);
  return qkvshare::bench::Main(argc, argv);
}
