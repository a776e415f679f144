// Every kernel of matvec.h on every SIMD target this binary has and this CPU
// supports (best first, down to EMU128), against float64 references.
#include "agents/kernels/matvec.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "base/cpu_info.h"
#include "gtest/gtest.h"
#include "hwy/targets.h"

namespace qkvshare::agents::kernels {
namespace {

// The compiler's own half type (GCC's C++ front end has _Float16 on x86 and
// __fp16 on aarch64); its conversions round to nearest even.
#if defined(__aarch64__)
using Half = __fp16;
#else
using Half = _Float16;
#endif

// Random values stored as f32, bf16 and f16, plus the exact value each
// stored form holds.
struct Matrix {
  std::vector<float> f32;
  std::vector<uint16_t> bf16;
  std::vector<Half> f16;
  const void* data(DType t) const {
    switch (t) {
      case DType::kF32:
        return f32.data();
      case DType::kBF16:
        return bf16.data();
      case DType::kF16:
        return f16.data();
    }
    return nullptr;
  }
  double at(DType t, int64_t i) const {
    switch (t) {
      case DType::kF32:
        return f32[i];
      case DType::kBF16:
        return Bf16ToFloat(bf16[i]);
      case DType::kF16:
        return static_cast<float>(f16[i]);
    }
    return 0;
  }
};

Matrix RandomMatrix(int64_t n, std::mt19937& rng, float scale = 1.0f) {
  std::uniform_real_distribution<float> u(-scale, scale);
  Matrix m;
  for (int64_t i = 0; i < n; ++i) {
    const float v = u(rng);
    m.f32.push_back(v);
    m.bf16.push_back(FloatToBf16(v));
    m.f16.push_back(static_cast<Half>(v));
  }
  return m;
}

constexpr DType kDTypes[] = {DType::kF32, DType::kBF16, DType::kF16};

// Param: a Highway target bit; the test forces dispatch to it.
class KernelsTest : public ::testing::TestWithParam<int64_t> {
 protected:
  void SetUp() override {
    ASSERT_TRUE(ForceSimdTarget(hwy::TargetName(GetParam())).ok());
    ASSERT_EQ(BestSimdTargetName(), hwy::TargetName(GetParam()));
  }
  void TearDown() override { ASSERT_TRUE(ForceSimdTarget("best").ok()); }
};

TEST_P(KernelsTest, MatVecMatchesFloat64Reference) {
  std::mt19937 rng(7);
  for (DType t : kDTypes) {
    for (int64_t cols : {1, 7, 16, 33, 64, 100, 768}) {
      for (int64_t rows : {1, 5, 9, 40}) {
        Matrix w = RandomMatrix(rows * cols, rng);
        Matrix x = RandomMatrix(cols, rng);
        Matrix b = RandomMatrix(rows, rng);
        for (bool with_bias : {false, true}) {
          std::vector<float> y(rows, -7.0f);
          // Two disjoint ranges, as two threads would do.
          const int64_t mid = rows / 2;
          const float* bias = with_bias ? b.f32.data() : nullptr;
          MatVecRows(w.data(t), t, cols, x.f32.data(), bias, y.data(), 0, mid);
          MatVecRows(w.data(t), t, cols, x.f32.data(), bias, y.data(), mid, rows);
          for (int64_t r = 0; r < rows; ++r) {
            double want = with_bias ? b.f32[r] : 0.0;
            for (int64_t c = 0; c < cols; ++c) want += w.at(t, r * cols + c) * x.f32[c];
            ASSERT_NEAR(y[r], want, 1e-5 * (1 + std::sqrt(static_cast<double>(cols))))
                << DTypeName(t) << " rows " << rows << " cols " << cols << " row " << r;
          }
        }
      }
    }
  }
}

TEST_P(KernelsTest, MatMulRowsMatchesFloat64Reference) {
  std::mt19937 rng(17);
  for (DType t : kDTypes) {
    for (int64_t n : {1, 2, 9}) {
      const int64_t rows = 13, cols = 70, x_stride = 75, y_stride = 20;
      Matrix w = RandomMatrix(rows * cols, rng), x = RandomMatrix(n * x_stride, rng);
      Matrix b = RandomMatrix(rows, rng);
      std::vector<float> y(n * y_stride, -7.0f);
      MatMulRows(w.data(t), t, cols, x.f32.data(), x_stride, n, b.f32.data(), y.data(), y_stride, 0,
                 6);
      MatMulRows(w.data(t), t, cols, x.f32.data(), x_stride, n, b.f32.data(), y.data(), y_stride, 6,
                 rows);
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t r = 0; r < y_stride; ++r) {
          if (r >= rows) {
            ASSERT_EQ(y[i * y_stride + r], -7.0f);  // outside the rows: untouched
            continue;
          }
          double want = b.f32[r];
          for (int64_t c = 0; c < cols; ++c)
            want += w.at(t, r * cols + c) * x.f32[i * x_stride + c];
          ASSERT_NEAR(y[i * y_stride + r], want, 1e-4) << DTypeName(t) << " n " << n;
        }
      }
    }
  }
}

