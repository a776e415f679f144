#include "agents/weights/quantized_matrix.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "base/dtype.h"
#include "gtest/gtest.h"

namespace qkvshare::agents::weights {
namespace {

TEST(WeightFormatTest, ParsesEveryNameAndRejectsOthers) {
  for (const char* name : {"auto", "f32", "bf16", "f16", "q8", "q4"}) {
    absl::StatusOr<WeightFormat> f = ParseWeightFormat(name);
    ASSERT_TRUE(f.ok()) << name;
    EXPECT_EQ(WeightFormatName(*f), name);
  }
  absl::StatusOr<WeightFormat> bad = ParseWeightFormat("q5");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("'q5'"), std::string::npos);
}

TEST(QuantizedMatrixTest, BlocksEqualRowQuantizerFromEveryDtype) {
  const int64_t rows = 3, cols = 40;  // two blocks per row, the second partial
  std::vector<float> w(rows * cols);
  for (size_t i = 0; i < w.size(); ++i) w[i] = Bf16ToFloat(FloatToBf16(0.01f * (i % 17) - 0.07f));
  std::vector<uint16_t> bf16(w.size());
  for (size_t i = 0; i < w.size(); ++i) bf16[i] = FloatToBf16(w[i]);
  for (BlockFormat f : {BlockFormat::kQ8, BlockFormat::kQ4, BlockFormat::kQ6}) {
    SCOPED_TRACE(std::string(BlockFormatName(f)));
    QuantizedMatrix from_f32(f, rows, cols), from_bf16(f, rows, cols);
    ASSERT_TRUE(from_f32.QuantizeRows(w.data(), DType::kF32, 0, rows).ok());
    ASSERT_TRUE(
        from_bf16.QuantizeRows(bf16.data(), DType::kBF16, 0, 2).ok());  // two ranges, as threads
    ASSERT_TRUE(from_bf16.QuantizeRows(bf16.data(), DType::kBF16, 2, rows).ok());
    ASSERT_GE(from_f32.bytes(), static_cast<size_t>(rows * 2) * BlockBytes(f));
    const size_t row_bytes = 2 * BlockBytes(f);
    for (int64_t r = 0; r < rows; ++r) {
      // Each row equals the row quantizer's output, read back from either
      // matrix (whatever layout the kernels read it in).
      std::vector<char> expect(row_bytes), got_f32(row_bytes), got_bf16(row_bytes);
      const absl::Span<const float> row(w.data() + r * cols, cols);
      if (f == BlockFormat::kQ8) {
        QuantizeRowQ8(row, reinterpret_cast<BlockQ8*>(expect.data()));
      } else if (f == BlockFormat::kQ4) {
        QuantizeRowQ4(row, reinterpret_cast<BlockQ4*>(expect.data()));
      } else {
        QuantizeRowQ6(row, reinterpret_cast<BlockQ6*>(expect.data()));
      }
      from_f32.GetRowBlocks(r, got_f32.data());
      from_bf16.GetRowBlocks(r, got_bf16.data());
      EXPECT_EQ(std::memcmp(got_f32.data(), expect.data(), row_bytes), 0) << r;
      EXPECT_EQ(std::memcmp(got_bf16.data(), expect.data(), row_bytes), 0) << r;
    }
    // A matrix filled block by block (as a GGUF loader does) holds the same
    // bytes as the quantized one.
    QuantizedMatrix copied(f, rows, cols);
    for (int64_t r = rows - 1; r >= 0; --r) {
      std::vector<char> blocks(row_bytes);
      from_f32.GetRowBlocks(r, blocks.data());
      copied.SetRowBlocks(r, blocks.data());
    }
    ASSERT_EQ(copied.bytes(), from_f32.bytes());
    EXPECT_EQ(std::memcmp(copied.blocks(), from_f32.blocks(), copied.bytes()), 0);
  }
}

// Values the fp16 block scales cannot hold are refused, naming row and
// column, for every format (NaN and inf reached the quantizers' float -> int
// conversions before: undefined behaviour).
TEST(QuantizedMatrixTest, RefusesNonFiniteAndOutOfRangeValues) {
  const int64_t rows = 3, cols = 40;
  for (BlockFormat f : {BlockFormat::kQ8, BlockFormat::kQ4, BlockFormat::kQ6}) {
    for (float bad : {std::nanf(""), INFINITY, -INFINITY, 70000.0f}) {
      std::vector<float> w(rows * cols, 0.01f);
      w[1 * cols + 37] = bad;
      QuantizedMatrix m(f, rows, cols);
      EXPECT_TRUE(m.QuantizeRows(w.data(), DType::kF32, 0, 1).ok());
      const absl::Status s = m.QuantizeRows(w.data(), DType::kF32, 1, rows);
      ASSERT_FALSE(s.ok()) << bad;
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
      EXPECT_NE(s.message().find("row 1, column 37"), std::string::npos) << s.message();
    }
  }
  std::vector<float> edge(cols, -65504.0f);
  QuantizedMatrix ok(BlockFormat::kQ4, 1, cols);
  EXPECT_TRUE(ok.QuantizeRows(edge.data(), DType::kF32, 0, 1).ok());
}

TEST(WeightPolicyTest, Q4KeepsEmbeddingsInQ6AndTheTagSaysSo) {
  EXPECT_EQ(BlockBytes(BlockFormat::kQ6), 26u);
  EXPECT_EQ(EmbeddingFormat(BlockFormat::kQ8), std::nullopt);
  EXPECT_EQ(EmbeddingFormat(BlockFormat::kQ4), BlockFormat::kQ6);
  EXPECT_EQ(WeightPolicyTag(BlockFormat::kQ8), "q8+embed:16bit");
  EXPECT_EQ(WeightPolicyTag(BlockFormat::kQ4), "q4+embed:q6");
  EXPECT_EQ(BlockFormatName(BlockFormat::kQ6), "q6");
}

}  // namespace
}  // namespace qkvshare::agents::weights
