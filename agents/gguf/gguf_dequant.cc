#include "agents/gguf/gguf_dequant.h"

#include <cstring>

#include "base/dtype.h"
#include "quant/fp16.h"

namespace qkvshare::agents::gguf {
namespace {

constexpr int kQK = 32;    // Q4_0 .. Q8_0
constexpr int kQKK = 256;  // K-quants

float Half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return quant::HalfToFloat(h);
}

void RowQ8_0(const uint8_t* b, int64_t blocks, float* y) {
  for (int64_t i = 0; i < blocks; ++i, b += 34) {
    const float d = Half(b);
    for (int j = 0; j < kQK; ++j) *y++ = static_cast<int8_t>(b[2 + j]) * d;
  }
}

void RowQ4_0(const uint8_t* b, int64_t blocks, float* y) {
  for (int64_t i = 0; i < blocks; ++i, b += 18, y += kQK) {
    const float d = Half(b);
    const uint8_t* qs = b + 2;
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = ((qs[j] & 0x0F) - 8) * d;
      y[j + kQK / 2] = ((qs[j] >> 4) - 8) * d;
    }
  }
}

void RowQ4_1(const uint8_t* b, int64_t blocks, float* y) {
  for (int64_t i = 0; i < blocks; ++i, b += 20, y += kQK) {
    const float d = Half(b), m = Half(b + 2);
    const uint8_t* qs = b + 4;
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = (qs[j] & 0x0F) * d + m;
      y[j + kQK / 2] = (qs[j] >> 4) * d + m;
    }
  }
}

void RowQ5(const uint8_t* b, int64_t blocks, float* y, bool with_min) {
  const int bytes = with_min ? 24 : 22;
  for (int64_t i = 0; i < blocks; ++i, b += bytes, y += kQK) {
    const float d = Half(b), m = with_min ? Half(b + 2) : 0.0f;
    const uint8_t* p = b + (with_min ? 4 : 2);
    uint32_t qh;
    std::memcpy(&qh, p, 4);
    const uint8_t* qs = p + 4;
    for (int j = 0; j < kQK / 2; ++j) {
      const uint8_t xh0 = ((qh >> j) << 4) & 0x10;
      const uint8_t xh1 = (qh >> (j + 12)) & 0x10;
      if (with_min) {
        y[j] = ((qs[j] & 0x0F) | xh0) * d + m;
        y[j + kQK / 2] = ((qs[j] >> 4) | xh1) * d + m;
      } else {
        y[j] = (((qs[j] & 0x0F) | xh0) - 16) * d;
        y[j + kQK / 2] = (((qs[j] >> 4) | xh1) - 16) * d;
      }
    }
  }
}

// ggml-quants.c get_scale_min_k4.
void ScaleMinK4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4);
  }
}

void RowQ4_K(const uint8_t* b, int64_t blocks, float* y) {
  for (int64_t i = 0; i < blocks; ++i, b += 144) {
    const float d = Half(b), min = Half(b + 2);
    const uint8_t* scales = b + 4;
    const uint8_t* q = b + 16;
    int is = 0;
    uint8_t sc, m;
    for (int j = 0; j < kQKK; j += 64) {
      ScaleMinK4(is + 0, scales, &sc, &m);
      const float d1 = d * sc, m1 = min * m;
      ScaleMinK4(is + 1, scales, &sc, &m);
      const float d2 = d * sc, m2 = min * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
      q += 32;
      is += 2;
    }
  }
}

void RowQ5_K(const uint8_t* b, int64_t blocks, float* y) {
  for (int64_t i = 0; i < blocks; ++i, b += 176) {
    const float d = Half(b), min = Half(b + 2);
    const uint8_t* scales = b + 4;
    const uint8_t* qh = b + 16;
    const uint8_t* ql = b + 48;
    int is = 0;
    uint8_t sc, m;
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0; j < kQKK; j += 64) {
      ScaleMinK4(is + 0, scales, &sc, &m);
      const float d1 = d * sc, m1 = min * m;
      ScaleMinK4(is + 1, scales, &sc, &m);
      const float d2 = d * sc, m2 = min * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
      ql += 32;
      is += 2;
      u1 <<= 2;
      u2 <<= 2;
    }
  }
}

void RowQ6_K(const uint8_t* b, int64_t blocks, float* y) {
  for (int64_t i = 0; i < blocks; ++i, b += 210) {
    const uint8_t* ql = b;
    const uint8_t* qh = b + 128;
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
    const float d = Half(b + 208);
    for (int n = 0; n < kQKK; n += 128) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = static_cast<int8_t>((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = static_cast<int8_t>((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = static_cast<int8_t>((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = static_cast<int8_t>((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l + 0] = d * sc[is + 0] * q1;
        y[l + 32] = d * sc[is + 2] * q2;
        y[l + 64] = d * sc[is + 4] * q3;
        y[l + 96] = d * sc[is + 6] * q4;
      }
      y += 128;
      ql += 64;
      qh += 32;
      sc += 8;
    }
  }
}

}  // namespace

bool CanDequantize(GgmlType type) {
  switch (type) {
    case GgmlType::kF32:
    case GgmlType::kF16:
    case GgmlType::kBF16:
    case GgmlType::kQ8_0:
    case GgmlType::kQ4_0:
    case GgmlType::kQ4_1:
    case GgmlType::kQ5_0:
    case GgmlType::kQ5_1:
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K:
    case GgmlType::kQ6_K:
      return true;
    default:
      return false;
  }
}

std::string DequantizableTypeNames() {
  return "f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_K, q5_K, q6_K";
}

void DequantizeRow(const GgufTensor& t, int64_t row, float* out) {
  const int64_t n = t.row_length();
  const int64_t row_bytes = static_cast<int64_t>(t.nbytes) / (t.rows() == 0 ? 1 : t.rows());
  const uint8_t* p = t.data + row * row_bytes;
  switch (t.type) {
    case GgmlType::kF32:
      std::memcpy(out, p, n * sizeof(float));
      return;
    case GgmlType::kF16:
      for (int64_t i = 0; i < n; ++i) out[i] = Half(p + 2 * i);
      return;
    case GgmlType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = Bf16ToFloat(h);
      }
      return;
    case GgmlType::kQ8_0:
      return RowQ8_0(p, n / kQK, out);
    case GgmlType::kQ4_0:
      return RowQ4_0(p, n / kQK, out);
    case GgmlType::kQ4_1:
      return RowQ4_1(p, n / kQK, out);
    case GgmlType::kQ5_0:
      return RowQ5(p, n / kQK, out, false);
    case GgmlType::kQ5_1:
      return RowQ5(p, n / kQK, out, true);
    case GgmlType::kQ4_K:
      return RowQ4_K(p, n / kQKK, out);
    case GgmlType::kQ5_K:
      return RowQ5_K(p, n / kQKK, out);
    case GgmlType::kQ6_K:
      return RowQ6_K(p, n / kQKK, out);
    default:
      return;
  }
}

}  // namespace qkvshare::agents::gguf