// Every chunk size of the short-chunk kernel (register tiles of 4 rows x up
// to 6 tokens, tokens split into near-equal groups), ragged column counts
// (vector tails), row counts and thread ranges that are not multiples of 4.
TEST_P(KernelsTest, MatMulRowsEveryChunkSizeMatchesFloat64Reference) {
  std::mt19937 rng(19);
  for (DType t : kDTypes) {
    for (int64_t cols : {1, 7, 16, 33, 70, 100}) {
      const int64_t rows = 13, x_stride = cols + 3, y_stride = rows + 2;
      Matrix w = RandomMatrix(rows * cols, rng), b = RandomMatrix(rows, rng);
      for (int64_t n = 1; n <= 16; ++n) {
        Matrix x = RandomMatrix(n * x_stride, rng);
        for (bool with_bias : {false, true}) {
          const float* bias = with_bias ? b.f32.data() : nullptr;
          std::vector<float> y(n * y_stride, -7.0f);
          // Ranges as threads would get them: 5 + 6 + 2 rows.
          for (auto [r0, r1] : {std::pair<int64_t, int64_t>{0, 5}, {5, 11}, {11, rows}}) {
            MatMulRows(w.data(t), t, cols, x.f32.data(), x_stride, n, bias, y.data(), y_stride, r0,
                       r1);
          }
          for (int64_t i = 0; i < n; ++i) {
            for (int64_t r = 0; r < y_stride; ++r) {
              if (r >= rows) {
                ASSERT_EQ(y[i * y_stride + r], -7.0f);  // outside the rows: untouched
                continue;
              }
              double want = with_bias ? b.f32[r] : 0.0;
              for (int64_t c = 0; c < cols; ++c)
                want += w.at(t, r * cols + c) * x.f32[i * x_stride + c];
              ASSERT_NEAR(y[i * y_stride + r], want, 1e-5 * (1 + std::sqrt(double(cols))))
                  << DTypeName(t) << " cols " << cols << " n " << n << " token " << i << " row "
                  << r;
            }
          }
        }
      }
    }
  }
}

// A chunk's products do not depend on how its rows are split (threads):
// every output is computed alike in full and partial row tiles.
TEST_P(KernelsTest, MatMulRowsChunkBitsIndependentOfRowRanges) {
  std::mt19937 rng(29);
  for (DType t : kDTypes) {
    const int64_t rows = 23, cols = 77, n = 9;
    Matrix w = RandomMatrix(rows * cols, rng), x = RandomMatrix(n * cols, rng);
    std::vector<float> whole(n * rows), split(n * rows);
    MatMulRows(w.data(t), t, cols, x.f32.data(), cols, n, nullptr, whole.data(), rows, 0, rows);
    for (auto [r0, r1] : {std::pair<int64_t, int64_t>{0, 3}, {3, 10}, {10, 11}, {11, rows}}) {
      MatMulRows(w.data(t), t, cols, x.f32.data(), cols, n, nullptr, split.data(), rows, r0, r1);
    }
    for (int64_t i = 0; i < n * rows; ++i)
      ASSERT_EQ(whole[i], split[i]) << DTypeName(t) << " " << i;
  }
}

