// quant_bench: throughput and error of the KV quantization kernels.
//
// Shape: a KV slice of smollm-135m (30 layers, 3 kv heads, head_dim 64) with
// --tokens tokens, fp32, in the KV-cache layout [heads, capacity, head_dim].
// For each width (2, 3, 4, 8, 16 and an adaptive ~3-bit mix) and each side
// (K per-channel, V per-token, G = 32) it times, on one core:
//   quantize   = Quantize() of every layer        (min/max, codes, packing)
//   dequantize = Dequantize() of every layer into an fp32 (or --dst=bf16)
//                cache view
// and reports GB/s of fp32 K/V (n * channels * 4 bytes per layer / seconds of
// thread CPU time), the MEDIAN of --reps runs, for the Highway SIMD path (the
// best target of this CPU, or the one --simd forces) and the scalar reference
// in the same run (x = their ratio), plus the mean squared error and the packed bits per element
// (codes + group parameters).
//
// Data: synthetic KV-like values, fixed seed: keys have per-channel offsets
// with a few large outlier channels (as KIVI observes for real keys), values
// are closer to i.i.d. (small offsets); both plus unit Gaussian noise.
// The mixed row uses the adaptive controller on Zipf-like synthetic importance
// (1/rank, shuffled); its "wmse" weights each token's squared error by that
// importance (normalized to mean 1), the quantity the controller trades off.
//
// The header prints the CPU model and the SIMD target (base/cpu_info.h).
//
// Usage: bazel run -c opt //bench:quant_bench -- [--tokens=4096] [--reps=5] [--dst=bf16]
//        [--simd=avx2|sse4|neon|...]
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/types/span.h"
#include "base/cpu_info.h"
#include "base/dtype.h"
#include "bench/bench_util.h"
#include "quant/bit_plan.h"
#include "quant/controller.h"
#include "quant/kernels.h"
#include "quant/kernels_internal.h"
#include "quant/kv_view.h"

ABSL_FLAG(int, tokens, 4096, "tokens in the KV slice");
ABSL_FLAG(int, layers, 30, "layers (smollm-135m: 30)");
ABSL_FLAG(int, reps, 5, "timed repetitions; the median is reported");
ABSL_FLAG(std::string, simd, "", "force this Highway target (e.g. avx2, sse4, neon); default best");
ABSL_FLAG(std::string, only, "", "run only the rows whose width name equals this (e.g. 3, mix)");
ABSL_FLAG(std::string, dst, "f32", "destination cache dtype: f32 or bf16");
ABSL_FLAG(bool, scalar, true, "also time the scalar fallback");
ABSL_FLAG(double, mixed_budget, 3.0, "average bits of the adaptive mixed-width row");

