// runtime_bench: prefill and decode throughput of the agents/ runtime.
//
//   bazel run -c opt //bench:runtime_bench -- \
//       --models=/tmp/small-100m-bfloat16,/tmp/smollm-135m-bfloat16 \
//       --dtypes=bf16,f32 --threads=2
//
// (models from /work/shared/tools/make_random_llama.py, see docs/performance.md).
// For each model and compute dtype: prefill tokens/s of one Append of N
// random token ids on an empty sequence (logits of the last position, as in
// a real prompt), N in --prefill; decode tokens/s of single-token steps at
// context --decode_context. Each number is the median of --repeats runs after
// one warm-up. The "torch" rows run the same sequence with the plain
// libtorch decode path (ModelOptions::decode_kernels = false), the baseline
// of the "x" column; the llama.cpp figures of docs/performance.md are quoted
// from a separate run, not measured here.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "agents/compute_threads.h"
#include "agents/model.h"
#include "agents/sequence.h"

ABSL_FLAG(std::vector<std::string>, models, {}, "Model directories (comma-separated).");
ABSL_FLAG(std::vector<std::string>, dtypes, std::vector<std::string>({"bf16", "f32"}),
          "Compute dtypes: bf16, f32.");
ABSL_FLAG(int, threads, 2, "Intra-op threads.");
ABSL_FLAG(std::vector<std::string>, prefill, std::vector<std::string>({"128", "512", "2048"}),
          "Prefill lengths in tokens.");
ABSL_FLAG(int, decode_context, 512, "Context length before the timed decode steps.");
ABSL_FLAG(int, decode_tokens, 64, "Timed decode steps per run.");
ABSL_FLAG(int, repeats, 3, "Timed runs per number (median reported).");
ABSL_FLAG(bool, baseline, true, "Also time the plain libtorch decode path.");

namespace qkvshare::agents {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

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

// Prefill tokens/s of `n` tokens.
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

// Decode tokens/s at context `ctx`.
double DecodeRate(const ModelHandle& model, int ctx) {
  const int vocab = model->config().vocab_size;
  const int steps = absl::GetFlag(FLAGS_decode_tokens);
  auto seq = Sequence::Create(model, {.initial_capacity = ctx + steps});
  Check(seq.status());
  std::vector<int32_t> prompt = RandomIds(ctx, vocab, 7);
  std::vector<int32_t> next = RandomIds(steps, vocab, 8);
  std::vector<double> rates;
  for (int r = 0; r <= absl::GetFlag(FLAGS_repeats); ++r) {
    (*seq)->Reset();
    Check((*seq)->Append(prompt, LogitsMode::kNone).status());
    auto t0 = Clock::now();
    for (int i = 0; i < steps; ++i) Check((*seq)->Decode(next[i]).status());
    auto t1 = Clock::now();
    if (r > 0) rates.push_back(steps / Seconds(t0, t1));
  }
  return Median(rates);
}

int Main() {
  SetComputeThreads(absl::GetFlag(FLAGS_threads));
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
  std::printf("threads %d, median of %d runs; tokens/s\n", ComputeThreads(),
              absl::GetFlag(FLAGS_repeats));
  std::printf("%-28s %-5s %-7s", "model", "dtype", "decode");
  for (int n : lengths) std::printf("  prefill %-5d", n);
  std::printf("  decode@%-5d  x torch\n", ctx);
  for (const std::string& dir : absl::GetFlag(FLAGS_models)) {
    for (const std::string& name : absl::GetFlag(FLAGS_dtypes)) {
      ModelOptions options;
      options.compute_dtype = name == "f32" ? DType::kF32 : DType::kBF16;
      std::vector<bool> paths = {true};
      if (absl::GetFlag(FLAGS_baseline)) paths.push_back(false);
      double fast_decode = 0;
      for (bool kernels : paths) {
        options.decode_kernels = kernels;
        auto loaded = Model::Load(dir, options);
        Check(loaded.status());
        ModelHandle model = std::move(*loaded);
        std::string label = dir.substr(dir.find_last_of('/') + 1);
        std::printf("%-28s %-5s %-7s", label.c_str(), name.c_str(), kernels ? "kernels" : "torch");
        std::fflush(stdout);
        for (int n : lengths) {
          if (!kernels) {  // prefill does not use the decode kernels
            std::printf("  %-13s", "-");
            continue;
          }
          std::printf("  %-13.0f", PrefillRate(model, n));
          std::fflush(stdout);
        }
        const double d = DecodeRate(model, ctx);
        if (kernels) fast_decode = d;
        std::printf("  %-12.1f", d);
        if (!kernels) std::printf("  %.2f", fast_decode / d);
        std::printf("\n");
      }
    }
  }
  return 0;
}

}  // namespace
}  // namespace qkvshare::agents

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return qkvshare::agents::Main();
}
