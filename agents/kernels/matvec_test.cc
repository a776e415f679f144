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

TEST_P(KernelsTest, RmsNormAndStore) {
  std::vector<float> x = {3, -4, 0, 0}, w = {1, 2, 1, 1}, y(4);
  RmsNorm(x.data(), w.data(), 0.0, 4, y.data());  // rms = sqrt(25 / 4) = 2.5
  EXPECT_FLOAT_EQ(y[0], 1.2f);
  EXPECT_FLOAT_EQ(y[1], -3.2f);
  std::vector<float> src = {1.0f, 1.00390625f, -2.5f};  // 1 + 2^-8 ties to even: 1
  std::vector<uint16_t> dst(3);
  StoreAs(src.data(), DType::kBF16, dst.data(), 3);
  EXPECT_EQ(dst, std::vector<uint16_t>({0x3f80, 0x3f80, 0xc020}));
}

TEST_P(KernelsTest, AttendQueryGroupMatchesFloat64Reference) {
  std::mt19937 rng(11);
  for (DType t : {DType::kF32, DType::kBF16}) {
    for (int64_t hd : {8, 24, 64, 128}) {
      for (int64_t group : {1, 3, 6}) {
        for (int64_t ctx : {1, 2, 7, 300}) {
          Matrix k = RandomMatrix(ctx * hd, rng), v = RandomMatrix(ctx * hd, rng);
          Matrix q = RandomMatrix(group * hd, rng);
          for (float& e : q.f32) e *= 3.0f;  // peaked enough to matter
          std::vector<float> p(group * ctx), out(group * hd, 99.0f);
          AttendQueryGroup(q.f32.data(), group, k.data(t), v.data(t), t, ctx, hd, p.data(),
                           out.data());
          auto val = [&](const Matrix& m, int64_t i) {
            return t == DType::kF32 ? double{m.f32[i]} : double{Bf16ToFloat(m.bf16[i])};
          };
          for (int64_t g = 0; g < group; ++g) {
            std::vector<double> s(ctx);
            double mx = -1e300, sum = 0;
            for (int64_t r = 0; r < ctx; ++r) {
              for (int64_t i = 0; i < hd; ++i) s[r] += q.f32[g * hd + i] * val(k, r * hd + i);
              mx = std::max(mx, s[r]);
            }
            for (double& e : s) sum += (e = std::exp(e - mx));
            for (int64_t r = 0; r < ctx; ++r) ASSERT_NEAR(p[g * ctx + r], s[r] / sum, 1e-5);
            for (int64_t i = 0; i < hd; ++i) {
              double want = 0;
              for (int64_t r = 0; r < ctx; ++r) want += s[r] / sum * val(v, r * hd + i);
              ASSERT_NEAR(out[g * hd + i], want, 1e-5)
                  << DTypeName(t) << " hd " << hd << " group " << group << " ctx " << ctx;
            }
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(ScalarAndSimd, KernelsTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "scalar" : "dispatched"; });

}  // namespace
}  // namespace qkvshare::agents::kernels
