// matvec_quant_bench: single-token decode matrix-vector throughput of the
// q8 / q4 block kernels (matvec_quant.h) against the f32 / bf16 kernels
// (matvec.h), one thread, over all matrices of a model shape (default
// small-100m: 12 layers of q/k/v/o/gate/up/down + the 32000 x 768 lm_head),
// so the weights stream from DRAM as in decode. Prints the CPU and SIMD
// target, the median of --rounds rounds, and ratios against f32 measured in
// the same run. Times are the thread's CPU time (CLOCK_THREAD_CPUTIME_ID), so
// that a shared, loaded machine does not count the time it was descheduled.
//
//   bazel run -c opt //agents/kernels:matvec_quant_bench -- --rounds=5
#include <algorithm>
#include <cstdio>
#include <ctime>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "agents/kernels/matvec.h"
#include "agents/kernels/matvec_quant.h"
#include "agents/weights/block_formats.h"
#include "base/cpu_info.h"
#include "base/dtype.h"

ABSL_FLAG(int, hidden, 768, "Hidden size.");
ABSL_FLAG(int, kv_dim, 256, "kv heads * head_dim.");
ABSL_FLAG(int, intermediate, 2048, "MLP intermediate size.");
ABSL_FLAG(int, layers, 12, "Layers.");
ABSL_FLAG(int, vocab, 32000, "lm_head rows.");
ABSL_FLAG(int, rounds, 5, "Rounds (median reported).");
ABSL_FLAG(std::string, simd, "best", "Force a SIMD target (base/cpu_info.h ForceSimdTarget).");

namespace qkvshare::agents::kernels {
namespace {

namespace w = weights;

double ThreadSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

struct Shape {
  int64_t rows, cols;
};

struct Format {
  std::string name;
  std::vector<std::vector<uint8_t>> mats;  // one buffer per matrix
  size_t bytes = 0;
  std::function<void(const Shape&, const void*, const float*, float*)> run;
};

int Main() {
  if (absl::Status s = ForceSimdTarget(absl::GetFlag(FLAGS_simd)); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 1;
  }
  const int64_t h = absl::GetFlag(FLAGS_hidden), kv = absl::GetFlag(FLAGS_kv_dim),
                inter = absl::GetFlag(FLAGS_intermediate);
  std::vector<Shape> shapes;
  for (int l = 0; l < absl::GetFlag(FLAGS_layers); ++l) {
    for (Shape s : {Shape{h, h}, Shape{kv, h}, Shape{kv, h}, Shape{h, h}, Shape{inter, h},
                    Shape{inter, h}, Shape{h, inter}}) {
      shapes.push_back(s);
    }
  }
  shapes.push_back({absl::GetFlag(FLAGS_vocab), h});
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.0f, 0.02f);

  std::vector<Format> formats(4);
  formats[0].name = "f32";
  formats[1].name = "bf16";
  formats[2].name = "q8";
  formats[3].name = "q4";
  int64_t max_dim = 0;
  for (const Shape& s : shapes) {
    max_dim = std::max({max_dim, s.rows, s.cols});
    std::vector<float> m(s.rows * s.cols);
    for (float& v : m) v = dist(rng);
    const int64_t bpr = w::BlocksPerRow(s.cols);
    std::vector<uint8_t> f32(m.size() * 4), bf16(m.size() * 2),
        q8(s.rows * bpr * sizeof(w::BlockQ8)), q4(s.rows * bpr * sizeof(w::BlockQ4));
    std::memcpy(f32.data(), m.data(), f32.size());
    StoreAs(m.data(), DType::kBF16, bf16.data(), static_cast<int64_t>(m.size()));
    for (int64_t r = 0; r < s.rows; ++r) {
      const absl::Span<const float> row(m.data() + r * s.cols, s.cols);
      w::QuantizeRowQ8(row, reinterpret_cast<w::BlockQ8*>(q8.data()) + r * bpr);
      w::QuantizeRowQ4(row, reinterpret_cast<w::BlockQ4*>(q4.data()) + r * bpr);
    }
    for (auto [f, buf] : {std::pair{&formats[0], &f32}, std::pair{&formats[1], &bf16},
                          std::pair{&formats[2], &q8}, std::pair{&formats[3], &q4}}) {
      f->bytes += buf->size();
      f->mats.push_back(std::move(*buf));
    }
  }
  formats[0].run = [](const Shape& s, const void* m, const float* x, float* y) {
    MatVecRows(m, DType::kF32, s.cols, x, nullptr, y, 0, s.rows);
  };
  formats[1].run = [](const Shape& s, const void* m, const float* x, float* y) {
    MatVecRows(m, DType::kBF16, s.cols, x, nullptr, y, 0, s.rows);
  };
  formats[2].run = [](const Shape& s, const void* m, const float* x, float* y) {
    MatVecQ8Rows(static_cast<const w::BlockQ8*>(m), s.cols, x, y, 0, s.rows);
  };
  formats[3].run = [](const Shape& s, const void* m, const float* x, float* y) {
    MatVecQ4Rows(static_cast<const w::BlockQ4*>(m), s.cols, x, y, 0, s.rows);
  };
  std::vector<float> x(max_dim), y(max_dim);
  for (float& v : x) v = dist(rng) * 50;

  std::printf("%s\n", CpuSummary().c_str());
  std::printf(
      "matrices: %zu (layers %d + lm_head), 1 thread, thread CPU time, median of %d rounds\n",
      shapes.size(), absl::GetFlag(FLAGS_layers), absl::GetFlag(FLAGS_rounds));
  std::printf("| weights | MB | ms per token | GB/s | tokens/s | speed vs f32 |\n");
  std::printf("| --- | --- | --- | --- | --- | --- |\n");
  std::vector<std::vector<double>> times(formats.size());
  for (int round = 0; round < absl::GetFlag(FLAGS_rounds); ++round) {
    for (size_t f = 0; f < formats.size(); ++f) {  // interleaved
      const double t0 = ThreadSeconds();
      for (size_t i = 0; i < shapes.size(); ++i) {
        formats[f].run(shapes[i], formats[f].mats[i].data(), x.data(), y.data());
      }
      times[f].push_back(ThreadSeconds() - t0);
    }
  }
  std::vector<double> med(formats.size());
  for (size_t f = 0; f < formats.size(); ++f) {
    std::sort(times[f].begin(), times[f].end());
    med[f] = times[f][times[f].size() / 2];
  }
  for (size_t f = 0; f < formats.size(); ++f) {
    std::printf("| %s | %.1f | %.2f | %.2f | %.1f | %.2fx |\n", formats[f].name.c_str(),
                formats[f].bytes / 1e6, med[f] * 1e3, formats[f].bytes / med[f] / 1e9, 1.0 / med[f],
                med[0] / med[f]);
  }
  return 0;
}

}  // namespace
}  // namespace qkvshare::agents::kernels

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return qkvshare::agents::kernels::Main();
}
