// runtime_bench: prefill and decode throughput of the agents/ runtime.
//
//   bazel run -c opt //bench:runtime_bench --
//       --models=/tmp/small-100m-bfloat16,/tmp/smollm-135m-bfloat16
//       --dtypes=auto,bf16,f32 [--weights=auto,q8,q4] --threads=2 [--simd=avx2] [--csv]
//
// (models from scripts/make_random_llama.py, see docs/performance.md).
// For each model and requested dtype (the row shows compute/weights that
// actually run on this CPU): prefill tokens/s of one Append of N random token
// ids on an empty sequence (logits of the last position, as in a real
// prompt), N in --prefill; decode tokens/s of single-token steps at context
// --decode_context; the milliseconds of a --chunk token Append at depth
// --chunk_depth (a receiver's instruction after an inject). Each number is
// the MEDIAN of --repeats runs after one warm-up. The header prints the CPU
// model and the SIMD target the kernels ran (--simd forces a weaker one).
// "torch decode" runs the same steps through the plain libtorch path
// (ModelOptions::decode_kernels = false), interleaved with the kernel runs,
// as the same-run baseline of the "kernels/torch" ratio.
// Memory: each row prints the weight bytes the model holds (mapped from the
// checkpoint + copied/quantized) and the growth of the process's VmRSS from
// before the load to after one short prefill and one decode step (which
// touch every weight), before anything else of the row is loaded.
// scripts/bench_vs_llamacpp.sh runs it beside llama.cpp (--csv).
#include <malloc.h>
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "agents/compute_threads.h"
#include "agents/model.h"
#include "agents/sequence.h"
#include "base/cpu_info.h"
#include "bench/bench_util.h"

ABSL_FLAG(std::vector<std::string>, models, {},
          "Model directories or GGUF files (comma-separated).");
ABSL_FLAG(std::vector<std::string>, dtypes, std::vector<std::string>({"auto", "bf16", "f32"}),
          "Requested compute dtypes: auto, bf16, f32 (ModelOptions::compute_dtype; the row "
          "shows what runs on this CPU).");
ABSL_FLAG(std::vector<std::string>, weights, std::vector<std::string>({"auto"}),
          "Weight formats, each crossed with every --dtypes value: auto (dense, as the "
          "dtype says), f32, bf16, q8, q4 (quantized at load; agents::ApplyWeightFormat).");
ABSL_FLAG(std::string, quantized_gemm, "auto",
          "dtype of prefill's GEMMs over q8/q4 projections: auto (bf16 for q4 where the CPU "
          "has native bf16 products, else f32), f32, bf16 (ModelOptions::quantized_gemm_dtype).");
ABSL_FLAG(int, chunk, 9,
          "Tokens of the short-chunk step (a receiver's instruction after an inject); 0: skip.");
ABSL_FLAG(int, chunk_depth, 1024, "Context length before the timed short chunk.");
ABSL_FLAG(bool, csv, false,
          "Print one CSV line per model and dtype instead of the table (for scripts).");
ABSL_FLAG(int, threads, 2, "Intra-op threads.");
ABSL_FLAG(std::vector<std::string>, prefill, std::vector<std::string>({"128", "512", "2048"}),
          "Prefill lengths in tokens.");
ABSL_FLAG(int, decode_context, 512, "Context length before the timed decode steps.");
ABSL_FLAG(int, decode_tokens, 64, "Timed decode steps per run.");
ABSL_FLAG(int, repeats, 3, "Timed runs per number (median reported).");
ABSL_FLAG(bool, baseline, true, "Also time the plain libtorch decode path.");
ABSL_FLAG(bool, huge_pages, true,
          "ModelOptions::copy_weights_to_huge_pages (the default): weights copied into "
          "huge-page-backed memory when the kernel offers transparent huge pages; "
          "false: used from the file mapping.");
ABSL_FLAG(std::string, simd, "",
          "Force the kernels' SIMD target (Highway name: avx3, avx2, sse4, neon, emu128, "
          "scalar...; empty: the best this CPU supports).");
