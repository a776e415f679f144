#include "agents/kernels/matvec_quant.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
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

// q6 as the kernel splits it: codes 0..63 against xq, and the -32 as the
// block's offset m = -32 d (times the exact sum of x).
BlockTerms Terms(const BlockQ6& blk, const int8_t* xq) {
  BlockTerms t;
  for (int k = 0; k < weights::kBlockSize; ++k) t.dot += int64_t{weights::Q6Code(blk, k)} * xq[k];
  t.d = quant::HalfToFloat(blk.d);
  t.m = -32.0 * t.d;
  return t;
}

// What the kernels read: q8 the row-major blocks themselves; q4 / q6 the
// blocks repacked in groups of 8 rows (padded with zero blocks), as
// weights::QuantizedMatrix stores them.
template <class Block>
std::vector<char> Storage(const std::vector<Block>& blocks, int64_t rows, int64_t bpr) {
  std::vector<char> out(blocks.size() * sizeof(Block));
  std::memcpy(out.data(), blocks.data(), out.size());
  return out;
}
template <class Block, class Group>
std::vector<char> GroupStorage(const std::vector<Block>& blocks, int64_t rows, int64_t bpr) {
  std::vector<char> out(weights::Q4Groups(rows) * bpr * sizeof(Group), 0);
  auto* groups = reinterpret_cast<Group*>(out.data());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < bpr; ++b) {
      weights::SetGroupRow(blocks[r * bpr + b], static_cast<int>(r % weights::kQ4GroupRows),
                           groups[r / weights::kQ4GroupRows * bpr + b]);
    }
  }
  return out;
}
template <>
std::vector<char> Storage(const std::vector<BlockQ4>& blocks, int64_t rows, int64_t bpr) {
  return GroupStorage<BlockQ4, weights::BlockQ4x8>(blocks, rows, bpr);
}
template <>
std::vector<char> Storage(const std::vector<BlockQ6>& blocks, int64_t rows, int64_t bpr) {
  return GroupStorage<BlockQ6, weights::BlockQ6x8>(blocks, rows, bpr);
}

