#include "agents/kernels/matvec_quant.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "agents/weights/block_formats.h"
#include "base/cpu_info.h"
#include "gtest/gtest.h"
#include "hwy/targets.h"
#include "quant/fp16.h"

namespace qkvshare::agents::kernels {
namespace {

using weights::BlockQ4;
using weights::BlockQ6;
using weights::BlockQ8;
using weights::BlocksPerRow;

// Restores the best target after each test.
class MatVecQuantTest : public ::testing::Test {
 protected:
  void TearDown() override { ASSERT_TRUE(ForceSimdTarget("best").ok()); }
};

std::vector<float> Random(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

std::vector<std::string> TargetNames() {
  std::vector<std::string> names;
  for (int64_t t : UsableSimdTargets()) names.push_back(hwy::TargetName(t));
  return names;
}

// The integer terms of block b of a row against the quantized activations:
// sum_k code_k * xq_k (exact), and the block's scale and minimum.
struct BlockTerms {
  int64_t dot = 0;
  double d = 0, m = 0;
};
BlockTerms Terms(const BlockQ8& blk, const int8_t* xq) {
  BlockTerms t;
  for (int k = 0; k < weights::kBlockSize; ++k) t.dot += int64_t{blk.qs[k]} * xq[k];
  t.d = quant::HalfToFloat(blk.d);
  return t;
}
BlockTerms Terms(const BlockQ4& blk, const int8_t* xq) {
  BlockTerms t;
  for (int k = 0; k < weights::kBlockSize; ++k) t.dot += int64_t{weights::Q4Code(blk, k)} * xq[k];
  t.d = quant::HalfToFloat(blk.d);
  t.m = quant::HalfToFloat(blk.m);
  return t;
}

BlockTerms Terms(const BlockQ6& blk, const int8_t* xq) {
  BlockTerms t;
  for (int k = 0; k < weights::kBlockSize; ++k) {
    t.dot += int64_t{weights::Q6Code(blk, k) - 32} * xq[k];
  }
  t.d = quant::HalfToFloat(blk.d);
  return t;
}

template <class Block, class Quantize, class Dequantize, class MatVec, class DequantRows>
void CheckFormat(Quantize quantize, Dequantize dequantize, MatVec matvec, DequantRows rows_fn,
                 bool int8_activations) {
  for (const auto& [rows, cols] :
       std::vector<std::pair<int64_t, int64_t>>{{1, 32}, {7, 64}, {9, 172}, {13, 200}, {64, 768}}) {
    const std::vector<float> w = Random(rows * cols, static_cast<uint32_t>(rows * 131 + cols));
    const std::vector<float> x = Random(cols, static_cast<uint32_t>(cols));
    const int64_t bpr = BlocksPerRow(cols);
    std::vector<Block> blocks(rows * bpr);
    std::vector<float> ref_w(rows * cols);
    for (int64_t r = 0; r < rows; ++r) {
      quantize(absl::MakeConstSpan(w.data() + r * cols, cols), blocks.data() + r * bpr);
      dequantize(blocks.data() + r * bpr, cols, ref_w.data() + r * cols);
    }
    // The activation quantizer: codes within [-127, 127], the block's
    // maximum magnitude on +-127, each value within dx / 2.
    std::vector<int8_t> xq(bpr * weights::kBlockSize);
    std::vector<float> dx(bpr), sums(bpr);
    QuantizeActivationsQ8(x.data(), cols, xq.data(), dx.data(), sums.data());
    for (int64_t b = 0; b < bpr; ++b) {
      int amax = 0;
      double sum = 0;
      for (int64_t k = 0; k < weights::kBlockSize; ++k) {
        const int64_t c = b * weights::kBlockSize + k;
        if (c >= cols) {
          EXPECT_EQ(xq[c], 0) << "padding " << c;
          continue;
        }
        amax = std::max(amax, std::abs(int{xq[c]}));
        EXPECT_LE(std::fabs(double{dx[b]} * xq[c] - x[c]), 0.5001 * dx[b]) << "column " << c;
        sum += x[c];
      }
      EXPECT_EQ(amax, 127) << "block " << b;
      EXPECT_NEAR(sums[b], sum, 1e-5 * (1 + std::fabs(sum)));
    }
    for (const std::string& target : TargetNames()) {
      ASSERT_TRUE(ForceSimdTarget(target).ok()) << target;
      SCOPED_TRACE(target + " rows " + std::to_string(rows) + " cols " + std::to_string(cols));
      // Dequantization: bit-identical to the scalar reference.
      std::vector<float> deq(rows * cols, -1.0f);
      rows_fn(blocks.data(), cols, 0, rows, deq.data());
      EXPECT_EQ(deq, ref_w);
      // Matrix-vector, split in two row ranges as threads would. Float
      // widening (q8): within fp32 summation error of the float64 product of
      // the dequantized weights and x. Integer (q4): (1) within fp32
      // summation error of the float64 value of the same integer terms; (2)
      // within the activation rounding of the exact product.
      std::vector<float> y(rows, NAN);
      matvec(blocks.data(), cols, x.data(), y.data(), 0, rows / 2);
      matvec(blocks.data(), cols, x.data(), y.data(), rows / 2, rows);
      for (int64_t r = 0; r < rows; ++r) {
        double ref = 0, mag = 0, rounding = 0, exact = 0;
        for (int64_t b = 0; b < bpr; ++b) {
          const BlockTerms t = Terms(blocks[r * bpr + b], &xq[b * weights::kBlockSize]);
          ref += t.d * dx[b] * static_cast<double>(t.dot) + t.m * sums[b];
          mag += std::fabs(t.d * dx[b] * static_cast<double>(t.dot)) + std::fabs(t.m * sums[b]);
          for (int64_t c = b * weights::kBlockSize;
               c < std::min(cols, (b + 1) * weights::kBlockSize); ++c) {
            rounding += 0.5 * dx[b] * std::fabs(double{ref_w[r * cols + c]} - t.m);
            exact += double{ref_w[r * cols + c]} * x[c];
          }
        }
        if (int8_activations) {
          EXPECT_NEAR(y[r], ref, 1e-5 * mag + 1e-6) << "row " << r;
          EXPECT_NEAR(y[r], exact, rounding * 1.001 + 1e-5 * mag + 1e-6) << "row " << r;
        } else {
          double exact_mag = 0;
          for (int64_t c = 0; c < cols; ++c)
            exact_mag += std::fabs(double{ref_w[r * cols + c]} * x[c]);
          EXPECT_NEAR(y[r], exact, 1e-5 * exact_mag + 1e-6) << "row " << r;
        }
      }
    }
  }
}

TEST_F(MatVecQuantTest, Q8MatchesReferenceOnEveryTarget) {
  CheckFormat<BlockQ8>(weights::QuantizeRowQ8, weights::DequantizeRowQ8, MatVecQ8Rows,
                       DequantizeQ8Rows, /*int8_activations=*/false);
}

TEST_F(MatVecQuantTest, Q4MatchesReferenceOnEveryTarget) {
  CheckFormat<BlockQ4>(weights::QuantizeRowQ4, weights::DequantizeRowQ4, MatVecQ4Rows,
                       DequantizeQ4Rows, /*int8_activations=*/true);
}

TEST_F(MatVecQuantTest, Q6MatchesReferenceOnEveryTarget) {
  CheckFormat<BlockQ6>(weights::QuantizeRowQ6, weights::DequantizeRowQ6, MatVecQ6Rows,
                       DequantizeQ6Rows, /*int8_activations=*/false);
}

TEST_F(MatVecQuantTest, RunsOnMoreThanOneTarget) {
  // This binary has Highway's dynamic dispatch: at least the best target and
  // the portable fallback are usable.
  EXPECT_GE(TargetNames().size(), 2u) << CpuSummary();
  std::printf("%s\n", CpuSummary().c_str());
}

}  // namespace
}  // namespace qkvshare::agents::kernels
