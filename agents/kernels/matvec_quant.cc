// Highway kernels of agents/kernels/matvec_quant.h: this file is compiled
// once per SIMD target (foreach_target.h) and dispatched at run time.
#include "agents/kernels/matvec_quant.h"

#include <cstddef>
#include <cstring>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "agents/kernels/matvec_quant.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "quant/fp16.h"

HWY_BEFORE_NAMESPACE();
namespace qkvshare::agents::kernels {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using weights::BlockQ4;
using weights::BlockQ8;
using weights::kBlockSize;

// At most 16 fp32 lanes (so 32 is a multiple of the lane count everywhere).
using DF = hn::CappedTag<float, 16>;
// Rows processed together (the activations are loaded once for all).
constexpr int kRows = 4;

// x padded with zeros to whole blocks (the padding lanes of the last block of
// a row hold arbitrary finite codes); q4 also needs each block's sum of x.
struct PaddedInput {
  std::vector<float> x;
  std::vector<float> block_sums;
};

const float* PadInput(const float* x, int64_t cols, bool sums, PaddedInput* buf) {
  const int64_t blocks = weights::BlocksPerRow(cols);
  if (sums) {
    buf->block_sums.assign(blocks, 0.0f);
    for (int64_t c = 0; c < cols; ++c) buf->block_sums[c / kBlockSize] += x[c];
  }
  if (cols % kBlockSize == 0) return x;
  buf->x.assign(blocks * kBlockSize, 0.0f);
  std::memcpy(buf->x.data(), x, cols * sizeof(float));
  return buf->x.data();
}

// Converts the fp16 field at byte offset `offset` of kRows consecutive-row
// blocks `b` (stride `row_stride` blocks) to fp32.
template <int R, class Block>
HWY_INLINE void HalvesToFloats(const Block* b, int64_t row_stride, size_t offset, float* out) {
  const hn::CappedTag<float, 4> d4;
  const hn::Rebind<hwy::float16_t, decltype(d4)> dh4;
  HWY_ALIGN hwy::float16_t halves[4] = {};
  for (int r = 0; r < R; ++r) {
    std::memcpy(&halves[r], reinterpret_cast<const char*>(b + r * row_stride) + offset, 2);
  }
  if (hn::Lanes(d4) >= 4) {
    hn::StoreU(hn::PromoteTo(d4, hn::Load(dh4, halves)), d4, out);
  } else {
    for (int r = 0; r < R; ++r) out[r] = quant::HalfToFloat(halves[r].bits);
  }
}

template <int R>
HWY_INLINE void Q8RowGroup(const BlockQ8* w, int64_t blocks, const float* xp, float* y) {
  const DF df;
  const hn::RebindToSigned<DF> di;
  const hn::Rebind<int8_t, DF> d8;
  const size_t N = hn::Lanes(df);
  hn::Vec<DF> acc[R];
  for (int r = 0; r < R; ++r) acc[r] = hn::Zero(df);
  HWY_ALIGN float scale[4];
  for (int64_t b = 0; b < blocks; ++b) {
    const float* xb = xp + b * kBlockSize;
    hn::Vec<DF> part[R];
    for (int r = 0; r < R; ++r) part[r] = hn::Zero(df);
    for (size_t k = 0; k < static_cast<size_t>(kBlockSize); k += N) {
      const auto xv = hn::LoadU(df, xb + k);
      for (int r = 0; r < R; ++r) {
        const auto q =
            hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(d8, w[r * blocks + b].qs + k)));
        part[r] = hn::MulAdd(q, xv, part[r]);
      }
    }
    HalvesToFloats<R>(w + b, blocks, offsetof(BlockQ8, d), scale);
    for (int r = 0; r < R; ++r) acc[r] = hn::MulAdd(part[r], hn::Set(df, scale[r]), acc[r]);
  }
  for (int r = 0; r < R; ++r) y[r] = hn::GetLane(hn::SumOfLanes(df, acc[r]));
}