TEST_P(KernelsTest, RmsNormMatchesFloat64Reference) {
  std::vector<float> x = {3, -4, 0, 0}, w = {1, 2, 1, 1}, y(4);
  RmsNorm(x.data(), w.data(), 0.0, 4, y.data());  // rms = sqrt(25 / 4) = 2.5
  EXPECT_FLOAT_EQ(y[0], 1.2f);
  EXPECT_FLOAT_EQ(y[1], -3.2f);
  std::mt19937 rng(3);
  for (int64_t n : {1, 5, 17, 64, 577}) {
    Matrix a = RandomMatrix(n, rng, 4.0f), g = RandomMatrix(n, rng);
    std::vector<float> out(n);
    RmsNorm(a.f32.data(), g.f32.data(), 1e-5, n, out.data());
    double ss = 0;
    for (float v : a.f32) ss += double{v} * v;
    const double inv = 1.0 / std::sqrt(ss / n + 1e-5);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_NEAR(out[i], a.f32[i] * inv * g.f32[i], 1e-5) << "n " << n << " i " << i;
    }
  }
}

TEST_P(KernelsTest, RopeMatchesFloat64Reference) {
  std::mt19937 rng(5);
  for (int64_t hd : {2, 8, 24, 64, 128}) {
    const int64_t heads = 3, half = hd / 2;
    Matrix v = RandomMatrix(heads * hd, rng, 2.0f);
    std::vector<float> cos(half), sin(half);
    for (int64_t i = 0; i < half; ++i) {
      const double angle = 17.0 / std::pow(10000.0, 2.0 * i / hd);
      cos[i] = static_cast<float>(std::cos(angle));
      sin[i] = static_cast<float>(std::sin(angle));
    }
    std::vector<float> got = v.f32;
    Rope(got.data(), heads, hd, cos.data(), sin.data(), 0.125f);
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < half; ++i) {
        const double x1 = v.f32[h * hd + i], x2 = v.f32[h * hd + half + i];
        ASSERT_NEAR(got[h * hd + i], (x1 * cos[i] - x2 * sin[i]) * 0.125, 1e-6) << hd;
        ASSERT_NEAR(got[h * hd + half + i], (x2 * cos[i] + x1 * sin[i]) * 0.125, 1e-6) << hd;
      }
    }
  }
}

TEST_P(KernelsTest, SwiGluSoftmaxAddMatchFloat64Reference) {
  std::mt19937 rng(9);
  for (int64_t n : {1, 3, 8, 31, 200}) {
    Matrix g = RandomMatrix(n, rng, 12.0f), u = RandomMatrix(n, rng, 3.0f);
    std::vector<float> out(n);
    SwiGlu(g.f32.data(), u.f32.data(), n, out.data());
    for (int64_t i = 0; i < n; ++i) {
      const double gi = g.f32[i];
      const double want = gi / (1.0 + std::exp(-gi)) * u.f32[i];
      ASSERT_NEAR(out[i], want, 2e-6 * (1 + std::fabs(want))) << "n " << n << " i " << i;
    }
    std::vector<float> p = g.f32;
    SoftmaxInPlace(p.data(), n);
    const double mx = *std::max_element(g.f32.begin(), g.f32.end());
    double sum = 0;
    for (float v : g.f32) sum += std::exp(v - mx);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_NEAR(p[i], std::exp(g.f32[i] - mx) / sum, 1e-6) << "n " << n << " i " << i;
    }
    std::vector<float> acc = g.f32;
    AddInPlace(acc.data(), u.f32.data(), n);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(acc[i], g.f32[i] + u.f32[i]);
  }
}

