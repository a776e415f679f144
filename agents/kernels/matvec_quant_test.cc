#include "agents/kernels/matvec_quant.h"

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "agents/weights/block_formats.h"
#include "base/cpu_info.h"
#include "gtest/gtest.h"
#include "hwy/targets.h"

namespace qkvshare::agents::kernels {
namespace {

using weights::BlockQ4;
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

template <class Block, class Quantize, class Dequantize, class MatVec, class DequantRows>
void CheckFormat(Quantize quantize, Dequantize dequantize, MatVec matvec, DequantRows rows_fn) {
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
    for (const std::string& target : TargetNames()) {
      ASSERT_TRUE(ForceSimdTarget(target).ok()) << target;
      SCOPED_TRACE(target + " rows " + std::to_string(rows) + " cols " + std::to_string(cols));
      // Dequantization: bit-identical to the scalar reference.
      std::vector<float> deq(rows * cols, -1.0f);
      rows_fn(blocks.data(), cols, 0, rows, deq.data());
      EXPECT_EQ(deq, ref_w);
      // Matrix-vector: within fp32 summation error of a float64 reference;
      // split in two row ranges as threads would.
      std::vector<float> y(rows, NAN);
      matvec(blocks.data(), cols, x.data(), y.data(), 0, rows / 2);
      matvec(blocks.data(), cols, x.data(), y.data(), rows / 2, rows);
      for (int64_t r = 0; r < rows; ++r) {
        double ref = 0, mag = 0;
        for (int64_t c = 0; c < cols; ++c) {
          ref += double{ref_w[r * cols + c]} * x[c];
          mag += std::fabs(double{ref_w[r * cols + c]} * x[c]);
        }
        EXPECT_NEAR(y[r], ref, 1e-5 * mag + 1e-6) << "row " << r;
      }
    }
  }
}

TEST_F(MatVecQuantTest, Q8MatchesReferenceOnEveryTarget) {
  CheckFormat<BlockQ8>(weights::QuantizeRowQ8, weights::DequantizeRowQ8, MatVecQ8Rows,
                       DequantizeQ8Rows);
}

TEST_F(MatVecQuantTest, Q4MatchesReferenceOnEveryTarget) {
  CheckFormat<BlockQ4>(weights::QuantizeRowQ4, weights::DequantizeRowQ4, MatVecQ4Rows,
                       DequantizeQ4Rows);
}

TEST_F(MatVecQuantTest, RunsOnMoreThanOneTarget) {
  // This binary has Highway's dynamic dispatch: at least the best target and
  // the portable fallback are usable.
  EXPECT_GE(TargetNames().size(), 2u) << CpuSummary();
  std::printf("%s\n", CpuSummary().c_str());
}

}  // namespace
}  // namespace qkvshare::agents::kernels
