#include "cachecard/dtype_convert.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "base/cpu_info.h"
#include "gtest/gtest.h"
#include "hwy/targets.h"
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

float Bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Floats around every fp16 and bf16 value (neighbours, midpoints and their
// neighbours: the rounding ties), specials, f32 subnormals and random bit
// patterns including NaNs; an odd count so the vector loops have tails.
std::vector<float> ConversionInputs() {
  std::vector<float> in;
  for (uint32_t h = 0; h < 0x10000; ++h) {
    for (uint32_t u : {h << 16, (h << 16) | 0x8000u, (h << 16) | 0x8001u, (h << 16) | 0x7fffu}) {
      in.push_back(Bits(u));
    }
    const float f = quant::HalfToFloat(static_cast<uint16_t>(h));
    const float next = quant::HalfToFloat(static_cast<uint16_t>(h + 1));
    in.push_back(f);
    if (std::isfinite(f) && std::isfinite(next) && std::fabs(next) > std::fabs(f)) {
      const float mid = 0.5f * (f + next);
      in.push_back(mid);
      in.push_back(std::nextafter(mid, 1e30f));
      in.push_back(std::nextafter(mid, -1e30f));
    }
  }
  for (float f : {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                  std::numeric_limits<float>::quiet_NaN(), 65504.0f, 65519.99f, 65520.0f, 65536.0f,
                  1e-45f, -1e-45f, 3e-40f, 0.0f, -0.0f}) {
    in.push_back(f);
  }
  std::mt19937 rng(11);
  for (int i = 0; i < 200001; ++i) in.push_back(Bits(rng()));
  if (in.size() % 2 == 0) in.push_back(1.0f);
  return in;
}

// Every Highway target this binary has and this CPU runs gives exactly the
// scalar conversions, NaN payloads, subnormals and overflow included.
TEST(ConvertElementsTest, EverySimdTargetMatchesScalarBitForBit) {
  const std::vector<float> f32 = ConversionInputs();
  std::vector<uint16_t> all16(0x10001);
  for (uint32_t h = 0; h < all16.size(); ++h) all16[h] = static_cast<uint16_t>(h * 0x9e37u);
  for (uint32_t h = 0; h < 0x10000; ++h) all16[h] = static_cast<uint16_t>(h);
  for (int64_t target : UsableSimdTargets()) {
    const char* name = hwy::TargetName(target);
    ASSERT_TRUE(ForceSimdTarget(name).ok()) << name;
    std::vector<uint16_t> half(f32.size()), bf(f32.size());
    ConvertElements(f32.data(), DType::kF32, half.data(), DType::kF16, f32.size());
    ConvertElements(f32.data(), DType::kF32, bf.data(), DType::kBF16, f32.size());
    for (size_t i = 0; i < f32.size(); ++i) {
      ASSERT_EQ(half[i], quant::FloatToHalf(f32[i])) << name << " f32->f16 of " << f32[i];
      ASSERT_EQ(bf[i], FloatToBf16(f32[i])) << name << " f32->bf16 of " << f32[i];
    }
    std::vector<float> from_half(all16.size()), from_bf(all16.size());
    std::vector<uint16_t> half_to_bf(all16.size()), bf_to_half(all16.size());
    ConvertElements(all16.data(), DType::kF16, from_half.data(), DType::kF32, all16.size());
    ConvertElements(all16.data(), DType::kBF16, from_bf.data(), DType::kF32, all16.size());
    ConvertElements(all16.data(), DType::kF16, half_to_bf.data(), DType::kBF16, all16.size());
    ConvertElements(all16.data(), DType::kBF16, bf_to_half.data(), DType::kF16, all16.size());
    for (size_t i = 0; i < all16.size(); ++i) {
      const float h = quant::HalfToFloat(all16[i]), b = Bf16ToFloat(all16[i]);
      ASSERT_EQ(std::memcmp(&from_half[i], &h, 4), 0) << name << " f16->f32 of " << all16[i];
      ASSERT_EQ(std::memcmp(&from_bf[i], &b, 4), 0) << name << " bf16->f32 of " << all16[i];
      ASSERT_EQ(half_to_bf[i], FloatToBf16(h)) << name << " f16->bf16 of " << all16[i];
      ASSERT_EQ(bf_to_half[i], quant::FloatToHalf(b)) << name << " bf16->f16 of " << all16[i];
    }
  }
  ASSERT_TRUE(ForceSimdTarget("").ok());
  std::printf("dtype_convert_test: targets checked: %s\n", CpuSummary().c_str());
}

}  // namespace
}  // namespace qkvshare::cachecard
