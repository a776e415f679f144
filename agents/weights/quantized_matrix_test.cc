#include "agents/weights/quantized_matrix.h"

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
    QuantizedMatrix from_f32(f, rows, cols), from_bf16(f, rows, cols);
    from_f32.QuantizeRows(w.data(), DType::kF32, 0, rows);
    from_bf16.QuantizeRows(bf16.data(), DType::kBF16, 0, 2);  // two ranges, as threads
    from_bf16.QuantizeRows(bf16.data(), DType::kBF16, 2, rows);
    ASSERT_EQ(from_f32.bytes(), static_cast<size_t>(rows * 2) * BlockBytes(f));
    EXPECT_EQ(std::memcmp(from_f32.blocks(), from_bf16.blocks(), from_f32.bytes()), 0);
    // Row 1 equals the row quantizer's output.
    std::vector<char> expect(2 * BlockBytes(f));
    const absl::Span<const float> row(w.data() + cols, cols);
    if (f == BlockFormat::kQ8) {
      QuantizeRowQ8(row, reinterpret_cast<BlockQ8*>(expect.data()));
    } else if (f == BlockFormat::kQ4) {
      QuantizeRowQ4(row, reinterpret_cast<BlockQ4*>(expect.data()));
    } else {
      QuantizeRowQ6(row, reinterpret_cast<BlockQ6*>(expect.data()));
    }
    EXPECT_EQ(std::memcmp(static_cast<const char*>(from_f32.blocks()) + expect.size(),
                          expect.data(), expect.size()),
              0);
  }
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