ABSL_FLAG(std::string, clock, "wall",
          "wall: elapsed time; thread_cpu: CPU time of the calling thread (only meaningful "
          "with --threads=1, where all work runs on it; robust on a busy machine).");

namespace qkvshare::agents {
namespace {

using ::qkvshare::bench::Median;

// Seconds of the --clock: wall time or the calling thread's CPU time.
struct Clock {
  using time_point = double;
  static double now() {
    timespec ts;
    clock_gettime(
        absl::GetFlag(FLAGS_clock) == "thread_cpu" ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC,
        &ts);
    return static_cast<double>(ts.tv_sec) + ts.tv_nsec * 1e-9;
  }
};

double Seconds(double a, double b) { return b - a; }

std::vector<int32_t> RandomIds(int n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> ids(n);
  for (int32_t& id : ids) id = static_cast<int32_t>(rng() % vocab);
  return ids;
}

void Check(const absl::Status& s) {
  if (!s.ok()) {
    std::fprintf(stderr, "runtime_bench: %s\n", s.ToString().c_str());
    std::exit(1);
  }
}

// Prefill tokens/s of `n` tokens (one Append, logits of the last position).
double PrefillRate(const ModelHandle& model, int n) {
  const int vocab = model->config().vocab_size;
  auto seq = Sequence::Create(model, {.initial_capacity = n});
  Check(seq.status());
  std::vector<double> rates;
  for (int r = 0; r <= absl::GetFlag(FLAGS_repeats); ++r) {
    (*seq)->Reset();
    std::vector<int32_t> ids = RandomIds(n, vocab, 100 + r);
    auto t0 = Clock::now();
    Check((*seq)->Append(ids).status());
    auto t1 = Clock::now();
    if (r > 0) rates.push_back(n / Seconds(t0, t1));  // r == 0: warm-up
  }
  return Median(rates);
}

// Milliseconds of one Append of `n` tokens at context `depth` (logits of the
// last position), the receiver's instruction step after a card inject.
double ChunkMs(const ModelHandle& model, int n, int depth) {
  const int vocab = model->config().vocab_size;
  auto seq = Sequence::Create(model, {.initial_capacity = depth + n});
  Check(seq.status());
  std::vector<int32_t> prompt = RandomIds(depth, vocab, 5);
  std::vector<double> ms;
  for (int r = 0; r <= absl::GetFlag(FLAGS_repeats); ++r) {
    (*seq)->Reset();
    Check((*seq)->Append(prompt, LogitsMode::kNone).status());
    std::vector<int32_t> ids = RandomIds(n, vocab, 200 + r);
    auto t0 = Clock::now();
    Check((*seq)->Append(ids).status());
    auto t1 = Clock::now();
    if (r > 0) ms.push_back(1e3 * Seconds(t0, t1));
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Decode tokens/s at context `ctx` for each model, runs interleaved so that
// load changes hit all of them alike.
std::vector<double> DecodeRates(const std::vector<ModelHandle>& models, int ctx) {
  const int vocab = models[0]->config().vocab_size;
  const int steps = absl::GetFlag(FLAGS_decode_tokens);
  std::vector<int32_t> prompt = RandomIds(ctx, vocab, 7);
  std::vector<int32_t> next = RandomIds(steps, vocab, 8);
  std::vector<std::unique_ptr<Sequence>> seqs;
  for (const ModelHandle& m : models) {
    auto seq = Sequence::Create(m, {.initial_capacity = ctx + steps});
    Check(seq.status());
    seqs.push_back(std::move(*seq));
  }
  std::vector<std::vector<double>> rates(models.size());
  for (int r = 0; r <= absl::GetFlag(FLAGS_repeats); ++r) {
    for (size_t i = 0; i < seqs.size(); ++i) {
      seqs[i]->Reset();
      Check(seqs[i]->Append(prompt, LogitsMode::kNone).status());
      auto t0 = Clock::now();
      for (int s = 0; s < steps; ++s) Check(seqs[i]->Decode(next[s]).status());
      auto t1 = Clock::now();
      if (r > 0) rates[i].push_back(steps / Seconds(t0, t1));
    }
  }
  std::vector<double> out;
  for (const auto& v : rates) out.push_back(Median(v));
  return out;
}

ModelHandle Load(const std::string& dir, std::optional<DType> dtype, weights::WeightFormat format,
                 bool decode_kernels) {
  ModelOptions options;
  options.compute_dtype = dtype;
  Check(ApplyWeightFormat(format, &options));
  options.decode_kernels = decode_kernels;
  options.copy_weights_to_huge_pages = absl::GetFlag(FLAGS_huge_pages);
  const std::string qgemm = absl::GetFlag(FLAGS_quantized_gemm);
  if (qgemm == "f32") options.quantized_gemm_dtype = DType::kF32;
  if (qgemm == "bf16") options.quantized_gemm_dtype = DType::kBF16;
  if (qgemm != "auto" && qgemm != "f32" && qgemm != "bf16") {
    Check(absl::InvalidArgumentError("--quantized_gemm: auto, f32 or bf16"));
  }
  auto loaded = Model::Load(dir, options);
  Check(loaded.status());
  return std::move(*loaded);
}

// Runs an 8-token prefill and one decode step on a fresh sequence (every
// weight is read at least once) and returns the process's VmRSS afterwards.
int64_t TouchWeights(const ModelHandle& model) {
  auto seq = Sequence::Create(model, {.max_tokens = 16, .initial_capacity = 16});
  Check(seq.status());
  Check((*seq)->Append(RandomIds(8, model->config().vocab_size, 3), LogitsMode::kNone).status());
  Check((*seq)->Decode(1).status());
  return bench::ResidentBytes();
}

int Main() {
  SetComputeThreads(absl::GetFlag(FLAGS_threads));
  if (absl::GetFlag(FLAGS_repeats) < 1) {
    std::fprintf(stderr, "--repeats must be >= 1\n");
    return 2;
  }
  if (absl::Status s = ForceSimdTarget(absl::GetFlag(FLAGS_simd)); !s.ok()) {
    std::fprintf(stderr, "--simd: %s\n", s.ToString().c_str());
    return 2;
  }
  std::vector<int> lengths;
  for (const std::string& s : absl::GetFlag(FLAGS_prefill)) {
    int n;
    if (!absl::SimpleAtoi(s, &n) || n <= 0) {
      std::fprintf(stderr, "bad --prefill value '%s'\n", s.c_str());
      return 2;
    }
    lengths.push_back(n);
  }
  const int ctx = absl::GetFlag(FLAGS_decode_context);
  const bool baseline = absl::GetFlag(FLAGS_baseline);
  const std::string clock = absl::GetFlag(FLAGS_clock);
  if (clock != "wall" && clock != "thread_cpu") {
    std::fprintf(stderr, "--clock must be wall or thread_cpu\n");
    return 2;
  }
  const int chunk = absl::GetFlag(FLAGS_chunk), chunk_depth = absl::GetFlag(FLAGS_chunk_depth);
  const bool csv = absl::GetFlag(FLAGS_csv);
  std::printf("%s%s\n", csv ? "# " : "", CpuSummary().c_str());
  std::printf("%sthreads %d, %s clock, median of %d runs (after 1 warm-up), weights %s; tokens/s\n",
              csv ? "# " : "", ComputeThreads(), clock.c_str(), absl::GetFlag(FLAGS_repeats),
              absl::GetFlag(FLAGS_huge_pages) ? "copied to huge pages (THP permitting)" : "mapped");
  if (csv) {
    std::printf("model,dtype,compute,weights");
    for (int n : lengths) std::printf(",prefill%d", n);
    std::printf(",decode%d", ctx);
    if (chunk > 0) std::printf(",chunk%d_at%d_ms", chunk, chunk_depth);
    std::printf(",weight_mib,rss_mib\n");
  } else {
    std::printf("%-24s %-5s %-14s", "model", "dtype", "runs");
    for (int n : lengths) std::printf("  prefill %-5d", n);
    std::printf("  decode@%-5d", ctx);
    if (chunk > 0) std::printf("  %d tok@%d ms", chunk, chunk_depth);
    if (baseline) std::printf("  torch decode  kernels/torch");
    std::printf("  weight MiB  RSS MiB\n");
  }
  for (const std::string& dir : absl::GetFlag(FLAGS_models)) {
    for (const std::string& name : absl::GetFlag(FLAGS_dtypes)) {
      std::optional<DType> dtype;
      if (name == "f32") {
        dtype = DType::kF32;
      } else if (name == "bf16") {
        dtype = DType::kBF16;
      } else if (name != "auto") {
        std::fprintf(stderr, "bad --dtypes value '%s' (auto, bf16, f32)\n", name.c_str());
        return 2;
      }
      for (const std::string& format_name : absl::GetFlag(FLAGS_weights)) {
        absl::StatusOr<weights::WeightFormat> format = weights::ParseWeightFormat(format_name);
        if (!format.ok()) {
          std::fprintf(stderr, "--weights: %s\n", format.status().ToString().c_str());
          return 2;
        }
        // Give the previous row's freed heap back to the system first, so that
        // this row's growth is not hidden by reusing it.
        malloc_trim(0);
        const int64_t rss_before = bench::ResidentBytes();
        std::vector<ModelHandle> models = {Load(dir, dtype, *format, true)};
        const int64_t rss_growth = TouchWeights(models[0]) - rss_before;
        const double weight_mib =
            (models[0]->mapped_weight_bytes() + models[0]->copied_weight_bytes()) / 1048576.0;
        if (baseline) models.push_back(Load(dir, dtype, *format, false));
        const std::string label = dir.substr(dir.find_last_of('/') + 1);
        const std::string weights_name = models[0]->weights_summary();
        const std::string runs =
            absl::StrCat(std::string(DTypeName(models[0]->compute_dtype())), "/", weights_name);
        if (!csv)
          std::fprintf(stderr, "%s %s %s: %s\n", label.c_str(), name.c_str(), format_name.c_str(),
                       models[0]->runtime_summary().c_str());
        if (csv) {
          std::printf("%s,%s,%s,%s", label.c_str(), name.c_str(),
                      std::string(DTypeName(models[0]->compute_dtype())).c_str(),
                      weights_name.c_str());
        } else {
          std::printf("%-24s %-5s %-14s", label.c_str(), name.c_str(), runs.c_str());
        }
        std::fflush(stdout);
        for (int n : lengths) {
          std::printf(csv ? ",%.1f" : "  %-13.0f", PrefillRate(models[0], n));
          std::fflush(stdout);
        }
        std::vector<double> d = DecodeRates(models, ctx);
        std::printf(csv ? ",%.2f" : "  %-12.1f", d[0]);
        if (chunk > 0)
          std::printf(csv ? ",%.1f" : "  %-12.1f", ChunkMs(models[0], chunk, chunk_depth));
        if (baseline && !csv) {
          std::printf("  %-12.1f  %.2f", d[1], d[0] / d[1]);
          if (chunk > 0)
            std::printf("  torch chunk %.1f ms", ChunkMs(models[1], chunk, chunk_depth));
        }
        std::printf(csv ? ",%.1f,%.1f\n" : "  %-10.1f  %.1f\n", weight_mib, rss_growth / 1048576.0);
      }
    }
  }
  return 0;
}

}  // namespace
}  // namespace qkvshare::agents

int main(int argc, char** argv) {
  qkvshare::agents::ReexecWithShortOpenMpSpin(argv);
  absl::ParseCommandLine(argc, argv);
  return qkvshare::agents::Main();
}