template <int R>
HWY_INLINE void Q4RowGroup(const BlockQ4* w, int64_t blocks, const float* xp,
                           const float* block_sums, float* y) {
  const DF df;
  const hn::RebindToSigned<DF> di;
  const hn::Rebind<uint8_t, DF> du8;
  const size_t N = hn::Lanes(df);
  constexpr size_t kHalf = kBlockSize / 2;
  hn::Vec<DF> acc[R];
  float min_terms[R] = {};
  for (int r = 0; r < R; ++r) acc[r] = hn::Zero(df);
  const auto nibble = hn::Set(di, 0x0F);
  HWY_ALIGN float scale[4];
  HWY_ALIGN float minimum[4];
  for (int64_t b = 0; b < blocks; ++b) {
    const float* xb = xp + b * kBlockSize;
    hn::Vec<DF> part[R];
    for (int r = 0; r < R; ++r) part[r] = hn::Zero(df);
    for (size_t k = 0; k < kHalf; k += N) {
      const auto x_lo = hn::LoadU(df, xb + k);
      const auto x_hi = hn::LoadU(df, xb + kHalf + k);
      for (int r = 0; r < R; ++r) {
        const auto bytes = hn::PromoteTo(di, hn::LoadU(du8, w[r * blocks + b].qs + k));
        const auto lo = hn::ConvertTo(df, hn::And(bytes, nibble));
        const auto hi = hn::ConvertTo(df, hn::ShiftRight<4>(bytes));
        part[r] = hn::MulAdd(hi, x_hi, hn::MulAdd(lo, x_lo, part[r]));
      }
    }
    HalvesToFloats<R>(w + b, blocks, offsetof(BlockQ4, d), scale);
    HalvesToFloats<R>(w + b, blocks, offsetof(BlockQ4, m), minimum);
    for (int r = 0; r < R; ++r) {
      acc[r] = hn::MulAdd(part[r], hn::Set(df, scale[r]), acc[r]);
      min_terms[r] += minimum[r] * block_sums[b];
    }
  }
  for (int r = 0; r < R; ++r) y[r] = hn::GetLane(hn::SumOfLanes(df, acc[r])) + min_terms[r];
}

void MatVecQ8Rows(const BlockQ8* w, int64_t cols, const float* x, float* y, int64_t row_begin,
                  int64_t row_end) {
  thread_local PaddedInput buf;
  const float* xp = PadInput(x, cols, /*sums=*/false, &buf);
  const int64_t blocks = weights::BlocksPerRow(cols);
  int64_t r = row_begin;
  for (; r + kRows <= row_end; r += kRows) Q8RowGroup<kRows>(w + r * blocks, blocks, xp, y + r);
  for (; r < row_end; ++r) Q8RowGroup<1>(w + r * blocks, blocks, xp, y + r);
}

void MatVecQ4Rows(const BlockQ4* w, int64_t cols, const float* x, float* y, int64_t row_begin,
                  int64_t row_end) {
  thread_local PaddedInput buf;
  const float* xp = PadInput(x, cols, /*sums=*/true, &buf);
  const float* sums = buf.block_sums.data();
  const int64_t blocks = weights::BlocksPerRow(cols);
  int64_t r = row_begin;
  for (; r + kRows <= row_end; r += kRows) {
    Q4RowGroup<kRows>(w + r * blocks, blocks, xp, sums, y + r);
  }
  for (; r < row_end; ++r) Q4RowGroup<1>(w + r * blocks, blocks, xp, sums, y + r);
}

// Dequantizes one block into 32 floats: d * q (q8) or d * q + m (q4),
// rounded as the scalar reference (no fused multiply-add).
HWY_INLINE void DequantizeBlock(const BlockQ8& blk, float* out) {
  const DF df;
  const hn::RebindToSigned<DF> di;
  const hn::Rebind<int8_t, DF> d8;
  const auto d = hn::Set(df, quant::HalfToFloat(blk.d));
  for (size_t k = 0; k < static_cast<size_t>(kBlockSize); k += hn::Lanes(df)) {
    const auto q = hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(d8, blk.qs + k)));
    hn::StoreU(hn::Mul(d, q), df, out + k);
  }
}

