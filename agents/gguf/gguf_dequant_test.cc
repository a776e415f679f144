#include "agents/gguf/gguf_dequant.h"

#include <cstring>
#include <string>
#include <vector>

#include "agents/gguf/gguf_file.h"
#include "gtest/gtest.h"

namespace qkvshare::agents::gguf {
namespace {

// testdata/dequant_vectors.gguf: random blocks of each type and their values
// as llama.cpp's gguf-py decodes them (make_dequant_vectors.py).
TEST(GgufDequantTest, MatchesLlamaCppReference) {
  auto file = GgufFile::Open("agents/gguf/testdata/dequant_vectors.gguf");
  ASSERT_TRUE(file.ok()) << file.status();
  int checked = 0;
  for (const char* name :
       {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_k", "q5_k", "q6_k", "f16", "bf16"}) {
    const GgufTensor* t = (*file)->FindTensor(name);
    const GgufTensor* want = (*file)->FindTensor(std::string(name) + ".expected");
    ASSERT_NE(t, nullptr) << name;
    ASSERT_NE(want, nullptr) << name;
    ASSERT_TRUE(CanDequantize(t->type)) << name;
    ASSERT_EQ(t->numel, want->numel) << name;
    const int64_t n = t->row_length();
    std::vector<float> row(n), expected(n);
    double sum_abs = 0;
    for (int64_t r = 0; r < t->rows(); ++r) {
      DequantizeRow(*t, r, row.data());
      std::memcpy(expected.data(), want->data + r * n * sizeof(float), n * sizeof(float));
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(row[i], expected[i]) << name << " row " << r << " element " << i;
        sum_abs += std::abs(row[i]);
      }
    }
    EXPECT_GT(sum_abs, 0) << name;  // not all zero
    ++checked;
  }
  EXPECT_EQ(checked, 10);
}

TEST(GgufDequantTest, UnsupportedTypes) {
  EXPECT_FALSE(CanDequantize(GgmlType::kIQ2_XXS));
  EXPECT_FALSE(CanDequantize(GgmlType::kQ2_K));
  EXPECT_FALSE(CanDequantize(GgmlType::kI32));
  EXPECT_TRUE(CanDequantize(GgmlType::kQ6_K));
}

}  // namespace
}  // namespace qkvshare::agents::gguf