namespace qkvshare::quant {
namespace {

using internal::KernelPath;

constexpr int kHeads = 3;
constexpr int kHeadDim = 64;
constexpr int kChannels = kHeads * kHeadDim;

struct Slice {
  int layers;
  int64_t tokens;
  std::vector<std::vector<float>> data;  // per layer [heads, tokens, head_dim]
  KvView View(int l) {
    return {data[l].data(), DType::kF32, kHeads, kHeadDim, tokens * kHeadDim, tokens};
  }
};

// A destination cache of fp32 or bf16, same layout.
struct Cache {
  DType dtype;
  int64_t tokens;
  std::vector<std::vector<uint8_t>> bytes;  // per layer
  KvView View(int l) {
    return {bytes[l].data(), dtype, kHeads, kHeadDim, tokens * kHeadDim, tokens};
  }
  float Get(int l, size_t i) const {
    if (dtype == DType::kBF16) {
      uint16_t h;
      std::memcpy(&h, bytes[l].data() + 2 * i, 2);
      return Bf16ToFloat(h);
    }
    float f;
    std::memcpy(&f, bytes[l].data() + 4 * i, 4);
    return f;
  }
};

Cache MakeCache(DType dtype, int layers, int64_t tokens) {
  Cache c{dtype, tokens, {}};
  for (int l = 0; l < layers; ++l) {
    c.bytes.emplace_back(DTypeSize(dtype) * kChannels * tokens, 0);
  }
  return c;
}

Slice MakeSlice(int layers, int64_t tokens, uint32_t seed, bool outlier_channels) {
  Slice s{layers, tokens, {}};
  std::mt19937 rng(seed);
  std::normal_distribution<float> noise(0.0f, 1.0f);
  for (int l = 0; l < layers; ++l) {
    std::vector<float> offset(kChannels);
    for (float& o : offset) {
      o = outlier_channels ? noise(rng) * ((rng() % 16 == 0) ? 10.0f : 1.0f) : 0.3f * noise(rng);
    }
    std::vector<float> x(static_cast<size_t>(kChannels) * tokens);
    for (int h = 0; h < kHeads; ++h) {
      for (int64_t t = 0; t < tokens; ++t) {
        for (int d = 0; d < kHeadDim; ++d) {
          x[(h * tokens + t) * kHeadDim + d] = offset[h * kHeadDim + d] + noise(rng);
        }
      }
    }
    s.data.push_back(std::move(x));
  }
  return s;
}

using bench::Median;
using bench::ThreadSeconds;

struct Result {
  double quant_gbs = 0, dequant_gbs = 0, mse = 0, wmse = 0, bits_per_element = 0;
};

// Times quantize and dequantize of all layers on `path`; the MSE is computed
// once outside the timed loops.
Result Run(KernelPath path, Slice& src, Cache& dst, const GroupSpec& spec,
           const std::vector<uint8_t>& bits, const std::vector<float>& weight, int reps) {
  const size_t bytes = PackedBytes(kChannels, spec, bits);
  std::vector<std::vector<uint8_t>> packed(src.layers, std::vector<uint8_t>(bytes));
  std::vector<double> times_q, times_d;
  for (int r = 0; r < reps; ++r) {
    const double t0 = ThreadSeconds();
    for (int l = 0; l < src.layers; ++l) {
      absl::Status s =
          internal::QuantizeWithPath(path, src.View(l), spec, bits, absl::MakeSpan(packed[l]));
      if (!s.ok()) {
        std::fprintf(stderr, "quantize: %s\n", s.ToString().c_str());
        std::exit(1);
      }
    }
    const double t1 = ThreadSeconds();
    for (int l = 0; l < src.layers; ++l) {
      absl::Status s = internal::DequantizeWithPath(path, packed[l], spec, bits, dst.View(l));
      if (!s.ok()) {
        std::fprintf(stderr, "dequantize: %s\n", s.ToString().c_str());
        std::exit(1);
      }
    }
    const double t2 = ThreadSeconds();
    times_q.push_back(t1 - t0);
    times_d.push_back(t2 - t1);
  }
  const double fp32_bytes = 4.0 * kChannels * src.tokens * src.layers;
  Result res;
  res.quant_gbs = fp32_bytes / Median(times_q) / 1e9;
  res.dequant_gbs = fp32_bytes / Median(times_d) / 1e9;
  double se = 0, wse = 0;
  for (int l = 0; l < src.layers; ++l) {
    for (size_t i = 0; i < src.data[l].size(); ++i) {
      const double e = src.data[l][i] - dst.Get(l, i);
      se += e * e;
      wse += weight[(i / kHeadDim) % src.tokens] * e * e;  // [heads, tokens, head_dim]
    }
  }
  res.mse = se / (static_cast<double>(kChannels) * src.tokens * src.layers);
  res.wmse = wse / (static_cast<double>(kChannels) * src.tokens * src.layers);
  res.bits_per_element = 8.0 * bytes / (static_cast<double>(kChannels) * src.tokens);
  return res;
}

// Zipf-like importance: a few heavy tokens, a long light tail, shuffled.
std::vector<float> SyntheticImportance(int64_t n, uint32_t seed) {
  std::vector<float> imp(n);
  for (int64_t i = 0; i < n; ++i) imp[i] = 1.0f / static_cast<float>(i + 1);
  std::shuffle(imp.begin(), imp.end(), std::mt19937(seed));
  return imp;
}

int Main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int64_t tokens = absl::GetFlag(FLAGS_tokens);
  const int layers = absl::GetFlag(FLAGS_layers);
  const int reps = absl::GetFlag(FLAGS_reps);
  if (absl::Status s = ForceSimdTarget(absl::GetFlag(FLAGS_simd)); !s.ok()) {
    std::fprintf(stderr, "--simd: %s\n", s.ToString().c_str());
    return 1;
  }
  if (reps < 1) {
    std::fprintf(stderr, "--reps must be >= 1\n");
    return 1;
  }