HWY_INLINE void DequantizeBlock(const BlockQ4& blk, float* out) {
  const DF df;
  const hn::RebindToSigned<DF> di;
  const hn::Rebind<uint8_t, DF> du8;
  constexpr size_t kHalf = kBlockSize / 2;
  const auto d = hn::Set(df, quant::HalfToFloat(blk.d));
  const auto m = hn::Set(df, quant::HalfToFloat(blk.m));
  const auto nibble = hn::Set(di, 0x0F);
  for (size_t k = 0; k < kHalf; k += hn::Lanes(df)) {
    const auto bytes = hn::PromoteTo(di, hn::LoadU(du8, blk.qs + k));
    const auto lo = hn::ConvertTo(df, hn::And(bytes, nibble));
    const auto hi = hn::ConvertTo(df, hn::ShiftRight<4>(bytes));
    hn::StoreU(hn::Add(hn::Mul(d, lo), m), df, out + k);
    hn::StoreU(hn::Add(hn::Mul(d, hi), m), df, out + kHalf + k);
  }
}

template <class Block>
void DequantizeRowsT(const Block* w, int64_t cols, int64_t row_begin, int64_t row_end, float* out) {
  const int64_t blocks = weights::BlocksPerRow(cols);
  const int64_t full = cols / kBlockSize;
  HWY_ALIGN float tail[kBlockSize];
  for (int64_t r = row_begin; r < row_end; ++r) {
    const Block* row = w + r * blocks;
    float* o = out + (r - row_begin) * cols;
    for (int64_t b = 0; b < full; ++b) DequantizeBlock(row[b], o + b * kBlockSize);
    if (full < blocks) {
      DequantizeBlock(row[full], tail);
      std::memcpy(o + full * kBlockSize, tail, (cols - full * kBlockSize) * sizeof(float));
    }
  }
}

void DequantizeQ8Rows(const BlockQ8* w, int64_t cols, int64_t row_begin, int64_t row_end,
                      float* out) {
  DequantizeRowsT(w, cols, row_begin, row_end, out);
}

void DequantizeQ4Rows(const BlockQ4* w, int64_t cols, int64_t row_begin, int64_t row_end,
                      float* out) {
  DequantizeRowsT(w, cols, row_begin, row_end, out);
}

}  // namespace HWY_NAMESPACE
}  // namespace qkvshare::agents::kernels
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qkvshare::agents::kernels {

HWY_EXPORT(MatVecQ8Rows);
HWY_EXPORT(MatVecQ4Rows);
HWY_EXPORT(DequantizeQ8Rows);
HWY_EXPORT(DequantizeQ4Rows);

void MatVecQ8Rows(const weights::BlockQ8* w, int64_t cols, const float* x, float* y,
                  int64_t row_begin, int64_t row_end) {
  HWY_DYNAMIC_DISPATCH(MatVecQ8Rows)(w, cols, x, y, row_begin, row_end);
}

void MatVecQ4Rows(const weights::BlockQ4* w, int64_t cols, const float* x, float* y,
                  int64_t row_begin, int64_t row_end) {
  HWY_DYNAMIC_DISPATCH(MatVecQ4Rows)(w, cols, x, y, row_begin, row_end);
}

void DequantizeQ8Rows(const weights::BlockQ8* w, int64_t cols, int64_t row_begin, int64_t row_end,
                      float* out) {
  HWY_DYNAMIC_DISPATCH(DequantizeQ8Rows)(w, cols, row_begin, row_end, out);
}

void DequantizeQ4Rows(const weights::BlockQ4* w, int64_t cols, int64_t row_begin, int64_t row_end,
                      float* out) {
  HWY_DYNAMIC_DISPATCH(DequantizeQ4Rows)(w, cols, row_begin, row_end, out);
}

}  // namespace qkvshare::agents::kernels
#endif  // HWY_ONCE