TEST_P(KernelsTest, StoreAsAndWidenRoundTrip) {
  std::vector<float> src = {1.0f, 1.00390625f, -2.5f};  // 1 + 2^-8 ties to even: 1
  std::vector<uint16_t> dst(3);
  StoreAs(src.data(), DType::kBF16, dst.data(), 3);
  EXPECT_EQ(dst, std::vector<uint16_t>({0x3f80, 0x3f80, 0xc020}));
  std::mt19937 rng(13);
  for (int64_t n : {1, 9, 16, 45}) {
    Matrix m = RandomMatrix(n, rng, 100.0f);
    // Edge cases of the f16 rounding: subnormals, ties, overflow.
    const float edges[] = {1e-6f, -6e-8f, 2.98023224e-8f, 3e-8f, 65519.0f, 65520.0f, -7e4f, 0.0f};
    for (int64_t i = 1; i < n && i <= 8; ++i) {
      m.f32[i] = edges[i - 1];
      m.bf16[i] = FloatToBf16(m.f32[i]);
      m.f16[i] = static_cast<Half>(m.f32[i]);
    }
    m.f32[0] = std::nanf("");
    std::vector<uint16_t> bf(n), hf(n);
    StoreAs(m.f32.data(), DType::kBF16, bf.data(), n);
    StoreAs(m.f32.data(), DType::kF16, hf.data(), n);
    std::vector<float> back(n);
    WidenToF32(bf.data(), DType::kBF16, back.data(), n);
    EXPECT_TRUE(std::isnan(back[0]));
    for (int64_t i = 1; i < n; ++i) {
      ASSERT_EQ(bf[i], FloatToBf16(m.f32[i])) << i;
      ASSERT_EQ(back[i], Bf16ToFloat(bf[i])) << i;
    }
    WidenToF32(hf.data(), DType::kF16, back.data(), n);
    EXPECT_TRUE(std::isnan(back[0]));
    for (int64_t i = 1; i < n; ++i) {
      ASSERT_EQ(back[i], static_cast<float>(m.f16[i])) << i;  // RNE, as the compiler's
    }
    WidenToF32(m.f32.data(), DType::kF32, back.data(), n);
    for (int64_t i = 1; i < n; ++i) ASSERT_EQ(back[i], m.f32[i]);
  }
}

TEST_P(KernelsTest, AttendQueryGroupMatchesFloat64Reference) {
  std::mt19937 rng(11);
  for (DType t : kDTypes) {
    for (int64_t hd : {8, 24, 64, 128}) {
      for (int64_t group : {1, 3, 6}) {
        for (int64_t ctx : {1, 2, 7, 300}) {
          Matrix k = RandomMatrix(ctx * hd, rng), v = RandomMatrix(ctx * hd, rng);
          Matrix q = RandomMatrix(group * hd, rng, 3.0f);  // peaked enough to matter
          std::vector<float> p(group * ctx), out(group * hd, 99.0f);
          AttendQueryGroup(q.f32.data(), group, k.data(t), v.data(t), t, ctx, hd, p.data(),
                           out.data());
          for (int64_t g = 0; g < group; ++g) {
            std::vector<double> s(ctx);
            double mx = -1e300, sum = 0;
            for (int64_t r = 0; r < ctx; ++r) {
              for (int64_t i = 0; i < hd; ++i) s[r] += q.f32[g * hd + i] * k.at(t, r * hd + i);
              mx = std::max(mx, s[r]);
            }
            for (double& e : s) sum += (e = std::exp(e - mx));
            for (int64_t r = 0; r < ctx; ++r) ASSERT_NEAR(p[g * ctx + r], s[r] / sum, 1e-5);
            for (int64_t i = 0; i < hd; ++i) {
              double want = 0;
              for (int64_t r = 0; r < ctx; ++r) want += s[r] / sum * v.at(t, r * hd + i);
              ASSERT_NEAR(out[g * hd + i], want, 1e-5)
                  << DTypeName(t) << " hd " << hd << " group " << group << " ctx " << ctx;
            }
          }
        }
      }
    }
  }
}