template <class Block, class Quantize, class Dequantize, class MatVec, class DequantRows>
void CheckFormat(Quantize quantize, Dequantize dequantize, MatVec matvec, DequantRows rows_fn,
                 bool int8_activations) {
  for (const auto& [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{
           {1, 32}, {7, 64}, {9, 172}, {13, 200}, {21, 96}, {64, 768}}) {
    const std::vector<float> w = Random(rows * cols, static_cast<uint32_t>(rows * 131 + cols));
    const std::vector<float> x = Random(cols, static_cast<uint32_t>(cols));
    const int64_t bpr = BlocksPerRow(cols);
    std::vector<Block> blocks(rows * bpr);
    std::vector<float> ref_w(rows * cols);
    for (int64_t r = 0; r < rows; ++r) {
      quantize(absl::MakeConstSpan(w.data() + r * cols, cols), blocks.data() + r * bpr);
      dequantize(blocks.data() + r * bpr, cols, ref_w.data() + r * cols);
    }
    const std::vector<char> storage = Storage(blocks, rows, bpr);
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
      rows_fn(storage.data(), cols, 0, rows, deq.data());
      EXPECT_EQ(deq, ref_w);
      // Matrix-vector, split in three row ranges as threads would (not on
      // q4's group boundaries, which the kernel must handle). Float
      // widening (q8): within fp32 summation error of the float64 product of
      // the dequantized weights and x. Integer (q4): (1) within fp32
      // summation error of the float64 value of the same integer terms; (2)
      // within the activation rounding of the exact product.
      std::vector<float> y(rows + 1, NAN);
      matvec(storage.data(), cols, x.data(), y.data(), 0, rows / 3);
      matvec(storage.data(), cols, x.data(), y.data(), rows / 3, rows / 2);
      matvec(storage.data(), cols, x.data(), y.data(), rows / 2, rows);
      EXPECT_TRUE(std::isnan(y[rows])) << "wrote past row_end";
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

// The kernels on the storage bytes of CheckFormat.
template <class Stored, class Fn>
auto OnStorage(Fn fn) {
  return [fn](const char* storage, auto... args) {
    return fn(reinterpret_cast<const Stored*>(storage), args...);
  };
}

TEST_F(MatVecQuantTest, Q8MatchesReferenceOnEveryTarget) {
  CheckFormat<BlockQ8>(weights::QuantizeRowQ8, weights::DequantizeRowQ8,
                       OnStorage<BlockQ8>(MatVecQ8Rows), OnStorage<BlockQ8>(DequantizeQ8Rows),
                       /*int8_activations=*/false);
}

TEST_F(MatVecQuantTest, Q4MatchesReferenceOnEveryTarget) {
  CheckFormat<BlockQ4>(weights::QuantizeRowQ4, weights::DequantizeRowQ4,
                       OnStorage<weights::BlockQ4x8>(MatVecQ4Rows),
                       OnStorage<weights::BlockQ4x8>(DequantizeQ4Rows),
                       /*int8_activations=*/true);
}

TEST_F(MatVecQuantTest, Q6MatchesReferenceOnEveryTarget) {
  CheckFormat<BlockQ6>(weights::QuantizeRowQ6, weights::DequantizeRowQ6,
                       OnStorage<weights::BlockQ6x8>(MatVecQ6Rows),
                       OnStorage<weights::BlockQ6x8>(DequantizeQ6Rows),
                       /*int8_activations=*/true);
}

// q4 and q6 dequantize whole groups of 8 rows: any row range (group-aligned
// or not) is bit-identical to the scalar reference on every target, and
// nothing outside the range is written.
template <class Block, class Group, class Quantize, class Dequantize, class DequantRows>
void CheckGroupRowRanges(Quantize quantize, Dequantize dequantize, DequantRows rows_fn) {
  const int64_t rows = 29, cols = 200, bpr = BlocksPerRow(cols);
  const std::vector<float> w = Random(rows * cols, 7);
  std::vector<Block> blocks(rows * bpr);
  std::vector<float> ref(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    quantize(absl::MakeConstSpan(w.data() + r * cols, cols), blocks.data() + r * bpr);
    dequantize(blocks.data() + r * bpr, cols, ref.data() + r * cols);
  }
  const std::vector<char> storage = Storage(blocks, rows, bpr);
  const auto* groups = reinterpret_cast<const Group*>(storage.data());
  for (const std::string& target : TargetNames()) {
    ASSERT_TRUE(ForceSimdTarget(target).ok()) << target;
    for (const auto& [begin, end] :
         std::vector<std::pair<int64_t, int64_t>>{{0, rows}, {8, 24}, {3, 13}, {27, 29}}) {
      SCOPED_TRACE(target + " rows " + std::to_string(begin) + ".." + std::to_string(end));
      std::vector<float> out((end - begin + 1) * cols, -7.0f);
      rows_fn(groups, cols, begin, end, out.data());
      for (int64_t i = 0; i < static_cast<int64_t>(out.size()); ++i) {
        const float expect = i < (end - begin) * cols ? ref[begin * cols + i] : -7.0f;
        ASSERT_EQ(out[i], expect) << "row " << begin + i / cols << " column " << i % cols;
      }
    }
  }
}

TEST_F(MatVecQuantTest, Q4RowRangesMatchReferenceOnEveryTarget) {
  CheckGroupRowRanges<BlockQ4, weights::BlockQ4x8>(weights::QuantizeRowQ4, weights::DequantizeRowQ4,
                                                   DequantizeQ4Rows);
}

TEST_F(MatVecQuantTest, Q6RowRangesMatchReferenceOnEveryTarget) {
  CheckGroupRowRanges<BlockQ6, weights::BlockQ6x8>(weights::QuantizeRowQ6, weights::DequantizeRowQ6,
                                                   DequantizeQ6Rows);
}

TEST_F(MatVecQuantTest, RunsOnMoreThanOneTarget) {
  // This binary has Highway's dynamic dispatch: at least the best target and
  // the portable fallback are usable.
  EXPECT_GE(TargetNames().size(), 2u) << CpuSummary();
  std::printf("%s\n", CpuSummary().c_str());
}

}  // namespace
}  // namespace qkvshare::agents::kernels
