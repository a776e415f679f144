// matvec_quant_bench: single-token decode matrix-vector throughput of the
// q8 / q4 / q6 block kernels (matvec_quant.h) against the f32 / bf16 kernels
// (matvec.h), one thread, over all matrices of a model shape (default
// small-100m: 12 layers of q/k/v/o/gate/up/down + the 32000 x 768 lm_head),
// so the weights stream from DRAM as in decode; with the q4 model's lm_head
// in q8 (the policy before q6) and q6 (the runtime's); and the lm_head alone
// in bf16 / q8 / q6 with the last-level cache evicted before each pass.
// Prints the CPU and SIMD target, the median of --rounds rounds (all rows
// interleaved in each round), and ratios against f32 (lm_head: q8) measured
// in the same run. Times are the thread's CPU time (CLOCK_THREAD_CPUTIME_ID), so
// that a shared, loaded machine does not count the time it was descheduled.
//
//   bazel run -c opt //agents/kernels:matvec_quant_bench -- --rounds=5
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <ctime>
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

enum Encoding { kF32, kBF16, kQ8, kQ4, kQ6, kEncodings };
constexpr const char* kEncodingNames[kEncodings] = {"f32", "bf16", "q8", "q4", "q6"};

// One matrix in every encoding.
struct Matrix {
  Shape shape;
  std::vector<uint8_t> data[kEncodings];
};

void Run(Encoding e, const Matrix& m, const float* x, float* y) {
  const Shape& s = m.shape;
  const void* p = m.data[e].data();
  switch (e) {
    case kF32:
      MatVecRows(p, DType::kF32, s.cols, x, nullptr, y, 0, s.rows);
      return;
    case kBF16:
      MatVecRows(p, DType::kBF16, s.cols, x, nullptr, y, 0, s.rows);
      return;
    case kQ8:
      MatVecQ8Rows(static_cast<const w::BlockQ8*>(p), s.cols, x, y, 0, s.rows);
      return;
    case kQ4:
      MatVecQ4Rows(static_cast<const w::BlockQ4x8*>(p), s.cols, x, y, 0, s.rows);
      return;
    case kQ6:
      MatVecQ6Rows(static_cast<const w::BlockQ6x8*>(p), s.cols, x, y, 0, s.rows);
      return;
    case kEncodings:
      return;
  }
}

// A row of a table: matrices [first, matrices.size()) with the layers' in
// `layers` and the lm_head (the last matrix) in `head`.
struct Row {
  std::string name;
  Encoding layers, head;
  bool head_only = false;
  size_t bytes = 0;
  std::vector<double> times;
};

// Streams through `evict` (larger than the last-level cache) so that the
// next timed pass reads its weights from DRAM, as in decode, where the other
// matrices of the model evict them.
void Evict(std::vector<uint8_t>& evict) {
  for (size_t i = 0; i < evict.size(); i += 64) evict[i] += 1;
}