// Runs AttendChunk for `n` tokens after `ctx0` - 1 cached rows (group query
// heads of head_dim `hd`, cache dtype `t`) and checks every token's
// probabilities and output against an f64 reference over its causal context;
// probabilities past the chunk's last context and the gap between tokens'
// outputs are left alone.
void ExpectAttendChunkMatchesReference(DType t, int64_t hd, int64_t group, int64_t ctx0, int64_t n,
                                       std::mt19937& rng) {
  const int64_t ctx_max = ctx0 + n - 1;
  Matrix k = RandomMatrix(ctx_max * hd, rng), v = RandomMatrix(ctx_max * hd, rng);
  // Token stride wider than group * hd, as in the decode's qkv rows.
  const int64_t q_stride = group * hd + 5, out_stride = group * hd + 3;
  Matrix q = RandomMatrix(n * q_stride, rng, 3.0f);
  const int64_t p_stride = ctx_max + 2;
  std::vector<float> p(n * group * p_stride, -7.0f), out(n * out_stride, 99.0f);
  AttendChunk(q.f32.data(), q_stride, n, group, k.data(t), v.data(t), t, ctx0, hd, p.data(),
              p_stride, out.data(), out_stride);
  for (int64_t tok = 0; tok < n; ++tok) {
    const int64_t ctx = ctx0 + tok;
    for (int64_t g = 0; g < group; ++g) {
      const float* qg = q.f32.data() + tok * q_stride + g * hd;
      const float* pg = p.data() + (tok * group + g) * p_stride;
      std::vector<double> s(ctx);
      double mx = -1e300, sum = 0;
      for (int64_t r = 0; r < ctx; ++r) {
        for (int64_t i = 0; i < hd; ++i) s[r] += qg[i] * k.at(t, r * hd + i);
        mx = std::max(mx, s[r]);
      }
      for (double& e : s) sum += (e = std::exp(e - mx));
      for (int64_t r = 0; r < ctx; ++r) ASSERT_NEAR(pg[r], s[r] / sum, 1e-5);
      for (int64_t r = ctx_max; r < p_stride; ++r) ASSERT_EQ(pg[r], -7.0f);
      for (int64_t i = 0; i < hd; ++i) {
        double want = 0;
        for (int64_t r = 0; r < ctx; ++r) want += s[r] / sum * v.at(t, r * hd + i);
        ASSERT_NEAR(out[tok * out_stride + g * hd + i], want, 1e-5)
            << DTypeName(t) << " hd " << hd << " group " << group << " ctx0 " << ctx0 << " n " << n
            << " token " << tok;
      }
    }
    for (int64_t i = group * hd; i < out_stride; ++i) {
      ASSERT_EQ(out[tok * out_stride + i], 99.0f);
    }
  }
}

TEST_P(KernelsTest, AttendChunkMatchesFloat64ReferencePerToken) {
  std::mt19937 rng(12);
  for (DType t : kDTypes) {
    for (int64_t hd : {24, 64}) {
      for (int64_t group : {1, 3, 6}) {
        // ctx0 / n pairs whose causal ranges start, cross and end on the
        // kernel's 64-row tiles.
        for (auto [ctx0, n] : std::vector<std::pair<int64_t, int64_t>>{
                 {1, 1}, {1, 9}, {60, 9}, {64, 1}, {130, 16}, {300, 3}}) {
          ExpectAttendChunkMatchesReference(t, hd, group, ctx0, n, rng);
          if (HasFatalFailure()) return;
        }
      }
    }
  }
}

// Every chunk size (query blocks of up to 6 tiled against 4 cache rows,
// token ranges crossing the 64-row tiles) and head sizes with vector tails.
TEST_P(KernelsTest, AttendChunkEveryChunkSizeMatchesFloat64Reference) {
  std::mt19937 rng(21);
  for (DType t : kDTypes) {
    for (int64_t hd : {24, 40, 64}) {
      for (int64_t group : {1, 3}) {
        for (int64_t ctx0 : {1, 67}) {
          for (int64_t n = 1; n <= 16; ++n) {
            ExpectAttendChunkMatchesReference(t, hd, group, ctx0, n, rng);
            if (HasFatalFailure()) return;
          }
        }
      }
    }
  }
}

