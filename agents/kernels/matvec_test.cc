#include "agents/kernels/matvec.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace qkvshare::agents::kernels {
namespace {

// Random matrix stored as `dtype` plus its exact float values.
struct Matrix {
  std::vector<float> f32;
  std::vector<uint16_t> bf16;
  std::vector<float> exact;  // the values the kernel sees
  const void* data(DType t) const {
    return t == DType::kF32 ? static_cast<const void*>(f32.data()) : bf16.data();
  }
};

Matrix RandomMatrix(int64_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  Matrix m;
  for (int64_t i = 0; i < n; ++i) {
    const float v = u(rng);
    m.f32.push_back(v);
    m.bf16.push_back(FloatToBf16(v));
  }
  return m;
}

class KernelsTest : public ::testing::TestWithParam<bool> {  // param: force scalar
 protected:
  void SetUp() override { ForceScalarKernelsForTest(GetParam()); }
  void TearDown() override { ForceScalarKernelsForTest(false); }
};

TEST_P(KernelsTest, MatVecMatchesFloat64Reference) {
  std::mt19937 rng(7);
  for (DType t : {DType::kF32, DType::kBF16}) {
    for (int64_t cols : {1, 7, 16, 33, 64, 100, 768}) {
      for (int64_t rows : {1, 5, 9, 40}) {
        Matrix w = RandomMatrix(rows * cols, rng);
        Matrix x = RandomMatrix(cols, rng);
        Matrix b = RandomMatrix(rows, rng);
        for (bool with_bias : {false, true}) {
          std::vector<float> y(rows, -7.0f);
          // Two disjoint ranges, as two threads would do.
          const int64_t mid = rows / 2;
          MatVecRows(w.data(t), t, cols, x.f32.data(), with_bias ? b.f32.data() : nullptr, y.data(),
                     0, mid);
          MatVecRows(w.data(t), t, cols, x.f32.data(), with_bias ? b.f32.data() : nullptr, y.data(),
                     mid, rows);
          for (int64_t r = 0; r < rows; ++r) {
            double want = with_bias ? b.f32[r] : 0.0;
            for (int64_t c = 0; c < cols; ++c) {
              const double wv =
                  t == DType::kF32 ? w.f32[r * cols + c] : Bf16ToFloat(w.bf16[r * cols + c]);
              want += wv * x.f32[c];
            }
            ASSERT_NEAR(y[r], want, 1e-5 * (1 + std::sqrt(static_cast<double>(cols))))
                << DTypeName(t) << " rows " << rows << " cols " << cols << " row " << r;
          }
        }
      }
    }
  }
}

TEST_P(KernelsTest, DotAxpyRmsNormStore) {
  std::mt19937 rng(3);
  for (DType t : {DType::kF32, DType::kBF16}) {
    for (int64_t n : {1, 8, 15, 16, 17, 64, 129}) {
      Matrix a = RandomMatrix(n, rng), b = RandomMatrix(n, rng);
      double dot = 0;
      std::vector<float> out(b.f32), want(n);
      for (int64_t i = 0; i < n; ++i) {
        const double av = t == DType::kF32 ? a.f32[i] : Bf16ToFloat(a.bf16[i]);
        dot += av * b.f32[i];
        want[i] = static_cast<float>(b.f32[i] + 0.5 * av);
      }
      EXPECT_NEAR(Dot(a.data(t), t, b.f32.data(), n), dot, 1e-5 * n);
      Axpy(0.5f, a.data(t), t, out.data(), n);
      for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(out[i], want[i], 1e-6);
    }
  }
  std::vector<float> x = {3, -4, 0, 0}, w = {1, 2, 1, 1}, y(4);
  RmsNorm(x.data(), w.data(), 0.0, 4, y.data());  // rms = sqrt(25 / 4) = 2.5
  EXPECT_FLOAT_EQ(y[0], 1.2f);
  EXPECT_FLOAT_EQ(y[1], -3.2f);
  std::vector<float> src = {1.0f, 1.00390625f, -2.5f};  // 1 + 2^-8 ties to even: 1
  std::vector<uint16_t> dst(3);
  StoreAs(src.data(), DType::kBF16, dst.data(), 3);
  EXPECT_EQ(dst, std::vector<uint16_t>({0x3f80, 0x3f80, 0xc020}));
}

INSTANTIATE_TEST_SUITE_P(ScalarAndSimd, KernelsTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "scalar" : "dispatched"; });

}  // namespace
}  // namespace qkvshare::agents::kernels