void PrintTable(const std::vector<Row>& rows, size_t ref) {
  std::printf("| weights | MB | ms per token | GB/s | tokens/s | speed vs %s |\n",
              rows[ref].name.c_str());
  std::printf("| --- | --- | --- | --- | --- | --- |\n");
  std::vector<double> med(rows.size());
  for (size_t f = 0; f < rows.size(); ++f) {
    std::vector<double> t = rows[f].times;
    std::sort(t.begin(), t.end());
    med[f] = t[t.size() / 2];
  }
  for (size_t f = 0; f < rows.size(); ++f) {
    std::printf("| %s | %.1f | %.3f | %.2f | %.1f | %.2fx |\n", rows[f].name.c_str(),
                rows[f].bytes / 1e6, med[f] * 1e3, rows[f].bytes / med[f] / 1e9, 1.0 / med[f],
                med[ref] / med[f]);
  }
}

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

  std::vector<Matrix> mats;
  int64_t max_dim = 0;
  for (const Shape& s : shapes) {
    max_dim = std::max({max_dim, s.rows, s.cols});
    std::vector<float> m(s.rows * s.cols);
    for (float& v : m) v = dist(rng);
    const int64_t bpr = w::BlocksPerRow(s.cols);
    Matrix mat;
    mat.shape = s;
    mat.data[kF32].resize(m.size() * 4);
    mat.data[kBF16].resize(m.size() * 2);
    mat.data[kQ8].resize(s.rows * bpr * sizeof(w::BlockQ8));
    mat.data[kQ4].resize(w::Q4Groups(s.rows) * bpr * sizeof(w::BlockQ4x8));  // zeros
    mat.data[kQ6].resize(w::Q4Groups(s.rows) * bpr * sizeof(w::BlockQ6x8));  // zeros
    std::memcpy(mat.data[kF32].data(), m.data(), mat.data[kF32].size());
    StoreAs(m.data(), DType::kBF16, mat.data[kBF16].data(), static_cast<int64_t>(m.size()));
    for (int64_t r = 0; r < s.rows; ++r) {
      const absl::Span<const float> row(m.data() + r * s.cols, s.cols);
      w::QuantizeRowQ8(row, reinterpret_cast<w::BlockQ8*>(mat.data[kQ8].data()) + r * bpr);
      // q4 / q6: the 8-row groups the runtime repacks its matrices into.
      std::vector<w::BlockQ4> q4(bpr);
      w::QuantizeRowQ4(row, q4.data());
      auto* groups = reinterpret_cast<w::BlockQ4x8*>(mat.data[kQ4].data());
      for (int64_t b = 0; b < bpr; ++b) {
        w::SetQ4x8Row(q4[b], static_cast<int>(r % w::kQ4GroupRows),
                      groups[r / w::kQ4GroupRows * bpr + b]);
      }
      std::vector<w::BlockQ6> q6(bpr);
      w::QuantizeRowQ6(row, q6.data());
      auto* groups6 = reinterpret_cast<w::BlockQ6x8*>(mat.data[kQ6].data());
      for (int64_t b = 0; b < bpr; ++b) {
        w::SetQ6x8Row(q6[b], static_cast<int>(r % w::kQ4GroupRows),
                      groups6[r / w::kQ4GroupRows * bpr + b]);
      }
    }
    mats.push_back(std::move(mat));
  }
  std::vector<float> x(max_dim), y(max_dim);
  for (float& v : x) v = dist(rng) * 50;
  std::vector<uint8_t> evict(size_t{128} << 20);

  // Table 1: every matrix in one encoding; then the q4 model with its
  // lm_head in q8 (the policy before q6) and in q6 (the runtime's policy).
  std::vector<Row> model_rows;
  for (Encoding e : {kF32, kBF16, kQ8, kQ4, kQ6}) model_rows.push_back({kEncodingNames[e], e, e});
  model_rows.push_back({"q4 + lm_head q8", kQ4, kQ8});
  model_rows.push_back({"q4 + lm_head q6 (runtime q4)", kQ4, kQ6});
  // Table 2: the lm_head alone, read from DRAM (cache evicted before each
  // pass).
  std::vector<Row> head_rows;
  for (Encoding e : {kBF16, kQ8, kQ6}) {
    head_rows.push_back({std::string("lm_head ") + kEncodingNames[e], e, e, true});
  }
  for (std::vector<Row>* rows : {&model_rows, &head_rows}) {
    for (Row& r : *rows) {
      for (size_t i = r.head_only ? mats.size() - 1 : 0; i < mats.size(); ++i) {
        r.bytes += mats[i].data[i + 1 == mats.size() ? r.head : r.layers].size();
      }
    }
  }
  for (int round = 0; round < absl::GetFlag(FLAGS_rounds); ++round) {
    for (std::vector<Row>* rows : {&model_rows, &head_rows}) {
      for (Row& r : *rows) {  // interleaved
        if (r.head_only) Evict(evict);
        const double t0 = ThreadSeconds();
        for (size_t i = r.head_only ? mats.size() - 1 : 0; i < mats.size(); ++i) {
          Run(i + 1 == mats.size() ? r.head : r.layers, mats[i], x.data(), y.data());
        }
        r.times.push_back(ThreadSeconds() - t0);
      }
    }
  }

  std::printf("%s\n", CpuSummary().c_str());
  std::printf(
      "matrices: %zu (layers %d + lm_head %lld x %lld), 1 thread, thread CPU time, median of %d "
      "rounds\n",
      shapes.size(), absl::GetFlag(FLAGS_layers), static_cast<long long>(shapes.back().rows),
      static_cast<long long>(shapes.back().cols), absl::GetFlag(FLAGS_rounds));
  PrintTable(model_rows, 0);
  std::printf("\nlm_head alone (last-level cache evicted before each pass):\n");
  PrintTable(head_rows, 1);
  return 0;
}

}  // namespace
}  // namespace qkvshare::agents::kernels

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return qkvshare::agents::kernels::Main();
}
