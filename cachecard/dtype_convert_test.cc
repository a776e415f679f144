#include "cachecard/dtype_convert.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "gtest/gtest.h"
#include "quant/fp16.h"

namespace qkvshare::cachecard {
namespace {

TEST(ConvertElementsTest, SameDtypeIsBitExact) {
  std::vector<float> src = {1.5f, -0.0f, std::numeric_limits<float>::quiet_NaN(), 3e-40f};
  std::vector<float> dst(src.size());
  ConvertElements(src.data(), DType::kF32, dst.data(), DType::kF32, src.size());
  EXPECT_EQ(std::memcmp(src.data(), dst.data(), src.size() * 4), 0);
}

TEST(ConvertElementsTest, F32ToBf16RoundsToNearestEven) {
  // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1.0078125: ties to even (1.0).
  const float src[3] = {1.0f + 0x1.0p-8f, 1.0f + 0x1.8p-8f, -2.5f};
  uint16_t dst[3];
  ConvertElements(src, DType::kF32, dst, DType::kBF16, 3);
  EXPECT_EQ(Bf16ToFloat(dst[0]), 1.0f);
  EXPECT_EQ(Bf16ToFloat(dst[1]), 1.0078125f);
  EXPECT_EQ(Bf16ToFloat(dst[2]), -2.5f);
}

TEST(ConvertElementsTest, Bf16ToF32IsExact) {
  const uint16_t src[2] = {0x3fc0, 0xc120};  // 1.5, -10
  float dst[2];
  ConvertElements(src, DType::kBF16, dst, DType::kF32, 2);
  EXPECT_EQ(dst[0], 1.5f);
  EXPECT_EQ(dst[1], -10.0f);
}

TEST(ConvertElementsTest, F16PathsUseQuantFp16) {
  const float src[3] = {0.1f, 70000.0f, -6e-8f};
  uint16_t half[3];
  ConvertElements(src, DType::kF32, half, DType::kF16, 3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(half[i], quant::FloatToHalf(src[i])) << i;
  EXPECT_TRUE(std::isinf(quant::HalfToFloat(half[1])));
  uint16_t bf[3];
  ConvertElements(half, DType::kF16, bf, DType::kBF16, 3);
  EXPECT_EQ(Bf16ToFloat(bf[0]), Bf16ToFloat(FloatToBf16(quant::HalfToFloat(half[0]))));
}

}  // namespace
}  // namespace qkvshare::cachecard