// A chunk attends exactly as token-by-token decode: each token's queries
// give the same bits as AttendQueryGroup over that token's context (the
// q4 decode path rounds activations to int8, which would amplify any
// difference). Also across a chunk split into token ranges, as DecodeChunk
// splits it across threads.
TEST_P(KernelsTest, AttendChunkBitIdenticalToPerTokenDecode) {
  std::mt19937 rng(23);
  for (DType t : kDTypes) {
    for (int64_t hd : {40, 64}) {
      const int64_t group = 3, ctx0 = 70, n = 11, ctx_max = ctx0 + n - 1;
      Matrix k = RandomMatrix(ctx_max * hd, rng), v = RandomMatrix(ctx_max * hd, rng);
      Matrix q = RandomMatrix(n * group * hd, rng, 3.0f);
      std::vector<float> p(n * group * ctx_max), out(n * group * hd);
      AttendChunk(q.f32.data(), group * hd, n, group, k.data(t), v.data(t), t, ctx0, hd, p.data(),
                  ctx_max, out.data(), group * hd);
      // Two ranges: tokens [0, 4) and [4, n).
      std::vector<float> p2(p.size()), out2(out.size());
      for (auto [t0, t1] : {std::pair<int64_t, int64_t>{0, 4}, {4, n}}) {
        AttendChunk(q.f32.data() + t0 * group * hd, group * hd, t1 - t0, group, k.data(t),
                    v.data(t), t, ctx0 + t0, hd, p2.data() + t0 * group * ctx_max, ctx_max,
                    out2.data() + t0 * group * hd, group * hd);
      }
      for (int64_t tok = 0; tok < n; ++tok) {
        const int64_t ctx = ctx0 + tok;
        std::vector<float> pd(group * ctx), od(group * hd);
        AttendQueryGroup(q.f32.data() + tok * group * hd, group, k.data(t), v.data(t), t, ctx, hd,
                         pd.data(), od.data());
        for (int64_t g = 0; g < group; ++g) {
          for (int64_t r = 0; r < ctx; ++r) {
            ASSERT_EQ(p[(tok * group + g) * ctx_max + r], pd[g * ctx + r]) << DTypeName(t);
            ASSERT_EQ(p2[(tok * group + g) * ctx_max + r], pd[g * ctx + r]) << DTypeName(t);
          }
        }
        for (int64_t i = 0; i < group * hd; ++i) {
          ASSERT_EQ(out[tok * group * hd + i], od[i]) << DTypeName(t) << " token " << tok;
          ASSERT_EQ(out2[tok * group * hd + i], od[i]) << DTypeName(t) << " token " << tok;
        }
      }
    }
  }
}

TEST(KernelsTargets, EveryUsableTargetIncludingThePortableOneIsTested) {
  const std::vector<int64_t> targets = UsableSimdTargets();
  std::string names;
  for (int64_t t : targets) names += std::string(hwy::TargetName(t)) + " ";
  std::printf("kernel targets tested: %s\n", names.c_str());
  ASSERT_FALSE(targets.empty());
  // The portable fallback: EMU128, or SCALAR where Highway marks EMU128
  // broken for the compiler (GCC 12 here). Only x86 compiles one in: on
  // aarch64 NEON is the baseline and no portable target is built.
  if ((HWY_TARGETS & (HWY_EMU128 | HWY_SCALAR)) == 0) return;
  const bool has_emu128 = std::count(targets.begin(), targets.end(), int64_t{HWY_EMU128}) > 0;
  const bool has_scalar = std::count(targets.begin(), targets.end(), int64_t{HWY_SCALAR}) > 0;
  EXPECT_TRUE(has_emu128 || has_scalar) << names;
}

INSTANTIATE_TEST_SUITE_P(EveryTarget, KernelsTest, ::testing::ValuesIn(UsableSimdTargets()),
                         [](const ::testing::TestParamInfo<int64_t>& info) {
                           return std::string(hwy::TargetName(info.param));
                         });

}  // namespace
}  // namespace qkvshare::agents::kernels
