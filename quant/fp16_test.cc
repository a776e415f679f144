#include "quant/fp16.h"

#include <cfenv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace qkvshare::quant {
namespace {

float Bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

TEST(Fp16Test, KnownValues) {
  EXPECT_EQ(FloatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xc000);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00);  // halfway to 2^16 rounds to even: inf
  EXPECT_EQ(FloatToHalf(65519.0f), 0x7bff);
  EXPECT_EQ(FloatToHalf(1e6f, Fp16Rounding::kDown), 0x7bff);
  EXPECT_EQ(FloatToHalf(1e6f, Fp16Rounding::kUp), 0x7c00);
  EXPECT_EQ(FloatToHalf(-1e6f, Fp16Rounding::kUp), 0xfbff);
  EXPECT_EQ(FloatToHalf(-1e6f, Fp16Rounding::kDown), 0xfc00);
  EXPECT_EQ(FloatToHalf(5.9604644775390625e-8f), 0x0001);  // smallest subnormal
  EXPECT_EQ(FloatToHalf(2.9802322387695312e-8f), 0x0000);  // half of it: ties to even (0)
  EXPECT_EQ(FloatToHalf(1e-30f, Fp16Rounding::kUp), 0x0001);
  EXPECT_EQ(FloatToHalf(1e-30f, Fp16Rounding::kDown), 0x0000);
  EXPECT_EQ(FloatToHalf(-1e-30f, Fp16Rounding::kDown), 0x8001);
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000);
  // 1 + 2^-11 lies halfway between 1 and 1 + 2^-10: even is 1.
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11), Fp16Rounding::kUp), 0x3c01);
  EXPECT_EQ(FloatToHalf(0.1f, Fp16Rounding::kDown), 0x2e66);
  EXPECT_EQ(FloatToHalf(0.1f, Fp16Rounding::kUp), 0x2e67);
  EXPECT_EQ(HalfToFloat(0x3555), 0.333251953125f);
  EXPECT_EQ(HalfToFloat(0x0001), 5.9604644775390625e-8f);
  EXPECT_EQ(HalfToFloat(0x7bff), 65504.0f);
  EXPECT_TRUE(std::isinf(HalfToFloat(0xfc00)));
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7e00)));
}

TEST(Fp16Test, EveryHalfRoundTripsAndDirectedRoundingBrackets) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00) continue;  // inf / NaN
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    for (Fp16Rounding r : {Fp16Rounding::kNearestEven, Fp16Rounding::kDown, Fp16Rounding::kUp}) {
      const uint16_t back = FloatToHalf(f, r);
      // +0 and -0 are distinct halves but equal floats: compare as floats.
      ASSERT_EQ(HalfToFloat(back), f) << std::hex << h;
    }
    // Nudged by one float ulp: the directed results bracket the value.
    for (float g : {std::nextafter(f, 1e9f), std::nextafter(f, -1e9f)}) {
      if (std::fabs(g) > kFp16Max) continue;
      ASSERT_LE(HalfToFloat(FloatToHalf(g, Fp16Rounding::kDown)), g);
      ASSERT_GE(HalfToFloat(FloatToHalf(g, Fp16Rounding::kUp)), g);
    }
  }
}

#if defined(__aarch64__) || (defined(__x86_64__) && defined(__FLT16_MAX__))
// The compiler's own float -> half conversion (Arm FCVT for __fp16; x86
// _Float16 through F16C / AVX512-FP16 or libgcc's soft-fp), honouring the
// current rounding mode.
#if defined(__aarch64__)
using CompilerHalfType = __fp16;
#else
using CompilerHalfType = _Float16;
#endif
__attribute__((noinline)) uint16_t CompilerHalf(volatile float f) {
  const CompilerHalfType h = static_cast<CompilerHalfType>(f);
  uint16_t bits;
  std::memcpy(&bits, &h, sizeof bits);
  return bits;
}

// The portable conversion must equal the platform's for every rounding
// direction (the Highway kernels' vector conversions are checked against this
// one in quant/kernels_test.cc and cachecard/dtype_convert_test.cc).
TEST(Fp16Test, MatchesCompilerFloat16BitForBit) {
  std::vector<float> inputs;
  for (uint32_t h = 0; h < 0x10000; ++h) {  // every half, its neighbours and midpoints
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    const float next = HalfToFloat(static_cast<uint16_t>(h + 1));
    inputs.push_back(f);
    inputs.push_back(std::nextafter(f, 1e30f));
    inputs.push_back(std::nextafter(f, -1e30f));
    if (!std::isnan(next) && !std::isinf(next) && !std::isinf(f)) {
      const float mid = 0.5f * (f + next);
      inputs.push_back(mid);
      inputs.push_back(std::nextafter(mid, 1e30f));
      inputs.push_back(std::nextafter(mid, -1e30f));
    }
  }
  std::mt19937 rng(7);
  for (int i = 0; i < 1000000; ++i) {
    const float f = Bits(rng());
    if (!std::isnan(f)) inputs.push_back(f);
  }
  const Fp16Rounding modes[] = {Fp16Rounding::kNearestEven, Fp16Rounding::kDown, Fp16Rounding::kUp};
  const int fe[] = {FE_TONEAREST, FE_DOWNWARD, FE_UPWARD};
  for (int m = 0; m < 3; ++m) {
    ASSERT_EQ(std::fesetround(fe[m]), 0);
    for (float f : inputs) {
      const uint16_t want = CompilerHalf(f);
      if (FloatToHalf(f, modes[m]) != want) {
        std::fesetround(FE_TONEAREST);
        FAIL() << "f=" << f << " mode " << m << " got " << FloatToHalf(f, modes[m]) << " want "
               << want;
      }
    }
  }
  std::fesetround(FE_TONEAREST);
}
#endif

}  // namespace
}  // namespace qkvshare::quant