  std::printf(
      "quant_bench: %d layers x %d kv heads x head_dim %d, %lld tokens, fp32 in, %s out, G = 32\n",
      layers, kHeads, kHeadDim, static_cast<long long>(tokens), absl::GetFlag(FLAGS_dst).c_str());
  std::printf("%s\n", CpuSummary().c_str());
  std::printf(
      "GB/s of fp32 K/V per core (thread CPU time, MEDIAN of %d); simd = Highway %s, "
      "x = simd / scalar; bits/el = packed\n"
      "bits per element incl. fp16 group params\n\n",
      reps, BestSimdTargetName().c_str());
  Slice keys = MakeSlice(layers, tokens, 42, /*outlier_channels=*/true);
  Slice values = MakeSlice(layers, tokens, 43, /*outlier_channels=*/false);
  const std::string dst_name = absl::GetFlag(FLAGS_dst);
  if (dst_name != "f32" && dst_name != "bf16") {
    std::fprintf(stderr, "--dst must be f32 or bf16\n");
    return 1;
  }
  Cache dst = MakeCache(dst_name == "bf16" ? DType::kBF16 : DType::kF32, layers, tokens);

  // Adaptive mixed widths from the controller (same plan for every layer).
  AllocationRequest req;
  req.num_tokens = tokens;
  req.avg_bits = absl::GetFlag(FLAGS_mixed_budget);
  const std::vector<float> importance = SyntheticImportance(tokens, 7);
  req.importance = importance;
  double mean_importance = 0;
  for (float v : importance) mean_importance += v / tokens;
  std::vector<float> weight(importance);
  for (float& w : weight) w /= static_cast<float>(mean_importance);
  absl::StatusOr<BitPlan> plan = AllocateBits(req);
  if (!plan.ok()) {
    std::fprintf(stderr, "AllocateBits: %s\n", plan.status().ToString().c_str());
    return 1;
  }

  std::printf("%-5s %-9s %9s %9s %7s %9s %9s %7s %11s %8s\n", "side", "bits", "q simd", "q scalar",
              "q x", "dq simd", "dq scalar", "dq x", "mse", "bits/el");
  struct Row {
    std::string name;
    std::vector<uint8_t> k, v;
  };
  std::vector<Row> rows;
  for (int b : {2, 3, 4, 8, 16}) {
    rows.push_back({std::to_string(b), std::vector<uint8_t>(tokens, static_cast<uint8_t>(b)),
                    std::vector<uint8_t>(tokens, static_cast<uint8_t>(b))});
  }
  char mixed_name[32];
  std::snprintf(mixed_name, sizeof mixed_name, "mix%.2f", plan->avg_bits);
  rows.push_back({mixed_name, plan->k_bits, plan->v_bits});

  const std::string only = absl::GetFlag(FLAGS_only);
  const bool run_scalar = absl::GetFlag(FLAGS_scalar);
  for (const Row& row : rows) {
    if (!only.empty() && row.name.rfind(only, 0) != 0) continue;
    for (GroupAxis axis : {GroupAxis::kPerChannel, GroupAxis::kPerToken}) {
      const GroupSpec spec{axis, 32};
      const bool is_k = axis == GroupAxis::kPerChannel;
      const std::vector<uint8_t>& bits = is_k ? row.k : row.v;
      Slice& src = is_k ? keys : values;
      const Result simd = Run(KernelPath::kSimd, src, dst, spec, bits, weight, reps);
      const Result scalar =
          run_scalar ? Run(KernelPath::kScalar, src, dst, spec, bits, weight, reps) : simd;
      std::printf("%-5s %-9s %9.2f %9.2f %7.1f %9.2f %9.2f %7.1f %10.3e %10.3e %8.3f\n",
                  is_k ? "K" : "V", row.name.c_str(), simd.quant_gbs, scalar.quant_gbs,
                  simd.quant_gbs / scalar.quant_gbs, simd.dequant_gbs, scalar.dequant_gbs,
                  simd.dequant_gbs / scalar.dequant_gbs, simd.mse, simd.wmse,
                  simd.bits_per_element);
    }
  }
  return 0;
}

}  // namespace
}  // namespace qkvshare::quant

int main(int argc, char** argv) { return qkvshare::quant::Main(argc, argv); }
