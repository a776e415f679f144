#include "agents/weights/block_formats.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "quant/fp16.h"

namespace qkvshare::agents::weights {
namespace {

using quant::FloatToHalf;
using quant::HalfToFloat;

std::vector<float> RandomRow(int64_t cols, uint32_t seed, float scale = 0.05f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> x(cols);
  for (float& v : x) v = dist(rng);
  return x;
}

double SquaredError(const std::vector<float>& a, const std::vector<float>& b) {
  double e = 0;
  for (size_t i = 0; i < a.size(); ++i) e += (double{a[i]} - b[i]) * (double{a[i]} - b[i]);
  return e;
}

TEST(BlockQ8Test, KnownBlockMatchesQ8_0Layout) {
  std::vector<float> x(32);
  for (int i = 0; i < 32; ++i) x[i] = (i - 16) * 0.25f;  // amax = 4 at i = 0
  BlockQ8 b;
  QuantizeRowQ8(x, &b);
  EXPECT_EQ(b.d, FloatToHalf(4.0f / 127.0f));
  EXPECT_EQ(b.qs[0], -127);
  EXPECT_EQ(b.qs[16], 0);
  const float d = HalfToFloat(b.d);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(b.qs[i], static_cast<int>(std::nearbyint(x[i] / d)));
}

TEST(BlockQ8Test, RoundTripWithinHalfAStep) {
  for (int64_t cols : {32, 64, 172, 200}) {
    const std::vector<float> x = RandomRow(cols, 7 + cols);
    std::vector<BlockQ8> blocks(BlocksPerRow(cols));
    QuantizeRowQ8(x, blocks.data());
    std::vector<float> y(cols);
    DequantizeRowQ8(blocks.data(), cols, y.data());
    for (int64_t c = 0; c < cols; ++c) {
      const float d = HalfToFloat(blocks[c / 32].d);
      // Half a step, plus the clip at 127 when fp16 rounded d down.
      EXPECT_LE(std::fabs(x[c] - y[c]), 0.5f * d * 1.001f + 1e-7f) << "col " << c;
    }
    // Padding lanes of the partial last block are zero codes.
    for (int64_t c = cols; c < BlocksPerRow(cols) * 32; ++c) EXPECT_EQ(blocks.back().qs[c % 32], 0);
  }
}

TEST(BlockQ8Test, ZeroBlock) {
  std::vector<float> x(32, 0.0f);
  BlockQ8 b;
  QuantizeRowQ8(x, &b);
  EXPECT_EQ(HalfToFloat(b.d), 0.0f);
  for (int8_t q : b.qs) EXPECT_EQ(q, 0);
}

TEST(BlockQ4Test, ExactlyRepresentableBlockIsExactAndNibblesFollowQ4_1) {
  // Codes 0..15 then 15..0 with d = 0.5, m = -1: representable exactly.
  std::vector<float> x(32);
  for (int i = 0; i < 16; ++i) {
    x[i] = 0.5f * i - 1.0f;
    x[16 + i] = 0.5f * (15 - i) - 1.0f;
  }
  BlockQ4 b;
  QuantizeRowQ4(x, &b);
  EXPECT_EQ(HalfToFloat(b.d), 0.5f);
  EXPECT_EQ(HalfToFloat(b.m), -1.0f);
  for (int j = 0; j < 16; ++j) EXPECT_EQ(b.qs[j], j | ((15 - j) << 4)) << "byte " << j;
  std::vector<float> y(32);
  DequantizeRowQ4(&b, 32, y.data());
  EXPECT_EQ(y, x);
}

TEST(BlockQ4Test, SearchNeverWorseThanPlainMinMaxAndWithinRange) {
  double searched = 0, plain = 0;
  for (int64_t cols : {32, 64, 172, 768}) {
    const std::vector<float> x = RandomRow(cols, 11 + cols);
    std::vector<BlockQ4> blocks(BlocksPerRow(cols));
    QuantizeRowQ4(x, blocks.data());
    std::vector<float> y(cols);
    DequantizeRowQ4(blocks.data(), cols, y.data());
    searched += SquaredError(x, y);
    // Plain Q4_1: d = (max - min) / 15, m = min, round to nearest.
    std::vector<float> z(cols);
    for (int64_t b0 = 0; b0 < cols; b0 += 32) {
      const int64_t e = std::min<int64_t>(cols, b0 + 32);
      float lo = x[b0], hi = x[b0];
      for (int64_t c = b0; c < e; ++c) lo = std::min(lo, x[c]), hi = std::max(hi, x[c]);
      const float d = HalfToFloat(FloatToHalf((hi - lo) / 15)), m = HalfToFloat(FloatToHalf(lo));
      for (int64_t c = b0; c < e; ++c) {
        z[c] = d * std::clamp(std::nearbyint((x[c] - m) / d), 0.0f, 15.0f) + m;
      }
      // Every reconstructed value is code * d + m with a code in [0, 15].
      const BlockQ4& blk = blocks[b0 / 32];
      for (int64_t c = b0; c < e; ++c) {
        const int code = Q4Code(blk, static_cast<int>(c - b0));
        EXPECT_EQ(y[c], HalfToFloat(blk.d) * code + HalfToFloat(blk.m));
      }
    }
    plain += SquaredError(x, z);
  }
  EXPECT_LT(searched, 0.9 * plain);  // the search must pay for itself
}

TEST(BlockQ6Test, ExactlyRepresentableBlockIsExactAndBitsFollowTheLayout) {
  // 32 distinct codes (37 is odd, so i -> 37 i + 5 mod 64 is one to one),
  // code 0 (value -32 d, the largest magnitude) at i = 31, d = 0.5.
  std::vector<float> x(32);
  int code[32];
  for (int i = 0; i < 32; ++i) {
    code[i] = (37 * i + 5) % 64;
    x[i] = 0.5f * (code[i] - 32);
  }
  ASSERT_EQ(code[31], 0);
  BlockQ6 b;
  QuantizeRowQ6(x, &b);
  EXPECT_EQ(HalfToFloat(b.d), 0.5f);
  // The bytes, from the layout's definition.
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(b.ql[j], (code[j] & 15) | ((code[j + 16] & 15) << 4)) << "ql " << j;
  }
  // qh as two little-endian words: element i's pair at bits 2 * (i / 2) of
  // word i % 2.
  uint32_t word[2] = {0, 0};
  for (int i = 0; i < 32; ++i) word[i % 2] |= static_cast<uint32_t>(code[i] >> 4) << (2 * (i / 2));
  for (int j = 0; j < 8; ++j) {
    EXPECT_EQ(b.qh[j], (word[j / 4] >> (8 * (j % 4))) & 0xFF) << "qh " << j;
  }
  for (int i = 0; i < 32; ++i) EXPECT_EQ(Q6Code(b, i), code[i]) << "element " << i;
  std::vector<float> y(32);
  DequantizeRowQ6(&b, 32, y.data());
  EXPECT_EQ(y, x);
}

TEST(BlockQ6Test, RoundTripWithinHalfAStepAndSearchNeverWorseThanPlain) {
  double searched = 0, plain = 0;
  for (int64_t cols : {32, 64, 172, 200, 768}) {
    const std::vector<float> x = RandomRow(cols, 13 + cols);
    std::vector<BlockQ6> blocks(BlocksPerRow(cols));
    QuantizeRowQ6(x, blocks.data());
    std::vector<float> y(cols);
    DequantizeRowQ6(blocks.data(), cols, y.data());
    searched += SquaredError(x, y);
    std::vector<float> z(cols);
    for (int64_t c = 0; c < cols; ++c) {
      const BlockQ6& blk = blocks[c / 32];
      const float d = HalfToFloat(blk.d);
      const int code = Q6Code(blk, static_cast<int>(c % 32));
      EXPECT_EQ(y[c], d * static_cast<float>(code - 32)) << "col " << c;
      // Half a step, except where the searched scale clips an outlier.
      if (code != 0 && code != 63) {
        EXPECT_LE(std::fabs(x[c] - y[c]), 0.5f * std::fabs(d) * 1.001f + 1e-7f) << "col " << c;
      }
    }
    // Padding lanes of the partial last block hold code 32 (value 0).
    for (int64_t c = cols; c < BlocksPerRow(cols) * 32; ++c) {
      EXPECT_EQ(Q6Code(blocks.back(), static_cast<int>(c % 32)), 32);
    }
    // Plain symmetric 6-bit: d = max / -32, round to nearest.
    for (int64_t b0 = 0; b0 < cols; b0 += 32) {
      const int64_t e = std::min<int64_t>(cols, b0 + 32);
      float max = 0;
      for (int64_t c = b0; c < e; ++c) {
        if (std::fabs(x[c]) > std::fabs(max)) max = x[c];
      }
      const float d = HalfToFloat(FloatToHalf(max / -32));
      for (int64_t c = b0; c < e; ++c) {
        z[c] = d * std::clamp(std::nearbyint(x[c] / d), -32.0f, 31.0f);
      }
    }
    plain += SquaredError(x, z);
  }
  EXPECT_LT(searched, 0.9 * plain);  // the search must pay for itself
}

TEST(BlockQ6Test, ZeroBlock) {
  std::vector<float> x(32, 0.0f);
  BlockQ6 b;
  QuantizeRowQ6(x, &b);
  EXPECT_EQ(HalfToFloat(b.d), 0.0f);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(Q6Code(b, i), 32);
  std::vector<float> y(32, 1.0f);
  DequantizeRowQ6(&b, 32, y.data());
  EXPECT_EQ(y, x);
}

TEST(BlockQ4x8Test, RowsRoundTripAndCodesSitWhereTheLayoutSays) {
  // Eight rows with distinct codes: row j, element i has code (i + 3 j) % 16.
  BlockQ4 rows[kQ4GroupRows];
  for (int j = 0; j < kQ4GroupRows; ++j) {
    rows[j].d = FloatToHalf(0.5f + j);
    rows[j].m = FloatToHalf(-1.0f - j);
    for (int i = 0; i < kBlockSize / 2; ++i) {
      rows[j].qs[i] = static_cast<uint8_t>(((i + 3 * j) % 16) | (((i + 16 + 3 * j) % 16) << 4));
    }
  }
  BlockQ4x8 g;
  std::memset(&g, 0xAB, sizeof g);  // every byte is written
  for (int j = kQ4GroupRows - 1; j >= 0; --j) SetQ4x8Row(rows[j], j, g);
  for (int j = 0; j < kQ4GroupRows; ++j) {
    const BlockQ4 back = GetQ4x8Row(g, j);
    EXPECT_EQ(std::memcmp(&back, &rows[j], sizeof back), 0) << j;
    EXPECT_EQ(g.d[j], rows[j].d);
    EXPECT_EQ(g.m[j], rows[j].m);
    for (int u = 0; u < 4; ++u) {
      uint32_t word;
      std::memcpy(&word, g.qs + 32 * u + 4 * j, sizeof word);
      // The 16-bit lane pairs of the header comment.
      const int pairs[4][2] = {{0, 1}, {4, 5}, {2, 3}, {6, 7}};
      for (int p = 0; p < 4; ++p) {
        const uint32_t lo = (word & 0xFFFF) >> (4 * p) & 0xF, hi = (word >> 16) >> (4 * p) & 0xF;
        EXPECT_EQ(static_cast<int>(lo), Q4Code(rows[j], 8 * u + pairs[p][0])) << j << " " << u;
        EXPECT_EQ(static_cast<int>(hi), Q4Code(rows[j], 8 * u + pairs[p][1])) << j << " " << u;
      }
    }
  }
}

TEST(BlockQ6x8Test, RowsRoundTripAndPairsSitBesideTheirNibbles) {
  BlockQ6 rows[kQ4GroupRows];
  for (int j = 0; j < kQ4GroupRows; ++j) {
    const std::vector<float> x = RandomRow(kBlockSize, 100 + j);
    QuantizeRowQ6(x, &rows[j]);
  }
  BlockQ6x8 g;
  std::memset(&g, 0xCD, sizeof g);  // every byte is written
  for (int j = 0; j < kQ4GroupRows; ++j) SetQ6x8Row(rows[j], j, g);
  for (int j = 0; j < kQ4GroupRows; ++j) {
    const BlockQ6 back = GetQ6x8Row(g, j);
    EXPECT_EQ(std::memcmp(&back, &rows[j], sizeof back), 0) << j;
    EXPECT_EQ(g.d[j], rows[j].d);
    for (int u = 0; u < 4; ++u) {
      uint32_t low, high;
      std::memcpy(&low, g.ql + 32 * u + 4 * j, sizeof low);
      std::memcpy(&high, g.qh + 32 * (u / 2) + 4 * j, sizeof high);
      // The kernels' extraction: nibble shift s in 16-bit halves, pair at
      // s / 2 + 8 (u % 2) of the same half.
      const int pairs[4][2] = {{0, 1}, {4, 5}, {2, 3}, {6, 7}};
      for (int p = 0; p < 4; ++p) {
        for (int half = 0; half < 2; ++half) {
          const uint32_t nib = (low >> (16 * half + 4 * p)) & 0xF;
          const uint32_t pair = (high >> (16 * half + 2 * p + 8 * (u % 2))) & 3;
          EXPECT_EQ(static_cast<int>(nib | pair << 4), Q6Code(rows[j], 8 * u + pairs[p][half]))
              << j << " " << u << " " << p;
        }
      }
    }
  }
}

}  // namespace
}  // namespace qkvshare::agents::weights
