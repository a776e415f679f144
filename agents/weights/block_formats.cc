#include "agents/weights/block_formats.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "quant/fp16.h"

namespace qkvshare::agents::weights {
namespace {

using quant::FloatToHalf;
using quant::HalfToFloat;

void QuantizeBlockQ8(const float* x, int n, BlockQ8* b) {
  float amax = 0.0f;
  for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  b->d = FloatToHalf(amax / 127.0f);
  const float d = HalfToFloat(b->d);
  std::memset(b->qs, 0, sizeof b->qs);
  if (d == 0.0f) return;
  const float inv = 1.0f / d;
  for (int i = 0; i < n; ++i) {
    const float q = std::nearbyint(x[i] * inv);
    b->qs[i] = static_cast<int8_t>(std::clamp(q, -127.0f, 127.0f));
  }
}

// Codes of x for value = d * q + m, q in [0, 15].
void AssignQ4Codes(const float* x, int n, float d, float m, uint8_t* codes) {
  const float inv = d > 0.0f ? 1.0f / d : 0.0f;
  for (int i = 0; i < n; ++i) {
    codes[i] = static_cast<uint8_t>(std::clamp(std::nearbyint((x[i] - m) * inv), 0.0f, 15.0f));
  }
}

double Q4Error(const float* x, int n, float d, float m, const uint8_t* codes) {
  double err = 0.0;
  for (int i = 0; i < n; ++i) {
    const double e = static_cast<double>(d) * codes[i] + m - x[i];
    err += e * e;
  }
  return err;
}

// Least-squares (d, m) for fixed codes and its squared error (from the
// sums, no second pass); false when the codes are all equal.
bool FitQ4(const float* x, int n, double sx, double sxx, const uint8_t* codes, float* d, float* m,
           double* err) {
  double sl = 0, sl2 = 0, sxl = 0;
  for (int i = 0; i < n; ++i) {
    sl += codes[i];
    sl2 += static_cast<double>(codes[i]) * codes[i];
    sxl += static_cast<double>(x[i]) * codes[i];
  }
  const double det = n * sl2 - sl * sl;
  if (det <= 0.0) return false;
  const double fd = (n * sxl - sl * sx) / det;
  if (!(fd > 0.0)) return false;
  const double fm = (sl2 * sx - sl * sxl) / det;
  // sum (d l + m - x)^2 expanded.
  *err = fd * fd * sl2 + 2 * fd * fm * sl + n * fm * fm - 2 * fd * sxl - 2 * fm * sx + sxx;
  *d = static_cast<float>(fd);
  *m = static_cast<float>(fm);
  return true;
}

void QuantizeBlockQ4(const float* x, int n, BlockQ4* b) {
  float lo = x[0], hi = x[0];
  for (int i = 1; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  uint8_t codes[kBlockSize] = {};
  float best_d = (hi - lo) / 15.0f, best_m = lo;
  if (hi > lo) {
    // Candidate code assignments from scales around 15 / (hi - lo), each
    // refitted by least squares; keep the one of least squared error.
    AssignQ4Codes(x, n, best_d, best_m, codes);
    double best_err = Q4Error(x, n, best_d, best_m, codes);
    double sx = 0, sxx = 0;
    for (int i = 0; i < n; ++i) {
      sx += x[i];
      sxx += static_cast<double>(x[i]) * x[i];
    }
    constexpr int kSteps = 16;
    for (int s = -kSteps; s <= kSteps; ++s) {
      const float iscale = (15.0f + 0.1f * s) / (hi - lo);
      for (int i = 0; i < n; ++i) {
        codes[i] =
            static_cast<uint8_t>(std::clamp(std::nearbyint(iscale * (x[i] - lo)), 0.0f, 15.0f));
      }
      float d, m;
      double err;
      if (!FitQ4(x, n, sx, sxx, codes, &d, &m, &err)) continue;
      if (err < best_err) {
        best_err = err;
        best_d = d;
        best_m = m;
      }
    }
  }
  // Store fp16 parameters; the codes are assigned with the stored values.
  b->d = FloatToHalf(best_d);
  b->m = FloatToHalf(best_m);
  const float d = HalfToFloat(b->d), m = HalfToFloat(b->m);
  std::memset(codes, 0, sizeof codes);
  AssignQ4Codes(x, n, d, m, codes);
  for (int j = 0; j < kBlockSize / 2; ++j) {
    b->qs[j] = static_cast<uint8_t>(codes[j] | (codes[j + kBlockSize / 2] << 4));
  }
}

// Signed 6-bit codes (-32..31) of x for value = d * l.
void AssignQ6Codes(const float* x, int n, float d, int* l) {
  const float inv = d != 0.0f ? 1.0f / d : 0.0f;
  for (int i = 0; i < n; ++i) {
    l[i] = static_cast<int>(std::clamp(std::nearbyint(x[i] * inv), -32.0f, 31.0f));
  }
}

void QuantizeBlockQ6(const float* x, int n, BlockQ6* b) {
  float amax = 0.0f, max = 0.0f;  // max: the value of largest magnitude
  for (int i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  }
  float best_d = max / -32.0f;
  int l[kBlockSize] = {};
  if (amax > 0.0f) {
    // Candidate code assignments from scales within +-10% of -32 / max (max
    // on code -32, the side with the extra level; q4's search spans the same
    // relative range), each refitted by least squares (d = sum x l / sum l^2,
    // error sum x^2 - (sum x l)^2 / sum l^2); keep the one of least squared
    // error. (+-5% in steps of 0.1 measured worse on the quality eval:
    // docs/results.md.)
    double sxx = 0;
    for (int i = 0; i < n; ++i) sxx += static_cast<double>(x[i]) * x[i];
    double best_err = INFINITY;
    constexpr int kSteps = 16;
    for (int s = -kSteps; s <= kSteps; ++s) {
      const float iscale = -(32.0f + 0.2f * s) / max;
      double sxl = 0, sll = 0;
      for (int i = 0; i < n; ++i) {
        const int q = static_cast<int>(std::clamp(std::nearbyint(iscale * x[i]), -32.0f, 31.0f));
        sxl += static_cast<double>(x[i]) * q;
        sll += static_cast<double>(q) * q;
      }
      if (sll <= 0.0) continue;
      const double err = sxx - sxl * sxl / sll;
      if (err < best_err) {
        best_err = err;
        best_d = static_cast<float>(sxl / sll);
      }
    }
  }
  // Store the fp16 scale; the codes are assigned with the stored value.
  b->d = FloatToHalf(best_d);
  AssignQ6Codes(x, n, HalfToFloat(b->d), l);
  std::memset(b->ql, 0, sizeof b->ql);
  std::memset(b->qh, 0, sizeof b->qh);
  for (int i = 0; i < kBlockSize; ++i) {
    // Padding lanes (i >= n) get code 32 (value 0).
    const int q = (i < n ? l[i] : 0) + 32;
    if (i < kBlockSize / 2) {
      b->ql[i] |= static_cast<uint8_t>(q & 0x0F);
    } else {
      b->ql[i - kBlockSize / 2] |= static_cast<uint8_t>((q & 0x0F) << 4);
    }
    b->qh[4 * (i % 2) + i / 8] |= static_cast<uint8_t>((q >> 4) << (2 * ((i / 2) % 4)));
  }
}

template <typename Block, typename Fn>
void QuantizeRow(absl::Span<const float> x, Block* out, Fn quantize_block) {
  const int64_t cols = static_cast<int64_t>(x.size());
  for (int64_t b = 0; b < BlocksPerRow(cols); ++b) {
    const int64_t begin = b * kBlockSize;
    quantize_block(x.data() + begin, static_cast<int>(std::min(kBlockSize, cols - begin)), out + b);
  }
}

}  // namespace

absl::Status CheckQuantizableRow(absl::Span<const float> x) {
  for (size_t c = 0; c < x.size(); ++c) {
    if (!std::isfinite(x[c])) {
      return absl::InvalidArgumentError(
          absl::StrCat("column ", c, ": value ", x[c], " is not finite"));
    }
    if (std::fabs(x[c]) > quant::kFp16Max) {
      return absl::InvalidArgumentError(
          absl::StrCat("column ", c, ": |value| ", x[c], " exceeds 65504 (the fp16 block scales)"));
    }
  }
  return absl::OkStatus();
}

void QuantizeRowQ8(absl::Span<const float> x, BlockQ8* out) {
  QuantizeRow(x, out, QuantizeBlockQ8);
}

void QuantizeRowQ4(absl::Span<const float> x, BlockQ4* out) {
  QuantizeRow(x, out, QuantizeBlockQ4);
}

void QuantizeRowQ6(absl::Span<const float> x, BlockQ6* out) {
  QuantizeRow(x, out, QuantizeBlockQ6);
}

void DequantizeRowQ8(const BlockQ8* blocks, int64_t cols, float* out) {
  for (int64_t c = 0; c < cols; ++c) {
    const BlockQ8& b = blocks[c / kBlockSize];
    out[c] = HalfToFloat(b.d) * b.qs[c % kBlockSize];
  }
}

void DequantizeRowQ4(const BlockQ4* blocks, int64_t cols, float* out) {
  for (int64_t c = 0; c < cols; ++c) {
    const BlockQ4& b = blocks[c / kBlockSize];
    out[c] = HalfToFloat(b.d) * Q4Code(b, static_cast<int>(c % kBlockSize)) + HalfToFloat(b.m);
  }
}

void DequantizeRowQ6(const BlockQ6* blocks, int64_t cols, float* out) {
  for (int64_t c = 0; c < cols; ++c) {
    const BlockQ6& b = blocks[c / kBlockSize];
    out[c] =
        HalfToFloat(b.d) * static_cast<float>(Q6Code(b, static_cast<int>(c % kBlockSize)) - 32);
  }
}

BlockQ4 GetQ4x8Row(const BlockQ4x8& g, int j) {
  BlockQ4 b;
  b.d = g.d[j];
  b.m = g.m[j];
  std::memset(b.qs, 0, sizeof b.qs);
  for (int i = 0; i < kBlockSize; ++i) {
    const int u = i / 8, k = i % 8, shift = Q4x8Shift(k);
    const int code = (g.qs[32 * u + 4 * j + shift / 8] >> (shift % 8)) & 0x0F;
    b.qs[i % (kBlockSize / 2)] |= static_cast<uint8_t>(i < kBlockSize / 2 ? code : code << 4);
  }
  return b;
}

void SetQ4x8Row(const BlockQ4& b, int j, BlockQ4x8& g) {
  g.d[j] = b.d;
  g.m[j] = b.m;
  for (int u = 0; u < 4; ++u) std::memset(g.qs + 32 * u + 4 * j, 0, 4);
  for (int i = 0; i < kBlockSize; ++i) {
    const int u = i / 8, k = i % 8, shift = Q4x8Shift(k);
    g.qs[32 * u + 4 * j + shift / 8] |= static_cast<uint8_t>(Q4Code(b, i) << (shift % 8));
  }
}

BlockQ6 GetQ6x8Row(const BlockQ6x8& g, int j) {
  BlockQ6 b;
  b.d = g.d[j];
  std::memset(b.ql, 0, sizeof b.ql);
  std::memset(b.qh, 0, sizeof b.qh);
  for (int i = 0; i < kBlockSize; ++i) {
    const int u = i / 8, k = i % 8;
    const int low = (g.ql[32 * u + 4 * j + Q4x8Shift(k) / 8] >> (Q4x8Shift(k) % 8)) & 0x0F;
    const int hs = Q6x8HighShift(u, k);
    const int high = (g.qh[32 * (u / 2) + 4 * j + hs / 8] >> (hs % 8)) & 3;
    // BlockQ6: low nibble of element i in ql[i % 16] (high half for i >= 16),
    // high pair at bits 2 * ((i / 2) % 4) of qh[4 * (i % 2) + i / 8].
    b.ql[i % (kBlockSize / 2)] |= static_cast<uint8_t>(i < kBlockSize / 2 ? low : low << 4);
    b.qh[4 * (i % 2) + i / 8] |= static_cast<uint8_t>(high << (2 * ((i / 2) % 4)));
  }
  return b;
}

void SetQ6x8Row(const BlockQ6& b, int j, BlockQ6x8& g) {
  g.d[j] = b.d;
  for (int u = 0; u < 4; ++u) std::memset(g.ql + 32 * u + 4 * j, 0, 4);
  for (int p = 0; p < 2; ++p) std::memset(g.qh + 32 * p + 4 * j, 0, 4);
  for (int i = 0; i < kBlockSize; ++i) {
    const int u = i / 8, k = i % 8, code = Q6Code(b, i);
    g.ql[32 * u + 4 * j + Q4x8Shift(k) / 8] |=
        static_cast<uint8_t>((code & 0x0F) << (Q4x8Shift(k) % 8));
    const int hs = Q6x8HighShift(u, k);
    g.qh[32 * (u / 2) + 4 * j + hs / 8] |= static_cast<uint8_t>((code >> 4) << (hs % 8));
  }
}

}  // namespace qkvshare::agents::weights
